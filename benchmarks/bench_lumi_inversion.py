"""Inversion benchmarks (prints and merges into ``bench_out/lumi_inversion.json``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lumi_inversion.py                 # single + landscape
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lumi_inversion.py --sections grid --processes 2

Sections:
* ``single``: the reference's last example (4 bases x 7^4 shifts = 9604 residuals, 4 unknowns, 0.1 % noise) for one
  draw (seed-42 leaf, first draw): design, measurement and inversion times (median of repeats, after a warm-up).
  Reference: 893 s for the least-squares call, 927.5 s in total.
* ``landscape``: penalty sqrt(sum r^2) on a 500 x 500 grid over [0.8, 1.2] x 2.3e-6 for the 12 (degenerate), xy
  (1 IP) and xy-with-noise (2 IPs) plans.
* ``grid``: the full last-example grid, 16 leaves x 100 draws (leaf i: seed 42 + i, eps ~ U(2.3e-6 +- 20 %)),
  batched in chunks; mean/max relative error per component, convergence rate, iterations, wall time.
  Reference estimate: about 412 CPU-hours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from lumi_lib import invert, invert_measured, luminosity, measure, mode_matrix, penalty_landscape, preset_design

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench_out" / "lumi_inversion.json"
NOM = 2.3e-6


def leaf_draws(leaf: int, n: int) -> torch.Tensor:
    """True emittances (n, 4) of one tree leaf: U(2.3e-6 +- 20 %), seed 42 + leaf."""
    g = torch.Generator().manual_seed(42 + leaf)
    return NOM * (0.8 + 0.4 * torch.rand(n, 4, dtype=torch.float64, generator=g))


def bench_single(repeats: int) -> dict:
    t0 = time.perf_counter()
    design = preset_design("xy12_last")
    t_design = time.perf_counter() - t0
    truth = leaf_draws(0, 1)
    eps = torch.full((1, 1, 4), NOM, dtype=torch.float64)
    times_l = []
    for _ in range(5):
        t0 = time.perf_counter()
        luminosity(design.config, eps)
        times_l.append(time.perf_counter() - t0)
    invert("xy12", truth, design=design, rel_noise=1e-3, generator=torch.Generator().manual_seed(0))  # warm-up
    t_meas, t_inv, res = [], [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        meas = measure(design.config, truth, rel_noise=1e-3, generator=torch.Generator().manual_seed(0))
        t1 = time.perf_counter()
        res = invert_measured("xy12", meas, design=design, rel_noise=1e-3, truth=truth)
        t2 = time.perf_counter()
        t_meas.append(t1 - t0)
        t_inv.append(t2 - t1)
    assert res is not None and res.rel_error is not None  # repeats >= 1; truth given
    out: dict[str, Any] = {
        "residuals": design.n_configs,
        "unknowns": 4,
        "design_s": t_design,
        "luminosity_9604_s_median": statistics.median(times_l),
        "measure_s_median": statistics.median(t_meas),
        "inversion_s_median": statistics.median(t_inv),
        "total_s": t_design + statistics.median(t_meas) + statistics.median(t_inv),
        "iterations": int(res.iterations[0]),
        "converged": bool(res.converged[0]),
        "rel_error": res.rel_error[0].tolist(),
        "rel_std_predicted": (res.std[0] / truth[0]).tolist(),
        "cond": float(res.cond[0]),
        "reference_s": {"least_squares": 893.4, "total": 927.5},
        "target_s": 2.0,
    }
    print(
        f"[single] 9604 residuals x 4 unknowns: inversion {out['inversion_s_median']:.3f} s, total incl. design "
        f"{out['total_s']:.3f} s ({out['iterations']} iterations, rel. error {[f'{e:+.2e}' for e in out['rel_error']]})"
    )
    return out


def bench_landscape(n: int) -> dict:
    grid = torch.linspace(0.8 * NOM, 1.2 * NOM, n, dtype=torch.float64)
    cases = {
        "12": ("12", "12_equal", 0.0, torch.tensor([[2.0e-6, 2.5e-6]], dtype=torch.float64)),
        "xy": ("xy", "xy_1ip", 0.0, torch.tensor([[2.1e-6, 2.6e-6]], dtype=torch.float64)),
        "xy_noise_2ip": ("xy", "xy_2ip", 1e-3, torch.tensor([[2.1e-6, 2.6e-6]], dtype=torch.float64)),
    }
    out = {}
    for name, (mode, preset, noise, truth) in cases.items():
        design = preset_design(preset)
        _, pmat = mode_matrix(mode)
        meas = measure(design.config, truth @ pmat, rel_noise=noise, generator=torch.Generator().manual_seed(3))
        penalty_landscape(mode, meas[0], design=design, grid_a=grid[:10], grid_b=grid[:10], rel_noise=noise)
        t0 = time.perf_counter()
        pen = penalty_landscape(mode, meas[0], design=design, grid_a=grid, grid_b=grid, rel_noise=noise)
        dt = time.perf_counter() - t0
        out[name] = {"grid": [n, n], "residuals": design.n_configs, "seconds": dt, "min": float(pen.min()), "target_s": 5.0}
        print(f"[landscape] {name}: {n}x{n} grid, {design.n_configs} residuals: {dt:.3f} s")
    return out


_WORKER_DESIGN: Any = None


def _grid_worker_init() -> None:
    global _WORKER_DESIGN
    torch.set_num_threads(1)
    _WORKER_DESIGN = preset_design("xy12_last")


def _grid_chunk(item: tuple[int, torch.Tensor]) -> Any:
    """Invert one chunk; its noise comes from a generator seeded by (2024, chunk index), so any split of the chunks
    over processes gives the same numbers."""
    index, truth = item
    design = _WORKER_DESIGN if _WORKER_DESIGN is not None else preset_design("xy12_last")
    gen = torch.Generator().manual_seed(2024 * 100_003 + index)
    return invert("xy12", truth, design=design, rel_noise=1e-3, generator=gen, chunk_size=len(truth))


def bench_grid(leaves: int, per_leaf: int, chunk: int, processes: int = 1) -> dict:
    design = preset_design("xy12_last")
    truth = torch.cat([leaf_draws(i, per_leaf) for i in range(leaves)])
    items = [(i, truth[s : s + chunk]) for i, s in enumerate(range(0, truth.shape[0], chunk))]
    t0 = time.perf_counter()
    parts: list = []
    if processes > 1:  # one single-threaded worker process per core (scales better than intra-op threads)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=processes, mp_context=ctx, initializer=_grid_worker_init) as pool:
            for res in pool.map(_grid_chunk, items):
                parts.append(res)
                done = sum(p.estimate.shape[0] for p in parts)
                if done % 100 < chunk:
                    print(f"[grid] {done}/{truth.shape[0]} inversions, {time.perf_counter() - t0:.1f} s", flush=True)
    else:
        for item in items:
            parts.append(_grid_chunk(item))
            done = sum(p.estimate.shape[0] for p in parts)
            print(f"[grid] {done}/{truth.shape[0]} inversions, {time.perf_counter() - t0:.1f} s", flush=True)
    wall = time.perf_counter() - t0
    rel = torch.cat([p.rel_error for p in parts])
    conv = torch.cat([p.converged for p in parts])
    iters = torch.cat([p.iterations for p in parts]).double()
    norm = rel.norm(dim=1)
    outlier = (norm - norm.mean()).abs() > 4 * norm.std()
    out: dict[str, Any] = {
        "inversions": int(truth.shape[0]),
        "residuals": design.n_configs,
        "wall_s": wall,
        "per_inversion_s": wall / truth.shape[0],
        "threads": torch.get_num_threads() if processes <= 1 else 1,
        "processes": processes,
        "chunk": chunk,
        "mean_abs_rel_error": rel.abs().mean(0).tolist(),
        "max_abs_rel_error": rel.abs().max(0).values.tolist(),
        "rms_rel_error": rel.pow(2).mean(0).sqrt().tolist(),
        "convergence_rate": float(conv.double().mean()),
        "iterations_mean": float(iters.mean()),
        "iterations_max": int(iters.max()),
        "outlier_fraction_4sigma": float(outlier.double().mean()),
        "reference_cpu_hours": 412,
        "target_s": 1800,
    }
    print(
        f"[grid] {out['inversions']} inversions in {wall:.1f} s ({out['per_inversion_s']:.3f} s each, "
        f"{out['processes']} processes x {out['threads']} threads); mean |rel err| {[f'{e:.2e}' for e in out['mean_abs_rel_error']]}, "
        f"max {[f'{e:.2e}' for e in out['max_abs_rel_error']]}, converged {out['convergence_rate']:.4f}"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="single,landscape", help="comma list of single, landscape, grid")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--landscape-n", type=int, default=500)
    ap.add_argument("--leaves", type=int, default=16)
    ap.add_argument("--per-leaf", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--processes", type=int, default=1, help="grid: worker processes (1 thread each)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for sec in sections:
        if sec == "single":
            results["last_example_single"] = bench_single(args.repeats)
        elif sec == "landscape":
            results["penalty_landscape"] = bench_landscape(args.landscape_n)
        elif sec == "grid":
            results["last_example_grid"] = bench_grid(args.leaves, args.per_leaf, args.chunk, args.processes)
        else:
            raise SystemExit(f"unknown section {sec!r}; valid: single, landscape, grid")
        results.setdefault("meta", {})["torch"] = torch.__version__
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
