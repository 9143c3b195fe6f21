"""Calibration of the X0 inferrers against truth: median predicted/true X0 and pull widths, over many seeds.

Volumes (default panel volume: 6 layers of 10 x 10 voxels of 0.1 m, 4 + 4 panels, res 1e4 /m, eff 0.9, span 1 m):
uniform iron, lead and beryllium blocks, lead-in-beryllium (TomOpt's reference test volume: a 5 x 5 lead corner in
the layers with tops 0.4 and 0.5 m), an iron slab filling the layers with tops 0.5 and 0.6 m of a beryllium block,
and a 2 x 2-voxel lead column through a beryllium block (``--volumes`` picks some). Muons from
``MuonGenerator2016.from_volume`` (the wrappers' default), propagated with the chosen physics (``--energy-loss``),
reconstructed with ``ScatterBatch``; every inferrer x momentum model sees the same muons.

Per (volume, material, inferrer, momentum model, muon count), over ``--seeds`` seeds:
- ``median_ratio``: median over seeds and voxels of predicted / true X0;
- ``pull_width``: median over the material's voxels of std_seeds(ln pred) / median_seeds(reported unc / pred), the
  spread of the predictions over the reported uncertainty in relative terms (robust to the long tails of X0
  estimates; 1 = uncertainties match the spread; voxels flagged ``low_data`` in any seed are left out);
- ``low_data``: fraction of flagged voxels;
- ``tail3``: fraction of the unflagged (voxel, seed) pairs whose error in units of the reported uncertainty,
  z = ln(pred / true) / (unc / pred), exceeds 3 (0.003 for Gaussian errors with the right width and no bias);
- ``median_ratio_edge`` / ``median_ratio_interior``: median predicted / true X0 on the footprint's border voxels and
  inside (a spatial bias that the overall median hides);
- ``median_ratio_top`` / ``median_ratio_bottom``: the same in the top and the bottom passive layer (a depth bias).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_calibration.py [--seeds 20] [--n-mu 1000 10000]
        [--inferrers poca path] [--momentum true smeared unknown] [--energy-loss] [--out bench_out/calibration.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tomopt_lib.core import X0  # noqa: E402
from tomopt_lib.inference import ScatterBatch  # noqa: E402
from tomopt_lib.inference.momentum import MomentumModel  # noqa: E402
from tomopt_lib.inference.volume import get_volume_inferrer  # noqa: E402
from tomopt_lib.muon import MuonBatch  # noqa: E402
from tomopt_lib.muon.generation import MuonGenerator2016  # noqa: E402
from tomopt_lib.volume.builders import build_panel_volume  # noqa: E402

if TYPE_CHECKING:
    from tomopt_lib.inference.x0_path import PathX0Inferrer
    from tomopt_lib.inference.x0_poca import PanelX0Inferrer
    from tomopt_lib.volume.volume import Volume

MU_BS = 1000


def uniform(material: str) -> Callable[..., torch.Tensor]:
    return lambda *, z, lw, size: torch.full((10, 10), X0[material])


def lead_in_beryllium(*, z: Any, lw: Any, size: float) -> torch.Tensor:
    top = float(torch.as_tensor(z).reshape(-1)[0])
    x0 = torch.full((10, 10), X0["beryllium"])
    if abs(top - 0.4) < 1e-6 or abs(top - 0.5) < 1e-6:
        x0[:5, :5] = X0["lead"]
    return x0


def iron_slab_in_beryllium(*, z: Any, lw: Any, size: float) -> torch.Tensor:
    """Beryllium with a full-footprint iron slab in the two layers whose tops are 0.5 and 0.6 m."""
    top = float(torch.as_tensor(z).reshape(-1)[0])
    fill = "iron" if abs(top - 0.5) < 1e-6 or abs(top - 0.6) < 1e-6 else "beryllium"
    return torch.full((10, 10), X0[fill])


def lead_column_in_beryllium(*, z: Any, lw: Any, size: float) -> torch.Tensor:
    """Beryllium with a 2 x 2-voxel lead column through every layer, in the middle of the footprint."""
    x0 = torch.full((10, 10), X0["beryllium"])
    x0[4:6, 4:6] = X0["lead"]
    return x0


def layer_median(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, layer: int) -> float:
    """Median over seeds and the ``mask`` voxels of one layer (index 0 = bottom) of predicted / true X0 (NaN if none)."""
    sel = mask[layer]
    return float(np.median(pred[:, layer][:, sel] / truth[layer][sel])) if sel.any() else float("nan")


def footprint_edge(shape_zxy: tuple[int, ...]) -> np.ndarray:
    """(n_z, n_x, n_y) True for the voxels on the border of the footprint (first or last x or y index)."""
    edge = np.zeros(shape_zxy, dtype=bool)
    edge[:, [0, -1], :] = True
    edge[:, :, [0, -1]] = True
    return edge


MIXED = {"lead_in_beryllium": "lead", "iron_slab_in_beryllium": "iron", "lead_column_in_beryllium": "lead"}
"""Volumes of a dense object in beryllium, and the object's material."""

VOLUMES: dict[str, Callable[..., torch.Tensor]] = {
    "iron": uniform("iron"),
    "lead": uniform("lead"),
    "beryllium": uniform("beryllium"),
    "lead_in_beryllium": lead_in_beryllium,
    "iron_slab_in_beryllium": iron_slab_in_beryllium,
    "lead_column_in_beryllium": lead_column_in_beryllium,
}


def simulate(
    layout: Callable[..., torch.Tensor], n_mu: int, seed: int, energy_loss: bool, realistic: bool = False
) -> tuple[Volume, list[ScatterBatch]]:
    """Volume with ``layout`` and the scatter batches of ``n_mu`` generated muons (seeded); ``realistic``: the panels
    in evaluation mode (sharp edges, nominal resolution and efficiency, as the pipeline's evaluation) instead of the
    training-mode Gaussian profiles (resolution and efficiency falling off from each panel's centre)."""
    kw: dict[str, Any] = {"energy_loss": True} if energy_loss else {}
    vol = build_panel_volume(**kw)
    if realistic:
        vol.eval()
    vol.record_xyz_hist = False
    vol.load_rad_length(layout)
    gen = MuonGenerator2016.from_volume(vol)
    rng = torch.Generator().manual_seed(seed)
    sbs = []
    with torch.no_grad():
        for i in range(0, n_mu, MU_BS):
            mu = MuonBatch(gen(min(MU_BS, n_mu - i), generator=rng), init_z=vol.h)
            vol(mu, generator=rng)
            if len(mu):
                sb = ScatterBatch(mu, vol)
                if len(sb):
                    sbs.append(sb)
    return vol, sbs


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    extra: dict[str, dict[str, Any]] = {name: {} for name in args.inferrers}
    if args.path_prior_extent and "path" in extra:
        extra["path"]["prior_extent"] = tuple(args.path_prior_extent)
    for opt in args.path_opt:  # KEY=VALUE, VALUE a Python literal
        key, _, value = opt.partition("=")
        if "path" in extra:
            extra["path"][key] = ast.literal_eval(value)
    timing: dict[str, float] = {}
    for vname, layout in VOLUMES.items():
        if args.volumes and vname not in args.volumes:
            continue
        for n_mu in args.n_mu:
            preds: dict[tuple[str, str], list[np.ndarray]] = {}
            uncs: dict[tuple[str, str], list[np.ndarray]] = {}
            lows: dict[tuple[str, str], list[np.ndarray]] = {}
            truth = None
            for seed in range(args.seeds):
                vol, sbs = simulate(layout, n_mu, 1000 + seed, args.energy_loss, args.realistic)
                truth = vol.get_rad_cube().numpy()
                for inf_name in args.inferrers:
                    for mom in args.momentum:
                        inf = cast(
                            "PanelX0Inferrer | PathX0Inferrer",  # the registered inferrers (both flag low_data)
                            get_volume_inferrer(inf_name)(vol, momentum=MomentumModel(kind=mom, seed=seed), **extra[inf_name]),
                        )
                        for sb in sbs:
                            inf.add_scatters(sb)
                        t0 = time.perf_counter()
                        with torch.no_grad():
                            pred, unc = inf.get_prediction_and_unc()
                        timing[f"{inf_name}/{mom}/{n_mu}"] = time.perf_counter() - t0
                        key = (inf_name, mom)
                        preds.setdefault(key, []).append(pred.numpy())
                        uncs.setdefault(key, []).append(unc.numpy())
                        lows.setdefault(key, []).append(inf.low_data.numpy())
            assert truth is not None  # seeds >= 1
            if vname in MIXED:  # the dense object and the beryllium around it
                mats = {MIXED[vname]: truth < 0.1, "beryllium": truth > 0.1}
            else:
                mats = {vname: truth > 0}
            for (inf_name, mom), p in preds.items():
                p_arr, u_arr, l_arr = np.stack(p), np.stack(uncs[(inf_name, mom)]), np.stack(lows[(inf_name, mom)])
                for mat, mask in mats.items():
                    ratio = p_arr[:, mask] / truth[mask]
                    ok = ~l_arr[:, mask].any(0)
                    spread = np.log(p_arr[:, mask]).std(0, ddof=1)  # relative spread of the predictions
                    rel_unc = np.median(u_arr[:, mask] / p_arr[:, mask], 0)  # typical reported relative uncertainty
                    pulls = (spread / rel_unc)[ok] if ok.any() else np.array([np.nan])
                    # against the truth, voxel by voxel: z = ln(pred / true) / (unc / pred), unflagged voxels only
                    z = np.log(ratio) / (u_arr[:, mask] / p_arr[:, mask])
                    unflagged = ~l_arr[:, mask]
                    tail3 = float(np.mean(np.abs(z[unflagged]) > 3)) if unflagged.any() else float("nan")
                    edge = footprint_edge(truth.shape)[mask]  # voxels on the footprint's border (x or y index first / last)
                    rows.append(
                        {
                            "volume": vname,
                            "material": mat,
                            "inferrer": inf_name,
                            "momentum": mom,
                            "n_mu": n_mu,
                            "median_ratio": float(np.median(ratio)),
                            "mean_rho_ratio": float(np.mean(1 / ratio)),
                            "q16": float(np.quantile(ratio, 0.16)),
                            "q84": float(np.quantile(ratio, 0.84)),
                            "pull_width": float(np.median(pulls)),
                            "tail3": tail3,
                            "median_ratio_edge": float(np.median(ratio[:, edge])) if edge.any() else float("nan"),
                            "median_ratio_interior": float(np.median(ratio[:, ~edge])) if (~edge).any() else float("nan"),
                            # depth: the material's voxels in the top / bottom passive layer (index 0 = bottom)
                            "median_ratio_top": layer_median(p_arr, truth, mask, -1),
                            "median_ratio_bottom": layer_median(p_arr, truth, mask, 0),
                            "low_data": float(l_arr[:, mask].mean()),
                            "seeds": args.seeds,
                        }
                    )
                    r = rows[-1]
                    print(
                        f"{vname:18s} {mat:9s} {inf_name:4s} {mom:8s} {n_mu:6d}  median {r['median_ratio']:.3f} "
                        f"[{r['q16']:.2f}, {r['q84']:.2f}] rho {r['mean_rho_ratio']:.2f}  pull width {r['pull_width']:.2f}  low {r['low_data']:.2f}  "
                        f"|z|>3 {r['tail3']:.3f}  edge / interior {r['median_ratio_edge']:.2f} / {r['median_ratio_interior']:.2f}  "
                        f"top / bottom {r['median_ratio_top']:.2f} / {r['median_ratio_bottom']:.2f}",
                        flush=True,
                    )
    return {
        "rows": rows,
        "inference_seconds_last": timing,
        "energy_loss": args.energy_loss,
        "path_prior_extent": args.path_prior_extent,
        "path_options": args.path_opt,
        "realistic_panels": args.realistic,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--n-mu", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--inferrers", nargs="+", default=["poca", "path"])
    ap.add_argument("--momentum", nargs="+", default=["true", "smeared", "unknown"])
    ap.add_argument("--volumes", nargs="*", default=[])
    ap.add_argument(
        "--path-prior-extent",
        nargs=2,
        type=int,
        default=None,
        metavar=("NZ", "NXY"),
        help="box of the path inferrer's smoothness prior (default: the inferrer's, 1 5 = within the layer)",
    )
    ap.add_argument(
        "--path-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword of PathX0Inferrer, VALUE a Python literal (repeatable), e.g. shrink_extent='(1, 5)'",
    )
    ap.add_argument("--energy-loss", action="store_true")
    ap.add_argument(
        "--realistic",
        action="store_true",
        help="panels in evaluation mode (the pipeline's evaluate stage) instead of training mode",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "calibration.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
