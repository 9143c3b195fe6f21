"""Ladle furnace: how much does the hand layout matter? The study's headline metric for hand-built detectors.

Every layout is the ladle of ``studies.ladle_furnace`` (``params.yaml``) with 4 + 4 panels at the same total cost
(``studies.ladle_furnace.budget``, panel cost = area); all layouts predict the study's own training and test layouts
with the same muons (the likelihood fill-height inferrer) and are scored like ``compare_ladle``: the test-set MSE of
the fill height after the linear de-biasing fitted on the training layouts, with a bootstrap 95 % interval, and the
paired-bootstrap ratio to baseline 2.

Layouts: the two hand-designed baselines of the study (equal spans, centred), and layouts that move budget from the
inner panels of each group into two wide panels at the faces of the detector layer (what the fixed-budget optimisation
of the default study found). Spans are listed per group from the ladle outwards.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ladle_layouts.py [--n-train-per-height 5]
        [--n-test-per-height 12] [--out bench_out/ladle_layouts.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.params import load_params  # noqa: E402
from tasks.common import derive_seed  # noqa: E402
from tasks.study_ladle import _debiased, ladle_predictions, study_seed, write_layouts  # noqa: E402
from tomopt_lib.benchmarks.ladle_furnace.volume import build_ladle_furnace_layers  # noqa: E402
from tomopt_lib.metrics import bootstrap_mean, paired_bootstrap_ratio  # noqa: E402
from tomopt_lib.volume import Volume  # noqa: E402

if TYPE_CHECKING:
    from tomopt_lib.volume.layer import PanelDetectorLayer

_BASE1 = ((1.41, 1.53, 1.66, 1.79), (0.39, 0.26, 0.13, 0.01))  # z [m] above / below, from the ladle outwards
_BASE2 = ((1.41, 1.46, 1.74, 1.79), (0.39, 0.34, 0.06, 0.01))
_FACES = ((1.41, 1.415, 1.785, 1.79), (0.39, 0.385, 0.015, 0.01))  # two panels at each face of the detector layer
_PAIRS1 = ((1.41, 1.42, 1.78, 1.79), (0.39, 0.38, 0.02, 0.01))
_THREE = ((1.41, 1.46, 1.51, 1.79), (0.39, 0.34, 0.29, 0.01))

LAYOUTS: list[tuple[str, tuple[tuple[float, ...], tuple[float, ...]], tuple[float, ...]]] = [
    ("baseline 1 (evenly spread, equal spans)", _BASE1, (1.0, 1.0, 1.0, 1.0)),
    ("baseline 2 (two pairs, equal spans)", _BASE2, (1.0, 1.0, 1.0, 1.0)),
    ("two pairs, outer pair wider 1.3 / 0.7", _BASE2, (0.7, 0.7, 1.3, 1.3)),
    ("faces, wide panels 1.9 / 0.2 / 0.2 / 1.9", _FACES, (1.9, 0.2, 0.2, 1.9)),
    ("faces, 1.6 / 0.9 / 0.9 / 1.6", _FACES, (1.6, 0.9, 0.9, 1.6)),
    ("two pairs, inner pair wider 1.3 / 0.7", _BASE2, (1.3, 1.3, 0.7, 0.7)),
    ("two pairs, inner pair wider 1.1 / 0.9", _BASE2, (1.1, 1.1, 0.9, 0.9)),
    ("two pairs 1 cm apart, equal spans", _PAIRS1, (1.0, 1.0, 1.0, 1.0)),
    ("three next to the ladle, one outside", _THREE, (1.0, 1.0, 1.0, 1.0)),
]
"""(label, (panel heights above, below) [m] from the ladle outwards, relative spans from the ladle outwards, the same
for both groups); the spans are scaled so that the 8 panels cost the study's budget."""


def build(cfg: Any, heights: tuple[tuple[float, ...], tuple[float, ...]], rel_spans: tuple[float, ...]) -> Volume:
    """A ladle volume with centred panels at ``heights`` (above, below) and spans proportional to ``rel_spans``, scaled to
    the budget (cost = sum of span^2); free areas (no budget learning)."""
    scale = math.sqrt(float(cfg.budget) / (2 * sum(s * s for s in rel_spans)))
    above, below = ([(0.5, 0.5, z) for z in zs] for zs in heights)
    layers = build_ladle_furnace_layers(above=above, below=below, energy_loss=cfg.energy_loss)
    with torch.no_grad():
        for layer in (layers[0], layers[-1]):  # panels in the order given: from the ladle outwards
            for panel, span in zip(cast("PanelDetectorLayer", layer).panels, rel_spans):
                panel.xy_span.fill_(span * scale)
    return Volume(layers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--n-train-per-height", type=int, default=None)
    ap.add_argument("--n-test-per-height", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "ladle_layouts.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    p = load_params(args.params)
    cfg = p.studies.ladle_furnace
    upd = {k: v for k, v in (("n_train_per_height", args.n_train_per_height), ("n_test_per_height", args.n_test_per_height)) if v}
    cfg = cfg.model_copy(update=upd)
    s = study_seed(p.seed, cfg)
    rows: list[dict[str, Any]] = []
    errs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_layouts(f"{tmp}/train_layouts.h5", cfg, cfg.n_train_per_height, derive_seed(s, 1))
        write_layouts(f"{tmp}/test_layouts.h5", cfg, cfg.n_test_per_height, derive_seed(s, 2))
        for label, heights, rel in LAYOUTS:
            vol = build(cfg, heights, rel)
            t0 = time.perf_counter()
            d = _debiased(ladle_predictions(vol, cfg, tmp, p.seed))
            errs[label] = d["sq_err"]
            est, lo, hi = bootstrap_mean(d["sq_err"], cfg.n_bootstrap, s)
            rows.append(
                {
                    "layout": label,
                    "cost": float(vol.get_cost().detach()),
                    "mse": est,
                    "mse_ci95": [lo, hi],
                    "mse_raw": float(d["sq_err_raw"].mean()),
                    "spans": [
                        round(float(q.xy_span[0].detach()), 3) for q in cast("PanelDetectorLayer", vol.get_detectors()[0]).panels
                    ],
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(
                f"{label:45s} cost {rows[-1]['cost']:.2f}  MSE {est:.5f} [{lo:.5f}, {hi:.5f}]  raw {rows[-1]['mse_raw']:.5f}",
                flush=True,
            )
    ref = LAYOUTS[1][0]
    for r in rows:
        ratio, ci = paired_bootstrap_ratio(errs[r["layout"]], errs[ref], cfg.n_bootstrap, s)
        r["ratio_to_baseline_2"], r["ratio_ci95"] = ratio, ci
        print(f"{r['layout']:45s} / baseline 2: {ratio:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"n_train_per_height": cfg.n_train_per_height, "n_test_per_height": cfg.n_test_per_height, "layouts": rows}, indent=2
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
