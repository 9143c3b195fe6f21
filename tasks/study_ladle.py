"""Ladle-furnace study tasks: layouts, one checkpointed training epoch, predictions per detector, comparison.

Protocol (TomOpt's published study, ``studies.ladle_furnace``): a 1 x 1 m steel ladle with liquid steel, slag and air
(fill heights 0.6 ... 1.3 m), a fixed budget shared by 4 + 4 panels, ``n_train_per_height`` x 8 training and
``n_test_per_height`` x 8 test layouts, ``n_mu_per_volume`` muons each; training from TomOpt's initial detector with
a linear warm-up, a cosine one-cycle stage and a z-only stage (Adam), then the trained detector, the initial one and
the two hand-designed baselines predict the test layouts. The headline number is TomOpt's: the fill-height MSE
after linear de-biasing, here with the de-biasing (w, b) fitted on the detector's predictions of the TRAINING layouts
and applied to the test layouts (out of sample; the in-sample value, fitted on the test layouts as TomOpt's plots do,
is reported too). Checkpoints follow ``tasks.optimisation``: one file per epoch, written atomically, fingerprinted.
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

from config import LadleFurnaceStudy
from tomopt_lib.benchmarks.ladle_furnace import (
    LadleFurnaceIntClassLoss,
    LadleFurnacePassiveGenerator,
    LinearCorrectionCallback,
    PocaZLadleFurnaceFillLevelInferrer,
    get_baseline_detector_1,
    get_baseline_detector_2,
    get_initial_detector,
)
from tomopt_lib.benchmarks.ladle_furnace.inference import fit_linear_correction
from tomopt_lib.benchmarks.ladle_furnace.likelihood import LikelihoodLadleFurnaceFillLevelInferrer
from tomopt_lib.io import PassiveRecord, write_passives
from tomopt_lib.metrics import bootstrap_mean, paired_bootstrap_ratio
from tomopt_lib.optimisation import PanelVolumeWrapper, PassiveYielder, VolumeMSELoss
from tomopt_lib.optimisation.callbacks import Callback
from tomopt_lib.optimisation.callbacks.pred_callbacks import VolumeTargetPredHandler
from tomopt_lib.runtime import resolve_device
from tomopt_lib.volume import Volume

from .common import derive_seed, task_logger
from .detector import describe_detector, load_detector
from .optimisation import code_hash
from .study_common import (
    OPTIMISER_GROUPS,
    finalise_study,
    set_epoch_rates,
    start_or_resume,
    study_layouts,
    train_study_epoch,
)

__all__ = [
    "LADLE_STUDY_KEY",
    "FILL_HEIGHTS",
    "PUBLISHED",
    "DETECTORS",
    "study_seed",
    "ladle_volume",
    "ladle_fingerprint",
    "lr_factors",
    "write_layouts",
    "prepare_ladle",
    "run_ladle_epoch",
    "predict_ladle",
    "ladle_predictions",
    "compare_ladle",
]

LADLE_STUDY_KEY = 11
"""Stage key mixed into the study's seeds."""
FILL_HEIGHTS = tuple(round(0.6 + 0.1 * i, 1) for i in range(8))
"""Fill heights [m] of the layouts (voxel boundaries of the ten-layer ladle)."""
PUBLISHED = {"initial": 0.0255, "trained": 0.0010, "baseline_1": 0.0011, "baseline_2": 0.0011}
"""TomOpt paper: fill-height MSE [m^2] after linear de-biasing (initial, optimised, the two human baselines)."""
DETECTORS = ("trained", "initial", "baseline_1", "baseline_2")
_BUILDERS = {"initial": get_initial_detector, "baseline_1": get_baseline_detector_1, "baseline_2": get_baseline_detector_2}


def study_seed(seed: int, cfg: LadleFurnaceStudy) -> int:
    """``studies.ladle_furnace.seed`` or a seed derived from the pipeline seed."""
    return cfg.seed if cfg.seed is not None else derive_seed(seed, LADLE_STUDY_KEY)


def ladle_volume(name: str, cfg: LadleFurnaceStudy, device: str | None = "cpu") -> Volume:
    """Detector ``name`` (``initial``, ``baseline_1``, ``baseline_2``; ``trained`` starts as ``initial``) over the
    ladle, fixed budget ``cfg.budget``."""
    build = _BUILDERS["initial" if name == "trained" else name]
    dev = resolve_device(device)
    return Volume(build(energy_loss=cfg.energy_loss, device=dev), budget=cfg.budget)


def ladle_fingerprint(seed: int, cfg: LadleFurnaceStudy) -> str:
    """Hash of what shapes the training epochs (not ``n_bootstrap`` / test settings' effect on training) and the code."""
    blob = json.dumps(
        {
            "seed": study_seed(seed, cfg),
            "cfg": cfg.model_dump(mode="json", exclude={"n_bootstrap", "n_test_per_height"}),
            "code": code_hash(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def lr_factors(epoch: int, cfg: LadleFurnaceStudy) -> tuple[float, bool]:
    """``(factor of the peak rates, z_only)`` of 1-based ``epoch``: linear warm-up e / (W + 1), cosine one-cycle
    decay 0.05 + 0.95 (1 + cos(pi i / C)) / 2 (i = 0 ... C - 1), then the z-only stage at 0.3."""
    w, c = cfg.warmup_epochs, cfg.onecycle_epochs
    if epoch <= w:
        return epoch / (w + 1), False
    i = epoch - w - 1
    if i < c:
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / c)), False
    return 0.3, True


def write_layouts(path: str, cfg: LadleFurnaceStudy, n_per_height: int, seed: int) -> int:
    """``n_per_height`` layouts per fill height (random slag, seeded) -> HDF5 (X0 cubes, target = fill height [m])."""
    vol = ladle_volume("initial", cfg)
    gen = LadleFurnacePassiveGenerator(vol, seed=seed)
    records = []
    for h in FILL_HEIGHTS:
        for _ in range(n_per_height):
            func, target = gen.get_fixed_data(h)
            vol.load_rad_length(func, target)
            records.append(PassiveRecord(x0=vol.get_rad_cube().detach().cpu().numpy(), target=float(h)))
    write_passives(path, records, attrs={"generator": "ladle_furnace", "seed": int(seed)})
    return len(records)


def _inferrer(cfg: LadleFurnaceStudy, training: bool) -> Any:
    if cfg.inferrer == "pocaz":
        return PocaZLadleFurnaceFillLevelInferrer
    if not training:
        return LikelihoodLadleFurnaceFillLevelInferrer
    return partial(LikelihoodLadleFurnaceFillLevelInferrer, temperature=cfg.temperature, output_probs=cfg.loss == "int_class")


def _wrapper(vol: Volume, cfg: LadleFurnaceStudy, seed: int) -> PanelVolumeWrapper:
    def opt(rate: float | None) -> Any:
        return partial(torch.optim.Adam, lr=float(rate)) if rate is not None else None

    lr = cfg.lr
    return PanelVolumeWrapper(
        vol,
        xy_pos_opt=opt(lr.xy),
        z_pos_opt=opt(lr.z),
        xy_span_opt=opt(lr.xy_span),
        budget_opt=opt(lr.budget),
        loss_func=(
            LadleFurnaceIntClassLoss(pred_int_start=1, use_mse=True, target_budget=None)
            if cfg.loss == "int_class"
            else VolumeMSELoss(target_budget=None)
        ),
        partial_volume_inferrer=_inferrer(cfg, True),
        seed=seed,
    )


def _set_rates(vw: PanelVolumeWrapper, cfg: LadleFurnaceStudy, epoch: int) -> float:
    factor, z_only = lr_factors(epoch, cfg)
    peaks = dict(zip(OPTIMISER_GROUPS, (cfg.lr.xy, cfg.lr.z, cfg.lr.xy_span, cfg.lr.budget)))
    set_epoch_rates(vw, peaks, factor, "z_pos_opt" if z_only else None)
    return factor


@task(name="study-ladle-prepare", cache_policy=NO_CACHE, persist_result=False)
def prepare_ladle(ckpt_dir: str, data_dir: str, seed: int, cfg: LadleFurnaceStudy, device: str | None = "cpu") -> dict[str, Any]:
    """Training and test layouts into ``data_dir``; start or resume the run in ``ckpt_dir`` (epoch 0 = the initial
    detector). Returns ``{"fingerprint", "last_epoch", "n_train", "n_test"}``."""
    s = study_seed(seed, cfg)
    n_trn = write_layouts(str(Path(data_dir) / "train_layouts.h5"), cfg, cfg.n_train_per_height, derive_seed(s, 1))
    n_tst = write_layouts(str(Path(data_dir) / "test_layouts.h5"), cfg, cfg.n_test_per_height, derive_seed(s, 2))
    fp = ladle_fingerprint(seed, cfg)
    last = start_or_resume(
        ckpt_dir, fp, s, cfg.n_epochs, lambda: _wrapper(ladle_volume("trained", cfg, device), cfg, derive_seed(s, 3))
    )
    return {"fingerprint": fp, "last_epoch": last, "n_train": n_trn, "n_test": n_tst}


class _Targets(Callback):
    """Fill-height predictions and targets of the training volumes of one epoch (for the epoch's de-biased MSE)."""

    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[tuple[float, float]] = []

    def on_x0_pred_end(self) -> None:
        fp, tgt = self.wrapper.fit_params, self.wrapper.volume.target
        inf = fp.volume_inferrer
        if fp.state == "train" and isinstance(inf, LikelihoodLadleFurnaceFillLevelInferrer) and tgt is not None:
            self.pairs.append((float(inf.pred_height.detach().reshape(-1)[0]), float(torch.as_tensor(tgt).reshape(-1)[0])))
        elif fp.state == "train" and isinstance(fp.pred, torch.Tensor) and tgt is not None:
            self.pairs.append((float(fp.pred.detach().reshape(-1)[0]), float(torch.as_tensor(tgt).reshape(-1)[0])))


@task(name="study-ladle-epoch", task_run_name="ladle-epoch-{epoch}", cache_policy=NO_CACHE, persist_result=False)
def run_ladle_epoch(
    ckpt_dir: str, data_dir: str, epoch: int, cfg: LadleFurnaceStudy, fingerprint: str, device: str | None = "cpu"
) -> dict[str, Any]:
    """Train epoch ``epoch`` from the checkpoint of ``epoch - 1`` (rates of :func:`lr_factors`); write its checkpoint.
    Returns the epoch's history row plus its wall time ``seconds`` (not stored in the checkpoint's history)."""
    tg = _Targets()

    def mse_raw() -> dict[str, Any]:
        p, t = (np.array(v) for v in zip(*tg.pairs)) if tg.pairs else (np.zeros(0), np.zeros(0))
        return {"z_only": lr_factors(epoch, cfg)[1], "train_mse_raw": float(np.mean((p - t) ** 2)) if len(p) else float("nan")}

    return train_study_epoch(
        ckpt_dir,
        epoch,
        fingerprint,
        _wrapper(ladle_volume("trained", cfg, device), cfg, 0),
        set_rates=lambda vw: _set_rates(vw, cfg, epoch),
        layouts_path=str(Path(data_dir) / "train_layouts.h5"),
        with_target=True,
        fit_sizes=(cfg.passive_bs, cfg.n_mu_per_volume, cfg.mu_bs),
        cbs_before=[LinearCorrectionCallback()] if cfg.inferrer == "pocaz" else [],
        cbs_after=[tg],
        extra_row=mse_raw,
        label="ladle",
    )


def finalise_ladle(ckpt_dir: str, n_epochs: int, fingerprint: str, cfg: LadleFurnaceStudy, pt: str, js: str) -> dict[str, Any]:
    """Write the trained detector of the last epoch; return the checkpoint's history and panel rows."""
    state = finalise_study(ckpt_dir, n_epochs, fingerprint, ladle_volume("trained", cfg), "ladle_furnace", pt, js)
    return {"history": state["history"], "panels": state["panels"]}


@task(name="study-ladle-predict", task_run_name="ladle-predict-{name}", cache_policy=NO_CACHE, persist_result=False)
def predict_ladle(
    name: str, data_dir: str, out_csv: str, seed: int, cfg: LadleFurnaceStudy, detector_pt: str, device: str | None = "cpu"
) -> dict[str, Any]:
    """Fill heights of every training and test layout with detector ``name`` -> ``out_csv`` (columns ``set``,
    ``volume``, ``pred``, ``gen_target``, ``unc`` [m]); the same muon stream for every detector."""
    vol = ladle_volume(name, cfg, device)
    if name == "trained":
        load_detector(vol, detector_pt)
    df = ladle_predictions(vol, cfg, data_dir, seed)
    from .outputs import save_csv

    save_csv(df, out_csv)
    task_logger().info("ladle detector %s: predicted %d layouts", name, len(df))
    return {"name": name, "total_cost": describe_detector(vol)["total_cost"], "n": len(df)}


def ladle_predictions(vol: Volume, cfg: LadleFurnaceStudy, data_dir: str, seed: int) -> pd.DataFrame:
    """Fill heights of every training and test layout in ``data_dir`` with the detector of ``vol`` (the likelihood
    inferrer at temperature 1 or PoCA z, the study's muon seeds per part): columns ``set``, ``volume``, ``pred``,
    ``gen_target``, ``unc`` [m]. A volume without a fixed budget (free panel areas) gets no budget optimiser."""
    if vol.budget is None:
        cfg = cfg.model_copy(update={"lr": cfg.lr.model_copy(update={"budget": None})})
    rows: list[dict[str, Any]] = []
    for part in ("train", "test"):
        layouts = study_layouts(str(Path(data_dir) / f"{part}_layouts.h5"), vol)
        vw = _wrapper(vol, cfg, derive_seed(study_seed(seed, cfg), 4, 0 if part == "train" else 1))
        vw.partial_volume_inferrer = _inferrer(cfg, False)
        uncs = _Uncertainties()
        got = vw.predict(
            PassiveYielder(layouts, shuffle=False), cfg.n_mu_per_volume, cfg.mu_bs, pred_cb=VolumeTargetPredHandler(), cbs=[uncs]
        )
        for i, (pred, target) in enumerate(got):
            rows.append(
                {
                    "set": part,
                    "volume": i,
                    "pred": float(np.asarray(pred).reshape(-1)[0]),
                    "gen_target": float(np.asarray(target).reshape(-1)[0]),
                    "unc": uncs.values[i] if i < len(uncs.values) else float("nan"),
                }
            )
    return pd.DataFrame(rows)


class _Uncertainties(Callback):
    """Posterior standard deviation [m] of each predicted layout (likelihood inferrer; NaN otherwise)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []

    def on_pred_begin(self) -> None:
        self.values = []

    def on_x0_pred_end(self) -> None:
        fp = self.wrapper.fit_params
        if fp.state != "test":
            return
        inf = fp.volume_inferrer
        unc = inf.get_uncertainty() if isinstance(inf, LikelihoodLadleFurnaceFillLevelInferrer) else None
        self.values.append(float(unc.detach().reshape(-1)[0]) if unc is not None else float("nan"))


def _debiased(df: pd.DataFrame) -> dict[str, Any]:
    """Raw, out-of-sample and in-sample de-biased per-layout squared errors of one detector's predictions."""
    trn, tst = df[df["set"] == "train"], df[df["set"] == "test"]
    w, b = fit_linear_correction(torch.tensor(trn["pred"].to_numpy()), torch.tensor(trn["gen_target"].to_numpy()))
    wi, bi = fit_linear_correction(torch.tensor(tst["pred"].to_numpy()), torch.tensor(tst["gen_target"].to_numpy()))
    p, t = tst["pred"].to_numpy(), tst["gen_target"].to_numpy()
    return {
        "sq_err": (float(w) * p + float(b) - t) ** 2,
        "sq_err_raw": (p - t) ** 2,
        "sq_err_in_sample": (float(wi) * p + float(bi) - t) ** 2,
        "weight": float(w),
        "bias": float(b),
        "pred_debiased": float(w) * p + float(b),
        "unc": tst["unc"].to_numpy(),
    }


@task(name="study-ladle-compare", cache_policy=NO_CACHE, persist_result=False)
def compare_ladle(
    pred_csvs: dict[str, str], costs: dict[str, float], n_bootstrap: int, seed: int, per_volume_csv: str
) -> dict[str, Any]:
    """Per detector: test-set fill-height MSEs (out-of-sample de-biased: the headline; raw; in-sample de-biased) with
    bootstrap 95 % intervals, the share of layouts within 5 cm, the pull width of the likelihood uncertainties, and
    trained / baseline MSE ratios with paired-bootstrap intervals. Writes one row per test layout to ``per_volume_csv``."""
    per: dict[str, Any] = {}
    errs: dict[str, np.ndarray] = {}
    wide: dict[str, Any] = {}
    for name, path in pred_csvs.items():
        df = pd.read_csv(path)
        d = _debiased(df)
        errs[name] = d["sq_err"]
        est, lo, hi = bootstrap_mean(d["sq_err"], n_bootstrap, seed)
        tst = df[df["set"] == "test"]
        resid = d["pred_debiased"] - tst["gen_target"].to_numpy()
        pulls = (tst["pred"].to_numpy() - tst["gen_target"].to_numpy()) / d["unc"]
        pulls = pulls[np.isfinite(pulls)]
        per[name] = {
            "mse": est,
            "mse_ci95": [lo, hi],
            "mse_raw": float(d["sq_err_raw"].mean()),
            "mse_in_sample": float(d["sq_err_in_sample"].mean()),
            "rmse_cm": 100 * math.sqrt(est),
            "within_5cm": float(np.mean(np.abs(resid) < 0.05)),
            "debias_weight": d["weight"],
            "debias_bias": d["bias"],
            "pull_rms": float(np.sqrt(np.mean(pulls**2))) if len(pulls) else None,
            "total_cost": float(costs.get(name, float("nan"))),
            "published_mse": PUBLISHED.get(name),
        }
        wide["gen_target"] = tst["gen_target"].to_numpy()
        wide[f"pred_{name}"] = d["pred_debiased"]
    from .outputs import save_csv

    save_csv(pd.DataFrame({"volume": range(len(wide["gen_target"])), **wide}), per_volume_csv)
    out: dict[str, Any] = {"study": "ladle_furnace", "n_test": len(wide["gen_target"]), "detectors": per}
    if "trained" in errs:
        for name in errs:
            if name != "trained":
                ratio, ci = paired_bootstrap_ratio(errs["trained"], errs[name], n_bootstrap, seed)
                out[f"trained_vs_{name}"] = {
                    "mse_ratio": ratio,
                    "mse_ratio_ci95": ci,
                    "significant": bool(ci[1] < 1 or ci[0] > 1),
                }
    return out
