"""Small-walls volume: a block of soil (1 m voxels by default) between two layers of four large panels, and its wrapper.

Layout (z up): a detector layer ``"below"`` of height ``det_height`` [m] at the bottom, the passive block of
``passive_lwh`` [m] (layers of ``size``), a detector layer ``"above"`` of height ``det_height``. Each detector layer
holds four Gaussian ``DetectorPanel`` s, evenly spaced from its top (z = top - i det_height / 4), centred on the
footprint, of full width ``span`` times the footprint (x and y): cost = 8 span^2 l w.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from ...muon.generation import MuonGenerator2016
from ...optimisation.wrapper.volume_wrapper import PanelVolumeWrapper
from ...runtime import DeviceLike, resolve_device
from ...volume.layer import PanelDetectorLayer
from ...volume.panel import DetectorPanel
from ...volume.passive_layer import PassiveLayer
from ...volume.volume import Volume

__all__ = ["get_small_walls_volume", "get_small_walls_volume_wrapper"]

PartialOpt = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

_XY_OPT: PartialOpt = partial(torch.optim.Adam, lr=0.05)
_Z_OPT: PartialOpt = partial(torch.optim.Adam, lr=0.01)
_SPAN_OPT: PartialOpt = partial(torch.optim.Adam, lr=0.05)


def get_small_walls_volume(
    size: float = 1,
    passive_lwh: Tensor | Sequence[float] = (10.0, 10.0, 10.0),
    span: float = 4.0,
    res: float = 1e4,
    eff: float = 1.0,
    det_height: float = 1.0,
    device: DeviceLike = None,
) -> Volume:
    """The small-walls ``Volume`` (module docstring).

    Args:
        size: voxel edge = passive layer thickness [m]; passive_lwh: passive block (length, width, height) [m],
            multiples of ``size``; span: panel width as a multiple of the footprint; res: panel resolution [1/m];
        eff: panel efficiency; det_height: height of each detector layer [m]; device: device of every layer.
    """
    dev = resolve_device(device)
    lwh = [float(v) for v in torch.as_tensor(passive_lwh, dtype=torch.float64).reshape(-1)]
    if len(lwh) != 3 or min(lwh) <= 0:
        raise ValueError(f"passive_lwh must be three lengths > 0 m, got {passive_lwh!r}")
    size, det_height, span = float(size), float(det_height), float(span)
    if not (size > 0 and det_height > 0 and span > 0):
        raise ValueError(f"size, det_height and span must be > 0, got {size}, {det_height}, {span}")
    n_layers = int(round(lwh[2] / size))
    if n_layers < 1 or abs(n_layers * size - lwh[2]) > 1e-6:
        raise ValueError(f"passive height {lwh[2]} m must be a whole number of layers of size {size} m")
    lw = (lwh[0], lwh[1])
    top = 2 * det_height + lwh[2]

    def panels(z_top: float) -> list[DetectorPanel]:
        return [
            DetectorPanel(
                res=res,
                eff=eff,
                init_xyz=(lw[0] / 2, lw[1] / 2, z_top - i * det_height / 4),
                init_xy_span=(span * lw[0], span * lw[1]),
                device=dev,
            )
            for i in range(4)
        ]

    layers: list[nn.Module] = [PanelDetectorLayer("above", lw=lw, z=top, size=det_height, panels=panels(top))]
    for i in range(n_layers):
        layers.append(PassiveLayer(lw=lw, z=round(det_height + lwh[2] - i * size, 10), size=size, device=dev))
    layers.append(PanelDetectorLayer("below", lw=lw, z=det_height, size=det_height, panels=panels(det_height)))
    return Volume(nn.ModuleList(layers))


def get_small_walls_volume_wrapper(
    size: float = 1,
    passive_lwh: Tensor | Sequence[float] = (10.0, 10.0, 10.0),
    span: float = 4.0,
    res: float = 1e4,
    eff: float = 1.0,
    det_height: float = 1.0,
    device: DeviceLike = None,
    *,
    xy_pos_opt: PartialOpt | None = _XY_OPT,
    z_pos_opt: PartialOpt | None = _Z_OPT,
    xy_span_opt: PartialOpt | None = _SPAN_OPT,
) -> PanelVolumeWrapper:
    """``PanelVolumeWrapper`` of :func:`get_small_walls_volume` with 1 GeV muons
    (``MuonGenerator2016.from_volume(volume, fixed_mom=1.0)``) and no loss function (set ``wrapper.loss_func`` to fit).

    The optimisers default to Adam, whose steps are about ``lr`` metres (xy 0.05 m, z 0.01 m, span 0.05 m).
    """
    volume = get_small_walls_volume(
        size=size, passive_lwh=passive_lwh, span=span, res=res, eff=eff, det_height=det_height, device=device
    )
    return PanelVolumeWrapper(
        volume,
        xy_pos_opt=xy_pos_opt,
        z_pos_opt=z_pos_opt,
        xy_span_opt=xy_span_opt,
        mu_generator=MuonGenerator2016.from_volume(volume, fixed_mom=1.0, device=volume.device),
    )
