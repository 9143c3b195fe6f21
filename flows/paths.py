"""File layout of the pipeline (the DVC outs), relative to a working directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Union

__all__ = ["PipelinePaths"]


@dataclass(frozen=True)
class PipelinePaths:
    """Every file a stage reads or writes, under ``root`` (the repository root for ``dvc repro``)."""

    root: Path = Path(".")

    @classmethod
    def at(cls, root: Union[str, Path]) -> "PipelinePaths":
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
    def plots(self) -> Dict[str, Path]:
        d = self.root / "plots"
        return {
            "poca_density": d / "poca_density_per_layer.png",
            "scatter_angle": d / "scatter_angle_hist.png",
            "detector_layout": d / "detector_layout.png",
        }
