"""``Volume``: an ordered stack of detector and passive layers, with optional fixed-budget learning.

Layers are ordered by decreasing z (top first) and must not overlap. The passive layers form one contiguous block of
cubic voxels of edge ``size`` with footprint x in [0, lw[0]], y in [0, lw[1]]. Voxel indices are (x, y, z) with the z
index counted from the *bottom* passive layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from ..checks import check_number, is_voxel_multiple
from ..runtime import DEFAULT_DTYPE
from .layer import AbsDetectorLayer
from .layer_base import AbsLayer

if TYPE_CHECKING:
    from ..muon.muon_batch import MuonBatch
    from .passive_layer import PassiveLayer

__all__ = ["Volume"]

Z_TOL: float = 1e-6
"""Tolerance [m] for layer contiguity / overlap checks."""
LOOKUP_TOL: float = 1e-5
"""Tolerance [m] (float32 rounding) for points on the outer faces in ``lookup_passive_xyz_coords``."""


def _assign_loaded_budget(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook of a fixed-budget ``Volume``: hand the loaded budget split to the panels."""
    with torch.no_grad():
        module.assign_budget()  # type: ignore[operator]


class Volume(nn.Module):
    """Container of layers that propagates muons through them.

    Args:
        layers: ``nn.ModuleList`` (or list) of ``AbsLayer`` s ordered by decreasing z, non-overlapping.
        budget: optional total detector cost (> 0). When given, learnable ``budget_weights`` (one per budget slot, zeros)
            are created and ``budget * softmax(budget_weights)`` is handed to the detector layers on every forward.

    Attributes:
        record_xyz_hist: call ``mu.snapshot_xyz()`` after each layer in ``forward`` (costs memory; default True).
    """

    _xyz_edges: Tensor  # non-persistent buffer of the voxel grid
    budget_weights: nn.Parameter  # fixed-budget mode only

    def __init__(self, layers: nn.ModuleList | Sequence[AbsLayer], budget: float | Tensor | None = None) -> None:
        super().__init__()
        module_list = nn.ModuleList(layers) if not isinstance(layers, nn.ModuleList) else layers
        typed_layers = cast("Sequence[AbsLayer]", module_list)  # checked to hold AbsLayer s just below
        self._check_layers(typed_layers)
        self.layers = typed_layers
        self.record_xyz_hist: bool = True
        self._target: Tensor | None = None
        passives = self.get_passives()
        if passives:
            self._register_voxel_grid(passives)
        self.budget: Tensor | None = None
        if budget is not None:
            b = self._check_budget(budget)
            self.budget = torch.tensor(b, dtype=DEFAULT_DTYPE, device=self.device)
            n_costs = sum(d._n_costs for d in self.get_detectors())
            self.budget_weights = nn.Parameter(torch.zeros(n_costs, dtype=DEFAULT_DTYPE, device=self.device))
            with torch.no_grad():  # configure the panels now; forward re-assigns with gradients
                self.assign_budget()
            # loaded budget weights reach the panels at once (not only at the next forward): a loaded detector's spans,
            # costs and drawings are the trained ones
            self.register_load_state_dict_post_hook(_assign_loaded_budget)

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_budget(budget: float | Tensor) -> float:
        return check_number("budget", budget, low=0, low_open=True, unit="(total detector cost)")

    @staticmethod
    def _check_layers(layers: Sequence[AbsLayer]) -> None:
        if len(layers) == 0 or not all(isinstance(layer, AbsLayer) for layer in layers):
            raise ValueError("layers must be a non-empty ModuleList of AbsLayer objects")
        if len({layer.device for layer in layers}) != 1:
            raise ValueError(f"layers must all be on one device, got {sorted({str(layer.device) for layer in layers})}")
        for i in range(len(layers) - 1):
            a, b = layers[i], layers[i + 1]
            if not a.z_top > b.z_top:
                raise ValueError(
                    f"layers must be ordered by decreasing z (top): layers[{i}].z={a.z_top:.6g} <= layers[{i + 1}].z={b.z_top:.6g}"
                )
            if a.z_bottom < b.z_top - Z_TOL:
                raise ValueError(
                    f"layers must not overlap: layers[{i}] bottom {a.z_bottom:.6g} m is below layers[{i + 1}] top {b.z_top:.6g} m"
                )
        idx = [i for i, layer in enumerate(layers) if not isinstance(layer, AbsDetectorLayer)]
        if not idx:
            return
        if idx != list(range(idx[0], idx[-1] + 1)):
            raise ValueError(f"layers: passive layers must be contiguous in the list (one passive block), got indices {idx}")
        ref = layers[idx[0]]
        for i in idx[1:]:
            layer = layers[i]
            if not torch.allclose(layer.lw.cpu(), ref.lw.cpu(), rtol=0, atol=Z_TOL):
                raise ValueError(
                    f"lw of every passive layer must be equal: layers[{i}].lw={layer.lw.tolist()} != {ref.lw.tolist()}"
                )
            if abs(layer.size - ref.size) > Z_TOL:
                raise ValueError(f"size of every passive layer must be equal: layers[{i}].size={layer.size} != {ref.size}")
            if abs(layers[i - 1].z_bottom - layer.z_top) > Z_TOL:
                raise ValueError(f"layers: passive layers must touch (one contiguous block): gap above layers[{i}]")
        if not bool(is_voxel_multiple(ref.lw.cpu(), ref.size).all()):
            raise ValueError(f"lw {ref.lw.tolist()} of the passive layers must be a multiple of the voxel size {ref.size}")
        groups = Volume._split_groups(layers)
        both = set(groups["above"]) & set(groups["below"])
        if both:
            raise ValueError(f"layers: detector groups {sorted(both)} appear both above and below the passive block")

    @staticmethod
    def _split_groups(layers: Sequence[AbsLayer]) -> dict[str, list[str]]:
        idx = [i for i, layer in enumerate(layers) if not isinstance(layer, AbsDetectorLayer)]
        first = idx[0] if idx else len(layers)
        out: dict[str, list[str]] = {"above": [], "below": []}
        for i, layer in enumerate(layers):
            if isinstance(layer, AbsDetectorLayer):
                key = "above" if i < first else "below"
                if layer.pos not in out[key]:
                    out[key].append(layer.pos)
        return out

    # ------------------------------------------------------------------ layer bookkeeping
    def get_detectors(self) -> list[AbsDetectorLayer]:
        """Detector layers, in layer order (decreasing z)."""
        return [layer for layer in self.layers if isinstance(layer, AbsDetectorLayer)]

    def get_passives(self) -> list[PassiveLayer]:
        """Passive layers (all non-detector layers), in layer order (decreasing z)."""
        return cast("list[PassiveLayer]", [layer for layer in self.layers if not isinstance(layer, AbsDetectorLayer)])

    def get_detector_groups(self) -> dict[str, list[str]]:
        """Detector group names in z order: ``{"above": [...], "below": [...]}`` relative to the passive block."""
        return self._split_groups(self.layers)

    def _passives_or_raise(self) -> list[PassiveLayer]:
        passives = self.get_passives()
        if not passives:
            raise ValueError("this volume has no passive layers")
        return passives

    @property
    def device(self) -> torch.device:
        return self.layers[0].device

    @property
    def lw(self) -> Tensor:
        """(2,) footprint [m] of the passive block."""
        return self._passives_or_raise()[0].lw

    @property
    def passive_size(self) -> float:
        """Voxel edge [m] of the passive block."""
        return self._passives_or_raise()[0].size

    @property
    def h(self) -> Tensor:
        """Height [m] of the volume: the top of the first layer, (1,) tensor."""
        return self.layers[0].z

    def get_passive_z_range(self) -> tuple[Tensor, Tensor]:
        """``(bottom, top)`` [m] of the passive block, each a (1,) tensor."""
        p = self._passives_or_raise()
        return p[-1].z - p[-1].size, p[0].z

    # ------------------------------------------------------------------ voxels
    def _register_voxel_grid(self, passives: list[PassiveLayer]) -> None:
        size = passives[0].size
        n_x, n_y = (passives[0].lw.cpu().double() / size).round().long().tolist()
        n_z = len(passives)
        bottom = passives[-1].z_bottom
        opts: dict[str, Any] = dict(dtype=DEFAULT_DTYPE, device=self.device)
        xs = torch.arange(n_x, **opts) * size
        ys = torch.arange(n_y, **opts) * size
        zs = bottom + torch.arange(n_z, **opts) * size
        grid = torch.stack(torch.meshgrid(xs, ys, zs, indexing="ij"), dim=-1).reshape(-1, 3)
        self.register_buffer("_xyz_edges", grid, persistent=False)
        self._n_vox_xyz = (n_x, n_y, n_z)

    def build_xyz_edges(self) -> Tensor:
        """(n_vox, 3) low corners [m] of the passive voxels; x varies slowest, z (from the bottom) fastest."""
        self._passives_or_raise()
        return self._xyz_edges.clone()

    @property
    def xyz_edges(self) -> Tensor:
        """(n_vox, 3) voxel low corners [m] (see ``build_xyz_edges``)."""
        return self.build_xyz_edges()

    @property
    def xyz_centres(self) -> Tensor:
        """(n_vox, 3) voxel centres [m], same ordering as ``xyz_edges``."""
        return self.build_xyz_edges() + self.passive_size / 2

    def lookup_passive_xyz_coords(self, xyz: Tensor) -> Tensor:
        """(N, 3) long voxel indices (x, y, z from the bottom) of absolute positions ``xyz`` (N, 3) [m].

        Points on the outer faces (within 1e-5 m) belong to the adjacent voxel; ``ValueError`` if any point lies outside the block.
        """
        passives = self._passives_or_raise()
        xyz = torch.as_tensor(xyz, device=self.device).reshape(-1, 3).detach()
        lx, ly = passives[0].lw.tolist()
        low = torch.tensor([0.0, 0.0, passives[-1].z_bottom], dtype=xyz.dtype, device=self.device)
        high = torch.tensor([lx, ly, passives[0].z_top], dtype=xyz.dtype, device=self.device)
        outside = ((xyz < low - LOOKUP_TOL) | (xyz > high + LOOKUP_TOL)).any(dim=1)
        if bool(outside.any()):
            raise ValueError(f"xyz: {int(outside.sum())} point(s) lie outside the passive block {low.tolist()} - {high.tolist()}")
        n_max = torch.tensor(self._n_vox_xyz, device=self.device) - 1
        idx = torch.floor((xyz - low) / self.passive_size).long()
        return torch.minimum(idx.clamp_min(0), n_max)

    def get_rad_cube(self) -> Tensor:
        """(n_z, n_x, n_y) X0 [m] of the passive voxels; z index 0 = bottom layer."""
        passives = self._passives_or_raise()
        if any(getattr(p, "rad_length", None) is None for p in passives):
            raise ValueError("rad_length_func: no X0 map loaded in the passive layers; call load_rad_length first")
        return torch.stack([cast(Tensor, p.rad_length) for p in reversed(passives)], dim=0)  # checked above

    def load_rad_length(self, rad_length_func: Callable[..., Tensor], target: Tensor | None = None) -> None:
        """Load a new passive layout (``f(*, z, lw, size) -> (n_x, n_y)`` X0 [m]) into every passive layer; set ``target``."""
        for p in self._passives_or_raise():
            p.load_rad_length(rad_length_func)
        self._target = target

    @property
    def target(self) -> Tensor | None:
        """Target of the loaded layout (e.g. a class ID), as given to ``load_rad_length``."""
        return self._target

    # ------------------------------------------------------------------ cost and budget
    def get_cost(self) -> Tensor:
        """Total detector cost (0-d tensor): the sum of the layer costs, or the fixed budget in budget mode."""
        if self.budget is not None:
            return self.budget.clone()
        costs = [d.get_cost().reshape(()) for d in self.get_detectors()]
        if not costs:
            return torch.zeros((), dtype=DEFAULT_DTYPE, device=self.device)
        return torch.stack(costs).sum()

    def assign_budget(self) -> None:
        """Hand ``budget * softmax(budget_weights)`` to the detector layers, ``_n_costs`` entries each (layer order)."""
        if self.budget is None:
            return
        budgets = self.budget * torch.softmax(self.budget_weights, dim=0)
        start = 0
        for d in self.get_detectors():
            n = d._n_costs
            if n > 0:
                d.assign_budget(budgets[start : start + n])
            start += n

    # ------------------------------------------------------------------ propagation
    def forward(self, mu: MuonBatch, generator: torch.Generator | None = None) -> None:
        """Assign budgets, then pass ``mu`` through every layer (top to bottom), snapshotting positions if enabled."""
        self.assign_budget()
        for layer in self.layers:
            layer(mu, generator)
            if self.record_xyz_hist:
                mu.snapshot_xyz()

    # ------------------------------------------------------------------ drawing
    def draw(self, *, xlim: tuple[float, float], ylim: tuple[float, float], zlim: tuple[float, float]):
        """3-D matplotlib drawing of the passive layers (boxes) and panels (rectangles); returns the figure."""
        import matplotlib.pyplot as plt
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection

        fig = plt.figure(figsize=(9, 9))
        ax = fig.add_subplot(111, projection="3d")

        def rect(x0: float, x1: float, y0: float, y1: float, z: float) -> list[tuple[float, float, float]]:
            return [(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)]

        for p in self.get_passives():
            lx, ly = p.lw.tolist()
            faces = [rect(0, lx, 0, ly, p.z_top), rect(0, lx, 0, ly, p.z_bottom)]
            ax.add_collection3d(Poly3DCollection(faces, facecolors="grey", edgecolors="k", alpha=0.15))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, d in enumerate(self.get_detectors()):
            for panel in getattr(d, "panels", []):
                (cx, cy), z = panel.xy.detach().cpu().tolist(), float(panel.z.detach())
                sx, sy = (panel.get_scaled_xy_span().detach().cpu() / 2).tolist()
                poly = Poly3DCollection([rect(cx - sx, cx + sx, cy - sy, cy + sy, z)], alpha=0.4)
                poly.set_facecolor(colours[i % len(colours)])
                poly.set_edgecolor("k")
                ax.add_collection3d(poly)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_zlim(*zlim)
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m]")
        ax.set_zlabel("z [m]")
        return fig
