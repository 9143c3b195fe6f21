"""Small-walls passive layouts: one to four buried walls of stone in soil; target = the (z, x, y) wall mask.

Each wall is a random walk on the (x, y) voxel grid, drawn at once for all steps (no loop over voxels): a start voxel
and a direction (+-x, +-y) uniformly at random; at every step the direction turns by +-90 degrees with probability
1 / ``turn_k``; the walk stops at the first step s >= ``min_length`` - 1 whose draw falls below 1 / ``stop_k``
(``min_length`` to n_x n_y steps); a walk reaching the edge of the grid is reflected back into it. The wall stands on
the bottom of the passive block and rises to a height of h layers, h uniform in {``min_height`` ... n_z}
(``min_height`` clipped to n_z). Wall voxels have X0 ``x0_wall``, the rest ``x0_soil``.

Defaults: soil = SiO2 / soft tissue / water / air by volume 0.44 / 0.6 / 0.25 / 0.25 and stone = SiO2, Al2O3, Fe2O3,
MgO, CaO, Na2O, K2O (56 / 17 / 11.2 / 4.0 / 4.2 / 3.0 / 4.6 by weight), X0 as evaluated by TomOpt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ...optimisation.data.passives import AbsPassiveGenerator, PassiveData
from ...runtime import DEFAULT_DTYPE
from ...volume.builders import rad_length_func_from_cube

if TYPE_CHECKING:
    from ...volume.volume import Volume

__all__ = ["SmallWallsPassiveGenerator"]

_STEPS = torch.tensor([[1, 0], [0, 1], [-1, 0], [0, -1]])  # +x, +y, -x, -y


def _reflect(pos: Tensor, n: int) -> Tensor:
    """Fold integer positions into [0, n - 1] by reflection at the edges (a unit step stays a unit step)."""
    if n == 1:
        return torch.zeros_like(pos)
    period = 2 * (n - 1)
    m = pos.remainder(period)
    return torch.where(m < n, m, period - m)


class SmallWallsPassiveGenerator(AbsPassiveGenerator):
    """Random buried walls (module docstring); target = (n_z, n_x, n_y) float wall mask, z index 0 = bottom.

    Args:
        volume: the volume (e.g. :func:`~.volume.get_small_walls_volume`).
        x0_soil, x0_wall: X0 of soil and of the walls [m].
        stop_k, turn_k: inverse per-step probabilities of stopping and of turning.
        min_length: least number of steps of a wall; min_height: least height of a wall in layers.
        generator, seed, device: see :class:`~tomopt_lib.optimisation.data.passives.AbsPassiveGenerator`.
    """

    def __init__(
        self,
        volume: Volume,
        x0_soil: float = 0.2624248696430881,
        x0_wall: float = 0.08022522418503258,
        stop_k: int = 10,
        turn_k: int = 5,
        min_length: int = 4,
        min_height: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(volume, ["air"], **kwargs)
        for name, v in (("stop_k", stop_k), ("turn_k", turn_k), ("min_length", min_length), ("min_height", min_height)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name, x in (("x0_soil", x0_soil), ("x0_wall", x0_wall)):
            if not float(x) > 0:
                raise ValueError(f"{name} must be a radiation length > 0 m, got {x!r}")
        self.x0_soil, self.x0_wall = float(x0_soil), float(x0_wall)
        self.stop_k, self.turn_k = int(stop_k), int(turn_k)
        self.min_length, self.min_height = int(min_length), min(int(min_height), self.n_z)
        self.max_walls = 4

    def _walls_mask(self) -> Tensor:
        """(n_z, n_x, n_y) bool mask of 1 ... 4 random walls."""
        n_x, n_y = self.n_xy
        n_z = self.n_z
        n_w = 1 + int(self._randint(self.max_walls))
        n_steps = n_x * n_y
        start = torch.stack([self._randint(n_x, n_w), self._randint(n_y, n_w)], dim=1)  # (W, 2)
        d0 = self._randint(4, n_w)
        turn = (self._uniform(n_w * n_steps) < 1.0 / self.turn_k).reshape(n_w, n_steps)
        sign = torch.where(self._uniform(n_w * n_steps) < 0.5, -1, 1).reshape(n_w, n_steps)
        direction = (d0[:, None] + (turn * sign).cumsum(1)).remainder(4)
        pos = start[:, None, :] + _STEPS[direction].cumsum(1) - _STEPS[direction[:, :1]].squeeze(1)[:, None, :]
        pos = torch.stack([_reflect(pos[..., 0], n_x), _reflect(pos[..., 1], n_y)], dim=-1)  # (W, S, 2)
        stop = (self._uniform(n_w * n_steps) < 1.0 / self.stop_k).reshape(n_w, n_steps)
        stop[:, : self.min_length - 1] = False
        stop[:, -1] = True
        length = stop.float().argmax(1) + 1  # steps of each wall, >= min_length (or the whole grid)
        used = torch.arange(n_steps)[None, :] < length[:, None]  # (W, S)
        heights = self.min_height + self._randint(n_z - self.min_height + 1, n_w)  # (W,) layers
        flat = pos[..., 0] * n_y + pos[..., 1]
        foot = torch.zeros(n_w, n_x * n_y, dtype=torch.long).scatter_add(1, flat, used.long()) > 0
        layer_ok = torch.arange(n_z)[None, :] < heights[:, None]  # (W, Z)
        mask = (layer_ok[:, :, None] & foot[:, None, :]).any(0)
        return mask.reshape(n_z, n_x, n_y)

    def _generate(self) -> PassiveData:
        mask = self._walls_mask()
        cube = torch.where(mask, torch.tensor(self.x0_wall, dtype=torch.float64), torch.tensor(self.x0_soil, dtype=torch.float64))
        func = rad_length_func_from_cube(cube.to(DEFAULT_DTYPE), z_bottom=self.z_range[0], size=self.size)
        return func, mask.to(device=self.device, dtype=DEFAULT_DTYPE)
