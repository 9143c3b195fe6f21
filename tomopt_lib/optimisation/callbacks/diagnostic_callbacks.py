"""Diagnostic callbacks recording per-batch information: ``ScatterRecord`` (PoCAs) and ``HitRecord`` (hits).

Both make no distinction between passive layouts: use them over one layout (e.g. ``predict`` on a single passive).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .callback import Callback

__all__ = ["ScatterRecord", "HitRecord"]


class ScatterRecord(Callback):
    """Records the PoCAs (x, y, z [m]) of the muons whose PoCA lies inside the passive volume, batch by batch.

    ``get_record()`` returns an (N, 3) tensor, ``get_record(as_df=True)`` a DataFrame with columns ``x, y, z``
    (ready for :func:`tomopt_lib.plotting.plot_scatter_density`). The record is reset when a fit or prediction begins.
    """

    columns = ["x", "y", "z"]

    def __init__(self) -> None:
        super().__init__()
        self.record: list[Tensor] = []

    def _reset(self) -> None:
        self.record = []

    def on_train_begin(self) -> None:
        """Start a new record."""
        self._reset()

    def on_pred_begin(self) -> None:
        """Start a new record."""
        self._reset()

    def _entry(self) -> Tensor:
        sb = self.wrapper.fit_params.sb
        assert sb is not None  # on_scatter_end checks it
        mask = sb.get_scatter_mask()
        return sb.poca_xyz.detach()[mask].cpu()

    def on_scatter_end(self) -> None:
        """Append the in-volume PoCAs of the latest muon batch."""
        if self.wrapper.fit_params.sb is None:
            return
        self.record.append(self._entry())

    def _stacked(self) -> Tensor:
        if not self.record:
            return torch.zeros((0, len(self.columns)))
        return torch.cat(self.record, dim=0)

    def get_record(self, as_df: bool = False) -> Tensor | pd.DataFrame:
        """All recorded PoCAs: an (N, 3) tensor [m], or a DataFrame with columns ``x, y, z`` if ``as_df``."""
        rec = self._stacked()
        if not as_df:
            return rec
        return pd.DataFrame(rec.numpy().astype(np.float64), columns=self.columns)


class HitRecord(ScatterRecord):
    """Records the reconstructed hits (x, y, z [m]) of the reconstructed muons, batch by batch.

    ``get_record()`` returns an (N, n_hits, 3) tensor (hits of the in-track groups first, top to bottom, then those of
    the out-track groups); ``get_record(as_df=True)`` a long DataFrame with columns ``x, y, z, panel`` (``panel`` =
    hit index along the track, 0 = top), ready for :func:`tomopt_lib.plotting.plot_hit_density`. Batches with a
    different number of hits per muon cannot be stacked (``ValueError``).
    """

    def _entry(self) -> Tensor:
        sb = self.wrapper.fit_params.sb
        assert sb is not None  # on_scatter_end checks it
        return sb.reco_hits.detach().cpu()

    def _stacked(self) -> Tensor:
        if not self.record:
            return torch.zeros((0, 0, 3))
        n_hits = {r.shape[1] for r in self.record}
        if len(n_hits) > 1:
            raise ValueError(f"record: batches have different numbers of hits per muon {sorted(n_hits)}; cannot stack")
        return torch.cat(self.record, dim=0)

    def get_record(self, as_df: bool = False) -> Tensor | pd.DataFrame:
        """All recorded hits: an (N, n_hits, 3) tensor [m], or a long DataFrame with columns ``x, y, z, panel``."""
        rec = self._stacked()
        if not as_df:
            return rec
        n, n_hits, _ = rec.shape
        flat = rec.reshape(-1, 3).numpy().astype(np.float64)
        df = pd.DataFrame(flat, columns=self.columns)
        df["panel"] = np.tile(np.arange(n_hits), n)
        return df
