"""Ready-made volumes: the reference panel test volume and its generalisations, plus X0-cube helpers.

Default layout (TomOpt's test volume): a 0.2 m detector layer ("above", top z = 1.0 m) with 4 panels at
z = 1.00 / 0.95 / 0.90 / 0.85, six 0.1 m passive layers from z = 0.8 down to 0.2, and a 0.2 m detector layer
("below", top z = 0.2 m) with 4 panels at z = 0.20 / 0.15 / 0.10 / 0.05; panels centred on the footprint.
In general each detector layer is ``2 * voxel_size`` thick and holds its panels evenly spaced from its top.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..runtime import DEFAULT_DTYPE, DeviceLike, resolve_device
from .layer import PanelDetectorLayer
from .panel import DetectorPanel, SigmoidDetectorPanel
from .passive_layer import PassiveLayer
from .scatter_model import PDGScatterModel
from .volume import Volume

__all__ = ["build_panel_volume", "panel_volume_heights", "rad_length_func_from_cube"]

SpanLike = float | Sequence[float]


def _pos_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _pos_float(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def panel_volume_heights(passive_n_layers: int, voxel_size: float) -> tuple[float, float, float]:
    """``(h, passive_top, passive_bottom)`` [m] of a ``build_panel_volume`` layout."""
    det = 2 * voxel_size
    return det * 2 + passive_n_layers * voxel_size, det + passive_n_layers * voxel_size, det


def _panels(
    n: int,
    z_top: float,
    det_size: float,
    lw: Sequence[float],
    span: Sequence[float],
    *,
    res: float,
    eff: float,
    sigmoid_smooth: float | None,
    device: torch.device,
) -> list[DetectorPanel]:
    out: list[DetectorPanel] = []
    for i in range(n):
        kw: dict[str, Any] = dict(
            res=res, eff=eff, init_xyz=(lw[0] / 2, lw[1] / 2, z_top - i * det_size / n), init_xy_span=span, device=device
        )
        out.append(DetectorPanel(**kw) if sigmoid_smooth is None else SigmoidDetectorPanel(smooth=sigmoid_smooth, **kw))
    return out


def build_panel_volume(
    *,
    n_panels_above: int = 4,
    n_panels_below: int = 4,
    passive_n_layers: int = 6,
    lw: Sequence[float] = (1.0, 1.0),
    voxel_size: float = 0.1,
    res: float = 1e4,
    eff: float = 0.9,
    panel_span: SpanLike = 1.0,
    step_sz: float = 0.01,
    scatter_model: str = "pdg",
    sigmoid_smooth: float | None = None,
    budget: float | None = None,
    energy_loss: bool = False,
    highland_beta: bool = True,
    device: DeviceLike = None,
) -> Volume:
    """Panel volume: ``n_panels_above`` panels, ``passive_n_layers`` passive layers, ``n_panels_below`` panels.

    Args:
        lw: passive footprint (x, y) [m]; voxel_size: passive layer thickness = voxel edge [m].
        res, eff: nominal panel resolution [1/m] and efficiency; panel_span: full panel width(s) [m] (scalar or (x, y)).
        step_sz, scatter_model: passive-layer propagation step [m] and scattering model.
        sigmoid_smooth: ``None`` for Gaussian ``DetectorPanel`` s, else ``SigmoidDetectorPanel`` s with this smoothness.
        budget: optional total detector budget (fixed-budget mode); device: device of every layer.
        energy_loss: continuous energy loss in the passive layers (``PassiveLayer``); off = TomOpt.
        highland_beta: Highland with the muon's beta (``PDGScatterModel(use_beta=True)``); off = TomOpt's beta = 1.
    """
    dev = resolve_device(device)
    n_above = _pos_int("n_panels_above", n_panels_above, 1)
    n_below = _pos_int("n_panels_below", n_panels_below, 1)
    n_pass = _pos_int("passive_n_layers", passive_n_layers, 1)
    size = _pos_float("voxel_size", voxel_size)
    lw_t = tuple(_pos_float("lw", v) for v in np.asarray(lw, dtype=float).reshape(-1))
    if len(lw_t) != 2:
        raise ValueError(f"lw must be two lengths > 0 m, got {lw!r}")
    span_arr = np.broadcast_to(np.asarray(panel_span, dtype=float).reshape(-1), (2,))
    span = tuple(_pos_float("panel_span", v) for v in span_arr)
    if sigmoid_smooth is not None:
        _pos_float("sigmoid_smooth", sigmoid_smooth)
    det = 2 * size
    h, passive_top, _ = panel_volume_heights(n_pass, size)
    pkw: dict[str, Any] = dict(res=res, eff=eff, sigmoid_smooth=sigmoid_smooth, device=dev)
    layers: list[nn.Module] = [
        PanelDetectorLayer("above", lw=lw_t, z=h, size=det, panels=_panels(n_above, h, det, lw_t, span, **pkw))
    ]
    for i in range(n_pass):
        z = round(passive_top - i * size, 10)
        model = PDGScatterModel(use_beta=highland_beta) if scatter_model == "pdg" else scatter_model
        layers.append(
            PassiveLayer(lw=lw_t, z=z, size=size, step_sz=step_sz, scatter_model=model, energy_loss=energy_loss, device=dev)
        )
    layers.append(PanelDetectorLayer("below", lw=lw_t, z=det, size=det, panels=_panels(n_below, det, det, lw_t, span, **pkw)))
    return Volume(nn.ModuleList(layers), budget=budget)


def rad_length_func_from_cube(cube: np.ndarray | Tensor, *, z_bottom: float, size: float) -> Callable[..., Tensor]:
    """A ``RadLengthFunc`` serving the (n_z, n_x, n_y) X0 ``cube`` [m] (z index 0 = bottom layer, as ``get_rad_cube``).

    The layer whose top is ``z`` gets slice ``round((z - size - z_bottom) / size)``; ``ValueError`` if out of range or
    if the slice shape does not match the layer's voxel grid.
    """
    cube_t = torch.as_tensor(np.asarray(cube), dtype=DEFAULT_DTYPE)
    if cube_t.ndim != 3:
        raise ValueError(f"cube must have shape (n_z, n_x, n_y), got {tuple(cube_t.shape)}")

    def func(*, z: Tensor, lw: Tensor, size: float = size) -> Tensor:
        z_top = float(torch.as_tensor(z).reshape(-1)[0])
        idx = int(round((z_top - size - z_bottom) / size))
        if not 0 <= idx < cube_t.shape[0]:
            raise ValueError(f"no X0 slice for the layer with top z={z_top:.4g} m (cube has {cube_t.shape[0]} layers)")
        shape = tuple(int(round(float(v) / size)) for v in torch.as_tensor(lw).reshape(-1))
        if tuple(cube_t.shape[1:]) != shape:
            raise ValueError(f"X0 slice shape {tuple(cube_t.shape[1:])} does not match the layer grid {shape}")
        return cube_t[idx].to(torch.as_tensor(lw).device)

    return func
