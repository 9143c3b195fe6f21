"""Small-walls study tasks: buried stone walls in soil imaged with 1 GeV muons; wall-mask IoU per detector.

Protocol (``studies.small_walls``): TomOpt's small-walls volume (a 10 x 10 x 10 m block of soil in 1 m voxels with 1-4
random-walk stone walls, :class:`~tomopt_lib.benchmarks.small_walls.SmallWallsPassiveGenerator`), muons of a fixed
1 GeV momentum and TomOpt's constant-momentum propagation (energy loss off: a 1 GeV muon loses its whole energy in ~5 m
of soil, so with energy loss no muon would cross the block); 4 + 4 panels sharing a fixed budget (the hand design's
cost); X0 maps from the calibrated PoCA inferrer, trained with ``VoxelLogX0Loss`` from a poor start (panels packed
next to the block, shifted off-centre, same budget). A voxel is called wall where the predicted X0 is below
sqrt(X0_soil X0_wall) (the geometric midpoint); the headline is the voxel IoU of the predicted and true wall masks
per test volume, for the trained detector, the start and the hand design (TomOpt's layout: four centred panels
evenly spread over each detector layer), with bootstrap intervals and the paired interval of the difference.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from config import SmallWallsStudy
from tomopt_lib.benchmarks.small_walls import SmallWallsPassiveGenerator, get_small_walls_volume
from tomopt_lib.inference.momentum import MomentumModel
from tomopt_lib.inference.volume import get_volume_inferrer
from tomopt_lib.io import PassiveRecord, read_passives, write_passives
from tomopt_lib.muon.generation import MuonGenerator2016
from tomopt_lib.optimisation import PanelVolumeWrapper, PassiveYielder, VoxelLogX0Loss
from tomopt_lib.runtime import resolve_device
from tomopt_lib.volume import Volume

from .common import derive_seed
from .detector import describe_detector, load_detector
from .optimisation import code_hash
from .outputs import save_csv
from .study_common import (
    OPTIMISER_GROUPS,
    ci95,
    finalise_study,
    set_epoch_rates,
    start_or_resume,
    study_layouts,
    train_study_epoch,
    trained_versus,
)

__all__ = [
    "SMALL_WALLS_STUDY_KEY",
    "WALLS_DETECTORS",
    "X0_SOIL",
    "X0_WALL",
    "walls_volume",
    "wall_iou",
    "prepare_walls",
    "run_walls_epoch",
    "finalise_walls",
    "predict_walls",
    "compare_walls",
]

SMALL_WALLS_STUDY_KEY = 13
WALLS_DETECTORS = ("trained", "start", "hand")
X0_SOIL = 0.2624248696430881
"""X0 of the soil [m] (the generator's default)."""
X0_WALL = 0.08022522418503258
"""X0 of the stone walls [m] (the generator's default)."""
_THRESHOLD = math.sqrt(X0_SOIL * X0_WALL)


def walls_volume(name: str, cfg: SmallWallsStudy, device: str | None = "cpu") -> Volume:
    """Detector ``name``: ``hand`` (TomOpt's layout, span ``cfg.hand_span`` x the footprint) or ``start`` / ``trained``
    (panels packed 5 cm apart next to the block, shifted by ``cfg.start_offset`` [m]); fixed budget = the hand design's
    cost."""
    dev = resolve_device(device)
    base = get_small_walls_volume(span=cfg.hand_span, device=dev)
    budget = float(base.get_cost().detach())
    vol = Volume(nn.ModuleList(list(base.layers)), budget=budget)
    if name != "hand":
        with torch.no_grad():
            for det in vol.get_detectors():
                top, size = float(det.z.reshape(-1)[0]), float(det.size)
                above = det.pos == "above"
                for i, p in enumerate(sorted(getattr(det, "panels", []), key=lambda q: -float(q.z))):
                    p.xy.add_(cfg.start_offset)
                    z = (top - size + 0.01 + 0.05 * (3 - i)) if above else (top - 0.01 - 0.05 * i)
                    p.z.fill_(z)
    return vol


def wall_iou(pred_x0: np.ndarray, wall_mask: np.ndarray) -> float:
    """Voxel IoU of the predicted wall mask (X0 < sqrt(X0_soil X0_wall)) and the true one (1 for an empty union)."""
    pred = np.asarray(pred_x0) < _THRESHOLD
    truth = np.asarray(wall_mask) > 0.5
    union = int((pred | truth).sum())
    return 1.0 if union == 0 else float((pred & truth).sum() / union)


def _seed(seed: int, cfg: SmallWallsStudy) -> int:
    return cfg.seed if cfg.seed is not None else derive_seed(seed, SMALL_WALLS_STUDY_KEY)


def _fingerprint(seed: int, cfg: SmallWallsStudy) -> str:
    blob = json.dumps(
        {"seed": _seed(seed, cfg), "cfg": cfg.model_dump(mode="json", exclude={"n_bootstrap", "n_test"}), "code": code_hash()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_walls(path: str, cfg: SmallWallsStudy, n: int, seed: int) -> int:
    vol = walls_volume("hand", cfg)
    gen = SmallWallsPassiveGenerator(vol, seed=seed)
    records = []
    for _ in range(n):
        func, mask = gen.get_data()
        vol.load_rad_length(func, mask)
        n_wall = 0 if mask is None else int(mask.sum())
        records.append(PassiveRecord(x0=vol.get_rad_cube().detach().cpu().numpy(), attrs={"n_wall": n_wall}))
    write_passives(path, records, attrs={"generator": "small_walls", "seed": int(seed)})
    return len(records)


def _wrapper(vol: Volume, cfg: SmallWallsStudy, seed: int) -> PanelVolumeWrapper:
    def opt(rate: float | None) -> Any:
        return partial(torch.optim.Adam, lr=float(rate)) if rate is not None else None

    return PanelVolumeWrapper(
        vol,
        xy_pos_opt=opt(cfg.lr.xy),
        z_pos_opt=opt(cfg.lr.z),
        xy_span_opt=opt(cfg.lr.xy_span),
        budget_opt=opt(cfg.lr.budget),
        loss_func=VoxelLogX0Loss(target_budget=None),
        partial_volume_inferrer=partial(get_volume_inferrer("poca"), momentum=MomentumModel(kind="true")),
        mu_generator=MuonGenerator2016.from_volume(vol, fixed_mom=1.0, device=vol.device),
        seed=seed,
    )


@task(name="study-walls-prepare", cache_policy=NO_CACHE, persist_result=False)
def prepare_walls(ckpt_dir: str, data_dir: str, seed: int, cfg: SmallWallsStudy, device: str | None = "cpu") -> dict[str, Any]:
    """Training and test walls into ``data_dir``; start or resume the run in ``ckpt_dir`` (epoch 0 = the start)."""
    s = _seed(seed, cfg)
    _write_walls(str(Path(data_dir) / "train_layouts.h5"), cfg, cfg.n_train, derive_seed(s, 1))
    _write_walls(str(Path(data_dir) / "test_layouts.h5"), cfg, cfg.n_test, derive_seed(s, 2))
    fp = _fingerprint(seed, cfg)
    last = start_or_resume(
        ckpt_dir, fp, s, cfg.n_epochs, lambda: _wrapper(walls_volume("trained", cfg, device), cfg, derive_seed(s, 3))
    )
    return {"fingerprint": fp, "last_epoch": last}


@task(name="study-walls-epoch", task_run_name="walls-epoch-{epoch}", cache_policy=NO_CACHE, persist_result=False)
def run_walls_epoch(
    ckpt_dir: str, data_dir: str, epoch: int, cfg: SmallWallsStudy, fingerprint: str, device: str | None = "cpu"
) -> dict[str, Any]:
    """Train epoch ``epoch`` from the checkpoint of ``epoch - 1`` (cosine-decayed rates); write its checkpoint."""
    factor = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.n_epochs))
    peaks = dict(zip(OPTIMISER_GROUPS, (cfg.lr.xy, cfg.lr.z, cfg.lr.xy_span, cfg.lr.budget)))

    def rates(vw: PanelVolumeWrapper) -> float:
        set_epoch_rates(vw, peaks, factor)
        return factor

    return train_study_epoch(
        ckpt_dir,
        epoch,
        fingerprint,
        _wrapper(walls_volume("trained", cfg, device), cfg, 0),
        set_rates=rates,
        layouts_path=str(Path(data_dir) / "train_layouts.h5"),
        with_target=False,
        fit_sizes=(cfg.passive_bs, cfg.n_mu_per_volume, cfg.mu_bs),
        label="walls",
    )


def finalise_walls(ckpt_dir: str, n_epochs: int, fingerprint: str, cfg: SmallWallsStudy, pt: str, js: str) -> dict[str, Any]:
    """Write the trained detector of the last epoch; return the checkpoint's history."""
    state = finalise_study(ckpt_dir, n_epochs, fingerprint, walls_volume("trained", cfg), "small_walls", pt, js)
    return {"history": state["history"]}


@task(name="study-walls-predict", task_run_name="walls-predict-{name}", cache_policy=NO_CACHE, persist_result=False)
def predict_walls(
    name: str, data_dir: str, out_csv: str, seed: int, cfg: SmallWallsStudy, detector_pt: str, device: str | None = "cpu"
) -> dict[str, Any]:
    """Wall-mask IoU of every test volume with detector ``name`` -> ``out_csv`` (``volume``, ``iou``, ``n_wall``,
    ``n_pred_wall``); the same muons for every detector."""
    vol = walls_volume(name, cfg, device)
    if name == "trained":
        load_detector(vol, detector_pt)
    recs = read_passives(str(Path(data_dir) / "test_layouts.h5"))
    vw = _wrapper(vol, cfg, derive_seed(_seed(seed, cfg), 4))
    got = vw.predict(
        PassiveYielder(study_layouts(str(Path(data_dir) / "test_layouts.h5"), vol, with_target=False), shuffle=False),
        cfg.n_mu_per_volume,
        cfg.mu_bs,
    )
    rows = []
    for i, ((pred, _), rec) in enumerate(zip(got, recs)):
        mask = np.isclose(rec.x0, X0_WALL, rtol=1e-4)
        p = np.asarray(pred).reshape(rec.x0.shape)
        rows.append(
            {"volume": i, "iou": wall_iou(p, mask), "n_wall": int(mask.sum()), "n_pred_wall": int((p < _THRESHOLD).sum())}
        )
    save_csv(pd.DataFrame(rows), out_csv)
    return {"name": name, "total_cost": describe_detector(vol)["total_cost"], "n": len(rows)}


@task(name="study-walls-compare", cache_policy=NO_CACHE, persist_result=False)
def compare_walls(pred_csvs: dict[str, str], costs: dict[str, float], n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Mean wall IoU per detector with a bootstrap 95 % interval; trained - baseline differences, paired bootstrap."""
    iou = {n: pd.read_csv(p)["iou"].to_numpy() for n, p in pred_csvs.items()}
    n_vol = len(next(iter(iou.values())))
    idx = np.random.default_rng(seed).integers(0, n_vol, size=(n_bootstrap, n_vol))
    boot = {n: v[idx].mean(1) for n, v in iou.items()}
    per: dict[str, dict[str, Any]] = {
        n: {"mean_iou": float(v.mean()), "mean_iou_ci95": ci95(boot[n]), "total_cost": float(costs.get(n, float("nan")))}
        for n, v in iou.items()
    }
    out: dict[str, Any] = {"study": "small_walls", "n_test": n_vol, "detectors": per}
    out.update(trained_versus({n: d["mean_iou"] for n, d in per.items()}, boot, "iou"))
    return out
