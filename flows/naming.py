"""Flow-run names and tags that tell the study: stage, DVC experiment, study, seed and a short hash of the stage's
parameters, so that runs of different experiments can be told apart on the Prefect UI's Runs page.

Name: ``<stage>-seed<seed>-<study>-p<hash>`` plus ``-exp-<name>`` inside a named DVC experiment (``DVC_EXP_NAME``,
set by ``dvc exp run -n <name>``), e.g. ``optimise-seed1234-random_block-p3f09c2a1-exp-wide-panels``. Tags:
``tomoflow``, ``stage:<stage>``, ``study:<study>``, ``seed:<seed>``, ``params:<hash>`` and ``exp:<name>``.

The study is ``TOMOFLOW_STUDY`` when set, else the scene the stage works on: the passive generator
(``passives.generator``) for the tomography stages, the luminosity plan (``lumi_scan.preset`` or ``lumi_scan.mode``)
for the luminosity stages. The hash is the first 8 hex digits of the sha256 of the stage's ``params.yaml`` keys
(``flows.stages.STAGES[stage].params``, the same keys DVC tracks for the stage) as sorted JSON: equal hashes, equal
stage parameters. No prefect import here (the registry and the CLI stay light)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from config import PipelineParams

from .stages import STAGES

__all__ = [
    "EXP_ENV",
    "STUDY_ENV",
    "LUMI_STAGES",
    "stage_params",
    "params_hash",
    "study",
    "experiment",
    "stage_seed",
    "run_name",
    "run_tags",
    "run_name_from_context",
]

EXP_ENV = "DVC_EXP_NAME"
"""Environment variable DVC sets to the experiment's name in ``dvc exp run -n <name>``."""
STUDY_ENV = "TOMOFLOW_STUDY"
"""Environment variable that names the study explicitly (overrides the scene derived from the parameters)."""
LUMI_STAGES = ("lumi_scan", "lumi_report")


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def stage_params(stage: str, p: PipelineParams) -> dict[str, Any]:
    """The stage's ``params.yaml`` values (``{dotted key: value}`` of its registry keys); every section for ``all``."""
    dump = p.model_dump(mode="json")
    if stage not in STAGES:
        return dict(dump)
    return {key: _lookup(dump, key) for key in STAGES[stage].params}


def params_hash(stage: str, p: PipelineParams, n: int = 8) -> str:
    """First ``n`` hex digits of the sha256 of :func:`stage_params` as sorted, compact JSON."""
    text = json.dumps(stage_params(stage, p), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip()).strip("-") or "none"


def study(stage: str, p: PipelineParams, env: Mapping[str, str] | None = None) -> str:
    """``TOMOFLOW_STUDY``, else the benchmark study (stage ``study``), the passive generator (tomography) or the
    luminosity plan (preset, else mode)."""
    named = (os.environ if env is None else env).get(STUDY_ENV)
    if named:
        return _slug(named)
    if stage == "study":
        return _slug(p.study)
    if stage in LUMI_STAGES:
        return _slug(p.lumi_scan.preset or p.lumi_scan.mode)
    return _slug(p.passives.generator)


def experiment(env: Mapping[str, str] | None = None) -> str | None:
    """The DVC experiment's name (``DVC_EXP_NAME``), or None outside a named experiment."""
    name = (os.environ if env is None else env).get(EXP_ENV)
    return _slug(name) if name else None


def stage_seed(stage: str, p: PipelineParams) -> int:
    """The seed a stage's run is named after: ``lumi_scan.seed`` for the luminosity stages, else ``seed``."""
    return int(p.lumi_scan.seed) if stage in LUMI_STAGES else int(p.seed)


def run_name(stage: str, p: PipelineParams, env: Mapping[str, str] | None = None) -> str:
    """``<stage>-seed<seed>-<study>-p<hash>[-exp-<name>]`` (stage with dashes, as the flow names)."""
    name = f"{stage.replace('_', '-')}-seed{stage_seed(stage, p)}-{study(stage, p, env)}-p{params_hash(stage, p)}"
    exp = experiment(env)
    return f"{name}-exp-{exp}" if exp else name


def run_tags(stage: str, p: PipelineParams, env: Mapping[str, str] | None = None) -> list[str]:
    """Tags of a stage's flow run: ``tomoflow``, ``stage:``, ``study:``, ``seed:``, ``params:`` and ``exp:``."""
    tags = [
        "tomoflow",
        f"stage:{stage}",
        f"study:{study(stage, p, env)}",
        f"seed:{stage_seed(stage, p)}",
        f"params:{params_hash(stage, p)}",
    ]
    exp = experiment(env)
    return [*tags, f"exp:{exp}"] if exp else tags


def run_name_from_context(stage: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable for ``@flow``: :func:`run_name` of the running flow's ``params`` argument."""

    def name() -> str:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        params = (ctx.parameters or {}).get("params") if ctx is not None else None
        if not isinstance(params, PipelineParams):
            return stage.replace("_", "-")
        return run_name(stage, params)

    name.__name__ = f"{stage}_run_name"
    return name
