"""Detector helpers shared by the optimise and evaluate tasks: layouts, wrappers, passives, panel descriptions."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from config import MomentumParams, OptimiseParams, PassiveParams, StartLayout, VolumeParams
from tomopt_lib.inference.momentum import MomentumModel
from tomopt_lib.inference.volume import get_volume_inferrer
from tomopt_lib.io import PassiveRecord, read_passives, save_torch, write_json, write_passives
from tomopt_lib.optimisation.data import PassiveYielder
from tomopt_lib.optimisation.loss import VoxelLogX0Loss, VoxelX0Loss
from tomopt_lib.optimisation.wrapper import PanelVolumeWrapper
from tomopt_lib.runtime import DeviceLike
from tomopt_lib.volume.builders import rad_length_func_from_cube
from tomopt_lib.volume.volume import Volume

from .passives import generate_passive_records
from .volumes import build_volume

__all__ = [
    "DETECTOR_SCHEMA_VERSION",
    "build_start_volume",
    "build_reference_volume",
    "make_wrapper",
    "write_passive_set",
    "passive_layouts",
    "panels",
    "describe_detector",
    "panel_rows",
    "write_detector",
]

DETECTOR_SCHEMA_VERSION = 1
"""Version of ``models/detector.pt`` / ``models/detector.json``."""

_OPTS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def build_reference_volume(volume_cfg: VolumeParams, device: DeviceLike = "cpu", budget: float | None = None) -> Volume:
    """The layout a physicist would build by hand: panels centred, square, ``volume.panel_span`` wide (or, in
    fixed-budget mode, an equal share of ``budget`` each), evenly spaced in z inside each detector layer at the centres
    of n equal slices (so the layers above and below mirror each other about the passive block)."""
    vol = build_volume(volume_cfg, device, budget=budget)
    with torch.no_grad():
        for det in vol.get_detectors():
            ps = sorted(getattr(det, "panels", []), key=lambda p: -float(p.z))
            top, size = float(det.z.reshape(-1)[0]), float(det.size)
            for k, p in enumerate(ps):
                p.z.fill_(top - (k + 0.5) * size / len(ps))
    return vol


def build_start_volume(
    volume_cfg: VolumeParams, start: StartLayout, device: DeviceLike = "cpu", budget: float | None = None
) -> Volume:
    """The optimisation's starting layout: ``volume`` with ``start.panel_span`` and every panel shifted by
    ``start.xy_offset``, packed ``start.z_gap`` apart next to the passive block (``budget``: fixed-budget mode)."""
    vol = build_volume(volume_cfg, device, budget=budget, panel_span=start.panel_span)
    off = torch.as_tensor(list(start.xy_offset), dtype=vol.lw.dtype, device=vol.device)
    lw = vol.lw.to(off.dtype)
    gap = start.z_gap
    with torch.no_grad():  # deterministic: conform_detector would also jitter z with the global RNG
        for p in panels(vol):
            p.xy.copy_(torch.minimum(torch.maximum(p.xy + off, torch.zeros_like(lw)), lw))  # centres stay on the footprint
        if gap is not None:
            _pack_z(vol, float(gap))
    return vol


def _pack_z(vol: Volume, gap: float) -> None:
    """Pack the panels of each detector layer ``gap`` apart against the passive volume (1 mm margin, inside the layer)."""
    top, bottom = (float(t.reshape(-1)[0]) for t in vol.get_passive_z_range()[::-1])
    for det in vol.get_detectors():
        ps = sorted(getattr(det, "panels", []), key=lambda p: -float(p.z))
        z_hi, z_lo = float(det.z.reshape(-1)[0]), float(det.z.reshape(-1)[0]) - float(det.size)
        if z_lo >= top - 1e-5:  # above the passive (float32 heights: compare with a tolerance above their precision)
            zs = [min(z_lo + 1e-3 + gap * (len(ps) - 1 - i), z_hi - 1e-3) for i in range(len(ps))]
        else:  # below: pack downwards from its top edge
            zs = [max(z_hi - 1e-3 - gap * i, z_lo + 1e-3) for i in range(len(ps))]
        for p, z in zip(ps, zs):
            p.z.fill_(z)


def panels(volume: Volume) -> list[Any]:
    """Every panel of the volume's detector layers (layer order, then panel order)."""
    return [p for det in volume.get_detectors() for p in getattr(det, "panels", [])]


_LOSSES = {"voxel_x0": VoxelX0Loss, "voxel_log_x0": VoxelLogX0Loss}


def make_wrapper(
    volume: Volume,
    opt: OptimiseParams,
    *,
    seed: int | None = None,
    inferrer: str | None = None,
    momentum: MomentumParams | None = None,
) -> PanelVolumeWrapper:
    """``PanelVolumeWrapper`` with one optimiser per group of ``opt.lr`` (null rate = group frozen; the budget weights
    only in fixed-budget mode), the loss named by ``opt.loss`` (``voxel_x0``: ``VoxelX0Loss``, ``voxel_log_x0``:
    ``VoxelLogX0Loss``) with ``target_budget=opt.target_budget``, and the X0 inferrer ``inferrer`` (default
    ``opt.inferrer``) with the momentum model ``momentum`` (default ``opt.momentum``; smearing seeded from ``seed``).
    The configuration guarantees at least one optimised group (``OptimiseParams``)."""
    opt_cls, lr = _OPTS[opt.optimiser], opt.lr

    def mk(rate: float | None) -> partial[torch.optim.Optimizer] | None:
        return partial(opt_cls, lr=float(rate)) if rate is not None else None

    part = {"xy_pos_opt": mk(lr.xy), "z_pos_opt": mk(lr.z), "xy_span_opt": mk(lr.xy_span)}
    if volume.budget is not None and lr.budget is not None:
        part["budget_opt"] = mk(lr.budget)
    mom = momentum or opt.momentum
    model = MomentumModel(kind=mom.model, resolution=mom.resolution, seed=int(seed or 0) % (2**31))
    inf_cls = get_volume_inferrer(inferrer or opt.inferrer)
    return PanelVolumeWrapper(
        volume,
        **part,
        loss_func=_LOSSES[opt.loss](target_budget=opt.target_budget),
        partial_volume_inferrer=partial(inf_cls, momentum=model),
        seed=seed,
    )


def write_passive_set(path: str, volume_cfg: VolumeParams, passives: PassiveParams, n: int, seed: int) -> int:
    """Generate ``n`` passives with the ``passives`` settings and ``seed`` into ``path`` (HDF5); returns ``n``."""
    records = generate_passive_records(volume_cfg, passives, seed, 0, n, "cpu")
    write_passives(path, records, attrs={"generator": passives.generator, "seed": int(seed)})
    return len(records)


def passive_layouts(path: str, volume: Volume) -> tuple[list[tuple[Any, None]], list[np.ndarray]]:
    """``(layouts, x0 cubes)`` of a passives file: layout functions for ``PassiveYielder`` and the true cubes."""
    recs: list[PassiveRecord] = read_passives(path)
    bottom = float(volume.get_passive_z_range()[0].reshape(-1)[0])
    funcs = [(rad_length_func_from_cube(r.x0, z_bottom=bottom, size=volume.passive_size), None) for r in recs]
    return funcs, [np.asarray(r.x0, dtype=float) for r in recs]


def yielder(layouts: list[tuple[Any, None]], shuffle: bool) -> PassiveYielder:
    return PassiveYielder(list(layouts), shuffle=shuffle)


def describe_detector(volume: Volume) -> dict[str, Any]:
    """Human-readable description: per panel its detector group, index, xy, z, span (effective), res, eff, cost."""
    out: list[dict[str, Any]] = []
    for det in volume.get_detectors():
        for i, p in enumerate(getattr(det, "panels", [])):
            out.append(
                {
                    "group": str(getattr(det, "pos", "")),
                    "index": i,
                    "xy": [round(float(v), 6) for v in p.xy.detach().cpu()],
                    "z": round(float(p.z.detach().reshape(-1)[0]), 6),
                    "span": [round(float(v), 6) for v in p.get_scaled_xy_span().detach().cpu()],
                    "res": float(p.resolution),
                    "eff": float(p.efficiency),
                    "cost": round(float(p.get_cost().detach()), 6),
                }
            )
    return {
        "schema_version": DETECTOR_SCHEMA_VERSION,
        "units": {"xy": "m", "z": "m", "span": "m", "res": "1/m", "cost": "m2_cost x m^2"},
        "n_panels": len(out),
        "total_cost": round(sum(p["cost"] for p in out), 6),
        "panels": out,
    }


def panel_rows(volume: Volume, epoch: int) -> list[dict[str, Any]]:
    """One flat row per panel (for the panel-positions-per-epoch CSV)."""
    return [
        {
            "epoch": epoch,
            "panel": f"{p['group']}{p['index']}",
            "x": p["xy"][0],
            "y": p["xy"][1],
            "z": p["z"],
            "span_x": p["span"][0],
            "span_y": p["span"][1],
        }
        for p in describe_detector(volume)["panels"]
    ]


def write_detector(volume: Volume, pt_path: str, json_path: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Atomically write the detector as a torch state file (``{"schema_version", "volume"}``) and its JSON description."""
    save_torch({"schema_version": DETECTOR_SCHEMA_VERSION, "volume": volume.state_dict()}, pt_path)
    desc = {**describe_detector(volume), **dict(extra or {})}
    write_json(desc, json_path)
    return desc


def load_detector(volume: Volume, pt_path: str) -> Volume:
    """Load a ``write_detector`` state into ``volume`` (built from the same ``volume`` section); clear errors otherwise."""
    p = Path(pt_path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: trained detector not found (run the optimise stage first)")
    try:
        state = torch.load(str(p), map_location=volume.device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated / foreign file
        raise ValueError(f"{p}: not a readable detector state file ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("schema_version") != DETECTOR_SCHEMA_VERSION:
        raise ValueError(
            f"{p}: detector schema version {state.get('schema_version') if isinstance(state, dict) else None!r}, "
            f"expected {DETECTOR_SCHEMA_VERSION}"
        )
    volume.load_state_dict(state["volume"])
    return volume


__all__ += ["yielder", "load_detector"]
