"""Base of every parameter model: strict types, frozen, unknown keys forbidden (pydantic v2)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ParamsModel", "PosFloat", "ParamsError"]

PosFloat = Annotated[float, Field(gt=0)]
"""A float > 0 (list items of lengths in metres)."""


class ParamsError(ValueError):
    """Invalid parameters; the message names every bad key path and its allowed values."""


class ParamsModel(BaseModel):
    """Strict (no type coercion), frozen (hashable, safe to share between tasks), no unknown keys, finite numbers
    only (NaN and infinities are errors)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
