"""Orchestration overhead of one pipeline stage process, as under ``make run`` (one running Prefect server).

Per repeat, a fresh ``python`` process imports the stage's code (torch, Prefect, the stage flow), notes the time,
runs ``flows.__main__.main([stage])`` and exits the way ``python -m flows`` does (``exit_now``). The flow run's
start and end come from the Prefect API. Overhead = (flow-run start - end of the imports: parameter validation,
input checks, flow-run creation) + (process exit - flow-run end: final state, logs and events sent). The imports are
reported separately (the same in every mode).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stage_overhead.py [--stage generate_passives] [--repeats 3]
        [--out bench_out/stage_overhead.json]

Uses ``PREFECT_API_URL`` when set, else starts one local server for all repeats (``flows.server.LocalServer``, as
``make run`` does). The stage rewrites its outputs with identical bytes (same seed, same content).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROBE = """
import json, sys, time
t_start = time.time()
import importlib
import flows.__main__ as fm
from flows.stages import STAGES
importlib.import_module(STAGES[{stage!r}].module)
import prefect  # noqa: F401
t_imports = time.time()
rc = fm.main([{stage!r}])
print(json.dumps({{"t_start": t_start, "t_imports": t_imports, "rc": rc}}), flush=True)
fm.exit_now(rc)
"""


def _latest_flow_run(api_url: str) -> tuple[float, float, str]:
    """(start, end, name) of the most recently started flow run [Unix s]."""
    os.environ["PREFECT_API_URL"] = api_url
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
    assert run.start_time is not None and run.end_time is not None, run
    return run.start_time.timestamp(), run.end_time.timestamp(), run.name


def measure(stage: str, repeats: int, api_url: str) -> list[dict[str, float]]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    for i in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", PROBE.format(stage=stage)], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        t_exit = time.time()
        if proc.returncode != 0:
            raise SystemExit(f"stage {stage} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        probe = json.loads(proc.stdout.strip().splitlines()[-1])
        start, end, name = _latest_flow_run(api_url)
        row = {
            "imports_s": probe["t_imports"] - probe["t_start"],
            "to_flow_run_s": start - probe["t_imports"],
            "flow_run_s": end - start,
            "after_flow_run_s": t_exit - end,
        }
        row["overhead_s"] = row["to_flow_run_s"] + row["after_flow_run_s"]
        rows.append(row)
        print(f"repeat {i + 1}/{repeats} ({name}): " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="generate_passives")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench_out/stage_overhead.json")
    args = ap.parse_args()
    from flows.env import apply_env_defaults
    from flows.server import LocalServer, configured_api_url

    apply_env_defaults()
    server = None
    api_url = configured_api_url()
    if not api_url:
        t0 = time.perf_counter()
        server = LocalServer().start()
        server.wait()
        api_url = server.api_url
        print(f"local Prefect server up in {time.perf_counter() - t0:.1f} s at {api_url}", flush=True)
    try:
        rows = measure(args.stage, args.repeats, api_url)
    finally:
        if server is not None:
            server.stop()
    summary: dict[str, Any] = {
        "stage": args.stage,
        "repeats": rows,
        "median": {k: statistics.median(r[k] for r in rows) for k in rows[0]},
        "load_average_1min": os.getloadavg()[0],
    }
    print("median: " + ", ".join(f"{k} {v:.2f} s" for k, v in summary["median"].items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
