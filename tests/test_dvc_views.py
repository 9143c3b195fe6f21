"""What people read (issue 12, items 1, 3 and 5): versioned outputs without wall-clock values, flow-run names and tags
that tell the study, table and image artifacts, short DVC metrics per stage and ``dvc plots`` that render offline."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import PipelineRun, tiny_params
from matplotlib.figure import Figure

from config import parse_params
from flows.naming import params_hash, run_name, run_tags
from flows.paths import PipelinePaths
from flows.stages import ROOT, STAGES
from tasks.artifacts import flatten_scalars, images_markdown, table_rows
from tasks.summaries import MAX_KEY_LEN, MAX_KEYS, SUMMARY_STAGES, evaluate_table, lumi_table, stage_summary

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
TIMING = re.compile(r"(wall|timing|time_per|seconds|(^|_)s$)", re.IGNORECASE)
"""A key or column that holds a wall-clock value (``chunk_wall_s``, ``timing_s``, ``landscape_s``, ``seconds``)."""


def _timing_keys(obj: Any, prefix: str = "") -> list[str]:
    """Every (dotted) key of the nested JSON ``obj`` that names a wall-clock value."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = f"{prefix}{k}"
            if TIMING.search(str(k)):
                found.append(name)
            found += _timing_keys(v, f"{name}.")
    elif isinstance(obj, list):
        for v in obj:
            found += _timing_keys(v, prefix)
    return found


# ------------------------------------------------------------------------------------------------ item 1: no timings
def test_the_timing_detector_finds_wall_clock_keys() -> None:
    found = _timing_keys({"timing_s": {"per_inversion": 1}, "a": [{"landscape_s": 2}], "seconds": [1], "rel_s": 0})
    assert found == ["timing_s", "a.landscape_s", "seconds", "rel_s"]
    assert _timing_keys({"pull_std": 1, "status": 0, "mean_abs": 1, "cond": 2, "n_residuals": 3}) == []


def test_scan_and_lumi_metrics_hold_no_wall_clock_values(tmp_path: Path) -> None:
    """The scan table, its metadata and the lumi metrics are timing-free; the timings go to the untracked files."""
    from tasks.lumi import chunk_plan, merge_scan, read_scan, run_scan_chunk
    from tasks.lumi_report import build_lumi_metrics

    p = parse_params(tiny_params())
    cfg = p.lumi_scan
    parts = [
        run_scan_chunk.fn(cfg, c, s, n, str(tmp_path / f"part{c}.parquet"))
        for c, s, n in chunk_plan(cfg.n_inversions, cfg.chunk_size)
    ]
    scan, timings = tmp_path / "scan.parquet", tmp_path / "timings" / "lumi_scan.json"
    summary = merge_scan.fn(parts, str(scan), cfg, design_s=0.5, timings_path=str(timings))
    df, meta = read_scan(str(scan))
    assert not [c for c in df.columns if TIMING.search(c)], list(df.columns)
    assert _timing_keys(meta) == [] and summary["time_per_inversion_s"] > 0
    raw = pq.read_schema(scan).metadata or {}
    assert not [k for k in raw if b"wall" in k or b"time" in k]
    t = json.loads(timings.read_text())
    assert t["design_wall_s"] >= 0.5 and set(t["chunk_wall_s"]) == {"0", "1", "2"} and t["time_per_inversion_s"] > 0
    land = {"xy": {"n_residuals": 4, "converged": True, "landscape_s": 1.25, "rel_error": [0.0, 0.0]}}
    csvs = {"rel_err_hist": str(tmp_path / "h.csv"), "est_vs_truth": str(tmp_path / "e.csv")}
    m = build_lumi_metrics.fn(
        str(scan), str(tmp_path / "lumi.json"), csvs, p.lumi_report, land, timings_path=str(tmp_path / "report_t.json")
    )
    assert _timing_keys(m) == [] and _timing_keys(json.loads((tmp_path / "lumi.json").read_text())) == []
    assert json.loads((tmp_path / "report_t.json").read_text()) == {"landscape_s": {"xy": 1.25}}
    assert land["xy"]["landscape_s"] == 1.25, "the caller's landscape summaries are not changed"


def test_timings_live_in_the_untracked_folder() -> None:
    paths = PipelinePaths.at(".")
    for f in (paths.lumi_scan_timings, paths.lumi_report_timings, paths.optimise_outputs["timings"]):
        assert f.parent == paths.timings_dir
    assert "/timings/" in (ROOT / ".gitignore").read_text().split()
    tracked = {o for s in STAGES.values() for o in (*s.outs, *s.metrics, *s.plots)}
    assert not [o for o in tracked if o.startswith("timings")]


# ------------------------------------------------------------------------------------------------ item 3: run names
def test_run_names_and_tags_carry_stage_study_experiment_and_params_hash() -> None:
    p = parse_params(tiny_params())
    h = params_hash("optimise", p)
    assert re.fullmatch(r"[0-9a-f]{8}", h)
    assert run_name("optimise", p, env={}) == f"optimise-seed{p.seed}-random_block-p{h}"
    assert run_name("generate_passives", p, env={}).startswith(f"generate-passives-seed{p.seed}-random_block-p")
    assert run_name("lumi_scan", p, env={}).startswith(f"lumi-scan-seed{p.lumi_scan.seed}-{p.lumi_scan.mode}-p")
    env = {"DVC_EXP_NAME": "wide panels", "TOMOFLOW_STUDY": "cargo"}
    assert run_name("optimise", p, env=env) == f"optimise-seed{p.seed}-cargo-p{h}-exp-wide-panels"
    assert run_tags("optimise", p, env=env) == [
        "tomoflow",
        "stage:optimise",
        "study:cargo",
        f"seed:{p.seed}",
        f"params:{h}",
        "exp:wide-panels",
    ]
    assert "exp:" not in " ".join(run_tags("optimise", p, env={}))
    # the hash covers exactly the stage's params.yaml keys (those DVC tracks for it)
    lr = parse_params(tiny_params({"optimise.lr.xy": 0.02}))
    lumi = parse_params(tiny_params({"lumi_scan.n_inversions": 12}))
    assert params_hash("optimise", lr) != h and params_hash("report", lr) == params_hash("report", p)
    assert params_hash("optimise", lumi) == h and params_hash("lumi_scan", lumi) != params_hash("lumi_scan", p)


# ------------------------------------------------------------------------------------------------ item 3: artifacts
def test_tables_flatten_nested_metrics() -> None:
    m = {"muons": {"generated": 600, "frac": 0.123456789}, "mode": "xy", "bad": float("nan"), "skip": [1, 2]}
    assert flatten_scalars(m) == {"muons.generated": 600, "muons.frac": 0.123457, "mode": "xy", "bad": None}
    assert table_rows({"a": {"b": 1}}, "metric") == [{"metric": "a.b", "value": 1}]
    ev = {"detectors": {"trained": {"mean_mse_log_x0": 0.5, "total_cost": 8.0}, "start": {"mean_mse_log_x0": 0.7}}}
    rows = evaluate_table(ev)
    assert [r["detector"] for r in rows] == ["trained", "start"] and rows[0]["mean_mse_log_x0"] == 0.5
    lumi = {"rel_error": {"eps_x": {"mean_abs": 1e-3, "max_abs": 2e-3, "mean": 0.0, "std": 1e-3}}, "pull_std": {"eps_x": 0.9}}
    assert lumi_table(lumi) == [
        {"component": "eps_x", "mean_abs_rel_err": 1e-3, "max_abs_rel_err": 2e-3, "bias": 0.0, "std": 1e-3, "pull_std": 0.9}
    ]


def _png(path: Path, px: tuple[int, int]) -> Path:
    fig = Figure(figsize=(px[0] / 100, px[1] / 100), dpi=100)
    fig.subplots().plot([0, 1], [0, 1])
    fig.savefig(path, dpi=100)
    return path


def test_images_are_embedded_at_full_resolution_or_as_a_larger_preview(tmp_path: Path) -> None:
    import io

    from PIL import Image

    png = _png(tmp_path / "plot.png", (1600, 900))
    md = images_markdown({"plot": png, "gone": tmp_path / "gone.png"}, "t")  # a plot of ~30 kB: the file itself
    uris = re.findall(r"\]\(data:image/png;base64,([^)]+)\)", md)
    assert len(uris) == 1 and base64.b64decode(uris[0]) == png.read_bytes()
    assert f"`{png}` (1600 x 900 px, full resolution)" in md and "was not written" in md
    md = images_markdown({"plot": png}, "t", full_max_bytes=1000)  # a file over the limit: a 1200 px preview
    (uri,) = re.findall(r"\]\(data:image/png;base64,([^)]+)\)", md)
    with Image.open(io.BytesIO(base64.b64decode(uri))) as im:
        assert im.size == (1200, 675), im.size  # larger than the old 480 px thumbnails
    assert f"`{png}` (1600 x 900 px, preview 1200 px; full image in the file)" in md


# ------------------------------------------------------------------------------------------------ item 5: DVC views
FULL_METRICS = {
    "report": "report.json",
    "optimise": "train.json",
    "evaluate": "evaluate.json",
    "lumi_report": "lumi.json",
    "study": "study.json",
}
"""Stage -> its full metrics JSON under metrics/ (a plain DVC out beside the short summary)."""


def test_dvc_metrics_are_short_per_stage_summaries() -> None:
    paths = PipelinePaths.at(".")
    with_metrics = {name for name, st in DVC["stages"].items() if st.get("metrics")}
    assert with_metrics == set(SUMMARY_STAGES) == set(paths.summaries)
    for name in with_metrics:
        entries = [next(iter(e)) if isinstance(e, dict) else e for e in DVC["stages"][name]["metrics"]]
        assert entries == [paths.summaries[name].as_posix()] == [f"metrics/summary/{name}.json"]
    for stage, f in FULL_METRICS.items():  # the full JSONs stay tracked, as plain outs
        assert f"metrics/{f}" in STAGES[stage].outs


@pytest.mark.parametrize("stage", sorted(SUMMARY_STAGES))
def test_summaries_of_the_committed_metrics_are_short_and_flat(stage: str) -> None:
    """On the repository's full metrics: few, short keys, scalar values, nothing timed."""
    f = ROOT / "metrics" / FULL_METRICS[stage]
    if not f.is_file():
        pytest.skip(f"{f} not produced here")
    s = stage_summary(stage, json.loads(f.read_text()))
    if stage == "study" and s.get("study") == "default":  # no benchmark study selected: the summary says so only
        assert s == {"study": "default"}
        return
    assert 3 <= len(s) <= MAX_KEYS and all(len(k) <= MAX_KEY_LEN and "." not in k for k in s), s
    assert all(v is None or isinstance(v, (int, float, bool, str)) for v in s.values()), s
    assert sum(v is not None for v in s.values()) >= 3 and _timing_keys(s) == []


def test_every_dvc_plot_is_a_png_or_a_png_folder() -> None:
    """PNG plots render offline in `dvc plots show/diff`; vega plots of CSVs load vega from a CDN."""
    assert "plots" not in DVC, "top-level plots are vega (CSV) views"
    vega_keys = {"x", "y", "template", "x_label", "y_label", "title"}
    for name, st in DVC["stages"].items():
        for entry in st.get("plots", []):
            path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
            assert not vega_keys & set(opts or {}), (name, path)
            assert path.endswith(".png") or path in ("plots/evaluate", "plots/study"), (name, path)
            folder = ROOT / path
            if not path.endswith(".png") and folder.is_dir():  # a folder of PNGs only
                assert all(f.suffix == ".png" for f in folder.iterdir()), sorted(folder.iterdir())
            assert path in STAGES[name].plots


# ------------------------------------------------------------------------------------------------ on a pipeline run
@pytest.mark.flow
def test_pipeline_outputs_views_and_artifacts(tiny_pipeline: PipelineRun) -> None:
    from prefect.artifacts import Artifact

    work = tiny_pipeline.workdir
    paths = PipelinePaths.at(work)
    for stage, f in paths.summaries.items():
        s = json.loads(f.read_text())
        assert s == stage_summary(stage, tiny_pipeline.out[stage]) and len(s) <= MAX_KEYS, (stage, s)
    for spec in STAGES.values():  # every plot exists as a PNG (or a folder of PNGs)
        for out in spec.plots:
            f = work / out
            pngs = sorted(f.glob("*")) if f.is_dir() else [f]
            assert pngs and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs), out
        for out in (*spec.outs, *spec.metrics):  # no tracked JSON or table holds a wall-clock value
            f = work / out
            if f.suffix == ".json":
                assert _timing_keys(json.loads(f.read_text())) == [], out
            elif f.suffix in (".csv", ".parquet"):
                cols = pq.read_schema(f).names if f.suffix == ".parquet" else f.read_text().splitlines()[0].split(",")
                assert not [c for c in cols if TIMING.search(c)], (out, cols)
    timings = json.loads(paths.lumi_scan_timings.read_text())
    assert timings["time_per_inversion_s"] > 0 and set(json.loads(paths.lumi_report_timings.read_text())["landscape_s"])
    tables = (
        "tomoflow-report-table",
        "tomoflow-optimise-table",
        "tomoflow-evaluate-table",
        "lumi-scan-table",
        "lumi-report-table",
    )
    for key in tables:
        art = Artifact.get(key)
        assert art is not None and art.type == "table", key
        rows = json.loads(art.data) if isinstance(art.data, str) else art.data
        assert isinstance(rows, list) and rows and isinstance(rows[0], dict), key
    irr = Artifact.get("tomoflow-irradiate")  # the stage summaries are tables too
    assert irr is not None and irr.type == "table"
