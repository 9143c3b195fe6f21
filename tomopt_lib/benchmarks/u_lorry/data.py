"""U-lorry passive layouts: a lorry with random cargo that may hide a uranium block.

Voxel map (n_z layers of edge ``size`` [m], z index 0 = bottom):

* the bottom layer is the lorry bed (``x0_lorry``, iron);
* the cargo fills layers 1 ... n_c - 1, n_c = max(2, round(fill_frac n_z)): every voxel independently and uniformly
  one of ``bkg_materials``; air above;
* with probability ``u_prob`` a uranium cuboid of exactly ``u_volume`` m^3 (n_u = u_volume / size^3 voxels) replaces
  the voxels it covers: its shape (a, b, c) voxels, a b c = n_u, is drawn uniformly among the factorisations that fit
  above the bed, its position uniformly among those that fit.

Target: 1 if the block is present, else 0, as a (1,) float tensor (``VolumeClassLoss`` with ``x02id={0: 0, 1: 1}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ...core import X0
from ...optimisation.data.passives import AbsPassiveGenerator, PassiveData
from ...runtime import DEFAULT_DTYPE
from ...volume.builders import rad_length_func_from_cube

if TYPE_CHECKING:
    from ...volume.volume import Volume

__all__ = ["ULorryPassiveGenerator"]


class ULorryPassiveGenerator(AbsPassiveGenerator):
    """Random lorry loads with (probability ``u_prob``) or without a uranium block (module docstring).

    Args:
        volume: the volume whose passive block is the lorry (>= 2 layers).
        u_volume: volume of the uranium block [m^3], a whole number of voxels.
        u_prob: probability that a layout holds the block, in [0, 1].
        fill_frac: fraction of the passive height up to which the cargo reaches, in (0, 1].
        x0_lorry: X0 of the lorry bed [m] (default: iron).
        bkg_materials: cargo materials (keys of ``core.X0``).
        generator, seed, device: see :class:`~tomopt_lib.optimisation.data.passives.AbsPassiveGenerator`.
    """

    def __init__(
        self,
        volume: Volume,
        u_volume: float,
        u_prob: float = 0.5,
        fill_frac: float = 0.8,
        x0_lorry: float = X0["iron"],
        bkg_materials: Sequence[str] = ("air", "iron"),
        **kwargs: Any,
    ) -> None:
        super().__init__(volume, [*bkg_materials, "uranium"], **kwargs)
        self.bkg_materials = list(bkg_materials)
        if not self.bkg_materials:
            raise ValueError("bkg_materials must name at least one material")
        if not 0.0 <= float(u_prob) <= 1.0:
            raise ValueError(f"u_prob must be a probability in [0, 1], got {u_prob!r}")
        if not 0.0 < float(fill_frac) <= 1.0:
            raise ValueError(f"fill_frac must be in (0, 1], got {fill_frac!r}")
        if not float(x0_lorry) > 0:
            raise ValueError(f"x0_lorry must be a radiation length > 0 m, got {x0_lorry!r}")
        if self.n_z < 2:
            raise ValueError(f"the lorry needs at least 2 passive layers (bed + cargo), got {self.n_z}")
        self.u_prob, self.fill_frac, self.x0_lorry = float(u_prob), float(fill_frac), float(x0_lorry)
        n_u = float(u_volume) / self.size**3
        self.n_u_voxels = int(round(n_u))
        if self.n_u_voxels < 1 or abs(n_u - self.n_u_voxels) > 1e-6 * max(1.0, n_u):
            raise ValueError(f"u_volume={u_volume!r} m^3 must be a whole number (>= 1) of voxels of {self.size**3:.4g} m^3")
        self.u_volume = self.n_u_voxels * self.size**3
        n_x, n_y = self.n_xy
        self.n_cargo = max(2, int(round(self.fill_frac * self.n_z)))
        self._shapes = torch.tensor(
            [
                (a, b, self.n_u_voxels // (a * b))
                for a in range(1, n_x + 1)
                for b in range(1, n_y + 1)
                if self.n_u_voxels % (a * b) == 0 and self.n_u_voxels // (a * b) <= self.n_z - 1
            ],
            dtype=torch.long,
        ).reshape(-1, 3)
        if len(self._shapes) == 0:
            raise ValueError(f"no cuboid of {self.n_u_voxels} voxels fits in the lorry above its bed")
        self._bkg_x0s = torch.tensor([X0[m] for m in self.bkg_materials], dtype=torch.float64)

    def _generate(self) -> PassiveData:
        n_x, n_y = self.n_xy
        n_z = self.n_z
        idx = self._randint(len(self.bkg_materials), n_z * n_x * n_y).reshape(n_z, n_x, n_y)
        cube = self._bkg_x0s[idx]
        cube[0] = self.x0_lorry
        cube[self.n_cargo :] = X0["air"]
        present = bool(self._uniform(1)[0] < self.u_prob)
        if present:
            a, b, c = self._shapes[int(self._randint(len(self._shapes)))].tolist()
            lo = (self._uniform(3) * torch.tensor([n_x - a + 1, n_y - b + 1, n_z - c], dtype=torch.float64)).long()
            x, y, z = lo.tolist()
            cube[1 + z : 1 + z + c, x : x + a, y : y + b] = X0["uranium"]
        func = rad_length_func_from_cube(cube.to(DEFAULT_DTYPE), z_bottom=self.z_range[0], size=self.size)
        return func, self._target(1.0 if present else 0.0)
