"""Fill-level inference for the ladle furnace, and the linear de-biasing callback.

* :class:`PocaZLadleFurnaceFillLevelInferrer`: fill height from the efficiency- and precision-weighted mean height of
  the muons' PoCAs inside the ladle.
* :class:`EdgeDetLadleFurnaceFillLevelInferrer`: fill level as the layer at which the scattering density
  rho = 1 / X0 of a voxelwise X0 prediction drops, found by a pipeline of smoothing and 1-D edge-detection steps and a
  softmax over the layers (integer classes).
* :class:`LinearCorrectionCallback` (defined in :mod:`.debias`, importable from here as documented by TomOpt):
  replaces every prediction p by w p + b, with (w, b) refitted to the (p, target) pairs of each training volume
  batch (least squares, or a given optimiser).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ...inference.classifiers import AbsIntClassifierFromX0, X0InferrerLike
from ...inference.x0_base import AbsVolumeInferrer, NoMuonsError, panel_muon_efficiency
from .debias import LinearCorrectionCallback, fit_linear_correction

if TYPE_CHECKING:
    from ...inference.scattering import ScatterBatch
    from ...volume.volume import Volume

__all__ = [
    "PocaZLadleFurnaceFillLevelInferrer",
    "EdgeDetLadleFurnaceFillLevelInferrer",
    "LinearCorrectionCallback",
    "fit_linear_correction",
    "fill_layer_to_height",
    "fill_height_to_layer",
]

_TINY = 1e-12


def fill_height_to_layer(fill_z: Tensor, volume: Volume) -> Tensor:
    """Index k (from the bottom, long) of the topmost liquid layer: k = round((fill_z - z_bottom) / size) - 1."""
    bottom = float(volume.get_passive_z_range()[0].reshape(-1)[0])
    size = float(volume.passive_size)
    return torch.round((torch.as_tensor(fill_z).detach().double() - bottom) / size).long() - 1


def fill_layer_to_height(layer: Tensor, volume: Volume) -> Tensor:
    """Fill height [m] whose topmost liquid layer is ``layer``: z_bottom + (layer + 1) size (inverse of
    :func:`fill_height_to_layer`)."""
    bottom = float(volume.get_passive_z_range()[0].reshape(-1)[0])
    size = float(volume.passive_size)
    return bottom + (torch.as_tensor(layer).to(torch.float32) + 1.0) * size


class PocaZLadleFurnaceFillLevelInferrer(AbsVolumeInferrer):
    """Fill height [m] from the weighted mean height of the PoCAs inside the ladle.

    Muons scatter in the steel and hardly in the slag and air above, and the PoCA of a muon crossing a uniform scatterer
    lies on average at the middle of it. With the weighted mean PoCA height

        z_bar = sum_i w_i z_i / sum_i w_i,
        w_i = min(e_i W_i / max(sigma_z_i, sigma_min)^2, q_84),

    (e_i the muon efficiency, sigma_z_i the PoCA z uncertainty [m], q_84 the 84th percentile of the unclipped weights,
    so that a few very precise PoCAs cannot dominate) and W_i = S(x_i - x_lo) S(x_hi - x_i) S(y_i - y_lo) S(y_hi - y_i)
    S(z_i - z_bottom) S(z_top - z_i), S(d) = sigmoid(d / smooth), a soft window over the inside of the ladle
    (the footprint minus its one-voxel walls, the passive block in z), the prediction is

        h = z_bottom + 2 (z_bar - z_bottom),

    the top of a uniform scatterer standing on the bottom of the passive block whose middle is z_bar. The slag and the
    window's soft edges leave a small bias, linear in h, that :class:`LinearCorrectionCallback` removes.
    Differentiable w.r.t. the detector through the PoCAs, their uncertainties and the efficiencies.

    Args:
        volume: the ladle-furnace volume.
        smooth: width of the window's sigmoid edges [m].
        min_z_unc: floor sigma_min of the PoCA z uncertainty [m].
        clip_quantile: quantile of the weights at which they are clipped (1 = no clipping).
    """

    def __init__(self, volume: Volume, smooth: float = 0.1, *, min_z_unc: float = 0.01, clip_quantile: float = 0.84) -> None:
        if not float(smooth) > 0:
            raise ValueError(f"smooth must be a length > 0 m, got {smooth!r}")
        if not float(min_z_unc) > 0:
            raise ValueError(f"min_z_unc must be a length > 0 m, got {min_z_unc!r}")
        if not 0 < float(clip_quantile) <= 1:
            raise ValueError(f"clip_quantile must be in (0, 1], got {clip_quantile!r}")
        self._smooth = float(smooth)
        self.min_z_unc, self.clip_quantile = float(min_z_unc), float(clip_quantile)
        super().__init__(volume)

    def _reset_vars(self) -> None:
        self._data: dict[str, Tensor] | None = None
        self._pred: Tensor | None = None

    @property
    def smooth(self) -> Tensor:
        """Width of the window's sigmoid edges [m] (0-d tensor)."""
        return torch.tensor(self._smooth, device=self.device)

    def compute_efficiency(self, scatters: ScatterBatch) -> Tensor:
        """(N,) probability of at least two hits above and two below the passive volume."""
        return panel_muon_efficiency(scatters)

    def _get_data(self) -> dict[str, Tensor]:
        if self._data is None:
            parts = [
                (sb.poca_xyz.to(self.device), sb.poca_xyz_unc.to(self.device), self.compute_efficiency(sb).to(self.device))
                for sb in self.scatter_batches
                if sb.n_mu > 0
            ]
            if not parts:
                raise NoMuonsError(f"{type(self).__name__}: no muons to infer from; add_scatters() first")
            xyz, unc, eff = (torch.cat(t, 0) for t in zip(*parts))
            ok = torch.isfinite(xyz.detach()).all(1) & torch.isfinite(unc.detach()).all(1) & torch.isfinite(eff.detach())
            if not bool(ok.any()):
                raise NoMuonsError(f"{type(self).__name__}: all {len(ok)} muons have non-finite PoCAs")
            self._data = {"xyz": xyz[ok], "unc": unc[ok], "eff": eff[ok].reshape(-1, 1)}
        return self._data

    @property
    def n_mu(self) -> int:
        """Number of muons used in the inference (0 if none)."""
        try:
            return len(self._get_data()["xyz"])
        except NoMuonsError:
            return 0

    @property
    def muon_poca_xyz(self) -> Tensor:
        """(N, 3) PoCA positions [m]."""
        return self._get_data()["xyz"]

    @property
    def muon_poca_xyz_unc(self) -> Tensor:
        """(N, 3) PoCA position uncertainties [m]."""
        return self._get_data()["unc"]

    @property
    def muon_efficiency(self) -> Tensor:
        """(N, 1) muon efficiencies."""
        return self._get_data()["eff"]

    def muon_weights(self) -> Tensor:
        """(N,) clipped weights w_i of the PoCAs (class docstring)."""
        xyz, unc, eff = self.muon_poca_xyz, self.muon_poca_xyz_unc, self.muon_efficiency[:, 0]
        n_x, n_y, _ = self.shp_xyz
        lo = xyz.new_tensor([self.size, self.size, self.z_bottom])
        hi = xyz.new_tensor([(n_x - 1) * self.size, (n_y - 1) * self.size, self.z_top])
        window = (torch.sigmoid((xyz - lo) / self._smooth) * torch.sigmoid((hi - xyz) / self._smooth)).prod(1)
        w = eff * window / unc[:, 2].clamp_min(self.min_z_unc).square()
        if self.clip_quantile < 1 and len(w) > 1:
            w = torch.minimum(w, torch.quantile(w.detach(), self.clip_quantile))
        return w

    def get_prediction(self) -> Tensor:
        """(1,) predicted fill height [m] (memoised)."""
        if self._pred is None:
            w = self.muon_weights()
            z_bar = (w * self.muon_poca_xyz[:, 2]).sum() / w.sum().clamp_min(_TINY)
            self._pred = (self.z_bottom + 2.0 * (z_bar - self.z_bottom)).reshape(1)
        return self._pred

    @property
    def pred_height(self) -> Tensor:
        """(1,) predicted fill height [m]."""
        return self.get_prediction()


class EdgeDetLadleFurnaceFillLevelInferrer(AbsIntClassifierFromX0):
    """Fill level as an integer class (the index k, from the bottom, of the topmost liquid layer) from voxelwise X0s.

    The X0 map [m] of the wrapped inferrer becomes the scattering density rho = 1 / max(X0, 1e-4 m) [1/m] (liquid
    steel ~ 50, slag ~ 12, air ~ 0: the largest drop is at the liquid surface, whereas X0 itself jumps most at the
    slag-air boundary), then goes through ``pipeline``, a list of names of the methods below applied in order (3-D
    steps on the (z, x, y) map, ``avg_layers`` to the (z,) profile, 1-D steps on it), and the class probabilities are
    softmax over the layers of the resulting scores. The default pipeline scores layer k by the drop of the smoothed
    profile across its top, scaled to unit range. On the true X0 cube of every random layout it returns the true
    layer (tested). Give it a PoCA-localised X0 inferrer (e.g. ``partial(PanelX0Inferrer, tomopt_exact=True)`` or
    ``poca_floor=0``): the default calibrated estimator spreads each muon's scattering along its (nearly vertical)
    path, which flattens exactly the z profile this method needs.

    1-D edge kernels act along z with edge-replicated padding; for a profile r: ``ridge_1d_w`` gives
    y_k = mean(r_{k+1..k+1+w}) - mean(r_{k-w..k}) (rise across the top of layer k, means over w + 1 layers),
    ``prewit_1d`` y_k = r_{k+1} - r_{k-1}, ``laplacian_1d`` y_k = r_{k-1} - 2 r_k + r_{k+1}.

    Args:
        partial_x0_inferrer: X0 inferrer class / partial (called with ``volume=``) or registry name.
        volume: the ladle-furnace volume.
        pipeline: names of the steps.
        add_batch_dim: probabilities of shape (1, n_z) (as ``VolumeIntClassLoss`` expects) instead of (n_z,).
        output_probs: return the probabilities, else the fill height [m] of the most probable layer.
    """

    STEPS: tuple[str, ...] = (
        "remove_ladle",
        "avg_3d",
        "gauss_3d",
        "avg_layers",
        "avg_1d",
        "gauss_1d",
        "ridge_1d_0",
        "ridge_1d_2",
        "ridge_1d_4",
        "ridge_1d_8",
        "prewit_1d",
        "laplacian_1d",
        "negative",
        "max_div_min",
        "max_sub_min",
    )

    def __init__(
        self,
        partial_x0_inferrer: X0InferrerLike,
        volume: Volume,
        pipeline: Sequence[str] = (
            "remove_ladle",
            "avg_3d",
            "avg_layers",
            "avg_1d",
            "ridge_1d_0",
            "negative",
            "max_div_min",
        ),
        add_batch_dim: bool = True,
        output_probs: bool = True,
    ) -> None:
        super().__init__(partial_x0_inferrer, volume, output_probs=output_probs, class2float=fill_layer_to_height)
        bad = [s for s in pipeline if s not in self.STEPS]
        if bad:
            raise ValueError(f"pipeline has unknown steps {bad}; allowed: {self.STEPS}")
        self.pipeline = list(pipeline)
        self.add_batch_dim = bool(add_batch_dim)

    # ------------------------------------------------------------------ 3-D steps on (z, x, y)
    @staticmethod
    def remove_ladle(x: Tensor) -> Tensor:
        """Drop the one-voxel walls: (z, x, y) -> (z, x - 2, y - 2). Assumes the ladle is 1 voxel thick."""
        return x[..., 1:-1, 1:-1]

    @staticmethod
    def _conv3d(x: Tensor, kernel: Tensor) -> Tensor:
        """Normalised 3-D convolution over the grid (edge-replicated padding), same shape as ``x`` (z, x, y)."""
        k = kernel.to(x.device, x.dtype)
        pad = k.shape[0] // 2
        grid = F.pad(x.reshape(1, 1, *x.shape[-3:]), (pad,) * 6, mode="replicate")
        return F.conv3d(grid, (k / k.sum())[None, None]).reshape(x.shape)

    @staticmethod
    def avg_3d(x: Tensor) -> Tensor:
        """Mean over each voxel's 3 x 3 x 3 neighbourhood (edge-replicated)."""
        return EdgeDetLadleFurnaceFillLevelInferrer._conv3d(x, torch.ones(3, 3, 3))

    @staticmethod
    def gauss_3d(x: Tensor) -> Tensor:
        """Separable binomial (Gaussian, sigma ~ 0.7 voxel) smoothing with weights (1, 2, 1) / 4 per axis."""
        g = torch.tensor([1.0, 2.0, 1.0])
        return EdgeDetLadleFurnaceFillLevelInferrer._conv3d(x, g[:, None, None] * g[None, :, None] * g[None, None, :])

    @staticmethod
    def avg_layers(x: Tensor) -> Tensor:
        """(z, x, y) -> (z,): mean over each layer."""
        return x.mean((-2, -1))

    # ------------------------------------------------------------------ 1-D steps on (z,)
    @staticmethod
    def edge_det(x: Tensor, kernel: Tensor) -> Tensor:
        """y_k = sum_j kernel_j r_{k + j - c}, c = (len(kernel) - 1) // 2, over the (z,) profile ``x`` with
        edge-replicated padding (same length as ``x``)."""
        k = torch.as_tensor(kernel).to(x.device, x.dtype).reshape(-1)
        c = (len(k) - 1) // 2
        padded = F.pad(x.reshape(1, 1, -1), (c, len(k) - 1 - c), mode="replicate")
        return F.conv1d(padded, k.reshape(1, 1, -1)).reshape(x.shape)

    @staticmethod
    def avg_1d(x: Tensor) -> Tensor:
        """3-layer running mean of the profile."""
        return EdgeDetLadleFurnaceFillLevelInferrer.edge_det(x, torch.full((3,), 1.0 / 3.0))

    @staticmethod
    def gauss_1d(x: Tensor) -> Tensor:
        """Binomial (Gaussian, sigma ~ 0.7 layer) smoothing of the profile, weights (1, 2, 1) / 4."""
        return EdgeDetLadleFurnaceFillLevelInferrer.edge_det(x, torch.tensor([0.25, 0.5, 0.25]))

    def _ridge(self, x: Tensor, w: int) -> Tensor:
        n = w + 1
        k = torch.cat([torch.full((n,), -1.0 / n), torch.full((n,), 1.0 / n)])  # taps k - w ... k + 1 + w
        c = n - 1  # tap of layer k
        padded = F.pad(x.reshape(1, 1, -1), (c, len(k) - 1 - c), mode="replicate")
        return F.conv1d(padded, k.to(x.device, x.dtype).reshape(1, 1, -1)).reshape(x.shape)

    def ridge_1d_0(self, x: Tensor) -> Tensor:
        """y_k = r_{k+1} - r_k: rise across the top of layer k."""
        return self._ridge(x, 0)

    def ridge_1d_2(self, x: Tensor) -> Tensor:
        """Rise across the top of layer k between means over 3 layers."""
        return self._ridge(x, 2)

    def ridge_1d_4(self, x: Tensor) -> Tensor:
        """Rise across the top of layer k between means over 5 layers."""
        return self._ridge(x, 4)

    def ridge_1d_8(self, x: Tensor) -> Tensor:
        """Rise across the top of layer k between means over 9 layers."""
        return self._ridge(x, 8)

    def prewit_1d(self, x: Tensor) -> Tensor:
        """Prewitt (central-difference) derivative y_k = r_{k+1} - r_{k-1}."""
        return self.edge_det(x, torch.tensor([-1.0, 0.0, 1.0], device=x.device))

    def laplacian_1d(self, x: Tensor) -> Tensor:
        """Discrete second derivative y_k = r_{k-1} - 2 r_k + r_{k+1}."""
        return self.edge_det(x, torch.tensor([1.0, -2.0, 1.0], device=x.device))

    # ------------------------------------------------------------------ score scaling
    @staticmethod
    def negative(x: Tensor) -> Tensor:
        """-x."""
        return -x

    @staticmethod
    def max_div_min(x: Tensor) -> Tensor:
        """x / (max(x) - min(x)): scores of unit range (the softmax sharpness does not depend on the map's scale)."""
        return x / (x.max() - x.min()).clamp_min(_TINY)

    @staticmethod
    def max_sub_min(x: Tensor) -> Tensor:
        """(x - min(x)) / (max(x) - min(x)): scores in [0, 1]."""
        return (x - x.min()) / (x.max() - x.min()).clamp_min(_TINY)

    # ------------------------------------------------------------------ classes
    def x02probs(self, vox_preds: Tensor) -> Tensor:
        """Softmax over the layers of the pipeline's scores of rho = 1 / X0: (1, n_z) or (n_z,) probabilities that
        layer k is the topmost liquid layer."""
        x = 1.0 / vox_preds.clamp_min(1e-4)
        for step in self.pipeline:
            x = getattr(self, step)(x)
        if x.dim() != 1:
            raise ValueError(f"the pipeline {self.pipeline} must reduce the map to a (z,) profile (include 'avg_layers')")
        probs = torch.softmax(x, dim=-1)
        return probs[None] if self.add_batch_dim else probs
