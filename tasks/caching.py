"""Prefect cache policy for coarse file-producing tasks (irradiation chunks, reconstruction volumes ...).

The key of :class:`FileCachePolicy` combines

* the task's identity: its name and the qualified name of its function (two tasks never share a record);
* a sha256 of the task function's source and of the Python files named in ``code_paths`` (new code misses);
* its plain parameters (numbers, strings, booleans, ``None``, lists / mappings of them and typed parameter sections
  as ``model_dump(mode="json")``) as canonical JSON;
  tensors and other objects are refused, never hashed (their pickles differ between processes);
* sha256 CONTENT hashes of the input files named by ``input_files`` (parameter names holding paths).

A record is reused only if the output files it recorded (``output_sha256`` in the task's returned mapping, see
:func:`with_output_hashes`) still exist with the same content; otherwise the policy moves to the next "generation"
of the key (``<key>-1``, ``<key>-2`` ...), so the task recomputes and writes a fresh record.

Records are Prefect result records serialised as plain JSON (:data:`PLAIN_JSON`; the cached tasks must use it as
their ``result_serializer``) and read back only after checking that they are; where they are stored is the task's ``result_storage`` (the flows pass a
``Path`` inside the stage's work folder, see :func:`stage_workdir`) or ``PREFECT_RESULTS_LOCAL_STORAGE_PATH``.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from prefect.cache_policies import CachePolicy
from prefect.serializers import JSONSerializer
from pydantic import BaseModel

__all__ = [
    "PLAIN_JSON",
    "trusted_record_result",
    "StageBusyError",
    "hold_lock",
    "locked_stage_workdir",
    "OUTPUT_HASHES_KEY",
    "WORK_DIR_NAME",
    "FileCachePolicy",
    "file_sha256",
    "code_sha256",
    "with_output_hashes",
    "stage_workdir",
    "records_dir",
    "remove_stage_workdir",
]

OUTPUT_HASHES_KEY = "output_sha256"
"""Key of the ``{path: sha256}`` mapping in a cached task's returned mapping."""
WORK_DIR_NAME = ".work"
"""Folder (under the pipeline's working directory) of in-stage intermediate files and cache records; git- and
DVC-ignored, removed per stage once the stage's final output is written."""

_PathLike = Union[str, "os.PathLike[str]"]
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: _PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's content (memoised per process on path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
        _FILE_HASHES[memo] = h.hexdigest()
    return _FILE_HASHES[memo]


def code_sha256(paths: Sequence[_PathLike]) -> str:
    """sha256 over the ``*.py`` files of ``paths`` (files or folders, recursively), with their relative names."""
    h = hashlib.sha256()
    for root in paths:
        r = Path(root)
        files = [r] if r.is_file() else sorted(r.rglob("*.py"))
        for f in files:
            h.update((f.name if f == r else f.relative_to(r).as_posix()).encode())
            h.update(file_sha256(f).encode())
    return h.hexdigest()


def _plain(value: Any, where: str) -> Any:
    """``value`` as canonical JSON-able data; anything else (tensors, arrays, objects) is an error."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, BaseModel):  # a typed parameter section: its canonical JSON form
        return _plain(value.model_dump(mode="json"), where)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"FileCachePolicy: parameter {where} of type {type(value).__name__} is not a plain value; "
        "pass files by path (their content is hashed) instead of tensors or objects"
    )


def with_output_hashes(result: Mapping[str, Any], *paths: _PathLike) -> dict[str, Any]:
    """``result`` plus ``{OUTPUT_HASHES_KEY: {path: sha256}}`` for the output files ``paths`` (call after writing)."""
    return {**result, OUTPUT_HASHES_KEY: {os.fspath(p): file_sha256(p) for p in paths}}


def _outputs_valid(result: Any) -> bool:
    """Whether every output file recorded in a cached ``result`` still exists with the recorded content."""
    if not isinstance(result, Mapping):
        return True
    for path, digest in dict(result.get(OUTPUT_HASHES_KEY) or {}).items():
        if not Path(path).is_file() or file_sha256(path) != digest:
            return False
    return True


PLAIN_JSON = JSONSerializer(object_encoder=None, object_decoder=None)
"""Result serializer of the cached tasks: the standard library's JSON with no object hooks (nothing is imported or
constructed on load)."""
_PLAIN_JSON_DUMP = PLAIN_JSON.model_dump(mode="json")


@dataclass
class FileCachePolicy(CachePolicy):
    """Cache key from task identity + source (+ ``code_paths``), plain parameters and input-file content hashes.

    ``input_files``: names of parameters holding input file paths (their content is hashed; the path string is left
    out of the key, so a moved work area still hits). ``exclude``: parameters left out of the key entirely.
    ``code_paths``: extra Python files / folders whose content enters the key (the library code a task runs, so
    that a stale record is never served after a code change DVC would rerun the stage for).
    """

    input_files: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    code_paths: tuple[str, ...] = ()
    max_generations: int = 16
    _code_memo: dict[str, str] = field(default_factory=dict, repr=False)

    def base_key(self, task: Any, inputs: Mapping[str, Any]) -> str:
        """The key before output validation (a hex sha256)."""
        fn = task.fn
        src = inspect.getsource(fn)
        memo = "|".join(self.code_paths)
        if memo not in self._code_memo:
            self._code_memo[memo] = code_sha256(self.code_paths) if self.code_paths else ""
        missing = [n for n in self.input_files if n not in inputs]
        if missing:
            raise KeyError(f"FileCachePolicy: task {task.name!r} has no parameter(s) {missing}")
        blob = {
            "task": task.name,
            "fn": f"{fn.__module__}.{fn.__qualname__}",
            "source": hashlib.sha256(src.encode()).hexdigest(),
            "code": self._code_memo[memo],
            "params": {k: _plain(v, k) for k, v in sorted(inputs.items()) if k not in self.exclude and k not in self.input_files},
            "files": {n: file_sha256(inputs[n]) for n in self.input_files},
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        """First key generation that has no record yet, or a record that is plain JSON (written with
        :data:`PLAIN_JSON`) whose output files are intact. Records are read as bytes and parsed here, never handed to
        Prefect's deserialisers first: a planted record (a pickle, a JSON record naming another serializer or
        decoder) is a miss and is never loaded."""
        base = self.base_key(task_ctx.task, inputs)
        store = task_ctx.result_store
        for gen in range(self.max_generations):
            key = base if gen == 0 else f"{base}-{gen}"
            raw = _record_bytes(store, key)
            if raw is None:
                return key
            result = trusted_record_result(raw)
            if result is not None and _outputs_valid(result):
                return key
        return f"{base}-{self.max_generations}"


def _record_bytes(store: Any, key: str) -> bytes | None:
    """The raw record ``key`` of a result store on a local folder (None: no record, or storage we cannot read)."""
    base = getattr(getattr(store, "result_storage", None), "basepath", None)
    if store is None or base is None:
        return None
    path = Path(str(base)).expanduser() / key
    return path.read_bytes() if path.is_file() else None


def trusted_record_result(raw: bytes) -> dict[str, Any] | None:
    """The result mapping of a record written with :data:`PLAIN_JSON`, or None for anything else (no code runs)."""
    try:
        doc = json.loads(raw)
        ser = doc["metadata"]["serializer"]
        payload = doc["result"]
    except (ValueError, KeyError, TypeError):
        return None
    if ser != _PLAIN_JSON_DUMP or not isinstance(payload, str):
        return None
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class StageBusyError(RuntimeError):
    """Another run (process) holds the lock of a stage's work folder."""


@contextmanager
def hold_lock(lock_path: _PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on ``lock_path`` (created if missing) for the ``with`` block;
    :class:`StageBusyError` naming ``what`` if another process holds it. The lock dies with its process."""
    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StageBusyError(f"another run holds {what} ({path}); wait for it to finish (or stop it), then rerun") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # while still held: a later run starts from a fresh lock file
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def locked_stage_workdir(workdir: _PathLike, stage: str) -> Iterator[Path]:
    """:func:`stage_workdir` held under an exclusive lock (``<workdir>/.work/<stage>.lock``) for the ``with`` block:
    two runs of one stage in one working directory never share (or delete) each other's intermediate files."""
    root = Path(workdir) / WORK_DIR_NAME
    with hold_lock(root / f"{stage}.lock", f"the work folder of stage {stage!r}"):
        yield stage_workdir(workdir, stage)
    try:
        root.rmdir()  # only if the stage removed its folder and no other stage is working
    except OSError:
        pass


def stage_workdir(workdir: _PathLike, stage: str) -> Path:
    """``<workdir>/.work/<stage>``: a stage's intermediate files (kept when the stage is killed, for resumption)."""
    path = Path(workdir) / WORK_DIR_NAME / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def records_dir(stage_dir: _PathLike) -> Path:
    """Result storage (Prefect cache records) of one stage's tasks, inside its work folder."""
    return Path(stage_dir).resolve() / "records"


def remove_stage_workdir(stage_dir: _PathLike) -> None:
    """Delete a stage's work folder (call only after the stage's final output was written atomically)."""
    shutil.rmtree(stage_dir, ignore_errors=True)
    parent = Path(stage_dir).parent
    if parent.name == WORK_DIR_NAME:
        try:
            parent.rmdir()
        except OSError:
            pass
