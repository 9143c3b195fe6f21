"""File layout of the pipeline (the DVC outs), relative to a working directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PipelinePaths"]


@dataclass(frozen=True)
class PipelinePaths:
    """Every file a stage reads or writes, under ``root`` (the repository root for ``dvc repro``)."""

    root: Path = Path(".")

    @classmethod
    def at(cls, root: str | Path) -> PipelinePaths:
        return cls(Path(root))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def passives(self) -> Path:
        return self.data_dir / "passives.h5"

    @property
    def irradiated(self) -> Path:
        return self.data_dir / "irradiated.h5"

    @property
    def scatters(self) -> Path:
        return self.data_dir / "scatters.parquet"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics" / "report.json"

    @property
    def angle_hist_csv(self) -> Path:
        return self.root / "metrics" / "scatter_angle_hist.csv"

    @property
    def plots(self) -> dict[str, Path]:
        d = self.root / "plots"
        return {
            "poca_density": d / "poca_density_per_layer.png",
            "scatter_angle": d / "scatter_angle_hist.png",
            "detector_layout": d / "detector_layout.png",
        }

    # ------------------------------------------------------------------------------------ luminosity inversion
    @property
    def lumi_scan(self) -> Path:
        return self.data_dir / "lumi" / "scan.parquet"

    @property
    def lumi_scan_timings(self) -> Path:
        return self.timings_dir / "lumi_scan.json"

    @property
    def lumi_report_timings(self) -> Path:
        return self.timings_dir / "lumi_report.json"

    @property
    def lumi_metrics(self) -> Path:
        return self.root / "metrics" / "lumi.json"

    @property
    def lumi_csvs(self) -> dict[str, Path]:
        d = self.root / "metrics"
        return {"rel_err_hist": d / "lumi_rel_err_hist.csv", "est_vs_truth": d / "lumi_est_vs_truth.csv"}

    @property
    def lumi_plots(self) -> dict[str, Path]:
        d = self.root / "plots" / "lumi"
        return {
            "penalty_12": d / "penalty_12.png",
            "penalty_xy": d / "penalty_xy.png",
            "penalty_xy_noise": d / "penalty_xy_noise.png",
            "rel_err_hist": d / "rel_err_hist.png",
            "est_vs_truth": d / "est_vs_truth.png",
            "pull_hist": d / "pull_hist.png",
            "rel_lumi_error": d / "rel_lumi_error.png",
        }

    # ------------------------------------------------------------------------------------ optimise / evaluate
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def checkpoints(self) -> Path:
        return self.models_dir / "checkpoints"

    @property
    def optimise_outputs(self) -> dict[str, Path]:
        m, p = self.root / "metrics", self.root / "plots" / "optimise"
        return {
            "detector_pt": self.models_dir / "detector.pt",
            "detector_json": self.models_dir / "detector.json",
            "metrics": m / "train.json",
            "loss_csv": m / "train_loss.csv",
            "panels_csv": m / "train_panels.csv",
            "layout_png": p / "detector_layout.png",
            "loss_png": p / "loss_curve.png",
            "panels_png": p / "panels.png",
            "timings": self.timings_dir / "optimise.json",
        }

    @property
    def summaries(self) -> dict[str, Path]:
        """The short DVC metrics of each stage with metrics (``metrics/summary/<stage>.json``, what ``dvc metrics
        show`` prints; the full metrics JSONs are plain outputs)."""
        d = self.root / "metrics" / "summary"
        return {stage: d / f"{stage}.json" for stage in ("report", "optimise", "evaluate", "lumi_report", "study")}

    @property
    def timings_dir(self) -> Path:
        """Wall-clock timings per stage (JSON; neither git- nor DVC-tracked: versioned results hold no timings)."""
        return self.root / "timings"

    @property
    def heldout_passives(self) -> Path:
        return self.data_dir / "heldout_passives.h5"

    @property
    def evaluate_predictions(self) -> Path:
        """Folder of the per-detector X0 predictions (and their uncertainties) on the held-out passives."""
        return self.data_dir / "evaluate"

    @property
    def evaluate_outputs(self) -> dict[str, Path]:
        return {
            "metrics": self.root / "metrics" / "evaluate.json",
            "curve_csv": self.root / "metrics" / "evaluate_per_volume.csv",
            "plots_dir": self.root / "plots" / "evaluate",
        }

    # ------------------------------------------------------------------------------------ benchmark studies
    @property
    def study_outputs(self) -> dict[str, Path]:
        """What the ``study`` stage writes (the selected study's layouts, detector, metrics and plots)."""
        m = self.root / "metrics"
        return {
            "data_dir": self.data_dir / "study",
            "detector_pt": self.models_dir / "study" / "detector.pt",
            "detector_json": self.models_dir / "study" / "detector.json",
            "metrics": m / "study.json",
            "history_csv": self.data_dir / "study" / "train_history.csv",
            "plots_dir": self.root / "plots" / "study",
            "summary": m / "summary" / "study.json",
        }

    @property
    def study_checkpoints(self) -> Path:
        """Checkpoints of the study's training (not a DVC output: they survive a killed run for resumption)."""
        return self.models_dir / "study_checkpoints"
