"""``EnergyLossTable``: -dE/dx of a voxel map's materials on a log-momentum grid, and a vectorised muon stepper.

The materials and the stopping-power physics are :mod:`.energy_loss`; this module tabulates them for the X0 values
of a passive layer (the X0 value identifies the material) so that stepping a batch of muons costs a few gathers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor

from ..runtime import DeviceLike, resolve_device
from .energy_loss import (
    _G_CM2_PER_M_PER_KG_M3,
    _MEV_CM2_G_TO_GEV_M_PER_KG_M3,
    _X0_MATCH_RTOL,
    MATERIAL_LOSS,
    STOP_KINETIC_ENERGY,
    _kinetic,
    _momentum,
    stopping_power,
)

__all__ = ["EnergyLossTable"]


@lru_cache(maxsize=4)
def _material_mass_table(p_min: float, p_max: float, n_p: int) -> Tensor:
    """(n_materials, n_p) mass stopping powers [MeV cm^2/g] of ``MATERIAL_LOSS`` on the log grid (a pure function of
    its arguments, memoised: building it costs ~0.1 s and every passive layer load needs it). Treat as read-only."""
    p_grid = torch.exp(torch.linspace(math.log(p_min), math.log(p_max), n_p, dtype=torch.float64))
    return torch.stack([stopping_power(p_grid, n, mass=True) for n in MATERIAL_LOSS])


class EnergyLossTable:
    """-dE/dx [GeV/m] tabulated on a log-momentum grid for the X0 values [m] of a voxel map, and a muon stepper.

    Row 0 is vacuum (X0 = inf: zero loss). Each other row belongs to one distinct finite X0 value of the map, and is:

    * the material of ``core.X0`` whose X0 matches within relative 1e-3 (the first in ``core.X0`` order on ties);
    * otherwise an interpolation between the two known materials whose X0 bracket it (sorted by X0): ln(dE/dx) is
      linear in ln X0 at every momentum (a power law in X0 between the neighbours), clamped to the nearest end
      material (uranium below 3.166e-3 m, air above 303.9 m).

    With ``densities`` (kg/m^3, one per X0 value), rows are mass stopping power * given density; unmatched X0 values are
    then interpolated in ln(mass stopping power) against ln(X0 rho) [g/cm^2] instead. The density effect is that of
    the matched/bracketing materials (a sub-percent approximation).

    The momentum grid is uniform in ln p from ``p_min`` to ``p_max`` [GeV]; :meth:`dedx` interpolates linearly in ln p
    and holds the end values outside the grid (above ``p_max`` radiative losses are then underestimated).
    """

    def __init__(self, x0_keys: Tensor, table: Tensor, p_min: float, p_max: float, labels: Sequence[str]) -> None:
        """Low-level constructor; use :meth:`from_x0`. ``x0_keys`` (n_rows,) with inf first, ``table`` (n_rows, n_p)."""
        if table.ndim != 2 or x0_keys.shape != (table.shape[0],) or table.shape[1] < 2:
            raise ValueError("table must be (n_rows, n_p >= 2) with one X0 key per row")
        if not 0 < p_min < p_max:
            raise ValueError("need 0 < p_min < p_max")
        self.x0_keys = x0_keys
        self.table = table
        self.p_min = float(p_min)
        self.p_max = float(p_max)
        self.labels: tuple[str, ...] = tuple(labels)
        self._ln_p_min = math.log(p_min)
        self._dln_p = (math.log(p_max) - math.log(p_min)) / (table.shape[1] - 1)
        finite = torch.isfinite(x0_keys)
        order = torch.argsort(torch.where(finite, x0_keys, torch.full_like(x0_keys, math.inf)))
        order = order[finite[order]]
        self._sorted_keys = x0_keys[order]
        self._sorted_rows = order

    @property
    def device(self) -> torch.device:
        return self.table.device

    @property
    def n_rows(self) -> int:
        return self.table.shape[0]

    @property
    def p_grid(self) -> Tensor:
        """The momentum grid [GeV], (n_p,)."""
        n = self.table.shape[1]
        return torch.exp(self._ln_p_min + self._dln_p * torch.arange(n, dtype=torch.float64, device=self.device))

    @classmethod
    def from_x0(
        cls,
        x0_values: Tensor | Sequence[float],
        *,
        device: DeviceLike = None,
        densities: Tensor | Sequence[float] | None = None,
        p_min: float = 0.01,
        p_max: float = 1.0e4,
        n_p: int = 400,
        dtype: torch.dtype = torch.float64,
    ) -> EnergyLossTable:
        """Build the table for the X0 values [m] of a map (any shape; duplicates and inf allowed; see the class doc)."""
        dev = resolve_device(device)
        x0 = torch.as_tensor(x0_values, dtype=torch.float64).detach().cpu().reshape(-1)
        if bool(torch.isnan(x0).any()) or bool((x0 <= 0).any()):
            raise ValueError("x0_values must be > 0 (inf for vacuum) and not NaN")
        rho: Tensor | None = None
        if densities is not None:
            rho = torch.as_tensor(densities, dtype=torch.float64).detach().cpu().reshape(-1)
            if rho.shape != x0.shape:
                raise ValueError("densities must have one value per x0 value")
            if bool((rho <= 0).any()) or not bool(torch.isfinite(rho).all()):
                raise ValueError("densities must be finite and > 0")
        finite = torch.isfinite(x0)
        keys, inverse = torch.unique(x0[finite], return_inverse=True)
        key_rho: Tensor | None = None
        if rho is not None:
            rho_f = rho[finite]
            key_rho = torch.zeros_like(keys).scatter_(0, inverse, rho_f)
            if not torch.allclose(key_rho[inverse], rho_f, rtol=1e-6, atol=0.0):
                raise ValueError("one X0 value was given with different densities; rows are looked up by X0 only")

        names = list(MATERIAL_LOSS)
        mass_sp = _material_mass_table(float(p_min), float(p_max), int(n_p))  # (n_mat, n_p), memoised constant
        mat_rho = torch.tensor([MATERIAL_LOSS[n].density_kg_m3 for n in names], dtype=torch.float64)
        mat_x0 = torch.tensor([MATERIAL_LOSS[n].x0_m for n in names], dtype=torch.float64)
        rows: list[Tensor] = [torch.zeros(n_p, dtype=torch.float64)]
        labels = ["vacuum"]
        for j, key in enumerate(keys.tolist()):
            rel = (mat_x0 - key).abs() / key
            if float(rel.min()) <= _X0_MATCH_RTOL:
                i = int(torch.nonzero(rel <= _X0_MATCH_RTOL)[0])
                scale = float(mat_rho[i]) if key_rho is None else float(key_rho[j])
                rows.append(mass_sp[i] * scale * _MEV_CM2_G_TO_GEV_M_PER_KG_M3)
                labels.append(names[i])
                continue
            if key_rho is None:  # linear dE/dx against X0 [m]
                ref_x, ref_s, target = mat_x0, mass_sp * mat_rho[:, None] * _MEV_CM2_G_TO_GEV_M_PER_KG_M3, key
                scale = 1.0
            else:  # mass stopping power against X0 rho [g/cm^2], times the given density
                ref_x, ref_s = mat_x0 * mat_rho * _G_CM2_PER_M_PER_KG_M3, mass_sp
                target = key * float(key_rho[j]) * _G_CM2_PER_M_PER_KG_M3
                scale = float(key_rho[j]) * _MEV_CM2_G_TO_GEV_M_PER_KG_M3
            order = torch.argsort(ref_x)
            sx, ss = ref_x[order], ref_s[order]
            k = int(torch.searchsorted(sx, torch.tensor([target], dtype=torch.float64))[0])
            if k == 0 or k == len(sx):
                e = 0 if k == 0 else len(sx) - 1
                rows.append(ss[e] * scale)
                labels.append(f"clamped:{names[int(order[e])]}")
                continue
            w = (math.log(target) - math.log(float(sx[k - 1]))) / (math.log(float(sx[k])) - math.log(float(sx[k - 1])))
            ln_s = torch.log(ss[k - 1]) + w * (torch.log(ss[k]) - torch.log(ss[k - 1]))
            rows.append(torch.exp(ln_s) * scale)
            labels.append(f"interp:{names[int(order[k - 1])]}|{names[int(order[k])]}")
        x0_keys = torch.cat([torch.tensor([math.inf], dtype=torch.float64), keys])
        table = torch.stack(rows)
        return cls(x0_keys.to(dev, dtype), table.to(dev, dtype), p_min, p_max, labels)

    def to(self, device: DeviceLike) -> EnergyLossTable:
        """A copy on ``device``."""
        dev = resolve_device(device)
        return EnergyLossTable(self.x0_keys.to(dev), self.table.to(dev), self.p_min, self.p_max, self.labels)

    def rows_for(self, x0: Tensor) -> Tensor:
        """Row index (int64, x0's shape, on the table's device) of each X0 [m] value; ``ValueError`` if one is unknown.

        inf -> row 0 (vacuum). A finite X0 must be within relative 1e-3 of a value the table was built for.
        """
        x = torch.as_tensor(x0, device=self.device).to(torch.float64)
        if bool(torch.isnan(x).any()):
            raise ValueError("x0 contains NaN")
        keys = self._sorted_keys.to(torch.float64)
        flat = x.reshape(-1).contiguous()
        if len(keys) == 0:
            if not bool(torch.isinf(flat).all()):
                raise ValueError("table holds only vacuum, but x0 has finite values")
            return torch.zeros(x.shape, dtype=torch.long, device=self.device)
        hi = torch.searchsorted(keys, flat).clamp(max=len(keys) - 1)
        lo = (hi - 1).clamp(min=0)
        d_hi = (keys[hi] - flat).abs()
        d_lo = (keys[lo] - flat).abs()
        pick = torch.where(d_lo < d_hi, lo, hi)
        rel = (keys[pick] - flat).abs() / flat
        inf = torch.isinf(flat)
        bad = ~inf & ~(rel <= _X0_MATCH_RTOL)
        if bool(bad.any()):
            raise ValueError(f"x0 values not in the table, e.g. {float(flat[bad][0])}; rebuild it with from_x0")
        rows = torch.where(inf, torch.zeros_like(pick), self._sorted_rows[pick])
        return rows.reshape(x.shape)

    def dedx(self, p: Tensor, rows: Tensor) -> Tensor:
        """-dE/dx [GeV/m] at momentum p [GeV] in table rows ``rows`` (broadcast), linear in ln p, in p's dtype."""
        out_dtype = p.dtype if p.is_floating_point() else self.table.dtype
        return self._dedx(p.to(self.table.dtype), rows).to(out_dtype)

    def _dedx(self, p: Tensor, rows: Tensor) -> Tensor:
        n_p = self.table.shape[1]
        x = (torch.log(p.clamp_min(self.p_min)) - self._ln_p_min) / self._dln_p
        i0 = x.floor().clamp(0, n_p - 2)
        frac = (x - i0).clamp(0.0, 1.0)
        p_b, r_b = torch.broadcast_tensors(i0.long(), rows.long())
        flat = self.table.reshape(-1)
        base = r_b * n_p + p_b
        lo = flat[base]
        hi = flat[base + 1]
        return lo + frac * (hi - lo)

    def step(self, p: Tensor, rows: Tensor, path_length: Tensor) -> tuple[Tensor, Tensor]:
        """Move muons by ``path_length`` [m] through table rows ``rows``: (new momentum [GeV], stopped mask).

        Midpoint rule on the kinetic energy T = E - M (same as on E = sqrt(p^2 + M^2), without cancellation):
        T_half = T - S(p) l/2, T_new = T - S(p_half) l, with p = sqrt(T (T + 2M)). A muon whose T_new (or T_half)
        falls below :data:`STOP_KINETIC_ENERGY` is stopped: new p = 0 and stopped True. Output in p's dtype.
        """
        out_dtype = p.dtype if p.is_floating_point() else self.table.dtype
        dt = self.table.dtype
        p64 = p.to(dt)
        length = torch.as_tensor(path_length, device=p.device).to(dt)
        t = _kinetic(p64)
        t_half = t - 0.5 * length * self._dedx(p64, rows)
        p_half = _momentum(t_half)
        t_new = t - length * self._dedx(p_half, rows)
        stopped = (t_new < STOP_KINETIC_ENERGY) | (t_half < STOP_KINETIC_ENERGY)
        p_new = torch.where(stopped, torch.zeros_like(t_new), _momentum(t_new))
        return p_new.to(out_dtype), stopped
