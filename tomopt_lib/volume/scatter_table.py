"""Tabulated multiple-scattering model (TomOpt's parameterised-GEANT "pgeant" layout) and its table files.

Tabulated-model HDF5 layout (written by :func:`build_scatter_table`, read by :class:`TabulatedScatterModel`)::

    model/dtheta            float32 (n_materials, n_mom, n_samples)  sorted |dtheta| [rad] per transverse axis
    model/dxy               float32 (n_materials, n_mom, n_samples)  sorted |dxy| [m] per transverse axis
    meta_data/deltaz        float   ()          path length [m] the samples were made for
    meta_data/mom_bins      float   (n_mom+1,)  momentum bin edges [GeV], increasing; or (n_mom,) lower edges
                                                (TomOpt's layout: the last bin is open above)
    meta_data/x02id         float   (n_keys, 2) rows of (X0 [m], material row in model/*); or a JSON string
                                                {"X0": row, ...} as a string dataset or as an attribute of meta_data
    meta_data/exp_disp_model float  ()          displacement scaling exponent (see below)
    meta_data/correlation   float   ()          optional Gaussian-copula correlation angle<->displacement

Sorted |values| form an empirical quantile table, so sampling is inverse-CDF sampling. Momentum bins are half-open,
[edge_k, edge_k+1): a momentum exactly on an edge uses the bin that starts there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor

from ..checks import check_number
from ..runtime import DEFAULT_DTYPE, DeviceLike, resolve_device
from .scatter_model import (
    _LOG_FLOOR,
    PDG_CORRELATION,
    AbsScatterModel,
    PDGScatterModel,
    _broadcast,
    _randn,
    beta_p,
)

__all__ = ["TabulatedScatterModel", "build_scatter_table", "build_pdg_scatter_table"]


class TabulatedScatterModel(AbsScatterModel):
    """Samples per-material, per-momentum quantile tables (HDF5 layout in the module docstring).

    Material row: nearest tabulated X0 in log space; momentum bin: ``bucketize`` on the inner edges (momenta outside
    the edges use the first/last bin). Per transverse axis, a pair (u_a, u_b) of N(0, 1) draws with Gaussian-copula
    correlation ``correlation`` gives signed values sign(u) Q(erf(|u|/sqrt 2)), where Q linearly interpolates the
    sorted |value| table at the uniform quantile (inverse-CDF sampling, random sign). For Gaussian tables and
    correlation sqrt(3)/2 this reproduces the PDG joint law; 0 gives independent angle and displacement.
    Step-length scaling with r = step_length / deltaz: angle * sqrt(r), displacement * r**exp_disp_model (Gaussian
    random walk: 1.5; the GEANT fit of the reference used 1.85). With ``rescale_momentum`` both are also scaled by
    (beta p)_ref / (beta p), p_ref = geometric centre of the momentum bin (removes the within-bin momentum dependence;
    beta from the muon mass). Momentum bins are half-open [lo, hi) (``bucketize(..., right=True)`` on the inner edges).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        correlation: float | None = None,
        rescale_momentum: bool = False,
        device: DeviceLike = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"path={str(path)!r}: scatter table file not found")
        try:
            with h5py.File(self.path, "r") as f:
                dtheta = np.asarray(f["model/dtheta"][()], dtype=np.float32)
                dxy = np.asarray(f["model/dxy"][()], dtype=np.float32)
                md = f["meta_data"]
                self.deltaz = float(md["deltaz"][()])
                mom_bins = np.asarray(md["mom_bins"][()], dtype=np.float64)
                x02id = _read_x02id(md)
                self.exp_disp_model = float(md["exp_disp_model"][()])
                file_corr = float(md["correlation"][()]) if "correlation" in md else PDG_CORRELATION
        except KeyError as err:
            raise ValueError(f"path={str(path)!r} lacks a field of the scatter-table layout: {err}") from None
        if dtheta.ndim != 3 or dtheta.shape != dxy.shape or dtheta.shape[2] < 2:
            raise ValueError(f"path={str(path)!r}: model/dtheta and model/dxy must share a (n_mat, n_mom, n>=2) shape")
        n_mat, n_mom, _ = dtheta.shape
        if mom_bins.shape not in ((n_mom + 1,), (n_mom,)) or not (np.diff(mom_bins) > 0).all() or mom_bins[0] <= 0:
            raise ValueError(
                f"path={str(path)!r}: meta_data/mom_bins must be {n_mom + 1} increasing edges (or "
                f"{n_mom} lower edges) > 0 GeV, got shape {mom_bins.shape}"
            )
        if len(mom_bins) == n_mom:  # lower edges: close the last bin geometrically for its reference momentum
            upper = np.append(mom_bins[1:], mom_bins[-1] ** 2 / mom_bins[-2] if n_mom > 1 else 2 * mom_bins[-1])
        else:
            upper = mom_bins[1:]
        lower = mom_bins[:n_mom]
        if x02id.ndim != 2 or x02id.shape[1] != 2 or not (x02id[:, 0] > 0).all():
            raise ValueError(f"path={str(path)!r}: meta_data/x02id must be (n, 2) rows of (X0 > 0, row id)")
        rows = x02id[:, 1].astype(int)
        if ((rows < 0) | (rows >= n_mat)).any():
            raise ValueError(f"path={str(path)!r}: meta_data/x02id refers to rows outside 0..{n_mat - 1}")
        order = np.argsort(x02id[:, 0])
        log_keys = np.log(x02id[order, 0])
        self.n_mat, self.n_mom, self.n_samples = dtheta.shape
        self.x0_keys = x02id[order, 0].tolist()
        self.correlation = float(file_corr if correlation is None else correlation)
        if not -1.0 <= self.correlation <= 1.0:
            raise ValueError(f"correlation must be in [-1, 1], got {self.correlation}")
        self.rescale_momentum = bool(rescale_momentum)
        self._np = {
            "dtheta": dtheta,
            "dxy": dxy,
            "log_mids": 0.5 * (log_keys[1:] + log_keys[:-1]),
            "rows": rows[order],
            "inner_edges": lower[1:],
            "mom_ref": np.sqrt(lower * upper),
        }
        self.mom_bins = mom_bins.tolist()
        self.to(device)

    def to(self, device: DeviceLike) -> TabulatedScatterModel:
        self.device = resolve_device(device)
        self._t = {
            k: torch.as_tensor(v, device=self.device, dtype=torch.long if k == "rows" else DEFAULT_DTYPE)
            for k, v in self._np.items()
        }
        for k in ("dtheta", "dxy"):  # flat, per-row sorted |values| (tolerates unsorted or signed files)
            self._t[k] = self._t[k].abs().sort(dim=-1).values.reshape(-1)
        return self

    def table_rows(self, x0: Tensor, mom: Tensor) -> Tensor:
        """(N,) flat (material, momentum-bin) row index for each muon."""
        t = self._t
        mat = t["rows"][torch.bucketize(torch.log(x0.clamp_min(_LOG_FLOOR)), t["log_mids"])]
        mbin = torch.bucketize(mom.contiguous(), t["inner_edges"], right=True)
        return mat * self.n_mom + mbin

    def _quantile(self, table: Tensor, rows: Tensor, u: Tensor) -> Tensor:
        """Linear interpolation of the flat sorted table at quantile u in [0, 1] of each row."""
        pos = u * (self.n_samples - 1)
        i0 = pos.floor().clamp(0, self.n_samples - 2)
        frac = pos - i0
        flat = rows * self.n_samples + i0.long()
        lo = table[flat]
        return lo + frac * (table[flat + 1] - lo)

    def compute_scattering(
        self,
        *,
        x0: Tensor,
        step_length: Tensor,
        mom: Tensor,
        theta: Tensor | None = None,
        x_traversed: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        x0, step_length, mom = _broadcast(x0, step_length, mom)
        active = torch.isfinite(x0) & (step_length > 0)
        rows = self.table_rows(torch.where(active, x0, torch.ones_like(x0)), mom)
        z = _randn((4,) + tuple(mom.shape), mom, generator)  # (angle, disp) for axis 1, then axis 2
        rho = self.correlation
        z_ang = z[[0, 2]]
        z_disp = rho * z_ang + math.sqrt(max(0.0, 1.0 - rho * rho)) * z[[1, 3]]
        r = step_length / self.deltaz
        s_ang = torch.where(active, torch.sqrt(r), torch.zeros_like(r))
        s_disp = torch.where(active, r.clamp_min(0.0) ** self.exp_disp_model, torch.zeros_like(r))
        if self.rescale_momentum:  # beta p scaling of Highland between the bin's reference momentum and the muon's
            p_scale = beta_p(self._t["mom_ref"][rows % self.n_mom]) / beta_p(mom)
            s_ang, s_disp = s_ang * p_scale, s_disp * p_scale
        rows2 = rows.expand((2,) + tuple(rows.shape))
        u_ang = torch.erf(z_ang.abs() * (1.0 / math.sqrt(2.0)))
        u_disp = torch.erf(z_disp.abs() * (1.0 / math.sqrt(2.0)))
        ang = torch.sign(z_ang) * self._quantile(self._t["dtheta"], rows2, u_ang) * s_ang
        disp = torch.sign(z_disp) * self._quantile(self._t["dxy"], rows2, u_disp) * s_disp
        return {"dtheta_1": ang[0], "dtheta_2": ang[1], "dx_1": disp[0], "dx_2": disp[1]}

    def __repr__(self) -> str:
        return f"TabulatedScatterModel(path={str(self.path)!r}, n_mat={self.n_mat}, n_mom={self.n_mom})"


def build_scatter_table(
    path: str | Path,
    *,
    x0s: Sequence[float],
    mom_bins: Sequence[float],
    samples_dtheta: np.ndarray | Tensor,
    samples_dxy: np.ndarray | Tensor,
    deltaz: float,
    exp_disp_model: float = 1.85,
    correlation: float = PDG_CORRELATION,
) -> Path:
    """Write a tabulated-model file from (n_materials, n_mom, n_samples) samples of dtheta [rad] / dxy [m].

    Samples may be signed: absolute values are sorted per row. Material row i has X0 ``x0s[i]`` [m]; ``mom_bins``
    are the n_mom + 1 momentum edges [GeV]; ``deltaz`` [m] is the path length the samples correspond to.
    """
    dtheta = np.sort(np.abs(np.asarray(torch.as_tensor(samples_dtheta).cpu(), dtype=np.float32)), axis=-1)
    dxy = np.sort(np.abs(np.asarray(torch.as_tensor(samples_dxy).cpu(), dtype=np.float32)), axis=-1)
    x0s_a = np.asarray(x0s, dtype=np.float64).reshape(-1)
    edges = np.asarray(mom_bins, dtype=np.float64).reshape(-1)
    if dtheta.ndim != 3 or dtheta.shape != dxy.shape or dtheta.shape[2] < 2:
        raise ValueError("samples_dtheta and samples_dxy must share a (n_materials, n_mom, n_samples>=2) shape")
    if dtheta.shape[0] != len(x0s_a) or not (x0s_a > 0).all():
        raise ValueError(f"x0s must hold {dtheta.shape[0]} values > 0 (one per material row)")
    if edges.shape != (dtheta.shape[1] + 1,) or not (np.diff(edges) > 0).all() or edges[0] <= 0:
        raise ValueError(f"mom_bins must be {dtheta.shape[1] + 1} increasing edges > 0 GeV")
    check_number("deltaz", deltaz, low=0, low_open=True, unit="m")
    path = Path(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("model/dtheta", data=dtheta)
        f.create_dataset("model/dxy", data=dxy)
        f.create_dataset("meta_data/deltaz", data=float(deltaz))
        f.create_dataset("meta_data/mom_bins", data=edges)
        f.create_dataset("meta_data/x02id", data=np.stack([x0s_a, np.arange(len(x0s_a), dtype=np.float64)], 1))
        f.create_dataset("meta_data/exp_disp_model", data=float(exp_disp_model))
        f.create_dataset("meta_data/correlation", data=float(correlation))
    return path


def build_pdg_scatter_table(
    path: str | Path,
    *,
    x0s: Sequence[float],
    mom_bins: Sequence[float],
    deltaz: float = 0.01,
    n_samples: int = 10000,
    log_term: bool = True,
    generator: torch.Generator | None = None,
    device: DeviceLike = None,
) -> Path:
    """Tabulate the PDG model: samples for a ``deltaz`` step at each bin's geometric-centre momentum.

    Written with exp_disp_model = 1.5 (the L^1.5 law of a Gaussian random walk without the log term).
    """
    dev = resolve_device(device)
    edges = torch.as_tensor(mom_bins, dtype=DEFAULT_DTYPE, device=dev)
    x0_t = torch.as_tensor(x0s, dtype=DEFAULT_DTYPE, device=dev)
    p_ref = torch.sqrt(edges[1:] * edges[:-1])
    shape = (len(x0_t), len(p_ref), int(n_samples))
    x0_b = x0_t[:, None, None].expand(shape).reshape(-1)
    mom_b = p_ref[None, :, None].expand(shape).reshape(-1)
    out = PDGScatterModel(log_term=log_term).compute_scattering(
        x0=x0_b, step_length=torch.full_like(x0_b, float(deltaz)), mom=mom_b, generator=generator
    )
    return build_scatter_table(
        path,
        x0s=x0_t.tolist(),
        mom_bins=edges.tolist(),
        samples_dtheta=out["dtheta_1"].reshape(shape),
        samples_dxy=out["dx_1"].reshape(shape),
        deltaz=deltaz,
        exp_disp_model=1.5,
        correlation=PDG_CORRELATION,
    )


def _read_x02id(md: h5py.Group) -> np.ndarray:
    """(n, 2) rows of (X0, row id) from ``meta_data``: a numeric (n, 2) dataset, or a JSON string mapping X0 -> row
    stored as a string dataset ``x02id`` or as the attribute ``x02id`` of ``meta_data``."""
    raw = md["x02id"][()] if "x02id" in md else md.attrs.get("x02id")
    if raw is None:
        raise KeyError("meta_data/x02id")
    if isinstance(raw, (bytes, str, np.bytes_, np.str_)) or (isinstance(raw, np.ndarray) and raw.dtype.kind in "OSU"):
        text = raw.item() if isinstance(raw, np.ndarray) else raw
        text = text.decode() if isinstance(text, (bytes, np.bytes_)) else str(text)
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"meta_data/x02id is not valid JSON: {err}") from None
        if not isinstance(mapping, dict) or not mapping:
            raise ValueError("meta_data/x02id JSON must be a non-empty object {X0: row id}")
        return np.array([[float(k), float(v)] for k, v in mapping.items()], dtype=np.float64)
    return np.asarray(raw, dtype=np.float64)
