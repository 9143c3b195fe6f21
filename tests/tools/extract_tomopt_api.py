"""Derive TomOpt's documented module paths and public names from the TomOpt API text in the shared seeds folder.

The API text (a PDF-to-text conversion of TomOpt's Sphinx documentation) belongs to TomOpt's authors and is not
copied into this repository; only the facts derived from it are: which modules it documents and which classes and
module-level functions each module defines. They are written to ``tests/data/tomopt_api_names.json``, which
``tests/test_tomopt_api_docs.py`` imports name by name from ``tomopt_lib`` (and checks for staleness whenever the seeds
folder is present).

How the text is read:

* only the package-documentation chapter counts (from "PACKAGE DOCUMENTATION" to "PYTHON MODULE INDEX"); inline
  markup (``**``, ``*``, backticks, HTML tags, escaped underscores) is dropped first;
* a module is documented by a heading ``tomopt.<path> module``; the headings must agree with the Python Module Index
  at the end of the text (a cross-check of the extraction);
* a class is a ``class tomopt.<module>.<Name>`` signature, a function a line starting with ``tomopt.<module>.<name>(``,
  where ``<module>`` is the longest documented module prefix of the dotted path;
* a signature whose name is not an ASCII identifier is a conversion artefact (one class title is rendered in another
  script): it is resolved through the general index, which must list exactly one class of that module, starting with
  the same letter, that no signature names. Anything else is an error, so that a changed text cannot go unnoticed.

Usage: ``python tests/tools/extract_tomopt_api.py [--doc PATH] [--out PATH] [--check]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

DOC_NAME = "tomopt-api-docs.txt"
"""File name of the TomOpt API text in the seeds folder."""
SEEDS_ENV = "TOMOPT_SEEDS_DIR"
"""Environment variable overriding the seeds folder."""
REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_PATH = REPO_ROOT / "tests" / "data" / "tomopt_api_names.json"
"""Where the derived list is kept."""

_MODULE_HEAD = re.compile(r"\b(tomopt(?:\.\w+)*)\s+module\b")
_PACKAGE_HEAD = re.compile(r"\b(tomopt(?:\.\w+)*)\s+package\b")
_MODULE_INDEX_ENTRY = re.compile(r"^\s*(tomopt(?:\.\w+)*)\s*,", re.M)
_CLASS_SIG = re.compile(r"\bclass\s+(tomopt(?:\.\w+)+)\.([^\s(.,]+)")
_FUNC_SIG = re.compile(r"^\s*(tomopt(?:\.\w+)+)\s*\(", re.M)
_INDEX_CLASS = re.compile(r"\b([A-Za-z_]\w*)\s*\(\s*class\s+in\s+(tomopt(?:\.\w+)+)\s*\)")


def seeds_dir() -> Path:
    """The shared seeds folder: ``$TOMOPT_SEEDS_DIR``, else ``<repo>/../shared/seeds``."""
    env = os.environ.get(SEEDS_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "seeds"


def _clean(text: str) -> str:
    """Drop inline markup so that signatures and headings read as plain dotted paths."""
    text = text.replace("\\_", "_").replace("\\*", "*")
    text = re.sub(r"</?[A-Za-z][^>]*>", " ", text)
    return re.sub(r"[*`]+", " ", text)


def _section(text: str, start: str, end: str) -> str:
    """Text from the heading ``start`` up to the next heading line reading ``end``."""
    i = text.find(start)
    if i < 0:
        raise ValueError(f"API text: heading {start!r} not found")
    i += len(start)
    m = re.compile(rf"^[#\s]*{re.escape(end)}\s*$", re.M).search(text, i)
    if m is None:
        raise ValueError(f"API text: heading {end!r} not found after {start!r}")
    return text[i : m.start()]


def _split(path: str, modules: set[str]) -> tuple[str, str] | None:
    """(module, rest) for the longest documented module prefix of a dotted path, or None."""
    parts = path.split(".")
    for k in range(len(parts) - 1, 0, -1):
        mod = ".".join(parts[:k])
        if mod in modules:
            return mod, ".".join(parts[k:])
    return None


def _is_name(s: str) -> bool:
    return s.isascii() and s.isidentifier()


def _index_classes(index: str) -> dict[str, set[str]]:
    """Classes listed in the general index, by module (line-broken ``to- mopt.`` prefixes repaired)."""
    index = re.sub(r"\bto-\s+mopt\.", "tomopt.", index)
    index = re.sub(r"(?<![\w.])mopt\.", "tomopt.", index)
    out: dict[str, set[str]] = {}
    for name, mod in _INDEX_CLASS.findall(index):
        out.setdefault(mod, set()).add(name)
    return out


def extract(text: str) -> dict[str, Any]:
    """The documented packages, modules and, per module, classes and functions (sorted), plus resolved artefacts."""
    clean = _clean(text)
    body = _section(clean, "PACKAGE DOCUMENTATION", "PYTHON MODULE INDEX")
    mod_index = _section(clean, "PYTHON MODULE INDEX", "INDEX")
    gen_index = clean[clean.find("PYTHON MODULE INDEX") :]
    modules = set(_MODULE_HEAD.findall(body))
    listed = set(_MODULE_INDEX_ENTRY.findall(mod_index))
    if not modules or modules != listed:
        raise ValueError(
            f"API text: module headings and the Python Module Index disagree: only headings {sorted(modules - listed)}, "
            f"only index {sorted(listed - modules)}"
        )
    packages = sorted(set(_PACKAGE_HEAD.findall(body)))
    classes: dict[str, set[str]] = {m: set() for m in modules}
    functions: dict[str, set[str]] = {m: set() for m in modules}
    garbled: list[tuple[str, str]] = []
    for mod_path, title in _CLASS_SIG.findall(body):
        split = _split(f"{mod_path}.{title}", modules)
        if split is None:
            raise ValueError(f"API text: class {mod_path}.{title} is not in a documented module")
        mod, _ = split
        if _is_name(title):
            classes[mod].add(title)
        else:
            garbled.append((mod, title))
    for path in _FUNC_SIG.findall(body):
        split = _split(path, modules)
        if split is None or not _is_name(split[1]):
            raise ValueError(f"API text: function signature {path}(...) is not a name in a documented module")
        functions[split[0]].add(split[1])
    resolved: dict[str, str] = {}
    index_cls = _index_classes(gen_index)
    for mod, title in garbled:
        cands = sorted(c for c in index_cls.get(mod, set()) - classes[mod] - functions[mod] if c[0].lower() == title[0].lower())
        if len(cands) != 1:
            raise ValueError(f"API text: cannot resolve the class title {title!r} in {mod}; index candidates {cands}")
        classes[mod].add(cands[0])
        resolved[f"{mod}.{title}"] = cands[0]
    names = {m: {"classes": sorted(classes[m]), "functions": sorted(functions[m])} for m in sorted(modules)}
    n_cls = sum(len(v["classes"]) for v in names.values())
    n_fn = sum(len(v["functions"]) for v in names.values())
    return {
        "source": DOC_NAME,
        "source_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "generated_by": "tests/tools/extract_tomopt_api.py",
        "counts": {"packages": len(packages), "modules": len(modules), "classes": n_cls, "functions": n_fn},
        "packages": packages,
        "modules": names,
        "resolved_titles": resolved,
    }


def extract_file(doc: Path) -> dict[str, Any]:
    """:func:`extract` of the API text at ``doc``."""
    return extract(doc.read_text(encoding="utf-8"))


def dumps(api: dict[str, Any]) -> str:
    """The JSON text as committed (stable formatting)."""
    return json.dumps(api, indent=1, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--doc", type=Path, default=None, help=f"API text (default: <seeds>/{DOC_NAME})")
    parser.add_argument("--out", type=Path, default=OUT_PATH, help="JSON to write / check")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from the API text")
    args = parser.parse_args(argv)
    doc = args.doc if args.doc is not None else seeds_dir() / DOC_NAME
    if not doc.is_file():
        print(f"API text not found: {doc} (set --doc or ${SEEDS_ENV})", file=sys.stderr)
        return 2
    text = dumps(extract_file(doc))
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'STALE, rerun without --check'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    c = json.loads(text)["counts"]
    print(f"wrote {args.out}: {c['modules']} modules, {c['classes']} classes, {c['functions']} functions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
