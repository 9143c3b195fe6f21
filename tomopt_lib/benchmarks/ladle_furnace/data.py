"""Ladle-furnace passive layouts: a steel ladle holding liquid steel under a layer of slag, air above.

Voxel map of a layout (n_z layers of edge ``size`` [m], z index 0 = bottom; x, y indices over the footprint):

* the ladle (``x0_furnace``, steel): the whole bottom layer and a one-voxel wall all around (x or y index 0 or last);
* inside the walls, from the top of the bottom layer up to the fill height ``fill_z`` [m]: ``fill_material``;
* from ``fill_z`` up to the slag height ``slag_z`` [m]: ``slag_material``; above ``slag_z``: air.

Heights lie on voxel boundaries. Random layouts draw the number of liquid layers k uniformly in {1, ..., n_z - 2}
(``fill_z = z_bottom + (k + 1) size``: 0.6 ... 1.3 m in the ten-layer volume of :mod:`.volume`) and the number of slag
layers uniformly in {1, ..., min(round(max_slag_thickness / size), n_z - 1 - k)} (at least one slag layer; by
default at most 0.2 m, a realistic slag cover, so that the slag's own scattering varies little between layouts).
Target: the fill height ``fill_z`` [m] as a (1,) tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ...core import X0, material_x0
from ...optimisation.data.passives import AbsPassiveGenerator, PassiveData
from ...runtime import DEFAULT_DTYPE
from ...volume.builders import rad_length_func_from_cube

if TYPE_CHECKING:
    from ...volume.volume import Volume

__all__ = ["LadleFurnacePassiveGenerator", "ladle_furnace_cube"]

_TOL = 1e-6


def ladle_furnace_cube(
    *,
    n_zxy: tuple[int, int, int],
    n_fill: int,
    n_slag: int,
    x0_furnace: float,
    x0_fill: float,
    x0_slag: float,
    x0_air: float = X0["air"],
    device: torch.device | str | None = None,
) -> Tensor:
    """(n_z, n_x, n_y) X0 cube [m] (z index 0 = bottom) of a ladle with ``n_fill`` liquid and ``n_slag`` slag layers
    above its one-layer floor (vectorised: layer index compared with the band limits)."""
    n_z, n_x, n_y = n_zxy
    if n_z < 3 or n_x < 3 or n_y < 3:
        raise ValueError(f"the ladle needs at least 3 voxels along every axis, got (z, x, y) = {n_zxy}")
    if not (n_fill >= 0 and n_slag >= 0 and 1 + n_fill + n_slag <= n_z):
        raise ValueError(f"{n_fill} liquid + {n_slag} slag layers do not fit above the floor of {n_z} layers")
    iz = torch.arange(n_z, device=device)[:, None, None]
    ix = torch.arange(n_x, device=device)[None, :, None]
    iy = torch.arange(n_y, device=device)[None, None, :]
    wall = (iz == 0) | (ix == 0) | (ix == n_x - 1) | (iy == 0) | (iy == n_y - 1)
    inner = torch.full((n_z, 1, 1), x0_air, dtype=torch.float64, device=device)
    inner = torch.where(iz <= n_fill, torch.tensor(x0_fill, dtype=torch.float64, device=device), inner)
    inner = torch.where((iz > n_fill) & (iz <= n_fill + n_slag), torch.tensor(x0_slag, dtype=torch.float64, device=device), inner)
    cube = torch.where(wall, torch.tensor(x0_furnace, dtype=torch.float64, device=device), inner.expand(n_z, n_x, n_y))
    return cube.to(DEFAULT_DTYPE)


class LadleFurnacePassiveGenerator(AbsPassiveGenerator):
    """Random ladle-furnace layouts (module docstring); target = fill height [m] (absolute z of the liquid surface).

    Args:
        volume: the volume whose passive block holds the ladle (>= 3 voxels along every axis).
        x0_furnace: X0 of the ladle's floor and walls [m] (default: steel).
        fill_material: name of the liquid (a key of ``core.X0``); slag_material: name of the slag layer.
        max_slag_thickness: largest slag thickness of random layouts [m] (at least one voxel).
        generator, seed, device: see :class:`~tomopt_lib.optimisation.data.passives.AbsPassiveGenerator`.
    """

    def __init__(
        self,
        volume: Volume,
        x0_furnace: float = X0["steel"],
        fill_material: str = "hot liquid steel",
        slag_material: str = "slag",
        *,
        max_slag_thickness: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(volume, [fill_material, slag_material, "air"], **kwargs)
        x0f = float(x0_furnace)
        if not (x0f > 0 and torch.isfinite(torch.tensor(x0f))):
            raise ValueError(f"x0_furnace must be a finite radiation length > 0 m, got {x0_furnace!r}")
        self.x0_furnace = x0f
        self.fill_material, self.slag_material = fill_material, slag_material
        self.x0_fill, self.x0_slag = material_x0(fill_material), material_x0(slag_material)
        self.max_slag_layers = int(round(float(max_slag_thickness) / self.size))
        if self.max_slag_layers < 1:
            raise ValueError(f"max_slag_thickness must be at least one voxel ({self.size} m), got {max_slag_thickness!r}")
        if self.n_z < 3 or min(self.n_xy) < 3:
            raise ValueError(f"the ladle needs at least 3 voxels along every axis, got (x, y, z) = {(*self.n_xy, self.n_z)}")

    @property
    def fill_heights(self) -> Tensor:
        """(n_z - 2,) possible fill heights [m] of random layouts, increasing."""
        k = torch.arange(1, self.n_z - 1, dtype=torch.float64)
        return (self.z_range[0] + (k + 1) * self.size).to(device=self.device, dtype=DEFAULT_DTYPE)

    def _layers_of(self, name: str, z: float, low: int, high: int) -> int:
        """Number of layers from the top of the floor up to height ``z`` [m]; ``ValueError`` unless on a boundary in range."""
        k = (float(z) - self.z_range[0]) / self.size - 1
        ki = int(round(k))
        if abs(k - ki) > 1e-3 or not low <= ki <= high:
            lo, hi = (self.z_range[0] + (v + 1) * self.size for v in (low, high))
            raise ValueError(f"{name}={z!r} m must be a voxel boundary in [{lo:.4g}, {hi:.4g}] m")
        return ki

    def _generate(self, fixed_mat_z: float | None = None, fixed_slag_z: float | None = None) -> PassiveData:
        """A layout and its fill height; ``fixed_mat_z`` / ``fixed_slag_z`` [m] fix the fill / slag height."""
        n_z = self.n_z
        if fixed_mat_z is None:
            n_fill = 1 + int(self._randint(n_z - 2))
        else:
            n_fill = self._layers_of("fixed_mat_z", fixed_mat_z, 1, n_z - 1)
        if fixed_slag_z is None:
            room = min(n_z - 1 - n_fill, self.max_slag_layers)
            n_slag = 1 + int(self._randint(room)) if room > 0 else 0
        else:
            n_slag = self._layers_of("fixed_slag_z", fixed_slag_z, n_fill, n_z - 1) - n_fill
        cube = ladle_furnace_cube(
            n_zxy=(n_z, *self.n_xy),
            n_fill=n_fill,
            n_slag=n_slag,
            x0_furnace=self.x0_furnace,
            x0_fill=self.x0_fill,
            x0_slag=self.x0_slag,
            device=self.device,
        )
        func = rad_length_func_from_cube(cube.cpu(), z_bottom=self.z_range[0], size=self.size)
        return func, self._target(self.z_range[0] + (n_fill + 1) * self.size)

    def get_fixed_data(self, fill_z: float, slag_z: float | None = None) -> PassiveData:
        """The layout with fill height ``fill_z`` [m] (and slag up to ``slag_z`` [m], random if None) and its target."""
        return self._generate(fixed_mat_z=fill_z, fixed_slag_z=slag_z)
