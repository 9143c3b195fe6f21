"""Parameter sections of the benchmark studies (``study`` selects one; ``studies.<name>`` holds its settings).

The ``study`` stage runs the selected study (generate -> irradiate -> optimise -> evaluate, with its own baselines,
metrics and plots); ``study: default`` leaves it idle (the default study is the generate_passives ... evaluate stages).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import ParamsModel

__all__ = ["STUDY_NAMES", "StudyRates", "LadleFurnaceStudy", "ULorryStudy", "SmallWallsStudy", "StudiesParams"]

STUDY_NAMES = ("default", "ladle_furnace", "u_lorry", "small_walls")
"""Values of ``study``: ``default`` (the main stages) or a benchmark study run by the ``study`` stage."""


class StudyRates(ParamsModel):
    """Peak Adam learning rates per panel-parameter group (roughly the step per update [m]); null freezes a group."""

    xy: float | None = Field(0.02, gt=0, le=10)
    z: float | None = Field(0.02, gt=0, le=10)
    xy_span: float | None = Field(0.02, gt=0, le=10)
    budget: float | None = Field(0.05, gt=0, le=100, description="budget weights (share of the fixed budget per panel)")


class LadleFurnaceStudy(ParamsModel):
    """TomOpt's ladle-furnace study: fill height of liquid steel in a 1 x 1 m steel ladle under slag, fixed budget.

    Training: ``warmup_epochs`` epochs with the rates ramping up linearly, then ``onecycle_epochs`` with a cosine
    one-cycle schedule, then ``z_only_epochs`` in which only the panel heights move (the z-only stage).
    """

    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="seed of layouts and muons; null = derived from seed")
    n_train_per_height: int = Field(5, ge=1, le=1000, description="training layouts per fill height (8 heights)")
    n_test_per_height: int = Field(12, ge=1, le=10000, description="test layouts per fill height (8 heights)")
    n_mu_per_volume: int = Field(1000, ge=10, le=10_000_000)
    mu_bs: int = Field(1000, ge=10, le=1_000_000)
    budget: float = Field(6.0, gt=0, le=1000, description="fixed total panel area [m^2] (cost units)")
    energy_loss: bool = Field(True, description="continuous energy loss of the muons in the ladle")
    inferrer: Literal["likelihood", "pocaz"] = Field(
        "likelihood",
        description="likelihood: posterior-mean fill height from each muon's scatter under every layout; pocaz: "
        "TomOpt's weighted mean PoCA height, linearly de-biased",
    )
    temperature: float = Field(4.0, gt=0, le=1000, description="posterior temperature in training (likelihood)")
    loss: Literal["mse", "int_class"] = Field(
        "mse",
        description="training loss: mse of the fill height (TomOpt's VolumeMSELoss); int_class: expected squared "
        "fill-layer error under the posterior (LadleFurnaceIntClassLoss, likelihood inferrer only)",
    )
    passive_bs: int = Field(4, ge=1, le=1000, description="layouts per update")
    warmup_epochs: int = Field(1, ge=0, le=1000)
    onecycle_epochs: int = Field(8, ge=0, le=10000)
    z_only_epochs: int = Field(3, ge=0, le=10000)
    lr: StudyRates = Field(default_factory=StudyRates)
    n_bootstrap: int = Field(2000, ge=100, le=1_000_000, description="bootstrap resamples of the test layouts")

    @model_validator(mode="after")
    def _consistent(self) -> LadleFurnaceStudy:
        k = "studies.ladle_furnace"
        if self.passive_bs > 8 * self.n_train_per_height:
            raise ValueError(
                f"{k}.passive_bs={self.passive_bs} exceeds the {8 * self.n_train_per_height} training layouts "
                f"(8 x {k}.n_train_per_height)"
            )
        if self.warmup_epochs + self.onecycle_epochs + self.z_only_epochs == 0:
            raise ValueError(f"{k}: warmup_epochs + onecycle_epochs + z_only_epochs must be >= 1 (nothing to train)")
        if self.loss == "int_class" and self.inferrer != "likelihood":
            raise ValueError(f"{k}.loss='int_class' needs {k}.inferrer='likelihood' (fill-layer probabilities)")
        if self.z_only_epochs and self.lr.z is None:
            raise ValueError(f"{k}.z_only_epochs={self.z_only_epochs} needs {k}.lr.z (the z-only stage moves z)")
        return self

    @property
    def n_epochs(self) -> int:
        """Total training epochs."""
        return self.warmup_epochs + self.onecycle_epochs + self.z_only_epochs


def _lorry_rates() -> StudyRates:
    return StudyRates(xy=0.01, z=0.01, xy_span=0.01, budget=0.05)


class ULorryStudy(ParamsModel):
    """Is a uranium block hidden in a lorry's cargo? The pipeline's ``volume`` geometry, a fixed budget, the block
    probability of ``DenseBlockClassifierFromX0s`` trained with ``VolumeClassLoss`` from the packed start layout;
    trained vs start vs hand-designed reference by ROC AUC on the test loads."""

    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="seed of loads and muons; null = derived from seed")
    n_train: int = Field(40, ge=2, le=100000, description="training loads")
    n_test: int = Field(100, ge=4, le=100000, description="test loads (ROC AUC)")
    u_volume: float = Field(0.004, gt=0, le=1000, description="uranium block volume [m^3], whole voxels of volume.voxel_size")
    u_prob: float = Field(0.5, gt=0, lt=1, description="probability that a load holds the block")
    n_mu_per_volume: int = Field(1000, ge=10, le=10_000_000)
    mu_bs: int = Field(1000, ge=10, le=1_000_000)
    budget: float = Field(4.0, gt=0, le=1000, description="fixed total panel area [m^2] (cost units)")
    passive_bs: int = Field(4, ge=1, le=1000)
    n_epochs: int = Field(10, ge=1, le=10000)
    lr: StudyRates = Field(default_factory=_lorry_rates)
    n_bootstrap: int = Field(2000, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _fits(self) -> ULorryStudy:
        if self.passive_bs > self.n_train:
            raise ValueError(f"studies.u_lorry.passive_bs={self.passive_bs} exceeds studies.u_lorry.n_train={self.n_train}")
        return self


def _walls_rates() -> StudyRates:
    return StudyRates(xy=0.3, z=0.05, xy_span=None, budget=0.2)


class SmallWallsStudy(ParamsModel):
    """TomOpt's small walls: stone walls in 10 x 10 x 10 m of soil (1 m voxels), 1 GeV muons, constant momentum; the
    wall-mask IoU of the trained, start and hand-designed detectors at the hand design's cost."""

    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="seed of walls and muons; null = derived from seed")
    n_train: int = Field(12, ge=1, le=100000)
    n_test: int = Field(20, ge=2, le=100000)
    n_mu_per_volume: int = Field(3000, ge=10, le=10_000_000)
    mu_bs: int = Field(3000, ge=10, le=1_000_000)
    hand_span: float = Field(1.0, gt=0, le=10, description="panel width of the hand design, x the footprint (TomOpt: 4)")
    start_offset: float = Field(3.0, ge=-10, le=10, description="shift of the start's panel centres in x and y [m]")
    passive_bs: int = Field(2, ge=1, le=1000)
    n_epochs: int = Field(6, ge=1, le=10000)
    lr: StudyRates = Field(default_factory=_walls_rates)
    n_bootstrap: int = Field(2000, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _fits(self) -> SmallWallsStudy:
        if self.passive_bs > self.n_train:
            raise ValueError(
                f"studies.small_walls.passive_bs={self.passive_bs} exceeds studies.small_walls.n_train={self.n_train}"
            )
        return self


class StudiesParams(ParamsModel):
    """Settings of every benchmark study (only the one named by ``study`` is used)."""

    ladle_furnace: LadleFurnaceStudy = Field(default_factory=LadleFurnaceStudy)
    u_lorry: ULorryStudy = Field(default_factory=ULorryStudy)
    small_walls: SmallWallsStudy = Field(default_factory=SmallWallsStudy)
