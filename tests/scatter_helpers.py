"""Shared pieces of the scatter-batch tests: panel heights, a stand-in volume and muon batches whose hits lie on
given in-/out-lines (tests/test_scattering.py, tests/test_track_fit.py)."""

import torch

from tomopt_lib.inference.track_fit import VAR_SIZES
from tomopt_lib.muon.muon_batch import MuonBatch

Z_ABOVE = (1.15, 1.10, 1.00, 0.95)
Z_BELOW = (0.05, 0.00, -0.10, -0.15)
VARS = [*VAR_SIZES, "total_scatter"]


class StandInVolume:
    """Minimal volume: passive block [0, lw] x [0.2, 0.8] m and named detector groups."""

    def __init__(self, groups=None, lw=(1.0, 1.0), z_range=(0.2, 0.8)):
        self.lw = torch.tensor(lw)
        self._z = z_range
        self._groups = groups

    def get_passive_z_range(self):
        return torch.tensor([self._z[0]], dtype=torch.float64), torch.tensor([self._z[1]], dtype=torch.float64)

    def get_detector_groups(self):
        return self._groups or {"above": ["above"], "below": ["below"]}


class NoGroupsVolume:
    lw = torch.tensor([1.0, 1.0])

    def get_passive_z_range(self):
        return 0.2, 0.8


def line_at(vtx, a, z):
    """(N, 3) points at height z of lines through vtx (N, 3) with slopes a = (dx/dz, dy/dz) (N, 2)."""
    xy = vtx[:, :2] + a * (z - vtx[:, 2:3])
    return torch.cat([xy, torch.full_like(xy[:, :1], z)], dim=1)


def random_scatters(n, gen, dtype=torch.float64, scatter=0.05):
    vtx = torch.rand(n, 3, generator=gen, dtype=dtype) * torch.tensor([1.0, 1.0, 0.6], dtype=dtype)
    vtx[:, 2] += 0.2
    a_in = (torch.rand(n, 2, generator=gen, dtype=dtype) - 0.5) * 0.8
    a_out = a_in + torch.randn(n, 2, generator=gen, dtype=dtype) * scatter
    return vtx, a_in, a_out


def make_mu(vtx, a_in, a_out, *, res=1e3, eff=0.9, noise=None, groups=None, gen=None, z_shift=None, xy_shift=None):
    """MuonBatch with hits on the in-/out-lines; ``res`` / ``eff`` scalars, tensors (per panel) or callables.

    groups: list of (name, z list, "in"|"out"). noise: std multiplier of N(0, 1/res) smearing (None = exact hits).
    """
    n, dtype = len(vtx), vtx.dtype
    mu = MuonBatch(torch.zeros(n, 5, dtype=dtype), init_z=1.2)
    groups = groups or [("above", Z_ABOVE, "in"), ("below", Z_BELOW, "out")]
    i_panel = 0
    for name, zs, side in groups:
        for z in zs:
            r = res[i_panel] if torch.is_tensor(res) and res.ndim else res
            gen_xyz = line_at(vtx, a_in if side == "in" else a_out, z)
            r_t = torch.as_tensor(r, dtype=dtype)
            unc_xy = torch.ones(n, 2, dtype=dtype) / r_t
            reco_xy = gen_xyz[:, :2]
            if noise is not None:
                reco_xy = reco_xy + noise * torch.randn(n, 2, generator=gen, dtype=dtype) * unc_xy
            if xy_shift is not None:
                reco_xy = reco_xy + xy_shift[i_panel]
            z_col = gen_xyz[:, 2:] + (z_shift[i_panel] if z_shift is not None else 0.0)
            e = eff[i_panel] if torch.is_tensor(eff) and eff.ndim else eff
            mu.append_hits(
                {
                    "reco_xyz": torch.cat([reco_xy, z_col], 1),
                    "gen_xyz": gen_xyz,
                    "unc_xyz": torch.cat([unc_xy, torch.zeros(n, 1, dtype=dtype)], 1),
                    "eff": torch.ones(n, 1, dtype=dtype) * e,
                },
                name,
            )
            i_panel += 1
    return mu
