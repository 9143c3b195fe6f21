"""Panel volumes from the ``volume`` parameter section (shared by the tomography tasks)."""

from __future__ import annotations

from config import VolumeParams
from tomopt_lib.runtime import DeviceLike
from tomopt_lib.volume.builders import build_panel_volume
from tomopt_lib.volume.volume import Volume

__all__ = ["build_volume", "passive_shape"]


def build_volume(
    volume: VolumeParams, device: DeviceLike = None, budget: float | None = None, panel_span: float | None = None
) -> Volume:
    """``build_panel_volume`` of a ``volume`` section; ``budget``: fixed-budget mode with that total detector cost;
    ``panel_span``: full panel width [m] instead of ``volume.panel_span``."""
    return build_panel_volume(
        n_panels_above=volume.n_panels_above,
        n_panels_below=volume.n_panels_below,
        passive_n_layers=volume.passive_n_layers,
        lw=list(volume.lw),
        voxel_size=volume.voxel_size,
        res=volume.res,
        eff=volume.eff,
        panel_span=volume.panel_span if panel_span is None else panel_span,
        step_sz=volume.step_sz,
        scatter_model=volume.scatter_model,
        sigmoid_smooth=volume.sigmoid_smooth,
        energy_loss=volume.energy_loss,
        highland_beta=volume.highland_beta,
        budget=budget,
        device=device,
    )


def passive_shape(volume: VolumeParams) -> tuple[int, int, int]:
    """Shape (z, x, y) of the X0 cube of a passive volume of this ``volume`` section (what passives files must hold)."""
    return (
        int(volume.passive_n_layers),
        int(round(volume.lw[0] / volume.voxel_size)),
        int(round(volume.lw[1] / volume.voxel_size)),
    )
