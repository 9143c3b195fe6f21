"""Labels of a scan design's configurations, formatted on access."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

from torch import Tensor

__all__ = ["ScanLabels"]


class ScanLabels(Sequence[str]):
    """The M configuration labels ``ip<base>:<param>=<offset>,...`` of a design, formatted on access (formatting all
    9604 labels of the last example took 60 % of the design time, and most runs never read them)."""

    def __init__(self, parameters: Sequence[str], base_index: Tensor, offsets: Tensor) -> None:
        self._params = tuple(parameters)
        self._base = base_index.detach().cpu()
        self._offsets = offsets.detach().cpu()

    def __len__(self) -> int:
        return len(self._base)

    def _label(self, i: int) -> str:
        row = self._offsets[i].tolist()
        return f"ip{int(self._base[i])}:" + ",".join(f"{n}={v:+.4g}" for n, v in zip(self._params, row))

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...

    def __getitem__(self, i: int | slice) -> str | tuple[str, ...]:
        if isinstance(i, slice):
            return tuple(self._label(j) for j in range(*i.indices(len(self))))
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"label index {i} out of range for {n} configurations")
        return self._label(i % n)

    def __repr__(self) -> str:
        return f"ScanLabels({len(self)} configurations)"
