"""``PassiveLayer``: a slab of cubic voxels of passive material that scatters muons.

Voxel (i, j) covers x in [i size, (i+1) size), y in [j size, (j+1) size), z in [z - size, z] (z = layer top) and
holds one radiation length X0 [m]. Muons are stepped down through the slab in ``n_steps = ceil(size / step_sz)``
equal vertical steps dz; each step has path length L = dz / cos(theta), uses the X0 of the voxel containing the
step's straight-line midpoint (muons outside the xy footprint see X0 = inf, i.e. no scattering), moves the muon
straight down by dz, adds the lateral displacement of the scatter model and then deflects its direction.

With ``energy_loss`` the momentum is also updated every step with the mean continuous energy loss of the voxel's
material (:mod:`.energy_loss`, :mod:`.energy_loss_table`: the X0 value identifies the material; midpoint rule on the kinetic energy), the step
scatters with the step's effective momentum sqrt(p_before p_after) (exact for a constant stopping power:
integral dx / p^2 = L / (p_before p_after)), and muons that stop are removed from the batch
(``MuonBatch.stopped_muons``): they leave no out-track.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
from torch import Tensor

from ..checks import is_voxel_multiple
from ..muon.muon_batch import MuonBatch
from ..runtime import DEFAULT_DTYPE, DeviceLike
from .energy_loss_table import EnergyLossTable
from .layer_base import AbsLayer
from .passive_step import pdg_step_numpy
from .scatter_model import AbsScatterModel, PDGScatterModel, get_scatter_model

__all__ = ["PassiveLayer", "RadLengthFunc"]

RadLengthFunc = Callable[..., Tensor]
"""``f(*, z: Tensor, lw: Tensor, size: float) -> Tensor`` of shape (n_x, n_y) with X0 [m] per voxel."""


class PassiveLayer(AbsLayer):
    """Passive voxel layer; ``rad_length`` is an (n_x, n_y) X0 map [m] or ``None`` (muons then just propagate).

    Args:
        lw: (2,) footprint [m] from (0, 0); each entry must be a multiple of ``size``.
        z: z of the layer top [m].
        size: thickness [m] = voxel edge.
        rad_length_func: optional X0 map function (see :data:`RadLengthFunc`), also loadable later.
        step_sz: maximal vertical step [m]; the layer uses ``ceil(size / step_sz)`` equal steps.
        scatter_model: ``"pdg"``, ``"tabulated:<path>"`` or an :class:`AbsScatterModel`.
        energy_loss: update the momentum with the continuous energy loss of each voxel's material (off: TomOpt).
        device: device of the X0 map and of any model tables.
    """

    def __init__(
        self,
        lw: Tensor | Sequence[float],
        z: float,
        size: float,
        rad_length_func: RadLengthFunc | None = None,
        step_sz: float = 0.01,
        scatter_model: str | AbsScatterModel = "pdg",
        energy_loss: bool = False,
        device: DeviceLike = None,
    ) -> None:
        super().__init__(lw, z, size, device)
        self.energy_loss = bool(energy_loss)
        self._eloss: EnergyLossTable | None = None
        self._eloss_rows: Tensor | None = None
        step_sz = float(step_sz)
        if not (step_sz > 0 and math.isfinite(step_sz)):
            raise ValueError(f"step_sz must be a finite length > 0 m, got {step_sz}")
        n_vox = (self.lw / self.size).double()
        if not bool(is_voxel_multiple(self.lw, self.size).all()):
            raise ValueError(f"lw={self.lw.tolist()} must be a (non-zero) multiple of the voxel size={self.size} in x and y")
        self.n_xy: tuple[int, int] = (int(n_vox[0].round()), int(n_vox[1].round()))
        self.step_sz = step_sz
        self.n_steps = max(1, math.ceil(self.size / step_sz - 1e-9))
        self.scatter_model = get_scatter_model(scatter_model, device=self.device)
        self.rad_length: Tensor | None = None
        if rad_length_func is not None:
            self.load_rad_length(rad_length_func)

    def load_rad_length(self, rad_length_func: RadLengthFunc | None) -> None:
        """Evaluate ``rad_length_func(z=..., lw=..., size=...)`` into ``rad_length`` (``None`` clears it).

        The map must have shape ``lw / size`` and X0 > 0 (``inf`` = vacuum is allowed, NaN is not).
        """
        if rad_length_func is None:
            self.rad_length = None
            self._eloss, self._eloss_rows = None, None
            return
        rl = torch.as_tensor(rad_length_func(z=self.z, lw=self.lw, size=self.size))
        rl = rl.detach().to(device=self.device, dtype=DEFAULT_DTYPE).clone()
        if tuple(rl.shape) != self.n_xy:
            raise ValueError(f"rad_length_func returned shape {tuple(rl.shape)}, expected (n_x, n_y) = lw/size = {self.n_xy}")
        if bool((torch.isnan(rl) | (rl <= 0)).any()):
            raise ValueError("rad_length_func returned X0 values <= 0 or NaN; X0 [m] must be > 0")
        self.rad_length = rl
        if self.energy_loss:
            self._eloss = EnergyLossTable.from_x0(rl.reshape(-1), device=self.device)
            self._eloss_rows = self._eloss.rows_for(rl)

    def abs2idx(self, xy: Tensor | MuonBatch) -> Tensor:
        """(N, 2) long voxel indices floor(xy / size) of (N, 2) positions [m] or of a ``MuonBatch``.

        Positions outside the footprint give out-of-range indices (not clamped).
        """
        pos = xy.xy if isinstance(xy, MuonBatch) else torch.as_tensor(xy)
        return torch.floor(pos / self.size).long()

    def _x0_lookup(self, padded: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """X0 [m] of the voxel at (x, y) from the inf-padded map: indices clamp onto the inf border (a gather)."""
        nx, ny = self.n_xy
        ix = torch.floor(x * (1.0 / self.size)).long().clamp_(-1, nx) + 1
        iy = torch.floor(y * (1.0 / self.size)).long().clamp_(-1, ny) + 1
        return padded[ix * (ny + 2) + iy]

    @torch.no_grad()
    def forward(self, mu: MuonBatch, generator: torch.Generator | None = None) -> None:
        """Move muons to the layer top, scatter them down in ``n_steps`` vertical steps, leave them at the bottom.

        Per step (volume frame, trig of the incoming direction): horizontal move dz tan(theta) (cos phi, sin phi);
        displacement d1 along e_theta becomes d1 / cos(theta) (cos phi, sin phi) at fixed z, d2 along e_phi stays
        d2 (-sin phi, cos phi); then ``mu.deflect(dtheta_1, dtheta_2)`` (which drops muons turned upwards).
        """
        if len(mu) == 0:
            return
        mu.propagate_dz(mu.z - self.z_top)
        if self.rad_length is None:
            mu.propagate_dz(mu.z - self.z_bottom)
            return
        z_top, dz_nom = self.z_top, self.size / self.n_steps
        padded, rows_padded = self._padded_maps()
        # the PDG model on the CPU: fused NumPy step (``passive_step``), same draws and results to float rounding
        fused = type(self.scatter_model) is PDGScatterModel and mu.muons.device.type == "cpu"
        padded_np = padded.cpu().numpy() if fused else None
        for i in range(self.n_steps):
            if len(mu) == 0:
                return
            z_target = self.z_bottom if i == self.n_steps - 1 else z_top - (i + 1) * dz_nom
            if fused:
                self._fused_pdg_step(mu, cast(np.ndarray, padded_np), rows_padded, float(z_target), generator)
                continue
            self._torch_step(mu, padded, rows_padded, z_target, generator)

    def _padded_maps(self) -> tuple[Tensor, Tensor | None]:
        """The X0 map (and the energy-loss rows) padded with vacuum around the footprint, flattened for lookups."""
        assert self.rad_length is not None  # callers check
        padded = torch.nn.functional.pad(self.rad_length, (1, 1, 1, 1), value=float("inf")).reshape(-1)
        rows_padded = None
        if self.energy_loss and self._eloss_rows is not None:  # vacuum row 0 around the footprint
            rows_padded = torch.nn.functional.pad(self._eloss_rows, (1, 1, 1, 1), value=0).reshape(-1)
        return padded, rows_padded

    def _torch_step(
        self,
        mu: MuonBatch,
        padded: Tensor,
        rows_padded: Tensor | None,
        z_target: float | Tensor,
        generator: torch.Generator | None,
        mask: Tensor | None = None,
    ) -> None:
        """One step down to ``z_target`` with the layer's scatter model (``mask``: only these muons move)."""
        x, y, z, mom, theta, phi = mu.muons.unbind(1)  # strided views of the state (no copies)
        ct, cp, sp = torch.cos(theta), torch.cos(phi), torch.sin(phi)
        inv_ct = 1.0 / ct
        dz = z - z_target
        if mask is not None:
            dz = torch.where(mask, dz, torch.zeros_like(dz))
        tan_dz = torch.sin(theta) * inv_ct * dz
        hx, hy = tan_dz * cp, tan_dz * sp
        x0 = self._x0_lookup(padded, x + 0.5 * hx, y + 0.5 * hy)
        step_length = dz * inv_ct
        stopped = None
        if rows_padded is not None:
            rows = self._x0_lookup(rows_padded, x + 0.5 * hx, y + 0.5 * hy)
            mom_new, stopped = self._eloss.step(mom, rows, step_length)  # type: ignore[union-attr]
            if mask is not None:
                mom_new, stopped = torch.where(mask, mom_new, mom), stopped & mask
            mom = torch.where(stopped, mom, torch.sqrt(mom * mom_new))  # the step's effective momentum
            mu.update_momentum(mom_new)
        sc = self.scatter_model.compute_scattering(
            x0=x0, step_length=step_length, mom=mom, theta=theta, x_traversed=mu.x0_traversed, generator=generator
        )
        mu.add_x0_traversed(step_length / x0)  # 0 outside the footprint (X0 = inf) and for masked-out muons
        d1 = sc["dx_1"] * inv_ct
        d2 = sc["dx_2"]
        moved = torch.isfinite(x0) if mask is None else torch.isfinite(x0) & mask
        mu.scatter_dxyz(hx + d1 * cp - d2 * sp, hy + d1 * sp + d2 * cp, -dz, mask=mask)
        mu.deflect(sc["dtheta_1"], sc["dtheta_2"], mask=moved)  # exact no-op outside the footprint
        if stopped is not None:
            _drop_stopped(mu, stopped)

    def mu_abs2idx(self, mu: MuonBatch, mask: Tensor | None = None) -> Tensor:
        """(N, 2) voxel indices of the muons' current xy (only those with ``mask`` True, if given); not clamped."""
        xy = mu.xy if mask is None else mu.xy[mask]
        return self.abs2idx(xy)

    @torch.no_grad()
    def scatter_and_propagate(self, mu: MuonBatch, mask: Tensor | None = None, generator: torch.Generator | None = None) -> None:
        """One scattering step (TomOpt's API): move the muons (those with ``mask`` True) down by one step of
        ``size / n_steps`` from their current z, never below the layer bottom, scattering them inside the footprint.

        :meth:`forward` is the usual way through the layer: it first moves the muons to the layer top and then takes
        ``n_steps`` such steps. Without a loaded X0 map the muons just propagate. This method always takes the torch
        path of a step (``forward`` uses the fused NumPy step for the PDG model on the CPU, with the same physics).
        """
        if len(mu) == 0:
            return
        z_target = mu.z - self.size / self.n_steps
        z_target = torch.where(z_target < self.z_bottom + 1e-6, torch.full_like(z_target, self.z_bottom), z_target)
        active = mu.z > z_target  # muons already at (or below) the layer bottom stay where they are
        mask = active if mask is None else mask.to(active.device).bool() & active
        if self.rad_length is None:
            mu.propagate_dz(mu.z - z_target, mask=mask)
            return
        padded, rows_padded = self._padded_maps()
        self._torch_step(mu, padded, rows_padded, z_target, generator, mask=mask)

    def _fused_pdg_step(
        self,
        mu: MuonBatch,
        padded: np.ndarray,
        rows_padded: Tensor | None,
        z_target: float,
        gen: torch.Generator | None,
    ) -> None:
        """One step for the PDG model on the CPU with :func:`pdg_step_numpy` (same draws, same operations)."""
        model = cast(PDGScatterModel, self.scatter_model)  # fused only for PDGScatterModel
        z = torch.randn((2, 2, len(mu)), generator=gen, device=mu.muons.device, dtype=mu.muons.dtype)
        eloss = None
        if rows_padded is not None and self._eloss is not None:
            t = self._eloss
            eloss = (t.table.cpu().numpy(), rows_padded.cpu().numpy(), t._ln_p_min, t._dln_p)  # noqa: SLF001
        state, x0_trav, keep, stopped = pdg_step_numpy(
            mu.muons.detach().numpy(),
            mu.x0_traversed.detach().numpy(),
            padded,
            z.numpy(),
            z_target=z_target,
            size=float(self.size),
            n_xy=self.n_xy,
            log_term=model.log_term,
            max_angle=model.max_angle,
            use_beta=model.use_beta,
            eloss=eloss,
        )
        keep_t = torch.from_numpy(keep) if keep.all() else None  # else set_state filters the muons itself
        mu.set_state(torch.from_numpy(state), torch.from_numpy(x0_trav), keep=keep_t)
        if stopped is not None:
            _drop_stopped(mu, torch.from_numpy(stopped))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, step_sz={self.step_sz:.4g}, n_steps={self.n_steps}, "
            f"model={self.scatter_model!r}, energy_loss={self.energy_loss}"
        )


def _drop_stopped(mu: MuonBatch, stopped: Tensor) -> None:
    """Remove the muons flagged in ``stopped`` (indexed before this step's upward-muon removal) from ``mu``."""
    keep = mu._keep_mask  # noqa: SLF001 - the mask of the upward-muon removal of this step
    if keep is not None and len(keep) == len(stopped) and len(mu) != len(stopped):
        stopped = stopped[keep]
    mu.remove_stopped_muons(stopped)
