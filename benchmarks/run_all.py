"""Run the benchmark workloads (each in a fresh process) and write ``bench_out/results.json``.

    python benchmarks/run_all.py                   # this project only
    python benchmarks/run_all.py --with-reference  # also the reference tomopt==0.1.0, ratios ours/theirs

The reference is installed from the package registry into ``.refvenv`` on first use (torch 2.13.0 CPU,
``tomopt==0.1.0`` and its undeclared runtime dependency ``mypy_extensions``). Timings are single-thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench_out"
REFVENV = ROOT / ".refvenv"
WORKLOADS = Path(__file__).with_name("workloads.py")


def ensure_refvenv() -> Path:
    """Create ``.refvenv`` with the reference TomOpt if it is missing; return its python."""
    py = REFVENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import tomopt"], capture_output=True).returncode == 0:
        return py
    print("installing the reference tomopt==0.1.0 into .refvenv (a few minutes)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(REFVENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + ["tomopt==0.1.0", "mypy_extensions"], check=True)
    return py


def run_one(python: str, impl: str, workload: str, n: int, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    cmd = [python, str(WORKLOADS), workload, str(n), "--impl", impl]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"  {impl:4s} {workload:8s} n={n:>7d}: timed out after {timeout:.0f} s", flush=True)
        return {"impl": impl, "workload": workload, "n": n, "error": f"timeout {timeout} s"}
    if proc.returncode != 0:
        print(f"  {impl:4s} {workload:8s} n={n:>7d}: FAILED\n{proc.stderr[-2000:]}", flush=True)
        return {"impl": impl, "workload": workload, "n": n, "error": proc.stderr[-500:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    extra = f", {res['us_per_muon']:.2f} us/muon" if "us_per_muon" in res else ""
    print(
        f"  {impl:4s} {workload:8s} n={n:>7d}: {res['wall_s']:.3f} s wall, {res['cpu_s']:.3f} s CPU, "
        f"peak RSS {res['peak_rss_gb']:.2f} GB{extra}",
        flush=True,
    )
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--with-reference", action="store_true")
    parser.add_argument("--prop-n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--scatter-n", type=int, nargs="+", default=[250, 2_000, 20_000, 200_000])
    parser.add_argument("--ref-scatter-n", type=int, nargs="+", default=[250, 1_000, 2_000])
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per workload (median is reported)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    plan: list[tuple] = [("ours", "prop", n) for n in args.prop_n] + [("ours", "scatter", n) for n in args.scatter_n]
    pythons = {"ours": sys.executable}
    if args.with_reference:
        pythons["ref"] = str(ensure_refvenv())
        plan += [("ref", "prop", n) for n in args.prop_n] + [("ref", "scatter", n) for n in args.ref_scatter_n]

    results: list[dict] = []
    for impl, workload, n in plan:
        reps = [run_one(pythons[impl], impl, workload, n, args.timeout) for _ in range(1 if impl == "ref" else args.repeats)]
        ok = sorted((r for r in reps if r and "error" not in r), key=lambda r: r["wall_s"])
        results.append(ok[len(ok) // 2] if ok else reps[0])

    ratios = []
    for r in results:
        if r.get("impl") != "ours" or "error" in r:
            continue
        ref = next(
            (
                q
                for q in results
                if q.get("impl") == "ref" and q["workload"] == r["workload"] and q["n"] == r["n"] and "error" not in q
            ),
            None,
        )
        if ref:
            ratios.append(
                {
                    "workload": r["workload"],
                    "n": r["n"],
                    "wall_ratio_ours_over_ref": r["wall_s"] / ref["wall_s"],
                    "rss_ratio_ours_over_ref": r["peak_rss_gb"] / ref["peak_rss_gb"],
                }
            )
    if ratios:
        print("\nours / reference (same run, 1 thread):")
        for q in ratios:
            print(
                f"  {q['workload']:8s} n={q['n']:>7d}: time x{q['wall_ratio_ours_over_ref']:.4f}, "
                f"peak RSS x{q['rss_ratio_ours_over_ref']:.2f}"
            )
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))
    print(f"\nwrote {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
