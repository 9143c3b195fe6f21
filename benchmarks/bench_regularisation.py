"""Does the detector study's gain survive giving every detector its own best regularisation?

The ``evaluate`` stage compares detectors by the mean over held-out volumes of the per-voxel MSE of ln X0, all
predicted by the path inferrer with the same settings. Its smoothness prior is a fixed fraction of each detector's own
data (``prior_strength``), so a detector that accepts fewer muons is also regularised less. This benchmark predicts
the evaluate stage's held-out volumes (same volumes, muons and seeds) with the trained (``models/detector.pt``),
start and reference detectors for several prior strengths, and compares the detectors both at the default strength and
each at the strength that is best for it (chosen with the truth: an upper bound on what a data-driven choice, e.g. on
held-out muons, could reach), with paired-bootstrap 95 % intervals of the ratios.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_regularisation.py [--strengths 0.04 0.08 0.16 0.32]
        [--n-volumes 20] [--out bench_out/regularisation.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.params import load_params  # noqa: E402
from tasks.common import derive_seed  # noqa: E402
from tasks.detector import make_wrapper, passive_layouts, yielder  # noqa: E402
from tasks.evaluation import _Preds, detector_volume, eval_seed, make_heldout  # noqa: E402
from tomopt_lib.metrics import paired_bootstrap_ratio, volume_scores  # noqa: E402

DETECTORS = ("trained", "reference", "start")


def mse_per_volume(name: str, strength: float, p: Any, ev: Any, held: str, detector_pt: str) -> np.ndarray:
    """(n_volumes,) MSE of ln X0 (the evaluate stage's ``volume_scores``) of detector ``name`` with the path inferrer at
    ``prior_strength=strength``; NaN for a volume without a prediction."""
    vol = detector_volume(name, p.volume, p.optimise, detector_pt)
    vw = make_wrapper(vol, p.optimise, seed=derive_seed(eval_seed(p.seed, ev), 2), inferrer=ev.inferrer, momentum=ev.momentum)
    vw.partial_volume_inferrer = partial(vw.partial_volume_inferrer, prior_strength=strength)
    layouts, cubes = passive_layouts(held, vol)
    got = vw.predict(yielder(layouts, False), ev.n_mu_per_volume, ev.mu_bs, pred_cb=_Preds())
    return np.array(
        [volume_scores(got[i].reshape(c.shape), c)["mse_log_x0"] if i in got else np.nan for i, c in enumerate(cubes)]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.04, 0.08, 0.16, 0.32])
    ap.add_argument("--n-volumes", type=int, default=None, help="default: evaluate.n_volumes")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--detector", default=str(ROOT / "models" / "detector.pt"))
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "regularisation.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    p = load_params(args.params)
    ev = p.evaluate if args.n_volumes is None else p.evaluate.model_copy(update={"n_volumes": args.n_volumes})
    if (ev.inferrer or p.optimise.inferrer) != "path":  # evaluate.inferrer null = optimise's
        raise SystemExit("evaluate.inferrer must be the path inferrer (its prior strength is what this varies)")
    mse: dict[str, dict[float, np.ndarray]] = {d: {} for d in DETECTORS}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        held = f"{tmp}/heldout.h5"
        make_heldout.fn(held, p.seed, p.volume, p.passives, ev)
        for name in DETECTORS:
            for s in args.strengths:
                mse[name][s] = mse_per_volume(name, s, p, ev, held, args.detector)
                print(f"{name:9s} prior_strength {s:5.3f}  mean MSE(ln X0) {np.nanmean(mse[name][s]):.4f}", flush=True)
    best = {d: min(args.strengths, key=lambda s: float(np.nanmean(mse[d][s]))) for d in DETECTORS}  # noqa: B023
    default = 0.08 if 0.08 in args.strengths else args.strengths[0]
    n_boot, seed = ev.n_bootstrap, eval_seed(p.seed, ev)
    rows: dict[str, Any] = {"strengths": args.strengths, "best_strength": best, "default_strength": default}
    rows["mean_mse"] = {d: {str(s): float(np.nanmean(v)) for s, v in mse[d].items()} for d in DETECTORS}
    for base in ("reference", "start"):
        for label, s_t, s_b in (("default", default, default), ("each_best", best["trained"], best[base])):
            ratio, ci = paired_bootstrap_ratio(mse["trained"][s_t], mse[base][s_b], n_boot, seed)
            rows[f"trained_vs_{base}_{label}"] = {"ratio": ratio, "ci95": ci, "strengths": [s_t, s_b]}
            print(f"trained / {base:9s} ({label:9s}, strengths {s_t} / {s_b}): {ratio:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
    rows["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
