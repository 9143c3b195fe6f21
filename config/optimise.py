"""Parameter sections of the ``optimise`` and ``evaluate`` stages (pydantic v2, strict, bounded, no unknown keys)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tomopt_lib.checks import passive_batch_fits

from .base import ParamsModel

__all__ = ["LearningRates", "StartLayout", "MomentumParams", "OptimiseParams", "EvaluateParams"]


class LearningRates(ParamsModel):
    """Learning rate per panel-parameter group (null = the group is not optimised). With Adam a rate is roughly the
    physical step per update [m]; with SGD it multiplies the gradient."""

    xy: float | None = Field(0.005, gt=0, le=1e6)
    z: float | None = Field(0.01, gt=0, le=1e6)
    xy_span: float | None = Field(0.005, gt=0, le=1e6)
    budget: float | None = Field(0.2, gt=0, le=1e6, description="budget weights (fixed-budget mode; null = equal split)")


class MomentumParams(ParamsModel):
    """What the X0 inference knows about the muon momenta (``tomopt_lib.inference.momentum``)."""

    model: Literal["true", "smeared", "unknown"] = Field(
        "true",
        description="true: ideal spectrometers above and below; smeared: with a relative curvature resolution; "
        "unknown: no measurement, the flux spectrum's mean",
    )
    resolution: float = Field(0.1, gt=0, le=1, description="relative resolution on 1/p (model smeared)")

    @field_validator("model", mode="before")
    @classmethod
    def _yaml_true(cls, v: object) -> object:
        return "true" if v is True else v  # YAML reads an unquoted `true` as a boolean


class StartLayout(ParamsModel):
    """Starting detector of the optimisation: the ``volume`` layout with these changes (a deliberately poor start)."""

    panel_span: float | None = Field(None, gt=0, le=100, description="starting full panel width [m]; null = volume.panel_span")
    xy_offset: list[float] = Field(
        default_factory=lambda: [0.0, 0.0],
        min_length=2,
        max_length=2,
        description="shift of every panel centre from the footprint centre [m]",
    )
    z_gap: float | None = Field(
        0.01,
        gt=0,
        le=10,
        description="panels of each detector layer packed this far apart "
        "[m] next to the passive volume (short lever arm); null = volume spacing",
    )


class OptimiseParams(ParamsModel):
    """Detector optimisation (``PanelVolumeWrapper.fit``, one checkpointed Prefect task per epoch)."""

    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="seed of passives and muons; null = derived from seed")
    n_epochs: int = Field(10, ge=1, le=100000)
    n_volumes: int = Field(10, ge=1, le=100000, description="training passives (generated with the passives settings)")
    n_val_volumes: int = Field(4, ge=0, le=100000, description="validation passives (0 = no validation loss)")
    passive_bs: int = Field(2, ge=1, le=100000, description="passive volumes per update")
    n_mu_per_volume: int = Field(1000, ge=1, le=10_000_000)
    mu_bs: int = Field(1000, ge=1, le=1_000_000)
    inferrer: Literal["poca", "path"] = "poca"
    momentum: MomentumParams = Field(default_factory=MomentumParams)
    loss: Literal["voxel_x0", "voxel_log_x0"] = Field(
        "voxel_log_x0",
        description="voxel_log_x0: MSE of ln X0 (VoxelLogX0Loss; every material on the same relative scale, the "
        "evaluation's primary metric); voxel_x0: MSE of X0 (TomOpt VoxelX0Loss)",
    )
    optimiser: Literal["adam", "sgd"] = "adam"
    lr: LearningRates = Field(default_factory=LearningRates)
    budget: float | None = Field(
        8.0,
        gt=0,
        le=1e6,
        description="fixed total detector cost (panel area x m2_cost) "
        "the optimiser distributes over the panels (TomOpt's fixed-budget mode); null = free areas",
    )
    target_budget: float | None = Field(
        None, gt=0, le=1e9, description="loss budget (total panel area x m2_cost); null = no cost term"
    )
    start: StartLayout = Field(default_factory=StartLayout)

    @model_validator(mode="after")
    def _one_group(self) -> OptimiseParams:
        lr = self.lr
        if lr.xy is None and lr.z is None and lr.xy_span is None and (lr.budget is None or self.budget is None):
            raise ValueError(
                "optimise.lr.xy, optimise.lr.z and optimise.lr.xy_span are all null (and the budget split "
                "is not optimised: optimise.budget or optimise.lr.budget is null): set at least one "
                "(nothing to optimise)"
            )
        return self

    @model_validator(mode="after")
    def _batch_fits(self) -> OptimiseParams:
        if not passive_batch_fits(self.passive_bs, self.n_volumes):
            raise ValueError(
                f"optimise.passive_bs={self.passive_bs} exceeds optimise.n_volumes={self.n_volumes} (no update possible)"
            )
        return self


def _default_baselines() -> list[Literal["start", "reference"]]:
    return ["start", "reference"]


class EvaluateParams(ParamsModel):
    """Held-out evaluation of the trained detector against fixed baselines."""

    seed: int | None = Field(
        None, ge=0, le=2**63 - 1, description="seed of held-out passives and muons; null = derived from seed"
    )
    n_volumes: int = Field(20, ge=2, le=100000, description="held-out passives (a different seed from training)")
    n_mu_per_volume: int = Field(
        3000, ge=100, le=10_000_000, description="muons per held-out volume (>= 100: fewer leave most voxels without data)"
    )
    mu_bs: int = Field(1000, ge=1, le=1_000_000)
    inferrer: Literal["poca", "path"] | None = Field("path", description="null = optimise.inferrer")
    momentum: MomentumParams | None = Field(None, description="null = optimise.momentum")
    n_bootstrap: int = Field(2000, ge=100, le=1_000_000, description="paired bootstrap resamples of the held-out volumes")
    baselines: list[Literal["start", "reference"]] = Field(
        default_factory=_default_baselines,
        min_length=1,
        max_length=2,
        description="start: the untrained starting layout; reference: the hand design at the same budget (centred, "
        "symmetric, evenly spaced, equal spend)",
    )
    n_images: int = Field(1, ge=0, le=20, description="X0 prediction-vs-truth images per detector (first held-out volumes)")

    @model_validator(mode="after")
    def _unique(self) -> EvaluateParams:
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"evaluate.baselines={self.baselines} must not repeat a baseline")
        return self
