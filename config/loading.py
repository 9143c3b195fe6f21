"""``params.yaml`` -> ``PipelineParams``; every problem in ONE ``ParamsError`` message.

Each bad key is reported as a dotted path (``irradiate.chunk_size``) with the offending value, the reason and the
allowed range read from the models' JSON schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .base import ParamsError
from .pipeline import PipelineParams

__all__ = ["load_params", "parse_params"]


# ------------------------------------------------------------------------------------------------ error formatting
def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
    return schema


def _describe(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    schema = _resolve(schema, defs)
    if "anyOf" in schema:
        return " or ".join(_describe(s, defs) for s in schema["anyOf"])
    if "enum" in schema or "const" in schema:
        vals = schema.get("enum", [schema.get("const")])
        return "one of " + ", ".join(repr(v) for v in vals)
    typ = schema.get("type", "value")
    if typ == "object" and "properties" in schema:
        return "a mapping with keys " + ", ".join(schema["properties"])
    if typ == "array":
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        n = f"{lo}" if lo is not None and lo == hi else f"{lo or 0}..{hi if hi is not None else 'n'}"
        return f"a list of {n} items, each {_describe(schema.get('items', {}), defs)}"
    name = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "true/false", "null": "null"}.get(
        typ, typ
    )
    bounds = []
    for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in schema:
            val = schema[key]
            bounds.append(f"{op} {val}" if isinstance(val, int) else f"{op} {val:g}")
    return name + (" " + " and ".join(bounds) if bounds else "")


def _allowed(loc: tuple[str | int, ...], err_type: str) -> str:
    schema = PipelineParams.model_json_schema()
    defs = schema.get("$defs", {})
    node: dict[str, Any] | None = schema
    parent = None
    for part in loc:
        node = _resolve(node, defs) if node else None
        if node and "anyOf" in node:
            node = next((_resolve(s, defs) for s in node["anyOf"] if s.get("type") != "null"), node)
        parent = node
        if node is None:
            break
        if isinstance(part, int):
            node = node.get("items")
        else:
            node = node.get("properties", {}).get(part)
    if err_type == "extra_forbidden" and parent is not None:
        return "allowed keys: " + ", ".join(parent.get("properties", {}))
    return "" if node is None else "allowed: " + _describe(node, defs)


def _lookup(data: Any, loc: tuple[str | int, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return "<missing>"
    return data


def _format_error(err: ValidationError, data: Any, source: str) -> str:
    lines = [f"invalid parameters in {source} ({err.error_count()} problem{'s' if err.error_count() > 1 else ''}):"]
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:  # model-level validator: the message names the key itself
            lines.append(f"  {msg}")
            continue
        value = _lookup(data, loc)
        if e["type"] == "value_error":  # custom validators: the message already says what is allowed
            lines.append(f"  {msg}" if msg.startswith(path + ".") else f"  {path} = {value!r}: {msg}")
            continue
        allowed = _allowed(loc, e["type"])
        shown = "" if e["type"] == "extra_forbidden" else f" = {value!r}"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "finite_number":
            msg = "must be finite"
        lines.append(f"  {path}{shown}: {msg}" + (f" ({allowed})" if allowed else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ loading
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e4`` as a float (YAML 1.2 behaviour, as DVC does) and refuses duplicate keys
    (PyYAML keeps the last one silently; DVC rejects the file)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (line {key_node.start_mark.line + 1}; first given on line {first_line[key]})",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_params(data: Any, source: str = "params") -> PipelineParams:
    """Validate a mapping (e.g. parsed YAML); ``ParamsError`` with one message on any problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"invalid parameters in {source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return PipelineParams.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_format_error(err, data, source)) from None


def load_params(path: str | Path = "params.yaml") -> PipelineParams:
    """Read and validate a YAML parameter file; ``ParamsError`` if it is missing, malformed or invalid."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ParamsError(f"cannot read parameter file {p}: {err.strerror or err}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        raise ParamsError(f"invalid YAML in {p}: {err}") from None
    return parse_params(data, source=str(p))
