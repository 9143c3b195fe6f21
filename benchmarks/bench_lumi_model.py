"""Benchmark: luminosity of the 9604 "last example" configurations, vectorised model vs the scalar scipy-quad loop.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lumi_model.py [--quad-subset 400] [--repeats 30]

Configurations: 4 base IPs (crossing x / y, beta*_2 = 0.3001, 0.30, 0.294, 0.294 m) x 7^4 tensor product of shifts
of sep_x, sep_y, cross_x, cross_y (linspace(-g, g, 7) with the reference's 1 % shifts g). The quad baseline
(``reference_quirks=True``, scipy's default tolerances, as in the reference) is timed on a seeded subset and
extrapolated to 9604 (labelled so in the JSON). Writes ``bench_out/lumi_model.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lumi_lib import IPConfig, luminosity
from lumi_lib.model import DEFAULT_QUADRATURE
from lumi_lib.reference_quad import luminosity_quad

ROOT = Path(__file__).resolve().parents[1]
SHIFTS = {"sep_x": 8.554e-6, "sep_y": -1.822e-6, "cross_x": 3.27e-6, "cross_y": 42.7e-6}
BASES: tuple[tuple[Literal["x", "y"], float], ...] = (("x", 0.3001), ("y", 0.30), ("x", 0.294), ("y", 0.294))
EPS = (2.35e-6, 2.2e-6, 2.4e-6, 2.25e-6)


def last_example_configs() -> IPConfig:
    """One IPConfig with (9604,) tensor fields for the shifted parameters and beta*_2."""
    grids = torch.meshgrid(*[torch.linspace(-g, g, 7, dtype=torch.float64) for g in SHIFTS.values()], indexing="ij")
    deltas = {name: grid.reshape(-1) for name, grid in zip(SHIFTS, grids)}
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in (*SHIFTS, "beta_x2", "beta_y2")}
    for plane, beta2 in BASES:
        base = IPConfig.lhc_default(plane)
        for name, d in deltas.items():
            parts[name].append(getattr(base, name) + d)
        for name in ("beta_x2", "beta_y2"):
            parts[name].append(torch.full_like(deltas["sep_x"], beta2))
    return IPConfig.lhc_default("x").replace(**{name: torch.cat(v) for name, v in parts.items()})


def timed(fn, repeats: int) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"min_ms": 1e3 * min(times), "median_ms": 1e3 * statistics.median(times), "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quad-subset", type=int, default=400, help="configurations timed with the scalar quad loop")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "lumi_model.json"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    cfg = last_example_configs()
    n = cfg.batch_shape[0]
    eps = torch.tensor(EPS, dtype=torch.float64)
    forward = timed(lambda: luminosity(cfg, eps), args.repeats)

    def jacobian() -> torch.Tensor:
        e = eps.expand(n, 4).clone().requires_grad_(True)
        luminosity(cfg, e).sum().backward()
        assert e.grad is not None
        return e.grad

    grad = timed(jacobian, max(3, args.repeats // 3))
    lum = luminosity(cfg, eps)

    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(n, size=min(args.quad_subset, n), replace=False))
    fields = cfg.as_dict()
    singles = [IPConfig(**{k: (float(v[i]) if isinstance(v, torch.Tensor) else v) for k, v in fields.items()}) for i in idx]
    t0 = time.perf_counter()
    ref = np.array([luminosity_quad(c, EPS, reference_quirks=True) for c in singles])
    t_quad = time.perf_counter() - t0
    rel = np.abs(lum.numpy()[idx] / ref - 1.0)

    quad_full_s = t_quad / len(idx) * n
    result = {
        "workload": "luminosity of the 9604 last-example configurations",
        "n_configs": n,
        "threads": torch.get_num_threads(),
        "quadrature": repr(DEFAULT_QUADRATURE),
        "model_forward": forward,
        "model_forward_plus_dL_deps_jacobian": grad,
        "quad_loop": {
            "subset": len(idx),
            "subset_s": t_quad,
            "per_call_ms": 1e3 * t_quad / len(idx),
            "extrapolated_9604_s": quad_full_s,
            "note": "scalar scipy quad (default tolerances, reference_quirks=True) timed on a subset, extrapolated",
        },
        "speedup_vs_quad_extrapolated": quad_full_s / (forward["min_ms"] / 1e3),
        "max_rel_diff_vs_quad_subset": float(rel.max()),
        "target_ms": 20.0,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "loadavg": os.getloadavg(),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
