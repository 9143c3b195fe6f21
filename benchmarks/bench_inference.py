"""Lead-in-beryllium X0 inference benchmark (the reference quality test, notes §3b), ours and optionally the reference.

Setup: 4 + 4 ``DetectorPanel`` s (res 1e4 /m, eff 0.9, span 2 m) around 6 passive layers of 10 x 10 voxels of 0.1 m
beryllium, with a 5 x 5 lead corner (x, y < 0.5 m) in the layers whose tops are 0.4 and 0.5 m; 10,000 muons of 5 GeV
(the reference generator's default fixed momentum; ``--spectrum`` samples the flux spectrum instead), resampled so
that every muon's straight line crosses the passive top and bottom inside the footprint (like ``MuonResampler``).
``predict`` = propagation + ``ScatterBatch`` + inference in muon batches of ``--mu-bs`` (250 like the reference),
under ``torch.no_grad``, on ``--threads`` threads. The same muons feed both of our inferrers ("poca" and "path").

Metrics: mean predicted X0 of the lead and beryllium voxels, and the separation
``(mean_Be - mean_Pb) / sqrt(std_Pb^2 + 2 std_Be)`` as the reference test writes it, and with variances
``(mean_Be - mean_Pb) / sqrt(std_Pb^2 + std_Be^2)``. Prints JSON and writes ``bench_out/inference.json``
(``--impl ref`` runs the reference PanelX0Inferrer in the venv given by ``--ref-python``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_inference.py [--seed 1] [--impl ours|ref|both]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

X0_PB, X0_BE = 0.005612, 0.3528
N_MU, LW, SIZE = 10_000, (1.0, 1.0), 0.1
PASSIVE_TOPS = (0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


def lead_mask_zxy() -> torch.Tensor:
    """(6, 10, 10) True for the lead voxels (z index 0 = bottom layer, top 0.3 m)."""
    m = torch.zeros(6, 10, 10, dtype=torch.bool)
    for zi, top in enumerate(reversed(PASSIVE_TOPS)):
        if abs(top - 0.4) < 1e-6 or abs(top - 0.5) < 1e-6:
            m[zi, :5, :5] = True
    return m


def rad_length(*, z: Any, lw: Any, size: float) -> torch.Tensor:
    top = float(torch.as_tensor(z).reshape(-1)[0])
    x0 = torch.full((10, 10), X0_BE)
    if abs(top - 0.4) < 1e-6 or abs(top - 0.5) < 1e-6:
        x0[:5, :5] = X0_PB
    return x0


def metrics(pred: torch.Tensor) -> dict[str, float]:
    m = lead_mask_zxy()
    p = pred.detach().cpu().double()
    pb, be = p[m], p[~m]
    d = float(be.mean() - pb.mean())
    return {
        "mean_pb": float(pb.mean()),
        "mean_be": float(be.mean()),
        "std_pb": float(pb.std()),
        "std_be": float(be.std()),
        "median_pb": float(pb.median()),
        "median_be": float(be.median()),
        "sep_ref_formula": d / math.sqrt(float(pb.std()) ** 2 + 2 * float(be.std())),
        "sep_variances": d / math.sqrt(float(pb.std()) ** 2 + float(be.std()) ** 2),
    }


def resample(gen: Any, n: int, h: float, rng: torch.Generator) -> torch.Tensor:
    """n generator samples whose straight line crosses z = 0.8 and 0.2 m inside the footprint."""
    out, have = [], 0
    while have < n:
        s = gen(2 * n, generator=rng)
        x, y, th, ph = s[:, 0], s[:, 1], s[:, 3], s[:, 4]
        ok = torch.ones(len(s), dtype=torch.bool)
        for z in (0.8, 0.2):
            d = (h - z) * torch.tan(th)
            xz, yz = x + d * torch.cos(ph), y + d * torch.sin(ph)
            ok &= (xz >= 0) & (xz < LW[0]) & (yz >= 0) & (yz < LW[1])
        out.append(s[ok])
        have += int(ok.sum())
    return torch.cat(out)[:n]


def run_ours(seed: int, mu_bs: int, spectrum: bool, energy_loss: bool = False) -> dict[str, Any]:
    from tomopt_lib.inference import PanelX0Inferrer, PathX0Inferrer, ScatterBatch
    from tomopt_lib.muon.generation import MuonGenerator2016
    from tomopt_lib.muon.muon_batch import MuonBatch
    from tomopt_lib.volume.builders import build_panel_volume

    volume = build_panel_volume(res=1e4, eff=0.9, panel_span=2.0, energy_loss=energy_loss)
    volume.record_xyz_hist = False
    volume.load_rad_length(rad_length)
    gen = MuonGenerator2016.from_volume(volume, fixed_mom=None if spectrum else 5.0)
    rng = torch.Generator().manual_seed(seed)
    h = float(volume.h.reshape(-1)[0])
    muons = resample(gen, N_MU, h, rng)
    infs = {"poca": PanelX0Inferrer(volume), "path": PathX0Inferrer(volume)}
    res: dict[str, Any] = {}
    with torch.no_grad():
        t0 = time.perf_counter()
        sbs = []
        for i in range(0, N_MU, mu_bs):
            mu = MuonBatch(muons[i : i + mu_bs], init_z=volume.h)
            volume(mu, generator=rng)
            sbs.append(ScatterBatch(mu, volume))
            _ = sbs[-1].poca_xyz_unc  # uncertainties computed here (part of the shared cost)
        t_shared = time.perf_counter() - t0
        for name, inf in infs.items():
            t1 = time.perf_counter()
            for sb in sbs:
                inf.add_scatters(sb)
            pred, unc = inf.get_prediction_and_unc()
            t_inf = time.perf_counter() - t1
            res[name] = {
                "predict_s": t_shared + t_inf,
                "inference_s": t_inf,
                "n_mu": inf.n_mu,
                **metrics(pred),
                "mean_rel_unc": float((unc / pred).mean()),
            }
    res["propagation_and_scatterbatch_s"] = t_shared
    return res


def run_ref(seed: int, mu_bs: int) -> dict[str, Any]:
    """Reference ``PanelX0Inferrer`` on its own propagation (same setup); needs tomopt 0.1.0 importable."""
    from tomopt.inference import PanelX0Inferrer, ScatterBatch
    from tomopt.muon import MuonBatch, MuonGenerator2016
    from tomopt.volume import DetectorPanel, PanelDetectorLayer, PassiveLayer, Volume
    from torch import nn

    def panels(z_top: float) -> list:
        return [
            DetectorPanel(res=1e4, eff=0.9, init_xyz=(0.5, 0.5, z_top - i * 2 * SIZE / 4), init_xy_span=(2.0, 2.0))
            for i in range(4)
        ]

    layers: list = [PanelDetectorLayer(pos="above", lw=torch.tensor(LW), z=1.0, size=2 * SIZE, panels=panels(1.0))]
    for z in PASSIVE_TOPS:
        layers.append(PassiveLayer(rad_length_func=rad_length, lw=torch.tensor(LW), z=z, size=SIZE))
    layers.append(PanelDetectorLayer(pos="below", lw=torch.tensor(LW), z=0.2, size=2 * SIZE, panels=panels(0.2)))
    volume = Volume(nn.ModuleList(layers))
    torch.manual_seed(seed)
    gen = MuonGenerator2016.from_volume(volume)

    def gen_t(n: int, generator: Any = None) -> torch.Tensor:
        return torch.as_tensor(gen(n), dtype=torch.float32)

    muons = resample(gen_t, N_MU, 1.0, torch.Generator().manual_seed(seed))
    inf = PanelX0Inferrer(volume)
    t0 = time.perf_counter()
    for i in range(0, N_MU, mu_bs):
        mu = MuonBatch(muons[i : i + mu_bs], init_z=1.0)
        volume(mu)
        inf.add_scatters(ScatterBatch(mu=mu, volume=volume))
    pred = inf.get_prediction()
    return {"ref_poca": {"predict_s": time.perf_counter() - t0, "n_mu": inf.n_mu, **metrics(pred)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mu-bs", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--spectrum", action="store_true", help="sample momenta from the flux instead of a fixed 5 GeV")
    ap.add_argument("--energy-loss", action="store_true", help="continuous energy loss in the passive layers (pipeline)")
    ap.add_argument("--impl", choices=["ours", "ref", "both"], default="ours")
    ap.add_argument("--ref-python", default=str(ROOT / ".refvenv" / "bin" / "python"))
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "inference.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {
        "seed": args.seed,
        "n_mu": N_MU,
        "mu_bs": args.mu_bs,
        "threads": args.threads,
        "momentum": "spectrum" if args.spectrum else "5 GeV",
        "truth": {"pb": X0_PB, "be": X0_BE},
    }
    if args.impl == "ref" and os.environ.get("_BENCH_REF_CHILD"):
        print(json.dumps(run_ref(args.seed, args.mu_bs)))
        return
    if args.impl in ("ours", "both"):
        out.update(run_ours(args.seed, args.mu_bs, args.spectrum, args.energy_loss))
        out["energy_loss"] = args.energy_loss
    if args.impl in ("ref", "both"):
        env = dict(os.environ, _BENCH_REF_CHILD="1", OMP_NUM_THREADS=str(args.threads))
        cmd = [
            args.ref_python,
            __file__,
            "--impl",
            "ref",
            "--seed",
            str(args.seed),
            "--mu-bs",
            str(args.mu_bs),
            "--threads",
            str(args.threads),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        try:
            out.update(json.loads(r.stdout.strip().splitlines()[-1]))
        except (IndexError, json.JSONDecodeError):
            out["ref_error"] = (r.stderr or r.stdout)[-2000:]
    print(json.dumps(out, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
