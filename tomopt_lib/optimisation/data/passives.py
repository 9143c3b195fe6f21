"""Passive-volume layouts: random generators and the ``PassiveYielder`` dataset.

A layout is a ``RadLengthFunc`` ``f(*, z, lw, size) -> (n_x, n_y)`` tensor of X0 [m] for the passive layer whose *top*
is at ``z`` [m], with footprint ``lw`` [m] and voxel edge ``size`` [m]. Generators return ``(f, target)`` pairs; the
target is a (1,) tensor (e.g. the block X0 [m]) or ``None``.

Randomness uses a ``torch.Generator`` (``generator=`` or ``seed=``); with neither, torch's global generator is used.
Every layout is a fixed function: calling it twice for the same layer gives the same map.
"""

from __future__ import annotations

import itertools
from abc import ABCMeta, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from ...checks import check_materials
from ...core import X0
from ...runtime import DEFAULT_DTYPE, DeviceLike, make_generator, resolve_device
from ...volume.passive_layer import RadLengthFunc

if TYPE_CHECKING:
    from ...volume.volume import Volume

__all__ = [
    "RadLengthFunc",
    "check_materials",
    "AbsPassiveGenerator",
    "AbsBlockPassiveGenerator",
    "RandomBlockPassiveGenerator",
    "BlockPresentPassiveGenerator",
    "VoxelPassiveGenerator",
    "PassiveYielder",
]

PassiveData = tuple[RadLengthFunc, Tensor | None]
"""A passive layout and its optional target."""

_TOL = 1e-6  # [m] geometric tolerance (float32 positions)


def _grid(lw: Tensor, size: float) -> tuple[int, int]:
    n = torch.round(torch.as_tensor(lw).detach().cpu().double().reshape(-1) / size).long().tolist()
    return int(n[0]), int(n[1])


class AbsPassiveGenerator(metaclass=ABCMeta):
    """Base class: holds the passive geometry, the allowed materials and the random generator.

    Args:
        volume: anything with ``lw`` (2,) [m], ``passive_size`` [m] and ``get_passive_z_range()`` -> (bottom, top) [m].
        materials: allowed material names (keys of ``X0``); ``None`` = all, in table order.
        generator: ``torch.Generator`` for all random draws (its device is used for them).
        seed: alternative to ``generator``: seed of a new CPU generator.
        device: device of the returned maps and targets (default: that of ``volume.lw``).
    """

    def __init__(
        self,
        volume: Volume,
        materials: Sequence[str] | None = None,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        device: DeviceLike = None,
    ) -> None:
        if generator is not None and seed is not None:
            raise ValueError("give at most one of generator or seed")
        self.volume = volume
        self.materials = check_materials(materials)
        self.generator = generator if generator is not None else (make_generator(seed) if seed is not None else None)
        lw = torch.as_tensor(volume.lw).detach()
        self.device = resolve_device(device) if device is not None else lw.device
        self.lw = lw.to(device=self.device, dtype=DEFAULT_DTYPE)
        self.size = float(volume.passive_size)
        bottom, top = (float(torch.as_tensor(v).reshape(-1)[0]) for v in volume.get_passive_z_range())
        self.z_range = (bottom, top)
        self.n_xy = _grid(self.lw, self.size)
        self.n_z = int(round((top - bottom) / self.size))
        self._x0s = torch.tensor([X0[m] for m in self.materials], dtype=torch.float64)

    # ------------------------------------------------------------------ random helpers (on the generator's device)
    @property
    def _rng_device(self) -> torch.device:
        return self.generator.device if self.generator is not None else torch.device("cpu")

    def _uniform(self, n: int) -> Tensor:
        return torch.rand(n, generator=self.generator, dtype=torch.float64, device=self._rng_device).cpu()

    def _randint(self, high: int, n: int = 1) -> Tensor:
        return torch.randint(high, (n,), generator=self.generator, device=self._rng_device).cpu()

    def _randperm(self, n: int) -> Tensor:
        return torch.randperm(n, generator=self.generator, device=self._rng_device).cpu()

    def _target(self, x0: float) -> Tensor:
        return torch.tensor([x0], dtype=DEFAULT_DTYPE, device=self.device)

    # ------------------------------------------------------------------ API
    @abstractmethod
    def _generate(self) -> PassiveData:
        """A new random ``(layout function, target or None)``."""

    def generate(self) -> RadLengthFunc:
        """A new random layout function (no target)."""
        return self._generate()[0]

    def get_data(self) -> PassiveData:
        """A new random ``(layout function, target)``."""
        return self._generate()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_xyz={(*self.n_xy, self.n_z)}, size={self.size}, materials={self.materials})"


class AbsBlockPassiveGenerator(AbsPassiveGenerator):
    """Layouts with one cuboid block inside a uniform background.

    A voxel belongs to the block when its centre lies in [low, high) of the block along every axis, so a block whose
    sides are multiples of the voxel size covers exactly (l_x / size)(l_y / size)(l_z / size) voxels.

    Args:
        block_size: fixed (l_x, l_y, l_z) [m], randomly permuted among the orientations that fit in the passive block;
            ``None`` = random size, each side uniform in [voxel size, extent] (extent / 2 if ``block_size_max_half``).
        block_size_max_half: halve the maximum random size.
    """

    def __init__(
        self,
        volume: Volume,
        block_size: Sequence[float] | None = None,
        block_size_max_half: bool | None = None,
        materials: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(volume, materials, **kwargs)
        lw = self.lw.detach().cpu().double().tolist()
        self.extent = torch.tensor([lw[0], lw[1], self.z_range[1] - self.z_range[0]], dtype=torch.float64)
        self.block_size_max_half = bool(block_size_max_half)
        self.block_size: Tensor | None = None
        self._orientations: Tensor | None = None
        if block_size is not None:
            bs = torch.as_tensor(block_size, dtype=torch.float64).reshape(-1)
            if bs.numel() != 3 or not bool(torch.isfinite(bs).all()) or bool((bs <= 0).any()):
                raise ValueError(f"block_size must be three finite lengths > 0 m, got {bs.tolist()}")
            perms = torch.tensor(list(itertools.permutations(range(3))))
            fits = (bs[perms] <= self.extent + _TOL).all(dim=1)
            if not bool(fits.any()):
                raise ValueError(f"block_size {bs.tolist()} does not fit in the passive block {self.extent.tolist()} [m]")
            self.block_size, self._orientations = bs, perms[fits]

    def _get_block_coords(self) -> tuple[Tensor, Tensor]:
        """(low, high) (3,) float64 corners [m] of a new random block, fully inside the passive block."""
        if self.block_size is not None and self._orientations is not None:
            perm = self._orientations[int(self._randint(len(self._orientations)))]
            size = torch.minimum(self.block_size[perm], self.extent)
        else:
            max_size = self.extent / 2 if self.block_size_max_half else self.extent.clone()
            max_size = torch.maximum(max_size, torch.full_like(max_size, self.size))
            size = self.size + (max_size - self.size) * self._uniform(3)
            size = torch.minimum(size, self.extent)
        origin = torch.tensor([0.0, 0.0, self.z_range[0]], dtype=torch.float64)
        low = origin + (self.extent - size) * self._uniform(3)
        return low, low + size

    def _block_layout(self, low: Tensor, high: Tensor, base_x0: float, block_x0: float) -> RadLengthFunc:
        """Layout function: ``block_x0`` in voxels whose centres lie in [low, high), ``base_x0`` elsewhere."""
        low_l, high_l = low.tolist(), high.tolist()
        device = self.device

        def layout(*, z: Tensor | float, lw: Tensor, size: float) -> Tensor:
            n_x, n_y = _grid(lw, size)
            z_c = float(torch.as_tensor(z).reshape(-1)[0]) - size / 2
            xc = (torch.arange(n_x, dtype=torch.float64) + 0.5) * size
            yc = (torch.arange(n_y, dtype=torch.float64) + 0.5) * size
            in_x = (xc >= low_l[0]) & (xc < high_l[0])
            in_y = (yc >= low_l[1]) & (yc < high_l[1])
            in_z = low_l[2] <= z_c < high_l[2]
            mask = in_x[:, None] & in_y[None, :] & in_z
            out = torch.where(mask, torch.tensor(block_x0, dtype=torch.float64), torch.tensor(base_x0, dtype=torch.float64))
            dev = lw.device if isinstance(lw, Tensor) else device
            return out.to(device=dev, dtype=DEFAULT_DTYPE)

        return layout


class RandomBlockPassiveGenerator(AbsBlockPassiveGenerator):
    """A block of a random material in a random background material; target = block X0 [m], (1,) tensor.

    Args:
        sort_x0: if True the block never has a larger X0 than the background (materials swapped if needed).
        enforce_diff_mat: if True block and background materials always differ (needs >= 2 materials).
    """

    def __init__(
        self,
        volume: Volume,
        block_size: Sequence[float] | None = None,
        sort_x0: bool = False,
        enforce_diff_mat: bool = True,
        block_size_max_half: bool | None = None,
        materials: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(volume, block_size=block_size, block_size_max_half=block_size_max_half, materials=materials, **kwargs)
        self.sort_x0, self.enforce_diff_mat = bool(sort_x0), bool(enforce_diff_mat)
        if self.enforce_diff_mat and len(self.materials) < 2:
            raise ValueError(f"enforce_diff_mat=True needs at least 2 materials, got {self.materials}")

    def _generate(self) -> PassiveData:
        n = len(self.materials)
        idx = self._randperm(n)[:2] if self.enforce_diff_mat else self._randint(n, 2)
        base_x0, block_x0 = (float(self._x0s[i]) for i in idx)
        if self.sort_x0 and block_x0 > base_x0:
            base_x0, block_x0 = block_x0, base_x0
        low, high = self._get_block_coords()
        return self._block_layout(low, high, base_x0, block_x0), self._target(block_x0)


class BlockPresentPassiveGenerator(AbsBlockPassiveGenerator):
    """A block of a random material (possibly the background one) in a background of ``materials[0]``.

    Target = block X0 [m], (1,) tensor.
    """

    def _generate(self) -> PassiveData:
        base_x0 = float(self._x0s[0])
        block_x0 = float(self._x0s[int(self._randint(len(self.materials)))])
        low, high = self._get_block_coords()
        return self._block_layout(low, high, base_x0, block_x0), self._target(block_x0)


class VoxelPassiveGenerator(AbsPassiveGenerator):
    """Every voxel an independent, uniformly chosen material; no target.

    The whole (n_z, n_x, n_y) cube is drawn at generation; the layout function returns the slice of the layer whose
    top is ``z`` (``ValueError`` for a ``z``, ``lw`` or ``size`` that does not match the volume).
    """

    def _generate(self) -> PassiveData:
        n_x, n_y = self.n_xy
        idx = self._randint(len(self.materials), self.n_z * n_x * n_y).reshape(self.n_z, n_x, n_y)
        cube = self._x0s[idx].to(device=self.device, dtype=DEFAULT_DTYPE)  # index 0 = top layer
        top, size0 = self.z_range[1], self.size

        def layout(*, z: Tensor | float, lw: Tensor, size: float) -> Tensor:
            k = (top - float(torch.as_tensor(z).reshape(-1)[0])) / size0
            ki = int(round(k))
            if abs(size - size0) > _TOL or _grid(lw, size) != (n_x, n_y) or abs(k - ki) > 1e-3 or not 0 <= ki < len(cube):
                raise ValueError(f"z={z}, lw={lw}, size={size} do not match a passive layer of the generator's volume")
            out = cube[ki]
            return out.to(lw.device) if isinstance(lw, Tensor) else out

        return layout, None


class PassiveYielder:
    """Iterable of ``(layout function, target or None)`` for one epoch.

    Args:
        passives: a list of layout functions or ``(function, target)`` tuples, or an ``AbsPassiveGenerator``
            (anything with ``get_data()``).
        n_passives: layouts per epoch; required for a generator; for a list, ``None`` = all and a smaller number
            keeps the first ``n_passives`` entries.
        shuffle: shuffle a list on every iteration.
        generator: ``torch.Generator`` for the shuffling (``None`` = torch's global generator).
    """

    def __init__(
        self,
        passives: Sequence[RadLengthFunc | PassiveData] | AbsPassiveGenerator,
        n_passives: int | None = None,
        shuffle: bool = True,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        self.shuffle, self.generator = bool(shuffle), generator
        if n_passives is not None and (isinstance(n_passives, bool) or int(n_passives) != n_passives or n_passives < 0):
            raise ValueError(f"n_passives must be None or an integer >= 0, got {n_passives!r}")
        self._source: AbsPassiveGenerator | None = None
        self._items: list[PassiveData] = []
        if hasattr(passives, "get_data"):
            if n_passives is None:
                raise ValueError("n_passives must be given when passives is a generator")
            self._source = cast(AbsPassiveGenerator, passives)  # duck-typed: anything with get_data
            self.n_passives = int(n_passives)
            return
        for i, p in enumerate(passives):
            if isinstance(p, tuple):
                if len(p) != 2 or not callable(p[0]):
                    raise ValueError(f"passives[{i}] must be a layout function or a (function, target) tuple")
                self._items.append((p[0], p[1]))
            elif callable(p):
                self._items.append((p, None))
            else:
                raise ValueError(f"passives[{i}] must be a layout function or a (function, target) tuple, got {type(p)}")
        if n_passives is None:
            n_passives = len(self._items)
        elif n_passives > len(self._items):
            raise ValueError(f"n_passives={n_passives} exceeds the {len(self._items)} layouts given")
        self.n_passives = int(n_passives)
        self._items = self._items[: self.n_passives]

    @property
    def passives(self) -> list[PassiveData] | AbsPassiveGenerator:
        """The layout list, or the generator."""
        return self._source if self._source is not None else list(self._items)

    def __len__(self) -> int:
        return self.n_passives

    def __iter__(self) -> Iterator[PassiveData]:
        if self._source is not None:
            for _ in range(self.n_passives):
                yield self._source.get_data()
            return
        n = len(self._items)
        dev = self.generator.device if self.generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=self.generator, device=dev).tolist() if self.shuffle else range(n)
        for i in order:
            yield self._items[i]
