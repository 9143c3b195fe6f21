"""Every command in README.md is run here, by a named test, or by CI, and its tables and parameter names are right.

Each shell command of the README's ``bash`` blocks (and each inline ``make ...`` / ``dvc ...`` / ``python -m ...``)
must match one rule of :data:`RULES`; a command no rule covers fails the test, so a new README command comes with its
check. The cheap ones run here (``python -m flows --help`` and ``check``, ``python -m flows.stages --check``,
``python -m flows.serve --dry-run``, ``make help``, the Python examples); the expensive ``make`` targets are checked to
exist (``make -n <target>``; CI runs ``make lint`` and ``make test``); DVC command lines are parsed by DVC's own
argument parser; the rest point at the test that runs them or say why nothing here can (a browser, a batch system).
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAKE_ENV = {**os.environ, "MAKEFLAGS": ""}
STAGES_TEST = "tests/test_stage_registry.py::test_dvc_yaml_agrees_with_registry"
JOB_TEST = "tests/test_jobqueue.py::test_flow_tasks_run_in_a_submitted_job"


# ------------------------------------------------------------------------------------------------ README parsing
@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # 1-based line of the first line of code
    text: str


def _blocks(text: str) -> list[Block]:
    out, lang, start, buf = [], None, 0, []
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, buf = line[3:].strip(), i + 1, []
            else:
                out.append(Block(lang, start, "\n".join(buf)))
                lang = None
        elif lang is not None:
            buf.append(line)
    assert lang is None, "unclosed code block in README.md"
    return out


def _strip_comment(line: str) -> str:
    """``cmd args  # comment`` -> ``cmd args`` (a ``#`` inside quotes or a word stays)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_commands(text: str) -> list[tuple[int, str]]:
    """(line, command) of every command in the ``bash`` / ``sh`` blocks: continuations joined, comments dropped,
    ``a && b`` split, a trailing ``&`` removed."""
    out = []
    for b in _blocks(text):
        if b.lang not in ("bash", "sh", "shell", "console"):
            continue
        joined: list[tuple[int, str]] = []
        for i, raw in enumerate(b.text.splitlines()):
            if joined and joined[-1][1].endswith("\\"):
                joined[-1] = (joined[-1][0], joined[-1][1][:-1].rstrip() + " " + raw.strip())
            else:
                joined.append((b.line + i, raw))
        for line_no, line in joined:
            cmd = _strip_comment(line).strip()
            for part in (p.strip() for p in cmd.split("&&")):
                if part:
                    out.append((line_no, part.removesuffix("&").strip()))
    return out


INLINE = re.compile(r"`((?:make|dvc|\.venv/bin/dvc|python -m|\.venv/bin/python -m) [^`]+)`")


def inline_commands(text: str) -> list[tuple[int, str]]:
    """Inline ``make ...``, ``dvc ...`` and ``python -m ...`` spans of the prose (outside code blocks)."""
    out, in_block = [], False
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
        elif not in_block:
            out += [(i, m.group(1)) for m in INLINE.finditer(line)]
    return out


# ------------------------------------------------------------------------------------------------ how each is checked
def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M)}


def _make_dry(target: str, *variables: str) -> str:
    """``make -n <target>``: the target exists and its recipe expands (nothing is executed)."""
    res = subprocess.run(["make", "-n", *variables, target], cwd=ROOT, capture_output=True, text=True, timeout=60, env=MAKE_ENV)
    assert res.returncode == 0, f"make -n {target}: {res.stderr}"
    return res.stdout


def _params_key_exists(dotted: str) -> bool:
    """``optimise.n_epochs`` names a key of params.yaml, or a field of the typed section model (optional keys)."""
    from config import PipelineParams

    data: Any = yaml.safe_load((ROOT / "params.yaml").read_text())
    model: Any = PipelineParams
    for part in dotted.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            data = None
        fields = getattr(model, "model_fields", {}) if model is not None else {}
        if part in fields:
            ann = fields[part].annotation
            model = next((a for a in (ann, *getattr(ann, "__args__", ())) if hasattr(a, "model_fields")), None)
        else:
            model = None
        if data is None and model is None and part not in fields:
            return False
    return True


class Checks:
    """The checks a rule may call; each records what it did (shown when the test fails)."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self._serve_out: str | None = None

    def make(self, cmd: str) -> None:
        words = shlex.split(cmd)[1:]
        variables = [w for w in words if "=" in w]
        targets = [w for w in words if "=" not in w and not w.startswith("-")] or ["help"]
        for target in targets:
            assert target in _make_targets(), f"{cmd!r}: no make target {target!r}"
            if target == "help":
                self.make_help()
            else:
                _make_dry(target, *variables)
        self.done.append(f"make -n {' '.join(targets)}")

    def make_help(self) -> None:
        res = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=MAKE_ENV)
        assert res.returncode == 0 and "run:" in res.stdout and "test:" in res.stdout, res.stdout + res.stderr

    def dvc(self, cmd: str) -> None:
        from dvc.cli import parse_args

        words = shlex.split(cmd.replace("<name>", "exp-name"))
        words = words[1:]  # "dvc" or ".venv/bin/dvc"
        args = parse_args(words)  # DvcParserError (and a usage message) on any unknown subcommand or option
        for assignment in getattr(args, "set_param", None) or []:
            key = assignment.split("=", 1)[0].split(":")[-1]
            assert _params_key_exists(key), f"{cmd!r}: {key} is not a params.yaml key"
        self.done.append(f"dvc parser: {cmd}")

    def flows_cli(self, cmd: str) -> None:
        argv = shlex.split(cmd)[3:]
        if argv in (["--help"], []):  # a fresh process: fast (no torch import) and lists every stage
            from flows.stages import STAGE_NAMES

            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "flows", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0 and all(s in res.stdout for s in STAGE_NAMES), res.stdout + res.stderr
            self.done.append(f"{cmd} ({time.perf_counter() - t0:.1f} s)")
        elif argv == ["check"]:
            from flows.__main__ import main

            assert main(["check", "--workdir", str(ROOT)]) == 0
            self.done.append(cmd)
        else:
            raise AssertionError(f"{cmd!r}: no check for these arguments")

    def serve_dry_run(self, cmd: str = "python -m flows.serve --dry-run") -> str:
        if self._serve_out is None:
            import contextlib
            import io

            from flows.serve import main

            err = io.StringIO()
            cwd = os.getcwd()
            os.chdir(ROOT)
            try:
                with contextlib.redirect_stderr(err):
                    assert main(["--dry-run"]) == 0, err.getvalue()
            finally:
                os.chdir(cwd)
            self._serve_out = err.getvalue()
            self.done.append(cmd)
        return self._serve_out

    def deployment_run(self, cmd: str) -> None:
        name = shlex.split(cmd)[3]
        assert f"deployment {name}:" in self.serve_dry_run(), f"{cmd!r}: no deployment {name} in flows.serve"
        self.done.append(f"deployment {name} exists")

    def api_url(self, cmd: str) -> None:
        """The port is the one ``make server`` (``PORT ?= ...``) or a README ``prefect server start`` listens on."""
        port = re.search(r":(\d+)/api$", cmd)
        assert port, cmd
        text = (ROOT / "Makefile").read_text() + README.read_text()
        ports = set(re.findall(r"^PORT \?= (\d+)", text, re.M)) | set(re.findall(r"server start .*--port (\d+)", text))
        assert port.group(1) in ports, f"{cmd!r}: no server of the Makefile or README listens on {port.group(1)} ({ports})"
        self.done.append(f"{cmd}: a server's port")

    def prefect_server(self, cmd: str) -> None:
        """``prefect server start --host H --port N``: Prefect's console script and options of its ``server start``."""
        from importlib.metadata import entry_points

        from prefect.cli.server import start

        assert entry_points(group="console_scripts", name="prefect"), "no prefect console script"
        options = {w[2:].replace("-", "_") for w in shlex.split(cmd) if w.startswith("--")}
        assert options <= set(inspect.signature(start).parameters), f"{cmd!r}: options {options}"
        self.done.append(f"{cmd}: prefect server start takes {sorted(options)}")

    def venv_activate(self, cmd: str) -> None:
        assert "-m venv $(VENV)" in (ROOT / "Makefile").read_text() and "VENV := .venv" in (ROOT / "Makefile").read_text()
        self.done.append(f"{cmd}: make setup creates .venv with python -m venv")

    def covered_by(self, test: str) -> Callable[[str], None]:
        """A rule whose command a named test runs: the test must exist."""

        def check(cmd: str) -> None:
            path, _, name = test.partition("::")
            assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), f"{cmd!r}: {test} is gone"
            self.done.append(f"{cmd}: {test}")

        return check

    def outside(self, reason: str) -> Callable[[str], None]:
        def check(cmd: str) -> None:
            self.done.append(f"{cmd}: not run ({reason})")

        return check


def RULES(c: Checks) -> list[tuple[str, Callable[[str], None]]]:  # noqa: N802 - a table
    """(regular expression matching the whole command, its check), first match wins."""
    return [
        (r"make [\w .=-]+", c.make),
        (r"(\.venv/bin/)?python -m flows( --help| check)?", c.flows_cli),
        # the import walk takes seconds: the registry test runs the same check (dvc_disagreements) on every `make test`
        (r"(\.venv/bin/)?python -m flows\.stages( --check| \[stage\])?", c.covered_by(STAGES_TEST)),
        (
            r"(\.venv/bin/)?python -m flows <stage>",
            c.covered_by("tests/test_params.py::test_cli_process_exits_2_without_touching_outputs"),
        ),
        (r"(\.venv/bin/)?python -m flows\.serve --dry-run", c.serve_dry_run),
        (r"(\.venv/bin/)?python -m distributed\.cli\.dask_worker", c.covered_by(JOB_TEST)),
        (r"(\.venv/bin/)?(dvc) .+", c.dvc),
        (r"source \.venv/bin/activate", c.venv_activate),
        (r"export PREFECT_API_URL=http://.+:\d+/api", c.api_url),
        (r"(\.venv/bin/)?prefect server start .+", c.prefect_server),
        (r"prefect deployment run '[\w/-]+'", c.deployment_run),
        (r"git commit .+", c.outside("git itself")),
        (
            r"apt-get install -y chromium",
            c.outside("installs a browser for the screenshot; tests/test_ui_monitoring.py checks the UI"),
        ),
        (
            r"chromium --headless .+",
            c.outside("a browser screenshot; tests/test_ui_monitoring.py reads the same runs via the API"),
        ),
    ]


# ------------------------------------------------------------------------------------------------ the tests
def test_every_readme_command_is_checked() -> None:
    text = README.read_text()
    commands = shell_commands(text) + inline_commands(text)
    assert len(commands) > 20, commands
    checks, rules = Checks(), None
    rules = RULES(checks)
    uncovered = []
    seen: set[str] = set()
    for line, cmd in commands:
        if cmd in seen:
            continue
        seen.add(cmd)
        check = next((fn for pattern, fn in rules if re.fullmatch(pattern, cmd)), None)
        if check is None:
            uncovered.append(f"README.md:{line}: {cmd}")
            continue
        check(cmd)
    assert not uncovered, "README commands without a check (add a rule in RULES):\n" + "\n".join(uncovered)
    for must in ("make -n run", "make -n test", "make -n bench", "make -n server", "make -n serve"):
        assert any(d.startswith(must) for d in checks.done), (must, checks.done)


def test_the_parser_sees_every_command() -> None:
    sample = (
        "# x\n\n```bash\nmake run    # a # comment\ndvc a 'b # c' && git commit -am \"x\"\nchromium --x \\\n  --y z\n"
        "prefect server start --port 1 &\n```\n\n```python\nimport os\n```\n`make lumi` and `make bench-ref` run\n"
    )
    assert shell_commands(sample) == [
        (4, "make run"),
        (5, "dvc a 'b # c'"),
        (5, 'git commit -am "x"'),
        (6, "chromium --x --y z"),
        (8, "prefect server start --port 1"),
    ]
    assert inline_commands(sample) == [(14, "make lumi"), (14, "make bench-ref")]


def _run_python_block(code: str, workdir: Path) -> dict[str, Any]:
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        namespace: dict[str, Any] = {"__name__": "__readme__"}
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
        return namespace
    finally:
        os.chdir(cwd)


SMALLER = {
    "n_epochs=2,": "n_epochs=1,",
    "n_mu_per_volume=1000,": "n_mu_per_volume=300,",
    "mu_bs=1000,": "mu_bs=300,",
    "PassiveYielder(passives, n_passives=4)": "PassiveYielder(passives, n_passives=2)",
    "n_mu_per_volume=2000, mu_bs=2000": "n_mu_per_volume=300, mu_bs=300",
}
"""Sizes of the optimisation example shrunk for the test (same calls, about 1 s instead of several); each must occur
exactly once in the README's example, so an edited example fails here until this table follows."""


def test_python_examples_run(tmp_path: Path) -> None:
    """Both Python examples run (the optimisation one with :data:`SMALLER` sizes), and the luminosity the README
    quotes is right."""
    blocks = [b for b in _blocks(README.read_text()) if b.lang == "python"]
    assert len(blocks) == 2, [b.line for b in blocks]
    timings = {}
    for b in blocks:
        code = b.text
        if "PanelVolumeWrapper(" in code:
            for old, new in SMALLER.items():
                assert code.count(old) == 1, f"README.md:{b.line}: the example no longer has {old!r} once"
                code = code.replace(old, new)
        t0 = time.perf_counter()
        ns = _run_python_block(code, tmp_path)
        timings[b.line] = time.perf_counter() - t0
        if "wrapper" in ns:
            assert (tmp_path / "detector.pt").stat().st_size > 0 and len(ns["preds"]) == 2
        if "res" in ns:
            assert float(ns["L"]) == pytest.approx(8.7338e33, rel=1e-4)
            assert bool(ns["res"].converged.all())
    assert set(timings) == {b.line for b in blocks}


def test_yaml_examples_are_valid_parameters() -> None:
    """Every ``yaml`` block of the README (params.yaml snippets, e.g. the batch-cluster ones) passes validation."""
    from config import parse_params

    blocks = [b for b in _blocks(README.read_text()) if b.lang == "yaml"]
    assert len(blocks) >= 2, "the SLURM and HTCondor examples"
    for b in blocks:
        parse_params(yaml.safe_load(b.text), source=f"README.md:{b.line}")


def _tables(text: str) -> list[tuple[int, list[str]]]:
    tables, cur, start = [], [], 0
    in_block = False
    for i, line in enumerate([*text.splitlines(), ""], 1):
        if line.startswith("```"):
            in_block = not in_block
        if not in_block and line.startswith("|"):
            if not cur:
                start = i
            cur.append(line)
        elif cur:
            tables.append((start, cur))
            cur = []
    return tables


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def test_tables_render() -> None:
    """Every table has a header and a separator row (a row after a blank line would render as text) and the same
    number of cells in every row; the pipeline table lists the registry's stages in order."""
    from flows.stages import STAGE_NAMES

    text = README.read_text()
    tables = _tables(text)
    assert len(tables) >= 5
    for start, rows in tables:
        assert len(rows) >= 3, f"README.md:{start}: a table with no body (a blank line inside a table?)"
        assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", rows[1].strip()), (
            f"README.md:{start}: row 2 is not a separator: a blank line inside a table splits it, the rest is text"
        )
        width = len(_cells(rows[0]))
        for j, row in enumerate(rows):
            assert len(_cells(row)) == width, f"README.md:{start + j}: {len(_cells(row))} cells, header has {width}"
    pipeline = next(rows for _, rows in tables if _cells(rows[0])[:3] == ["stage", "reads", "writes"])
    assert [c.strip("`") for c in (_cells(r)[0] for r in pipeline[2:])] == list(STAGE_NAMES)


def test_parameter_names_exist() -> None:
    """``params.yaml: a, b`` names top-level sections, and every inline ``section.key`` a params.yaml key."""
    text = README.read_text()
    top = set(yaml.safe_load((ROOT / "params.yaml").read_text()))
    named = [s.strip() for m in re.finditer(r"params\.yaml: ([a-z_, ]+)", text) for s in m.group(1).split(",")]
    assert named and set(named) <= top, set(named) - top
    dotted = {
        m.group(1)
        for m in re.finditer(r"`([a-z_]+(?:\.[a-z_0-9]+)+)`", text)
        if m.group(1).split(".")[0] in top and not re.search(r"\.(json|csv|png|py|yaml|h5|pt|parquet|md|lock)$", m.group(1))
    }
    assert {"optimise.n_epochs", "runtime.task_runner"} <= dotted, dotted
    missing = sorted(k for k in dotted if not _params_key_exists(k))
    assert not missing, f"README names parameters that do not exist: {missing}"
