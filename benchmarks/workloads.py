"""Benchmark workloads, runnable against this project (``--impl ours``) or the reference TomOpt (``--impl ref``).

Each call measures ONE workload in the current process and prints one JSON line; ``run_all.py`` starts a fresh
process per workload so that peak RSS belongs to that workload alone. The reference implementation is only
imported (never copied): ``--impl ref`` must run inside a venv with ``tomopt==0.1.0`` installed.

Workloads (reference test volume: 4 panels above, 6 passive layers of 10x10 voxels of 0.1 m, 4 panels below,
1 cm steps, res 1e4 /m, eff 0.9, span 1 m):
- ``prop N``: generate N muons, propagate forward through the volume, backward of sum(reco_xyz * eff) to panels.
- ``scatter N``: propagate N muons (untimed), then time ScatterBatch + the four uncertainties the X0 inference
  needs (poca_xyz, total_scatter, theta_in, theta_out).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

LW = (1.0, 1.0)
SIZE = 0.1


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def build_ours() -> tuple[Any, Callable[[int], Any], Any]:
    from tomopt_lib.core import X0
    from tomopt_lib.inference.scattering import ScatterBatch
    from tomopt_lib.muon.generation import MuonGenerator2016
    from tomopt_lib.muon.muon_batch import MuonBatch
    from tomopt_lib.volume.builders import build_panel_volume

    volume = build_panel_volume()
    volume.record_xyz_hist = False
    volume.load_rad_length(lambda *, z, lw, size: torch.full([int(v) for v in (lw / size).round()], X0["beryllium"]))
    gen = MuonGenerator2016.from_volume(volume)
    rng = torch.Generator().manual_seed(0)

    def make_muons(n: int) -> Any:
        return MuonBatch(gen(n, generator=rng), init_z=volume.h)

    return volume, make_muons, ScatterBatch


def build_ref() -> tuple[Any, Callable[[int], Any], Any]:
    from tomopt.core import X0
    from tomopt.inference import ScatterBatch
    from tomopt.muon import MuonBatch, MuonGenerator2016
    from tomopt.volume import DetectorPanel, PanelDetectorLayer, PassiveLayer, Volume

    def rad_length(*, z: torch.Tensor, lw: torch.Tensor, size: float) -> torch.Tensor:
        return torch.ones(list((lw / size).long())) * X0["beryllium"]

    def panels(z_top: float) -> list:
        return [
            DetectorPanel(res=1e4, eff=0.9, init_xyz=(0.5, 0.5, z_top - i * 2 * SIZE / 4), init_xy_span=(1.0, 1.0))
            for i in range(4)
        ]

    layers: list = [PanelDetectorLayer(pos="above", lw=torch.tensor(LW), z=1.0, size=2 * SIZE, panels=panels(1.0))]
    for z in (0.8, 0.7, 0.6, 0.5, 0.4, 0.3):
        layers.append(PassiveLayer(rad_length_func=rad_length, lw=torch.tensor(LW), z=z, size=SIZE))
    layers.append(PanelDetectorLayer(pos="below", lw=torch.tensor(LW), z=0.2, size=2 * SIZE, panels=panels(0.2)))
    volume = Volume(nn.ModuleList(layers))
    gen = MuonGenerator2016.from_volume(volume)
    torch.manual_seed(0)

    def make_muons(n: int) -> Any:
        return MuonBatch(gen(n), init_z=volume.h)

    return volume, make_muons, ScatterBatch


def run_prop(impl: str, n: int) -> dict[str, float]:
    volume, make_muons, _ = (build_ours if impl == "ours" else build_ref)()
    t0, c0 = time.perf_counter(), _cpu_s()
    mu = make_muons(n)
    volume(mu)
    t_fwd = time.perf_counter() - t0
    hits = mu.get_hits()
    loss = sum((g["reco_xyz"] * g["eff"]).sum() for g in hits.values())
    loss.backward()
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    return {"wall_s": wall, "cpu_s": cpu, "forward_s": t_fwd, "n_kept": len(mu), "peak_rss_gb": _peak_rss_gb()}


def run_scatter(impl: str, n: int) -> dict[str, float]:
    volume, make_muons, scatter_batch = (build_ours if impl == "ours" else build_ref)()
    mu = make_muons(n)
    volume(mu)
    t0, c0 = time.perf_counter(), _cpu_s()
    sb = scatter_batch(mu=mu, volume=volume)
    t_sb = time.perf_counter() - t0
    uncs = [sb.poca_xyz_unc, sb.total_scatter_unc, sb.theta_in_unc, sb.theta_out_unc]
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    kept = int(uncs[1].shape[0])
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "construct_s": t_sb,
        "n_kept": kept,
        "us_per_muon": 1e6 * wall / max(kept, 1),
        "peak_rss_gb": _peak_rss_gb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["prop", "scatter"])
    parser.add_argument("n", type=int)
    parser.add_argument("--impl", choices=["ours", "ref"], default="ours")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fn = run_prop if args.workload == "prop" else run_scatter
    res = fn(args.impl, args.n)
    res.update(workload=args.workload, n=args.n, impl=args.impl, threads=args.threads)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
