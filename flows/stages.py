"""The stage registry: each DVC stage's flow, ``params.yaml`` sections, data inputs and outputs, in pipeline order.

``dvc.yaml`` must agree with it: ``tests/test_stage_registry.py`` compares every stage's ``deps`` / ``params`` /
``outs`` with this registry and with :func:`stage_code_files` (every project module the stage can import, found by
walking the import statements, function-local ones included). ``python -m flows.stages [stage]`` prints the code
dependencies to paste into ``dvc.yaml``. This module imports neither prefect nor the stage flows (the CLI stays fast).
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "StageSpec",
    "STAGES",
    "STAGE_NAMES",
    "ROOT",
    "PROJECT_PACKAGES",
    "CLI_MODULES",
    "stage_code_files",
    "import_closure",
    "compact_code_deps",
    "dvc_disagreements",
    "write_dvc_deps",
    "missing_tracked_params",
]

ROOT = Path(__file__).resolve().parents[1]
"""Repository root (the working directory of ``dvc repro``)."""
PROJECT_PACKAGES = ("config", "flows", "tasks", "tomopt_lib", "lumi_lib")
"""Top-level packages whose modules are code dependencies of the stages."""
CLI_MODULES = ("flows.__main__", "flows.pipeline")
"""Modules every ``python -m flows <stage>`` run executes besides the stage's own flow module."""


@dataclass(frozen=True)
class StageSpec:
    """One DVC stage: ``module`` defines the Prefect flow ``flow``; ``params``: the ``params.yaml`` keys (sections or
    dotted keys) its outputs depend on; ``inputs``: data files it reads; ``outs`` / ``metrics`` / ``plots``: what it
    writes (relative to the working directory). ``metrics`` is the stage's short summary (``metrics/summary/``, what
    ``dvc metrics show`` prints); full metrics JSONs and CSVs are ``outs``; every ``plots`` entry is a PNG (or a folder
    of PNGs), so that ``dvc plots show`` renders without network access."""

    name: str
    module: str
    flow: str
    params: tuple[str, ...]
    description: str = ""
    inputs: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()


STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in (
        StageSpec(
            "generate_passives",
            "flows.generate_passives",
            "generate_passives_flow",
            ("seed", "runtime.device", "volume", "passives"),
            outs=("data/passives.h5",),
            description="random passive volumes (X0 cubes) -> data/passives.h5",
        ),
        StageSpec(
            "irradiate",
            "flows.irradiate",
            "irradiate_flow",
            ("seed", "runtime.device", "volume", "irradiate"),
            inputs=("data/passives.h5",),
            outs=("data/irradiated.h5",),
            description="cosmic muons through every passive volume and the detector -> data/irradiated.h5",
        ),
        StageSpec(
            "reconstruct",
            "flows.reconstruct",
            "reconstruct_flow",
            ("runtime.device", "volume", "reconstruct"),
            inputs=("data/irradiated.h5",),
            outs=("data/scatters.parquet",),
            description="PoCA and scatter angles per muon -> data/scatters.parquet",
        ),
        StageSpec(
            "report",
            "flows.report",
            "report_flow",
            ("volume", "report"),
            inputs=("data/passives.h5", "data/irradiated.h5", "data/scatters.parquet"),
            outs=("metrics/report.json", "metrics/scatter_angle_hist.csv"),
            metrics=("metrics/summary/report.json",),
            plots=(
                "plots/poca_density_per_layer.png",
                "plots/scatter_angle_hist.png",
                "plots/detector_layout.png",
            ),
            description="scatter metrics, histograms and plots -> metrics/report.json, plots/",
        ),
        StageSpec(
            "optimise",
            "flows.optimise",
            "optimise_flow",
            ("seed", "runtime.device", "volume", "passives", "optimise"),
            outs=(
                "models/detector.pt",
                "models/detector.json",
                "metrics/train.json",
                "metrics/train_loss.csv",
                "metrics/train_panels.csv",
            ),
            metrics=("metrics/summary/optimise.json",),
            plots=("plots/optimise/detector_layout.png", "plots/optimise/loss_curve.png", "plots/optimise/panels.png"),
            description="gradient-descent optimisation of the panels, one checkpoint per epoch -> models/detector.pt",
        ),
        StageSpec(
            "evaluate",
            "flows.evaluate",
            "evaluate_flow",
            ("seed", "runtime.device", "volume", "passives", "optimise", "evaluate"),
            inputs=("models/detector.pt",),
            outs=("data/heldout_passives.h5", "data/evaluate", "metrics/evaluate.json", "metrics/evaluate_per_volume.csv"),
            metrics=("metrics/summary/evaluate.json",),
            plots=("plots/evaluate",),
            description="trained vs start and hand-designed detectors on held-out passives -> metrics/evaluate.json",
        ),
        StageSpec(
            "study",
            "flows.study",
            "study_flow",
            ("seed", "runtime.device", "volume", "study", "studies"),
            outs=("data/study", "models/study", "metrics/study.json"),
            metrics=("metrics/summary/study.json",),
            plots=("plots/study",),
            description="the benchmark study named by `study` (ladle_furnace; default: idle) -> metrics/study.json",
        ),
        StageSpec(
            "lumi_scan",
            "flows.lumi_scan",
            "lumi_scan_flow",
            ("runtime.device", "lumi_scan"),
            outs=("data/lumi/scan.parquet",),
            description="seeded luminosity scans inverted into emittances -> data/lumi/scan.parquet",
        ),
        StageSpec(
            "lumi_report",
            "flows.lumi_report",
            "lumi_report_flow",
            ("runtime.device", "lumi_report"),
            inputs=("data/lumi/scan.parquet",),
            outs=("metrics/lumi.json", "metrics/lumi_rel_err_hist.csv", "metrics/lumi_est_vs_truth.csv"),
            metrics=("metrics/summary/lumi_report.json",),
            plots=(
                "plots/lumi/penalty_12.png",
                "plots/lumi/penalty_xy.png",
                "plots/lumi/penalty_xy_noise.png",
                "plots/lumi/rel_err_hist.png",
                "plots/lumi/est_vs_truth.png",
                "plots/lumi/pull_hist.png",
                "plots/lumi/rel_lumi_error.png",
            ),
            description="inversion metrics, penalty landscapes, error histograms -> metrics/lumi.json, plots/lumi/",
        ),
    )
}
"""DVC stage name -> its specification, in pipeline order."""

STAGE_NAMES: tuple[str, ...] = tuple(STAGES)


def _module_file(name: str) -> Path | None:
    """The source file of project module ``name`` (package -> its ``__init__.py``), or None if not a project module."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path, module: str) -> tuple[str, ...]:
    """Every module name an import statement in ``path`` (module ``module``) can load, function-local ones included
    (parsed once per file version: the stages share most of their files)."""
    return _parse_imports(path, module, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _parse_imports(path: Path, module: str, mtime_ns: int) -> tuple[str, ...]:
    return tuple(_walk_imports(path, module))


def _walk_imports(path: Path, module: str) -> Iterable[str]:
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            yield mod
            yield from (f"{mod}.{a.name}" for a in node.names if a.name != "*")  # "from pkg import submodule"


def import_closure(modules: Iterable[str]) -> set[Path]:
    """Source files of every project module reachable from ``modules`` (parents' ``__init__.py`` included)."""
    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            sub = ".".join(parts[:i])
            f = _module_file(sub)
            if f is None or f in seen:
                continue
            seen.add(f)
            todo.extend(_imports(f, sub))
    return seen


def stage_code_files(stage: str) -> list[str]:
    """Repository-relative paths of every project source file ``python -m flows <stage>`` can execute."""
    files = import_closure([*CLI_MODULES, STAGES[stage].module])
    return sorted(f.relative_to(ROOT).as_posix() for f in files)


def compact_code_deps(files: Iterable[str]) -> list[str]:
    """``files`` with every folder whose Python files are all listed replaced by the folder (shortest ``dvc.yaml``)."""
    chosen = set(files)
    out: set[str] = set()
    for f in sorted(chosen):
        parts = f.split("/")
        best = f
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in ("flows", "tasks"):
                continue  # the thin layers are listed file by file (a new module must not silently join a stage)
            every = {q.relative_to(ROOT).as_posix() for q in (ROOT / folder).rglob("*.py")}
            if every <= chosen:
                best = folder
                break
        out.add(best)
    return sorted(out)


def _entry_path(entry: object) -> str:
    """Path of a ``dvc.yaml`` list entry (a string, or a one-key mapping ``{path: options}``)."""
    return entry if isinstance(entry, str) else next(iter(entry))  # type: ignore[call-overload]


def dvc_disagreements(dvc: Mapping[str, object]) -> list[str]:
    """Every way the parsed ``dvc.yaml`` ``dvc`` disagrees with the registry and with the stages' imports (empty list:
    they agree). Code dependencies must cover every module the stage can import and list nothing it cannot."""
    problems: list[str] = []
    stages = dict(dvc.get("stages") or {})  # type: ignore[call-overload]
    if list(stages) != list(STAGES):
        problems.append(f"stages {list(stages)} != registry {list(STAGES)}")
    for name, spec in STAGES.items():
        st = stages.get(name)
        if not isinstance(st, Mapping):
            continue
        if st.get("cmd") != f"python -m flows {name}":
            problems.append(f"{name}: cmd {st.get('cmd')!r} != 'python -m flows {name}'")
        deps = [_entry_path(d) for d in st.get("deps", [])]
        code = [d for d in deps if d.split("/")[0] in PROJECT_PACKAGES]
        data = [d for d in deps if d not in code]
        if sorted(data) != sorted(spec.inputs):
            problems.append(f"{name}: data deps {sorted(data)} != registry inputs {sorted(spec.inputs)}")
        imported = stage_code_files(name)
        for f in imported:
            if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in code):
                problems.append(f"{name}: imports {f} but dvc.yaml does not list it (or a folder holding it)")
        for d in code:
            if not any(f == d or f.startswith(d.rstrip("/") + "/") for f in imported):
                problems.append(f"{name}: lists {d} but never imports it")
        if sorted(st.get("params", [])) != sorted(spec.params):
            problems.append(f"{name}: params {st.get('params', [])} != registry {list(spec.params)}")
        for key, want in (("outs", spec.outs), ("metrics", spec.metrics), ("plots", spec.plots)):
            got = [_entry_path(e) for e in st.get(key, [])]
            if sorted(got) != sorted(want):
                problems.append(f"{name}: {key} {got} != registry {list(want)}")
    return problems


def write_dvc_deps(path: Path = ROOT / "dvc.yaml") -> bool:
    """Rewrite every stage's ``deps`` list in ``dvc.yaml`` (registry inputs, then the compacted code deps), keeping
    the rest of the file (comments, params, outs, plots options) as it is; returns whether the file changed."""
    import re

    text = path.read_text()
    new = text
    for name, spec in STAGES.items():
        m = re.search(rf"\n  {name}:\n    cmd: [^\n]+\n    deps:\n((?:      - [^\n]+\n)+)", new)
        if m is None:
            raise ValueError(f"{path}: stage {name!r} has no deps list to rewrite")
        deps = [*spec.inputs, *compact_code_deps(stage_code_files(name))]
        new = new[: m.start(1)] + "".join(f"      - {d}\n" for d in deps) + new[m.end(1) :]
    if new != text:
        path.write_text(new)
    return new != text


def _main(argv: list[str]) -> int:
    if argv[:1] == ["--write-deps"]:
        print("dvc.yaml deps rewritten" if write_dvc_deps() else "dvc.yaml deps already current", file=sys.stderr)
        return 0
    if argv[:1] == ["--check"]:
        import yaml

        problems = dvc_disagreements(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
        print("\n".join(problems) or "dvc.yaml agrees with the stage registry", file=sys.stderr)
        return 1 if problems else 0
    for name in argv or list(STAGES):
        print(f"{name}:")
        for f in compact_code_deps(stage_code_files(name)):
            print(f"      - {f}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))


def missing_tracked_params(data: object) -> list[str]:
    """The ``params.yaml`` keys that some stage's DVC ``params`` list names but the parsed file ``data`` lacks (DVC
    cannot run a stage whose tracked parameters are missing; the pipeline's own defaults do not help it)."""
    missing = []
    for key in dict.fromkeys(k for spec in STAGES.values() for k in spec.params):
        node = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if node is None:
            missing.append(key)
    return missing
