"""FileCachePolicy (tasks/caching.py): hits across processes, misses on input content / code changes, per-task records."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from prefect import flow, task

from tasks.caching import PLAIN_JSON, FileCachePolicy, file_sha256, trusted_record_result, with_output_hashes

ROOT = Path(__file__).resolve().parents[1]
POLICY = FileCachePolicy(input_files=("src",))


def _bump(counter: str) -> None:
    p = Path(counter)
    p.write_text(str(int(p.read_text()) + 1 if p.exists() else 1))


def _count(counter: Path) -> int:
    return int(counter.read_text()) if counter.exists() else 0


@task(name="copy-upper", cache_policy=POLICY, persist_result=True, result_serializer=PLAIN_JSON)
def copy_upper(src: str, out: str, counter: str) -> dict[str, str]:
    """Upper-cased copy of ``src``."""
    _bump(counter)
    Path(out).write_text(Path(src).read_text().upper())
    return with_output_hashes({"path": out}, out)


@task(name="copy-lower", cache_policy=POLICY, persist_result=True, result_serializer=PLAIN_JSON)
def copy_lower(src: str, out: str, counter: str) -> dict[str, str]:
    """Lower-cased copy of ``src`` (same parameters as ``copy_upper``)."""
    _bump(counter)
    Path(out).write_text(Path(src).read_text().lower())
    return with_output_hashes({"path": out}, out)


def _copy_upper_v2(src: str, out: str, counter: str) -> dict[str, str]:
    """Same task name and function name as ``copy_upper``, other source (a code change)."""
    _bump(counter)
    Path(out).write_text(Path(src).read_text().upper() + "!")
    return with_output_hashes({"path": out}, out)


_copy_upper_v2.__name__ = _copy_upper_v2.__qualname__ = "copy_upper"
copy_upper_v2 = task(name="copy-upper", cache_policy=POLICY, persist_result=True, result_serializer=PLAIN_JSON)(_copy_upper_v2)


@flow(name="caching-test")
def _run(tasks, src: str, out: str, counter: str, storage: str):
    return [t.with_options(result_storage=Path(storage)).submit(src, out, counter).result() for t in tasks]


@pytest.fixture
def files(tmp_path: Path):
    src, out, counter = tmp_path / "in.txt", tmp_path / "out.txt", tmp_path / "count"
    src.write_text("Muon")
    return str(src), str(out), counter, str(tmp_path / "records")


def test_cache_hit_in_new_process(prefect_harness: None, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from prefect.settings import PREFECT_API_URL

    src, out, counter = tmp_path / "in.txt", tmp_path / "out.txt", tmp_path / "count"
    src.write_text("Muon")
    script = tmp_path / "tiny_flow.py"
    script.write_text(
        textwrap.dedent(f"""
        from pathlib import Path
        from prefect import flow, task
        from tasks.caching import PLAIN_JSON, FileCachePolicy, with_output_hashes

        @task(name="tiny", cache_policy=FileCachePolicy(input_files=("src",)), persist_result=True, result_serializer=PLAIN_JSON,
              result_storage=Path({str(tmp_path / "records")!r}))
        def tiny(src: str, out: str, factor: int) -> dict:
            c = Path({str(counter)!r})
            c.write_text(str(int(c.read_text()) + 1 if c.exists() else 1))
            Path(out).write_text(Path(src).read_text() * factor)
            return with_output_hashes({{"path": out}}, out)

        @flow(name="tiny-flow")
        def tiny_flow():
            return tiny({str(src)!r}, {str(out)!r}, 2)

        print("RESULT", tiny_flow()["path"])
    """)
    )
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    runpy.run_path(str(script), run_name="__main__")  # the first run in this process (one interpreter start less)
    assert _count(counter) == 1 and "RESULT" in capsys.readouterr().out
    second = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "RESULT" in second.stdout, second.stderr[-3000:]
    assert _count(counter) == 1, "the second process must not recompute"
    assert "Cached" in second.stdout + second.stderr
    assert out.read_text() == "MuonMuon"


def test_miss_when_input_content_changes_or_output_is_gone(prefect_harness: None, files) -> None:
    src, out, counter, storage = files
    _run([copy_upper], src, out, str(counter), storage)
    _run([copy_upper], src, out, str(counter), storage)
    assert _count(counter) == 1
    Path(src).write_text("Tomography")  # same path, other content
    _run([copy_upper], src, out, str(counter), storage)
    assert _count(counter) == 2 and Path(out).read_text() == "TOMOGRAPHY"
    Path(out).unlink()  # recorded output gone -> recompute (next key generation)
    _run([copy_upper], src, out, str(counter), storage)
    assert _count(counter) == 3 and Path(out).read_text() == "TOMOGRAPHY"
    Path(out).write_text("corrupt")  # recorded output changed -> recompute
    _run([copy_upper], src, out, str(counter), storage)
    assert _count(counter) == 4 and Path(out).read_text() == "TOMOGRAPHY"
    _run([copy_upper], src, out, str(counter), storage)
    assert _count(counter) == 4


def test_miss_when_task_code_changes(prefect_harness: None, files) -> None:
    src, out, counter, storage = files
    assert copy_upper.name == copy_upper_v2.name and copy_upper.fn.__qualname__ == copy_upper_v2.fn.__qualname__
    inputs = {"src": src, "out": out, "counter": str(counter)}
    assert POLICY.base_key(copy_upper, inputs) != POLICY.base_key(copy_upper_v2, inputs)
    _run([copy_upper], src, out, str(counter), storage)
    _run([copy_upper_v2], src, out, str(counter), storage)
    assert _count(counter) == 2 and Path(out).read_text() == "MUON!"


def test_no_sharing_between_tasks(prefect_harness: None, files) -> None:
    src, out, counter, storage = files
    _run([copy_upper], src, out, str(counter), storage)
    _run([copy_lower], src, out, str(counter), storage)
    assert _count(counter) == 2 and Path(out).read_text() == "muon"


def test_key_parts(tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    base = {"src": str(src), "out": "x", "counter": "c"}
    k0 = POLICY.base_key(copy_upper, base)
    moved = tmp_path / "b.bin"
    moved.write_bytes(b"abc")
    assert POLICY.base_key(copy_upper, {**base, "src": str(moved)}) == k0, "input files enter by content, not path"
    assert POLICY.base_key(copy_upper, {**base, "out": "y"}) != k0
    assert FileCachePolicy(input_files=("src",), exclude=("out",)).base_key(copy_upper, {**base, "out": "y"}) == FileCachePolicy(
        input_files=("src",), exclude=("out",)
    ).base_key(copy_upper, base)
    assert FileCachePolicy(input_files=("src",), code_paths=(str(ROOT / "tasks"),)).base_key(copy_upper, base) != k0
    with pytest.raises(TypeError, match="not a plain value"):
        POLICY.base_key(copy_upper, {**base, "counter": torch.zeros(3)})
    assert file_sha256(src) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


class _Boom:
    """Unpickling this runs code (writes a marker file): a planted cache record must never be loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("payload ran",))


@pytest.mark.parametrize("kind", ["pickle", "json_with_decoder", "garbage"])
def test_planted_record_is_never_loaded(prefect_harness: None, files, kind: str) -> None:
    """A record planted at the task's key (a pickle, or JSON naming a code-running decoder) is a miss: the task
    recomputes, the payload never runs, and the fresh record is plain JSON."""
    import base64

    import cloudpickle
    from prefect.context import TaskRunContext  # noqa: F401 - the engine imports it too

    src, out, counter, storage = files
    marker = Path(storage).parent / "pwned"
    key = POLICY.base_key(copy_upper, {"src": src, "out": out, "counter": str(counter)})
    Path(storage).mkdir(parents=True, exist_ok=True)
    if kind == "pickle":
        blob = base64.b64encode(cloudpickle.dumps(_Boom(str(marker)))).decode()
        record = {"metadata": {"storage_key": key, "serializer": {"type": "pickle", "picklelib": "cloudpickle"}}, "result": blob}
    elif kind == "json_with_decoder":
        record = {
            "metadata": {"storage_key": key, "serializer": {"type": "json", "object_decoder": "builtins.exec"}},
            "result": f'{{"x": "import pathlib; pathlib.Path({str(marker)!r}).write_text(1)"}}',
        }
    else:
        record = None
    (Path(storage) / key).write_bytes(b"\x80\x04garbage" if record is None else json.dumps(record).encode())
    assert _run([copy_upper], src, out, str(counter), storage)[0]["path"] == out
    assert not marker.exists(), "the planted payload ran"
    assert _count(counter) == 1, "a planted record must not count as a cache hit"
    fresh = [p for p in Path(storage).iterdir() if p.name.startswith(key + "-")]
    assert fresh and trusted_record_result(fresh[0].read_bytes()) is not None
    assert _run([copy_upper], src, out, str(counter), storage)[0]["path"] == out and _count(counter) == 1, "then a hit"
