"""Ladle-furnace detectors: the initial layout of the optimisation and two hand-designed baselines.

Geometry (all three): a 1 x 1 m footprint, total height 1.8 m; ten 0.1 m passive layers (tops 1.4 ... 0.5 m, the
ladle of :mod:`.data`), a 0.4 m detector layer ``"above"`` (top 1.8 m) and one ``"below"`` (top 0.4 m), each with four
``SigmoidDetectorPanel`` s of full width ``span`` [m] (cost = span^2 per panel, 8 span^2 in all: 5.12 for 0.8 m).
Each function returns the ``nn.ModuleList`` of layers, ready for ``Volume(layers, budget=...)``.

* initial: each group's panels stacked within 6 cm next to the ladle (short lever arm) and off-centre, (0.35, 0.35) m
  above and (0.65, 0.65) m below, so that the optimisation has xy, z and span to fix;
* baseline 1: panels evenly spread over the whole height of each detector layer, centred (longest lever arm);
* baseline 2: two pairs per group, one next to the ladle and one at the far end of the layer, centred.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ...runtime import DeviceLike, resolve_device
from ...volume.layer import PanelDetectorLayer
from ...volume.panel import SigmoidDetectorPanel
from ...volume.passive_layer import PassiveLayer

__all__ = [
    "LADLE_LW",
    "LADLE_VOXEL_SIZE",
    "LADLE_N_LAYERS",
    "get_initial_detector",
    "get_baseline_detector_1",
    "get_baseline_detector_2",
    "build_ladle_furnace_layers",
]

LADLE_LW: tuple[float, float] = (1.0, 1.0)
"""Passive footprint (x, y) [m]."""
LADLE_VOXEL_SIZE: float = 0.1
"""Voxel edge = passive layer thickness [m]."""
LADLE_N_LAYERS: int = 10
"""Number of passive layers (passive block from z = 0.4 m to 1.4 m)."""
_DET_SIZE = 0.4  # [m] detector layer thickness
_PASSIVE_TOP = _DET_SIZE + LADLE_N_LAYERS * LADLE_VOXEL_SIZE  # 1.4 m
_TOP = _PASSIVE_TOP + _DET_SIZE  # 1.8 m

PanelSpec = tuple[float, float, float]  # (x, y, z) [m]


def build_ladle_furnace_layers(
    *,
    above: Sequence[PanelSpec],
    below: Sequence[PanelSpec],
    res: float = 1e4,
    eff: float = 0.9,
    span: float = 0.8,
    smooth: float = 0.5,
    energy_loss: bool = False,
    device: DeviceLike = None,
) -> nn.ModuleList:
    """Layers of the ladle-furnace volume with panels at the given centres (x, y, z) [m].

    Args:
        above, below: panel centres of the detector layers above (z in [1.4, 1.8] m) and below (z in [0, 0.4] m).
        res: panel resolution [1/m]; eff: panel efficiency; span: full panel width [m] (square panels).
        smooth: sigmoid smoothness of the panels' training-mode profile.
        energy_loss: continuous energy loss of the muons in the passive layers (off: TomOpt).
        device: device of every layer.
    """
    dev = resolve_device(device)

    def panels(specs: Sequence[PanelSpec]) -> list[SigmoidDetectorPanel]:
        return [
            SigmoidDetectorPanel(smooth=smooth, res=res, eff=eff, init_xyz=tuple(s), init_xy_span=(span, span), device=dev)
            for s in specs
        ]

    layers: list[nn.Module] = [PanelDetectorLayer("above", lw=LADLE_LW, z=_TOP, size=_DET_SIZE, panels=panels(above))]
    for i in range(LADLE_N_LAYERS):
        z = round(_PASSIVE_TOP - i * LADLE_VOXEL_SIZE, 10)
        layers.append(PassiveLayer(lw=LADLE_LW, z=z, size=LADLE_VOXEL_SIZE, energy_loss=energy_loss, device=dev))
    layers.append(PanelDetectorLayer("below", lw=LADLE_LW, z=_DET_SIZE, size=_DET_SIZE, panels=panels(below)))
    return nn.ModuleList(layers)


def get_initial_detector(
    *, res: float = 1e4, eff: float = 0.9, span: float = 0.8, energy_loss: bool = False, device: DeviceLike = None
) -> nn.ModuleList:
    """Starting layout of the optimisation: per group four panels 2 cm apart next to the ladle, off-centre
    ((0.35, 0.35) m above, (0.65, 0.65) m below). See the module docstring for the geometry."""
    above = [(0.35, 0.35, z) for z in (1.47, 1.45, 1.43, 1.41)]
    below = [(0.65, 0.65, z) for z in (0.39, 0.37, 0.35, 0.33)]
    return build_ladle_furnace_layers(
        above=above, below=below, res=res, eff=eff, span=span, energy_loss=energy_loss, device=device
    )


def get_baseline_detector_1(
    *, res: float = 1e4, eff: float = 0.9, span: float = 0.8, energy_loss: bool = False, device: DeviceLike = None
) -> nn.ModuleList:
    """Hand-designed baseline 1: per group four centred panels spread evenly over the 0.4 m detector layer
    (z = 1.79, 1.66, 1.53, 1.41 m above; 0.39, 0.26, 0.13, 0.01 m below)."""
    above = [(0.5, 0.5, z) for z in (1.79, 1.66, 1.53, 1.41)]
    below = [(0.5, 0.5, z) for z in (0.39, 0.26, 0.13, 0.01)]
    return build_ladle_furnace_layers(
        above=above, below=below, res=res, eff=eff, span=span, energy_loss=energy_loss, device=device
    )


def get_baseline_detector_2(
    *, res: float = 1e4, eff: float = 0.9, span: float = 0.8, energy_loss: bool = False, device: DeviceLike = None
) -> nn.ModuleList:
    """Hand-designed baseline 2: per group two centred pairs of panels 5 cm apart, one pair next to the ladle and
    one at the far end of the detector layer (z = 1.79, 1.74, 1.46, 1.41 m above; 0.39, 0.34, 0.06, 0.01 m below)."""
    above = [(0.5, 0.5, z) for z in (1.79, 1.74, 1.46, 1.41)]
    below = [(0.5, 0.5, z) for z in (0.39, 0.34, 0.06, 0.01)]
    return build_ladle_furnace_layers(
        above=above, below=below, res=res, eff=eff, span=span, energy_loss=energy_loss, device=device
    )
