"""dvc.yaml agrees with the stage registry (flows/stages.py) and with what each stage really imports."""

import copy
import functools
import re
from pathlib import Path

import pytest
import yaml

import flows.stages
from flows.paths import PipelinePaths
from flows.stages import ROOT, STAGES, dvc_disagreements, import_closure, stage_code_files

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


@pytest.fixture(autouse=True, scope="module")
def _walk_each_stage_once():
    """The source files do not change during this module: each check of a (mutated) dvc.yaml reuses one import walk
    per stage instead of walking all 8 stages again (the mutations touch dvc.yaml, never the code)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(flows.stages, "stage_code_files", functools.lru_cache(maxsize=None)(flows.stages.stage_code_files))
    yield
    mp.undo()


def test_dvc_yaml_agrees_with_registry():
    assert dvc_disagreements(DVC) == []


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["stages"]["report"]["deps"].remove("tasks/reporting.py"), "report: imports tasks/reporting.py"),
        (lambda d: d["stages"]["lumi_scan"]["deps"].append("tasks/detector.py"), "lumi_scan: lists tasks/detector.py but never"),
        (lambda d: d["stages"]["irradiate"]["params"].remove("irradiate"), "irradiate: params"),
        (lambda d: d["stages"]["evaluate"]["outs"].pop(), "evaluate: outs"),
        (lambda d: d["stages"]["reconstruct"]["deps"].remove("data/irradiated.h5"), "reconstruct: data deps"),
        (lambda d: d["stages"].pop("optimise"), "stages ["),
    ],
)
def test_disagreements_are_reported(mutate, expected):
    bad = copy.deepcopy(DVC)
    mutate(bad)
    problems = dvc_disagreements(bad)
    assert any(expected in p for p in problems), problems


def test_import_closure_sees_function_local_imports():
    files = {f.relative_to(ROOT).as_posix() for f in import_closure(["config.lumi"])}
    assert "lumi_lib/design.py" in files  # imported inside a validator only
    assert "tomopt_lib/volume/volume.py" not in files  # validation loads no physics code


def test_lumi_stages_do_not_depend_on_tomography_code():
    for stage in ("lumi_scan", "lumi_report"):
        files = stage_code_files(stage)
        assert not any(f.startswith(("tomopt_lib/volume", "tomopt_lib/optimisation", "tomopt_lib/inference")) for f in files), (
            stage
        )


def test_registry_outputs_are_pipeline_paths():
    """Every registered output is a path the flows write (PipelinePaths) or a folder of them."""
    paths = PipelinePaths.at(".")
    written = set()
    for name in dir(paths):
        if name.startswith("_") or name in ("root", "at"):
            continue
        val = getattr(paths, name)
        for v in val.values() if isinstance(val, dict) else [val]:
            written.add(Path(v).as_posix())
    for spec in STAGES.values():
        for out in (*spec.inputs, *spec.outs, *spec.metrics, *spec.plots):
            assert out in written or any(w.startswith(out + "/") for w in written), (spec.name, out)


def test_flows_read_only_their_registered_sections():
    for spec in STAGES.values():
        lines = (ROOT / (spec.module.replace(".", "/") + ".py")).read_text().splitlines()
        src = "\n".join(line for line in lines if not line.startswith("@flow("))  # run names are labels, not inputs
        used = set(re.findall(r"\bparams\.(\w+)", src)) - {"runtime"}
        allowed = {k.split(".")[0] for k in spec.params}
        assert used <= allowed, (spec.name, used - allowed)


def test_missing_tracked_params() -> None:
    """An empty or partial params.yaml passes the model (its defaults) but DVC cannot run stages whose tracked keys
    are missing: ``python -m flows check`` lists them (in a folder with a dvc.yaml)."""
    from flows.stages import ROOT, STAGES, missing_tracked_params

    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert missing_tracked_params(full) == []
    everything = list(dict.fromkeys(k for spec in STAGES.values() for k in spec.params))
    assert missing_tracked_params(None) == everything and "seed" in everything
    del full["lumi_report"]
    full["runtime"].pop("device")
    assert sorted(missing_tracked_params(full)) == ["lumi_report", "runtime.device"]


def test_check_refuses_a_params_file_without_the_tracked_keys(tmp_path: Path) -> None:
    import io
    from contextlib import redirect_stderr

    from flows.__main__ import main
    from flows.stages import ROOT

    (tmp_path / "params.yaml").write_text("seed: 7\n")
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["check", "--workdir", str(tmp_path)]) == 0  # no dvc.yaml here: defaults are fine
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["check", "--workdir", str(tmp_path)]) == 2
    assert "which dvc.yaml tracks" in err.getvalue() and "irradiate" in err.getvalue(), err.getvalue()
