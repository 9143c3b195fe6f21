"""Callbacks that alter the muon data before propagation: ``MuonResampler`` (a software trigger)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...muon.muon_batch import MuonBatch
from .callback import Callback

if TYPE_CHECKING:
    from ...muon.generation import AbsMuonGenerator
    from ...volume.volume import Volume

__all__ = ["MuonResampler"]

logger = logging.getLogger(__name__)


def _xy_p_theta_phi(mu: MuonBatch) -> Tensor:
    """(N, 5) ``x, y, p, theta, phi`` of a ``MuonBatch`` (the generator layout)."""
    return torch.stack([mu.x, mu.y, mu.mom, mu.theta, mu.phi], dim=1)


class MuonResampler(Callback):
    """Before propagation, replaces the muons whose straight path misses the passive block by freshly generated ones.

    Emulates a trigger: every muon of the batch then crosses the passive volume (its top, sides or bottom) if it were
    not scattered. Replacement is vectorised: each round draws, in one call to the wrapper's muon generator, enough
    candidates for all missing muons given the acceptance observed so far, and keeps the first hitting ones. After
    ``max_rounds`` rounds any muons still missing are kept as they are and a warning is logged.

    Args:
        max_rounds: maximum number of resampling rounds (>= 1).
        seed: seed of this callback's own ``torch.Generator`` (created on the first batch of each fit/predict); when
            ``None`` the wrapper's ``fit_params.generator`` is used if set, else torch's global generator.
        oversample: safety factor on the number of candidates drawn per round (>= 1).
    """

    def __init__(self, max_rounds: int = 10, seed: int | None = None, oversample: float = 1.5) -> None:
        super().__init__()
        if isinstance(max_rounds, bool) or int(max_rounds) != max_rounds or max_rounds < 1:
            raise ValueError(f"max_rounds must be an integer >= 1, got {max_rounds!r}")
        if not (math.isfinite(float(oversample)) and oversample >= 1):
            raise ValueError(f"oversample must be a finite number >= 1, got {oversample!r}")
        self.max_rounds = int(max_rounds)
        self.seed = seed
        self.oversample = float(oversample)
        self.n_unreplaced = 0
        self._gen: torch.Generator | None = None

    def __repr__(self) -> str:
        return f"MuonResampler(max_rounds={self.max_rounds}, seed={self.seed})"

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def check_mu_batch(mu: MuonBatch, volume: Volume) -> Tensor:
        """(N,) bool: True where the straight downward path of a muon of ``mu`` (from its current position) crosses
        the passive block ``[0, lw0] x [0, lw1] x [z_bottom, z_top]`` (exact slab test, edges included)."""
        return MuonResampler._hits_block(_xy_p_theta_phi(mu), mu.z, volume)

    @staticmethod
    def _hits_block(xy_p_theta_phi: Tensor, z0: float | Tensor, volume: Volume) -> Tensor:
        """Slab test for (N, 5) muons starting at height(s) ``z0`` [m]; see ``check_mu_batch``."""
        m = xy_p_theta_phi.detach()
        dtype = m.dtype if m.is_floating_point() else torch.float32
        m = m.to(dtype)
        n = len(m)
        z0_t = torch.as_tensor(z0, dtype=dtype, device=m.device).reshape(-1).expand(n)
        bottom, top = (float(torch.as_tensor(v).reshape(-1)[0]) for v in volume.get_passive_z_range())
        lw = torch.as_tensor(volume.lw).detach().to(device=m.device, dtype=dtype).reshape(2)
        theta, phi = m[:, 3], m[:, 4]
        down = torch.cos(theta) > 1e-9  # muons must travel downwards
        tan_t = torch.tan(theta.clamp(max=math.pi / 2 - 1e-9))
        # Parametrise by the depth s = z0 - z >= 0: xy(s) = xy0 + s * slope.
        slope = torch.stack([tan_t * torch.cos(phi), tan_t * torch.sin(phi)], dim=1)
        s_lo = (z0_t - top).clamp_min(0.0)
        s_hi = z0_t - bottom
        for k in range(2):
            x0, sl = m[:, k], slope[:, k]
            flat = sl.abs() < 1e-12
            safe = torch.where(flat, torch.ones_like(sl), sl)
            a, b = (0.0 - x0) / safe, (lw[k] - x0) / safe
            lo = torch.where(
                flat,
                torch.where((x0 >= 0) & (x0 <= lw[k]), torch.full_like(x0, -math.inf), torch.full_like(x0, math.inf)),
                torch.minimum(a, b),
            )
            hi = torch.where(flat, torch.full_like(x0, math.inf), torch.maximum(a, b))
            s_lo, s_hi = torch.maximum(s_lo, lo), torch.minimum(s_hi, hi)
        return down & (s_lo <= s_hi) & (s_hi >= 0)

    # ------------------------------------------------------------------ resampling
    @staticmethod
    def resample(
        mus: Tensor,
        volume: Volume,
        gen: AbsMuonGenerator,
        *,
        init_z: float | None = None,
        max_rounds: int = 10,
        generator: torch.Generator | None = None,
        oversample: float = 1.5,
    ) -> Tensor:
        """Return a copy of the (N, 5) ``xy_p_theta_phi`` tensor ``mus`` in which muons missing the passive block are
        replaced by hitting ones drawn from ``gen.generate_set(n, generator=generator)``.

        ``init_z`` is the starting height [m] (default ``volume.h``). At most ``max_rounds`` vectorised rounds are
        made; muons still missing afterwards are left in place (see ``MuonResampler.n_missing``).
        """
        z0 = float(torch.as_tensor(volume.h if init_z is None else init_z).reshape(-1)[0])
        out = mus.detach().clone()
        miss = ~MuonResampler._hits_block(out, z0, volume)
        n_miss = int(miss.sum())
        n_seen, n_hit = len(out), len(out) - n_miss
        for _ in range(max_rounds):
            if n_miss == 0:
                break
            acc = max(n_hit / max(n_seen, 1), 0.01)
            n_draw = int(math.ceil(oversample * n_miss / acc)) + 8
            cand = torch.as_tensor(gen.generate_set(n_draw, generator=generator)).to(device=out.device, dtype=out.dtype)
            ok = MuonResampler._hits_block(cand, z0, volume)
            n_seen, n_hit = n_seen + n_draw, n_hit + int(ok.sum())
            good = cand[ok]
            idx = miss.nonzero(as_tuple=True)[0][: len(good)]
            out[idx] = good[: len(idx)]
            miss[idx] = False
            n_miss = int(miss.sum())
        return out

    @staticmethod
    def n_missing(mus: Tensor, volume: Volume, init_z: float | None = None) -> int:
        """Number of muons of an (N, 5) tensor whose straight path misses the passive block."""
        z0 = float(torch.as_tensor(volume.h if init_z is None else init_z).reshape(-1)[0])
        return int((~MuonResampler._hits_block(mus, z0, volume)).sum())

    # ------------------------------------------------------------------ hooks
    def _reset(self) -> None:
        self.n_unreplaced = 0
        self._gen = None

    def on_train_begin(self) -> None:
        """Reset the generator and the count of muons that could not be replaced."""
        self._reset()

    def on_pred_begin(self) -> None:
        """Reset the generator and the count of muons that could not be replaced."""
        self._reset()

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is not None:
            if self._gen is None or self._gen.device != device:
                self._gen = torch.Generator(device=device)
                self._gen.manual_seed(int(self.seed))
            return self._gen
        return getattr(self.wrapper.fit_params, "generator", None)

    def on_mu_batch_begin(self) -> None:
        """Replace ``fit_params.mu`` by a batch of the same size whose muons all head into the passive volume."""
        fp = self.wrapper.fit_params
        mu = fp.mu
        if mu is None or len(mu) == 0:
            return
        volume = self.wrapper.volume
        gen = self.wrapper.mu_generator
        z0 = float(mu.z.reshape(-1)[0])
        mus = _xy_p_theta_phi(mu)
        new = self.resample(
            mus,
            volume,
            gen,
            init_z=z0,
            max_rounds=self.max_rounds,
            generator=self._generator(mu.device),
            oversample=self.oversample,
        )
        left = self.n_missing(new, volume, z0)
        if left:
            self.n_unreplaced += left
            logger.warning(
                "MuonResampler: %d of %d muons still miss the passive volume after %d rounds; kept as they are",
                left,
                len(new),
                self.max_rounds,
            )
        fp.mu = MuonBatch(new, init_z=mu.z.detach().clone(), device=mu.device)
