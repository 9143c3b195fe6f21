"""``MuonBatch``: the state of a batch of muons and the detector hits they leave.

Conventions (volume frame, SI units): z points up, muons travel downwards; ``theta`` [rad] is measured from the
*negative* z axis, ``phi`` [rad] anticlockwise from +x; momentum ``mom`` in GeV. The direction of flight is
``d = (sin(theta) cos(phi), sin(theta) sin(phi), -cos(theta))``.

Muon paths never depend on detector parameters, so the state is updated in place (no autograd through it).
Hits are stored per *named* detector group (any string, e.g. ``"above"``, ``"below"``, ``"station_3"``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..runtime import DEFAULT_DTYPE, DeviceLike, resolve_device
from . import angles

__all__ = ["MuonBatch"]

XYLimit = tuple[float, float] | Tensor | None


_STATE_NAMES = ("x", "y", "mom", "theta", "phi")


def _check_finite(src: Tensor, z: Tensor) -> None:
    """``ValueError`` naming the first column of ``src`` ((N, 5) x, y, p, theta, phi) or ``init_z`` with a non-finite
    value, with the number of such muons and the first row."""
    if not src.is_floating_point() or len(src) == 0 or bool(torch.isfinite(src).all() & torch.isfinite(z).all()):
        return  # one reduction (one device sync) in the common case
    bad = ~torch.isfinite(src)
    for j, name in enumerate(_STATE_NAMES):
        rows = bad[:, j].nonzero().reshape(-1)
        if len(rows):
            raise ValueError(
                f"xy_p_theta_phi: {len(rows)} of {len(src)} muons have a non-finite {name} "
                f"(first: row {int(rows[0])}, value {float(src[rows[0], j])}); muon states must be finite"
            )
    zbad = (~torch.isfinite(z)).nonzero().reshape(-1)
    if len(zbad):
        raise ValueError(f"init_z: {len(zbad)} of {len(z)} values are not finite (first: row {int(zbad[0])}); must be finite")


class MuonBatch:
    """A batch of ``N`` muons with columns ``x, y, z`` [m], ``mom`` [GeV], ``theta``, ``phi`` [rad].

    Args:
        xy_p_theta_phi: (N, 5) tensor of x [m], y [m], p [GeV], theta [rad], phi [rad] (a generator's output).
        init_z: starting z [m] of every muon (float or (N,) tensor).
        device: device of the muon tensors (default: that of ``xy_p_theta_phi``).
        _check: internal; ``copy()`` of a batch in flight skips the finiteness check.

    Raises ``ValueError`` if ``xy_p_theta_phi`` is not (N, 5) or if any state or ``init_z`` is NaN or infinite (a NaN
    muon would otherwise propagate silently into NaN hits and predictions). ``N = 0`` is a valid, empty batch.
    """

    x_dim = 0
    y_dim = 1
    z_dim = 2
    p_dim = 3
    th_dim = 4
    ph_dim = 5

    def __init__(self, xy_p_theta_phi: Tensor, init_z: Tensor | float, device: DeviceLike = None, *, _check: bool = True) -> None:
        xy_p_theta_phi = torch.as_tensor(xy_p_theta_phi)
        if xy_p_theta_phi.ndim != 2 or xy_p_theta_phi.shape[1] != 5:
            raise ValueError(f"xy_p_theta_phi must have shape (N, 5), got {tuple(xy_p_theta_phi.shape)}")
        dev = resolve_device(device) if device is not None else xy_p_theta_phi.device
        dtype = xy_p_theta_phi.dtype if xy_p_theta_phi.is_floating_point() else DEFAULT_DTYPE
        src = xy_p_theta_phi.detach().to(device=dev, dtype=dtype)
        z = torch.as_tensor(init_z, dtype=dtype, device=dev).detach().reshape(-1).expand(len(src))
        if _check:
            _check_finite(src, z)
        self.device = dev
        self._muons = torch.stack([src[:, 0], src[:, 1], z, src[:, 2], src[:, 3], src[:, 4]], dim=1).contiguous()
        self._hits: dict[str, dict[str, list[Tensor]]] = {}
        self._xyz_hist: list[Tensor] = []
        self._upwards_muons: list[Tensor] = []
        self._keep_mask: Tensor | None = None
        self._x0_traversed = torch.zeros(len(src), dtype=dtype, device=dev)
        self._mom_in = src[:, 2].clone()
        self._stopped_muons: list[Tensor] = []

    # ------------------------------------------------------------------ state access
    def __len__(self) -> int:
        return len(self._muons)

    def __repr__(self) -> str:
        return f"MuonBatch(n={len(self)}, groups={list(self._hits)}, device={self.device})"

    @property
    def muons(self) -> Tensor:
        """(N, 6) state tensor ``x, y, z, mom, theta, phi``."""
        return self._muons

    @property
    def x(self) -> Tensor:
        return self._muons[:, self.x_dim]

    @property
    def y(self) -> Tensor:
        return self._muons[:, self.y_dim]

    @property
    def z(self) -> Tensor:
        return self._muons[:, self.z_dim]

    @property
    def xy(self) -> Tensor:
        return self._muons[:, : self.z_dim]

    @property
    def xyz(self) -> Tensor:
        return self._muons[:, : self.p_dim]

    @property
    def mom(self) -> Tensor:
        """Momentum [GeV]."""
        return self._muons[:, self.p_dim]

    @property
    def reco_mom(self) -> Tensor:
        """Reconstructed momentum [GeV]; the true current momentum (measurements are modelled by the inferrers'
        momentum models, ``tomopt_lib.inference.momentum``)."""
        return self.mom

    @property
    def mom_in(self) -> Tensor:
        """(N,) momentum [GeV] each muon was generated with (before any energy loss); ``mom`` is the current one."""
        return self._mom_in

    @property
    def theta(self) -> Tensor:
        return self._muons[:, self.th_dim]

    @property
    def phi(self) -> Tensor:
        return self._muons[:, self.ph_dim]

    @property
    def theta_x(self) -> Tensor:
        """Angle from -z in the xz plane: atan(tan(theta) cos(phi))."""
        return self.theta_x_from_theta_phi(self.theta, self.phi)

    @property
    def theta_y(self) -> Tensor:
        """Angle from -z in the yz plane: atan(tan(theta) sin(phi))."""
        return self.theta_y_from_theta_phi(self.theta, self.phi)

    @property
    def theta_xy(self) -> Tensor:
        """(N, 2) of ``theta_x, theta_y``."""
        return torch.stack([self.theta_x, self.theta_y], dim=1)

    @property
    def direction(self) -> Tensor:
        """(N, 3) unit vectors of flight, ``(sin t cos p, sin t sin p, -cos t)``."""
        return self.direction_from_theta_phi(self.theta, self.phi)

    @property
    def x0_traversed(self) -> Tensor:
        """(N,) material crossed so far along each track, in radiation lengths (sum of path / X0).

        Scattering models use it to apply the Highland log term to the whole crossing rather than per step.
        """
        return self._x0_traversed

    def set_state(self, muons: Tensor, x0_traversed: Tensor, keep: Tensor | None = None) -> None:
        """Overwrite the (N, 6) state and (N,) ``x0_traversed`` in place (detached), then drop upward muons.

        ``keep``: the caller's all-True result of the upward-muon test for the new state (skips recomputing it).
        """
        self._muons.copy_(muons.detach())
        self._x0_traversed = x0_traversed.detach()
        if keep is None:
            self.remove_upwards_muons()
        else:
            self._keep_mask = keep

    def update_momentum(self, mom: Tensor) -> None:
        """Set the (N,) current momenta [GeV] (energy loss); detached, in place."""
        self._muons[:, self.p_dim] = torch.as_tensor(mom, dtype=self._muons.dtype, device=self.device).detach()

    def add_x0_traversed(self, dx_over_x0: Tensor) -> None:
        """Add (N,) path lengths in radiation lengths to ``x0_traversed``."""
        self._x0_traversed = self._x0_traversed + dx_over_x0.detach()

    @property
    def xyz_hist(self) -> list[Tensor]:
        """Positions recorded by ``snapshot_xyz`` (a list of (N_at_the_time, 3) detached tensors)."""
        return self._xyz_hist

    @property
    def stopped_muons(self) -> Tensor:
        """States (M, 6) of muons removed because they stopped (energy loss) inside a passive layer."""
        if not self._stopped_muons:
            return self._muons.new_zeros((0, 6))
        return torch.cat(self._stopped_muons, dim=0)

    def remove_stopped_muons(self, stopped: Tensor) -> None:
        """Drop the muons flagged in the (N,) bool ``stopped`` (kept in ``stopped_muons``); no-op if none."""
        stopped = stopped.to(self.device).bool()
        if not bool(stopped.any()):
            return
        self._stopped_muons.append(self._muons[stopped].detach().clone())
        self.filter_muons(~stopped)

    @property
    def upwards_muons(self) -> Tensor:
        """States (M, 6) of muons removed because they went upwards or became non-finite."""
        if not self._upwards_muons:
            return self._muons.new_zeros((0, 6))
        return torch.cat(self._upwards_muons, dim=0)

    # ------------------------------------------------------------------ angle conversions (:mod:`.angles`)
    direction_from_theta_phi = staticmethod(angles.direction_from_theta_phi)
    theta_x_from_theta_phi = staticmethod(angles.theta_x_from_theta_phi)
    theta_y_from_theta_phi = staticmethod(angles.theta_y_from_theta_phi)
    theta_from_theta_xy = staticmethod(angles.theta_from_theta_xy)
    phi_from_theta_xy = staticmethod(angles.phi_from_theta_xy)
    theta_phi_from_direction = staticmethod(angles.theta_phi_from_direction)

    # ------------------------------------------------------------------ motion
    def _apply(self, col: slice, new: Tensor, mask: Tensor | None) -> None:
        if mask is not None:
            new = torch.where(mask.reshape(-1, *([1] * (new.ndim - 1))), new, self._muons[:, col])
        self._muons[:, col] = new

    def propagate_dz(self, dz: Tensor | float, mask: Tensor | None = None) -> None:
        """Move along the track so that z decreases by ``dz`` [m] (positive dz = downwards)."""
        dz = torch.as_tensor(dz, dtype=self._muons.dtype, device=self.device).detach()
        if dz.ndim > 0:
            dz = dz.reshape(-1)
        tan_t = torch.tan(self.theta)
        step = torch.stack(
            [dz * tan_t * torch.cos(self.phi), dz * tan_t * torch.sin(self.phi), -dz * torch.ones_like(tan_t)], dim=1
        )
        self._apply(slice(0, 3), self.xyz + step, mask)

    def propagate_d(self, d: Tensor | float, mask: Tensor | None = None) -> None:
        """Move a distance ``d`` [m] along the direction of flight."""
        d = torch.as_tensor(d, dtype=self._muons.dtype, device=self.device).detach()
        if d.ndim > 0:
            d = d.reshape(-1, 1)
        self._apply(slice(0, 3), self.xyz + d * self.direction, mask)

    def scatter_dxyz(
        self,
        dx_vol: Tensor | None = None,
        dy_vol: Tensor | None = None,
        dz_vol: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> None:
        """Displace muons by (dx, dy, dz) [m] in the volume frame."""
        zero = torch.zeros_like(self.x)
        delta = torch.stack([t.detach() if t is not None else zero for t in (dx_vol, dy_vol, dz_vol)], dim=1)
        self._apply(slice(0, 3), self.xyz + delta, mask)

    def _set_angles(self, theta: Tensor, phi: Tensor, mask: Tensor | None) -> None:
        self._apply(slice(self.th_dim, self.ph_dim + 1), torch.stack([theta, phi], dim=1), mask)
        self.remove_upwards_muons()

    def scatter_dtheta_xy(
        self, dtheta_x_vol: Tensor | None = None, dtheta_y_vol: Tensor | None = None, mask: Tensor | None = None
    ) -> None:
        """Change theta_x and theta_y [rad] by the given amounts; muons turned upwards are removed."""
        tx = self.theta_x + (dtheta_x_vol.detach() if dtheta_x_vol is not None else 0.0)
        ty = self.theta_y + (dtheta_y_vol.detach() if dtheta_y_vol is not None else 0.0)
        self._set_angles(self.theta_from_theta_xy(tx, ty), self.phi_from_theta_xy(tx, ty), mask)

    def scatter_dtheta_dphi(
        self, dtheta_vol: Tensor | None = None, dphi_vol: Tensor | None = None, mask: Tensor | None = None
    ) -> None:
        """Change theta and phi [rad]; theta < 0 or > pi is folded back (phi += pi), phi wrapped to [0, 2 pi)."""
        theta = self.theta + (dtheta_vol.detach() if dtheta_vol is not None else 0.0)
        phi = self.phi + (dphi_vol.detach() if dphi_vol is not None else 0.0)
        neg, over = theta < 0, theta > math.pi
        theta = torch.where(neg, -theta, torch.where(over, 2 * math.pi - theta, theta))
        phi = torch.where(neg | over, phi + math.pi, phi)
        self._set_angles(theta, torch.remainder(phi, 2 * math.pi), mask)

    def deflect(self, dtheta_1: Tensor, dtheta_2: Tensor, mask: Tensor | None = None) -> None:
        """Rotate each direction by small angles in its own transverse frame (exact 3-D rotation).

        ``dtheta_1`` turns the track towards e_theta = (cos t cos p, cos t sin p, sin t) and ``dtheta_2`` towards
        e_phi = (-sin p, cos p, 0). The total angle a = hypot(dtheta_1, dtheta_2) rotates d to
        cos(a) d + sin(a) (dtheta_1 e_theta + dtheta_2 e_phi) / a. Muons turned upwards are removed.
        """
        t1, t2 = dtheta_1.detach(), dtheta_2.detach()
        theta, phi = self.theta.contiguous(), self.phi.contiguous()
        ct, st = torch.cos(theta), torch.sin(theta)
        a = torch.hypot(t1, t2)
        ca = torch.cos(a)
        sinc = torch.where(a > 0, torch.sin(a) / a.clamp_min(1e-30), torch.ones_like(a))
        # new direction in the frame (horizontal along phi, horizontal across phi, -z):
        h1 = ca * st + sinc * t1 * ct
        h2 = sinc * t2
        cz = ca * ct - sinc * t1 * st
        new_theta = torch.atan2(torch.hypot(h1, h2), cz)
        new_phi = torch.remainder(phi + torch.atan2(h2, h1), 2 * math.pi)
        self._set_angles(new_theta, new_phi, mask)

    # ------------------------------------------------------------------ filtering
    def filter_muons(self, keep_mask: Tensor) -> None:
        """Keep only muons with ``keep_mask`` True, together with their hits.

        The hits are indexed with autograd on even when called under ``torch.no_grad()`` (the passive layers step the
        muons without gradients and drop stopped or upward muons there): the hits recorded upstream must keep their
        graph to the detector parameters."""
        keep_mask = keep_mask.to(self.device).bool()
        self._keep_mask = keep_mask
        self._muons = self._muons[keep_mask]
        self._x0_traversed = self._x0_traversed[keep_mask]
        self._mom_in = self._mom_in[keep_mask]
        with torch.enable_grad():
            for group in self._hits.values():
                for var, hits in group.items():
                    group[var] = [h[keep_mask] for h in hits]

    def remove_upwards_muons(self) -> None:
        """Drop muons with theta >= pi/2 or non-finite state (they cannot reach detectors below)."""
        ok = (self.theta < math.pi / 2) & torch.isfinite(self.phi)  # NaN theta fails the first test
        if bool(ok.all()):
            self._keep_mask = ok
            return
        self._upwards_muons.append(self._muons[~ok].detach().clone())
        self.filter_muons(ok)

    def get_xy_mask(self, xy_low: XYLimit, xy_high: XYLimit) -> Tensor:
        """(N,) True where xy_low <= xy < xy_high (either limit may be None)."""
        mask = torch.ones(len(self), dtype=torch.bool, device=self.device)
        if xy_low is not None:
            low = torch.as_tensor(xy_low, dtype=self._muons.dtype, device=self.device)
            mask &= (self.xy >= low.reshape(-1, 2) if low.numel() > 2 else self.xy >= low).all(dim=1)
        if xy_high is not None:
            high = torch.as_tensor(xy_high, dtype=self._muons.dtype, device=self.device)
            mask &= (self.xy < high.reshape(-1, 2) if high.numel() > 2 else self.xy < high).all(dim=1)
        return mask

    # ------------------------------------------------------------------ hits
    def append_hits(self, hits: dict[str, Tensor], pos: str) -> None:
        """Record one detector's hits (dict of var -> (N, k) tensors) under the group name ``pos``."""
        group = self._hits.setdefault(pos, {})
        for var, val in hits.items():
            group.setdefault(var, []).append(val)

    @property
    def hit_groups(self) -> list[str]:
        """Names of the detector groups that recorded hits, in recording order."""
        return list(self._hits)

    def n_hits(self, pos: str) -> int:
        """Number of hits (detectors) recorded for group ``pos`` (0 if unknown)."""
        group = self._hits.get(pos)
        return len(next(iter(group.values()))) if group else 0

    def get_hits(self, xy_low: XYLimit = None, xy_high: XYLimit = None) -> dict[str, dict[str, Tensor]]:
        """Stacked hits ``{group: {var: (N, n_hits, k)}}``, optionally only for muons inside the xy limits."""
        mask = None if xy_low is None and xy_high is None else self.get_xy_mask(xy_low, xy_high)
        out: dict[str, dict[str, Tensor]] = {}
        for pos, group in self._hits.items():
            out[pos] = {}
            for var, hits in group.items():
                stacked = torch.stack(hits, dim=1)
                out[pos][var] = stacked if mask is None else stacked[mask]
        return out

    def snapshot_xyz(self) -> None:
        """Record the current positions (detached copy) in ``xyz_hist``."""
        self._xyz_hist.append(self.xyz.detach().clone())

    # ------------------------------------------------------------------ comparisons
    def dtheta(self, theta_ref: Tensor) -> Tensor:
        return torch.abs(self.theta - theta_ref)

    def dtheta_x(self, theta_ref_x: Tensor) -> Tensor:
        return torch.abs(self.theta_x - theta_ref_x)

    def dtheta_y(self, theta_ref_y: Tensor) -> Tensor:
        return torch.abs(self.theta_y - theta_ref_y)

    def copy(self) -> MuonBatch:
        """Detached copy of the current state and ``x0_traversed`` (hits are not copied)."""
        xy_p_theta_phi = self._muons[:, [0, 1, 3, 4, 5]].detach().clone()
        out = MuonBatch(xy_p_theta_phi, init_z=self.z.detach().clone(), device=self.device, _check=False)
        out._x0_traversed = self._x0_traversed.detach().clone()
        out._mom_in = self._mom_in.detach().clone()
        return out

    def to_numpy(self) -> np.ndarray:
        """(N, 6) numpy copy of the state."""
        return self._muons.detach().cpu().numpy().copy()
