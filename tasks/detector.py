"""Detector helpers shared by the optimise and evaluate tasks: layouts, wrappers, passives, panel descriptions."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from tomopt_lib.inference.momentum import MomentumModel
from tomopt_lib.inference.volume import get_volume_inferrer
from tomopt_lib.io import PassiveRecord, read_passives, write_json, write_passives
from tomopt_lib.optimisation.data import PassiveYielder
from tomopt_lib.optimisation.loss import VoxelLogX0Loss, VoxelX0Loss
from tomopt_lib.optimisation.wrapper import PanelVolumeWrapper
from tomopt_lib.volume.builders import rad_length_func_from_cube
from tomopt_lib.volume.volume import Volume

from .common import build_volume
from .passives import generate_passive_records

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


def build_reference_volume(volume_cfg: Mapping[str, Any], device: Optional[str] = "cpu", budget: Optional[float] = None) -> Volume:
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


def build_start_volume(volume_cfg: Mapping[str, Any], start_cfg: Mapping[str, Any], device: Optional[str] = "cpu",
                       budget: Optional[float] = None) -> Volume:
    """The optimisation's starting layout: ``volume`` with ``start.panel_span`` and every panel shifted by
    ``start.xy_offset``, packed ``start.z_gap`` apart next to the passive block (``budget``: fixed-budget mode)."""
    cfg = dict(volume_cfg)
    if start_cfg.get("panel_span") is not None:
        cfg["panel_span"] = start_cfg["panel_span"]
    vol = build_volume(cfg, device, budget=budget)
    off = torch.as_tensor(start_cfg.get("xy_offset", [0.0, 0.0]), dtype=vol.lw.dtype, device=vol.device)
    lw = vol.lw.to(off.dtype)
    gap = start_cfg.get("z_gap")
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


def panels(volume: Volume) -> List[Any]:
    """Every panel of the volume's detector layers (layer order, then panel order)."""
    return [p for det in volume.get_detectors() for p in getattr(det, "panels", [])]


_LOSSES = {"voxel_x0": VoxelX0Loss, "voxel_log_x0": VoxelLogX0Loss}


def make_wrapper(volume: Volume, opt_cfg: Mapping[str, Any], *, seed: Optional[int] = None, inferrer: Optional[str] = None,
                 momentum: Optional[Mapping[str, Any]] = None) -> PanelVolumeWrapper:
    """``PanelVolumeWrapper`` with one optimiser per group of ``opt_cfg["lr"]`` (null rate = group frozen; the budget
    weights only in fixed-budget mode), the loss named by ``opt_cfg["loss"]`` (``voxel_x0``: ``VoxelX0Loss``,
    ``voxel_log_x0``: ``VoxelLogX0Loss``) with ``target_budget=opt_cfg["target_budget"]``, and the X0 inferrer
    ``inferrer`` (default ``opt_cfg["inferrer"]``) with the momentum model ``momentum`` (default
    ``opt_cfg["momentum"]``; smearing seeded from ``seed``)."""
    opt, lr = _OPTS[opt_cfg["optimiser"]], opt_cfg["lr"]

    def mk(rate: Optional[float]) -> Any:
        return partial(opt, lr=float(rate)) if rate is not None else None

    part = {"xy_pos_opt": mk(lr["xy"]), "z_pos_opt": mk(lr["z"]), "xy_span_opt": mk(lr["xy_span"])}
    if getattr(volume, "budget", None) is not None and lr.get("budget") is not None:
        part["budget_opt"] = mk(lr["budget"])
    if all(v is None for v in part.values()):
        raise ValueError("optimise.lr: every group is null; nothing to optimise")
    mom = dict(momentum or opt_cfg.get("momentum") or {"model": "true", "resolution": 0.1})
    model = MomentumModel(kind=mom["model"], resolution=float(mom["resolution"]), seed=int(seed or 0) % (2**31))
    inf_cls = get_volume_inferrer(inferrer or opt_cfg["inferrer"])
    return PanelVolumeWrapper(
        volume, **part, loss_func=_LOSSES[opt_cfg.get("loss", "voxel_x0")](target_budget=opt_cfg.get("target_budget")),
        partial_volume_inferrer=partial(inf_cls, momentum=model), seed=seed,
    )


def write_passive_set(path: str, volume_cfg: Mapping[str, Any], passives_cfg: Mapping[str, Any], n: int, seed: int) -> int:
    """Generate ``n`` passives with the ``passives`` settings and ``seed`` into ``path`` (HDF5); returns ``n``."""
    records = generate_passive_records(volume_cfg, {**passives_cfg, "n_volumes": n}, seed, 0, n, "cpu")
    write_passives(path, records, attrs={"generator": passives_cfg["generator"], "seed": int(seed)})
    return len(records)


def passive_layouts(path: str, volume: Volume) -> Tuple[List[Tuple[Any, None]], List[np.ndarray]]:
    """``(layouts, x0 cubes)`` of a passives file: layout functions for ``PassiveYielder`` and the true cubes."""
    recs: List[PassiveRecord] = read_passives(path)
    bottom = float(volume.get_passive_z_range()[0].reshape(-1)[0])
    funcs = [(rad_length_func_from_cube(r.x0, z_bottom=bottom, size=volume.passive_size), None) for r in recs]
    return funcs, [np.asarray(r.x0, dtype=float) for r in recs]


def yielder(layouts: List[Tuple[Any, None]], shuffle: bool) -> PassiveYielder:
    return PassiveYielder(list(layouts), shuffle=shuffle)


def describe_detector(volume: Volume) -> Dict[str, Any]:
    """Human-readable description: per panel its detector group, index, xy, z, span (effective), res, eff, cost."""
    out: List[Dict[str, Any]] = []
    for det in volume.get_detectors():
        for i, p in enumerate(getattr(det, "panels", [])):
            out.append({
                "group": str(getattr(det, "pos", "")), "index": i,
                "xy": [round(float(v), 6) for v in p.xy.detach().cpu()],
                "z": round(float(p.z.detach().reshape(-1)[0]), 6),
                "span": [round(float(v), 6) for v in p.get_scaled_xy_span().detach().cpu()],
                "res": float(p.resolution), "eff": float(p.efficiency), "cost": round(float(p.get_cost().detach()), 6),
            })
    return {
        "schema_version": DETECTOR_SCHEMA_VERSION, "units": {"xy": "m", "z": "m", "span": "m", "res": "1/m", "cost": "m2_cost x m^2"},
        "n_panels": len(out), "total_cost": round(sum(p["cost"] for p in out), 6), "panels": out,
    }


def panel_rows(volume: Volume, epoch: int) -> List[Dict[str, Any]]:
    """One flat row per panel (for the panel-positions-per-epoch CSV)."""
    return [{"epoch": epoch, "panel": f"{p['group']}{p['index']}", "x": p["xy"][0], "y": p["xy"][1], "z": p["z"],
             "span_x": p["span"][0], "span_y": p["span"][1]} for p in describe_detector(volume)["panels"]]


def write_detector(volume: Volume, pt_path: str, json_path: str, extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Atomically write the detector as a torch state file (``{"schema_version", "volume"}``) and its JSON description."""
    from tomopt_lib.io import atomic_path

    with atomic_path(pt_path) as tmp:
        torch.save({"schema_version": DETECTOR_SCHEMA_VERSION, "volume": volume.state_dict()}, str(tmp))
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
        raise ValueError(f"{p}: detector schema version {state.get('schema_version') if isinstance(state, dict) else None!r}, "
                         f"expected {DETECTOR_SCHEMA_VERSION}")
    volume.load_state_dict(state["volume"])
    return volume


__all__ += ["yielder", "load_detector"]
