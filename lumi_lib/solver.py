"""Batched, bounded trust-region Gauss-Newton (Levenberg-Marquardt) for many independent small least-squares problems.

Each of the ``B`` problems has ``K`` unknowns (``K`` small, e.g. <= 4) and ``M`` weighted residuals

    r_bm(x_b) = (f_m(x_b) - c_bm) / sigma_bm,        cost_b = 1/2 sum_m r_bm^2.

The iteration works in scaled unknowns ``u = x / scale`` (so that u ~ 1). Per active problem and iteration, with
``A = J^T J`` and ``g = J^T r`` restricted to the free unknowns (an unknown on a bound whose gradient points out of the
box is held), the step is the exact solution of the trust-region subproblem

    min_p  g.p + 1/2 p^T A p   subject to  |p|_2 <= Delta,        p = -(A + lambda I)^-1 g,   lambda >= 0,

found from the eigen-decomposition of A (K x K) and a few batched Newton steps on the secular equation
(Levenberg damping with the identity in scaled units, which does not stiffen long, curved valleys as the
Marquardt diagonal does). The trial point is projected onto the box, evaluated, and accepted if the cost falls;
Delta follows the ratio of actual to predicted reduction. The Jacobian ``J = dr/du`` (B, M, K) comes from autograd
(reverse mode on per-residual copies of the unknowns, or forward mode with the K tangents batched). Problems leave
the active set as soon as they stop, so their rows cost nothing.

Convergence is a property of the point, never of a stalled iteration: a problem has converged when its
(pseudo-inverse) Gauss-Newton step ``p_gn = -A^+ g`` is negligible, either

* the step test ``|p_gn|_inf <= xtol (1 + |u|_inf)`` (the optimum is within xtol, relative), or
* the gradient test ``g^T A^+ g <= sqrt(2 cost f) + f / 2`` with ``f = sum_m (model_rtol c_m / sigma_m)^2``: the
  gradient, measured in the metric of the Gauss-Newton Hessian (twice the cost the step could still remove), is
  below the resolution of the cost when every model value carries a relative round-off error ``model_rtol``,

and its Jacobian has full rank. (Below that resolution a trial step's actual change of the cost is round-off, so
such steps are accepted on the quadratic model.) Reaching ``max_iter``, a collapsed trust region and non-finite values are never
"converged" (see :data:`STATUS`); a solution with an unknown on a bound is flagged ``at_bound`` (its covariance does
not describe a bound-limited estimate) and does not count as converged either. Problems that end unconverged (not
rank deficient) are retried from a few starts along their least-determined direction, and any still unconverged
are polished one by one with ``scipy.optimize.least_squares`` (``trf``, exact Jacobian); problems that converge the
first time never pay for either.

After the solve: covariance ``(J^T W J)^-1`` (W = 1/sigma^2, here J^T J of the weighted residuals) in physical units,
the 2-norm condition number of the scaled Jacobian, and its least-determined direction.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from .messages import identifiability_message, uncertainty_message
from .trust_region import Predict, residuals_and_jacobian, trust_region

__all__ = ["LSQResult", "STATUS", "solve_lm", "identifiability_message", "uncertainty_message"]


STATUS = MappingProxyType(
    {
        0: "converged: the Gauss-Newton step is below xtol",
        1: "converged: the gradient is below the round-off resolution of the cost",
        -1: "iteration limit reached",
        -2: "stalled: the trust region collapsed before the convergence tests were met",
        -3: "undetermined: the Jacobian is rank deficient (no unique optimum)",
        -4: "non-finite residuals",
        -5: "on a bound: the optimum lies on the box (an unknown at its lower or upper bound)",
    }
)
"""``LSQResult.status`` codes: >= 0 converged, < 0 not converged (the reason)."""

_SINGULAR_COND = 1e10  # final cond(J) from the SVD above which a problem is "undetermined" (restarts cannot help)
_EPS = torch.finfo(torch.float64).eps


@dataclass(frozen=True)
class LSQResult:
    """Per-problem outcome of :func:`solve_lm` (leading dimension B everywhere).

    ``x`` (B, K) estimates; ``cov`` (B, K, K) = (J^T W J)^-1 in physical units (NaN where singular); ``std`` (B, K);
    ``cost`` (B,) = 1/2 |r|^2; ``residual_norm`` (B,) = |r|_2 (weighted); ``iterations`` (B,) int64 trial steps
    (one residual + Jacobian evaluation each, plus one at every start), restarts and polish included;
    ``converged`` (B,) bool: an interior optimum passed the step or gradient test (see :data:`STATUS`);
    ``at_bound`` (B,) bool: some unknown ended on its lower or upper bound; ``status`` (B,) int64 code of
    :data:`STATUS`; ``recovered`` (B,) bool: the first solve did not converge, a restart or the polish did;
    ``cond`` (B,) condition number of the scaled Jacobian (capped at 1 / machine epsilon, ~4.5e15, when it is
    rank deficient; inf only for an all-zero Jacobian);
    ``null_direction`` (B, K) unit vector (scaled unknowns) of the smallest singular value;
    ``path`` (n_iter + 1, B, K) iterates of the first solve (then the final x) if requested, else None;
    ``jacobian`` (B, M, K) dr/dx and ``residual`` (B, M) weighted residuals r at ``x`` if requested.
    """

    x: Tensor
    cov: Tensor
    std: Tensor
    cost: Tensor
    residual_norm: Tensor
    iterations: Tensor
    converged: Tensor
    cond: Tensor
    null_direction: Tensor
    names: tuple[str, ...]
    at_bound: Tensor
    status: Tensor
    recovered: Tensor
    path: Tensor | None = None
    jacobian: Tensor | None = None
    residual: Tensor | None = None


def _as_bk(value: float | Tensor | None, b: int, k: int, *, default: float, like: Tensor, name: str) -> Tensor:
    if value is None:
        value = default
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    try:
        return t.expand(b, k).clone()
    except RuntimeError as exc:
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to (B, K) = ({b}, {k})") from exc


def _rank(status: Tensor) -> Tensor:
    """Quality class of an outcome: 0 converged, 1 optimum on a bound, 2 anything else."""
    return torch.where(status >= 0, 0, torch.where(status == -5, 1, 2))


def _better(status_new: Tensor, cost_new: Tensor, status_old: Tensor, cost_old: Tensor) -> Tensor:
    """Where the new outcome is better: a better class (:func:`_rank`), or the same class and a lower cost."""
    rn, ro = _rank(status_new), _rank(status_old)
    return (rn < ro) | ((rn == ro) & (torch.nan_to_num(cost_new, nan=math.inf) < cost_old))


def _restart_starts(u: Tensor, v: Tensor, u0: Tensor, lo: Tensor, hi: Tensor, spread: float) -> Tensor:
    """Starts (b, 4, K) for unconverged problems: the best point and the original start, each moved by +- ``spread``
    (scaled units) along the least-determined direction ``v`` (b, K), projected onto the box."""
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    starts = torch.stack([u + spread * v, u - spread * v, u0 + spread * v, u0 - spread * v], dim=1)
    return torch.minimum(torch.maximum(starts, lo[:, None, :]), hi[:, None, :])


def _polish_scipy(
    evaluate: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], u: Tensor, lo: Tensor, hi: Tensor, idx: Tensor
) -> tuple[Tensor, Tensor]:
    """``scipy.optimize.least_squares`` (trf, exact Jacobian, tight tolerances) from ``u`` for the problems ``idx``,
    one by one; returns (new u (n, K), number of residual evaluations (n,))."""
    import numpy as np
    from scipy.optimize import least_squares

    out = u.clone()
    nfev = torch.zeros(u.shape[0], dtype=torch.int64, device=u.device)
    for i in range(u.shape[0]):
        one = idx[i : i + 1]
        cache: dict[bytes, tuple[Tensor, Tensor]] = {}

        def rj(z: np.ndarray, one: Tensor = one, cache: dict[bytes, tuple[Tensor, Tensor]] = cache) -> tuple[Tensor, Tensor]:
            key = z.tobytes()
            if key not in cache:
                cache.clear()
                cache[key] = evaluate(torch.as_tensor(z, dtype=u.dtype, device=u.device)[None], one)
            return cache[key]

        lo_i, hi_i = lo[i].cpu().numpy(), hi[i].cpu().numpy()
        z0 = np.clip(u[i].cpu().numpy(), lo_i, hi_i)
        bounded = bool(np.isfinite(lo_i).any() or np.isfinite(hi_i).any())
        inside = np.where(z0 <= lo_i, np.nextafter(lo_i, np.inf), np.where(z0 >= hi_i, np.nextafter(hi_i, -np.inf), z0))
        try:
            sol = least_squares(
                lambda z: rj(z)[0][0].cpu().numpy(),
                inside if bounded else z0,
                jac=lambda z: rj(z)[1][0].cpu().numpy(),
                bounds=(lo_i, hi_i) if bounded else (-np.inf, np.inf),
                method="trf",
                xtol=1e-15,
                ftol=1e-15,
                gtol=1e-15,
                max_nfev=500,
            )
        except (ValueError, RuntimeError):  # a failed polish leaves the problem as it was (still unconverged)
            continue
        out[i] = torch.as_tensor(sol.x, dtype=u.dtype, device=u.device)
        nfev[i] = int(sol.nfev)
    return out, nfev


def solve_lm(
    predict: Predict,
    x0: Tensor,
    *,
    target: Tensor,
    sigma: Tensor,
    scale: float | Tensor = 2.3e-6,
    lower: float | Tensor | None = None,
    upper: float | Tensor | None = None,
    max_iter: int = 50,
    xtol: float = 1e-10,
    model_rtol: float = 1e-14,
    max_step: float = 0.5,
    restarts: bool = True,
    restart_spread: float = 0.1,
    restart_cond: float = 1e4,
    polish: bool = True,
    jacobian: str = "reverse",
    cond_warn: float = 1e8,
    names: Sequence[str] | None = None,
    record_path: bool = False,
    keep_jacobian: bool = False,
) -> LSQResult:
    """Minimise 1/2 |(predict(x) - target) / sigma|^2 independently for each of the B rows of ``x0`` (B, K).

    ``target``, ``sigma``: (B, M) measured values and their absolute uncertainties (> 0). ``scale``: typical size of
    the unknowns (scalar or (K,)); the iteration uses u = x / scale. ``lower``/``upper``: box bounds (scalar, (K,) or
    (B, K); default unbounded) that must contain ``x0``. ``max_step``: initial trust radius |du| (scaled units).
    ``xtol``, ``model_rtol``: the step and gradient tests of convergence (module docstring); ``model_rtol`` is the
    relative accuracy of ``predict``. ``max_iter``: trial steps of the first solve (and of each restart).
    ``restarts``: retry unconverged problems from four starts along their least-determined direction (+-
    ``restart_spread`` scaled units from the best point and from ``x0``); an optimum on a bound only if the
    Jacobian's condition number exceeds ``restart_cond`` (a long, curved valley that the box cuts);
    ``polish``: then refine the ones still unconverged with ``scipy.optimize.least_squares``. Warns (``UserWarning``) when a condition number exceeds
    ``cond_warn``, naming the undetermined combination.
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (B, K), got {tuple(x0.shape)}")
    x0 = x0.to(torch.float64)
    b, k = x0.shape
    if target.ndim != 2 or target.shape[0] != b:
        raise ValueError(f"target must have shape (B, M) = ({b}, M), got {tuple(target.shape)}")
    if sigma.shape != target.shape:
        raise ValueError(f"sigma must match target's shape {tuple(target.shape)}, got {tuple(sigma.shape)}")
    if not bool(torch.isfinite(target).all()):
        raise ValueError("target (the measurements) contains NaN or infinite values")
    if not bool((sigma > 0).all()) or not bool(torch.isfinite(sigma).all()):
        raise ValueError("sigma (measurement uncertainties) must be finite and > 0")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 (start) contains NaN or infinite values")
    if not (xtol > 0 and model_rtol >= 0 and max_step > 0 and restart_spread > 0):
        raise ValueError(
            f"xtol, max_step and restart_spread must be > 0 and model_rtol >= 0, got {xtol}, {max_step}, {restart_spread}, {model_rtol}"
        )
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    names = tuple(names) if names is not None else tuple(f"x{i}" for i in range(k))
    dev = x0.device
    scl = _as_bk(scale, 1, k, default=1.0, like=x0, name="scale")
    if not bool((scl > 0).all()):
        raise ValueError("scale must be > 0")
    lo = _as_bk(lower, b, k, default=-math.inf, like=x0, name="lower") / scl
    hi = _as_bk(upper, b, k, default=math.inf, like=x0, name="upper") / scl
    u0 = x0 / scl
    if not bool(((lo <= u0) & (u0 <= hi)).all()):
        bad = int((~((lo <= u0) & (u0 <= hi))).any(dim=1).nonzero()[0])
        raise ValueError(
            f"bounds do not contain the start x0 (first offending problem {bad}: lower={(lo[bad] * scl[0]).tolist()}, "
            f"x0={x0[bad].tolist()}, upper={(hi[bad] * scl[0]).tolist()})"
        )
    target = target.to(torch.float64)
    sigma = sigma.to(torch.float64)
    sclb = scl.expand(b, k)
    floor = ((model_rtol * target / sigma) ** 2).sum(-1)

    def evaluate(uu: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        return residuals_and_jacobian(predict, uu, rows, sclb[rows], target[rows], sigma[rows], jacobian)

    path = [u0 * scl] if record_path else None
    st = trust_region(
        evaluate, u0, lo, hi, floor, max_iter=max_iter, xtol=xtol, delta0=max_step, path=path, on_path=lambda uu: uu * scl
    )
    u, r, jac, cost, iters, status = st.u, st.r, st.jac, st.cost, st.iters, st.status
    recovered = torch.zeros(b, dtype=torch.bool, device=dev)

    def svd(j: Tensor) -> tuple[Tensor, Tensor]:
        """(cond, least-determined direction); cond is capped at 1 / machine epsilon (~4.5e15): beyond it the
        smallest singular value is round-off, and an exactly zero one would only add a random inf."""
        _, s, vh = torch.linalg.svd(j, full_matrices=False)
        smax = s[:, 0]
        c = torch.where(smax > 0, smax / torch.maximum(s[:, -1], _EPS * smax).clamp_min(1e-300), torch.full_like(smax, math.inf))
        return c, vh[:, -1, :]

    def retry(flag: Tensor) -> Tensor:
        """Candidates for another attempt: unconverged (on a bound included), finite, not rank deficient."""
        return flag & (status < 0) & (status != -4) & (status != -3)

    todo = retry(torch.ones(b, dtype=torch.bool, device=dev)).nonzero().squeeze(1)
    if todo.numel():
        cond_t, v_t = svd(jac[todo])
        status[todo[cond_t > _SINGULAR_COND]] = -3
        # an optimum on a bound is retried only where the cost can have other minima in the box: a well-conditioned
        # (nearly linear) problem has one, a long curved valley (cond(J) > restart_cond) can leave and re-enter it
        worth = (cond_t <= _SINGULAR_COND) & ((status[todo] != -5) | (cond_t > restart_cond))
        todo, v_t = todo[worth], v_t[worth]
    if restarts and todo.numel():
        starts = _restart_starts(u[todo], v_t, u0[todo], lo[todo], hi[todo], restart_spread)
        n_s = starts.shape[1]
        rep = todo.repeat_interleave(n_s)
        st2 = trust_region(
            lambda uu, rows: evaluate(uu, rep[rows]),
            starts.reshape(-1, k),
            lo[rep],
            hi[rep],
            floor[rep],
            max_iter=max_iter,
            xtol=xtol,
            delta0=max_step,
            path=None,
        )
        rank2 = _rank(st2.status).reshape(-1, n_s)
        cost2 = torch.where(torch.isfinite(st2.cost), st2.cost, torch.full_like(st2.cost, math.inf)).reshape(-1, n_s)
        cost2 = torch.where(rank2 == rank2.amin(dim=1, keepdim=True), cost2, torch.full_like(cost2, math.inf))
        pick = torch.arange(todo.numel(), device=dev) * n_s + cost2.argmin(dim=1)  # best class, then lowest cost
        iters[todo] += st2.iters.reshape(-1, n_s).sum(dim=1) + n_s
        better = _better(st2.status[pick], st2.cost[pick], status[todo], cost[todo])
        sel, src = todo[better], pick[better]
        u[sel], r[sel], jac[sel], cost[sel], status[sel] = st2.u[src], st2.r[src], st2.jac[src], st2.cost[src], st2.status[src]
        recovered[sel] = st2.status[src] >= 0
        todo = retry(torch.zeros(b, dtype=torch.bool, device=dev).index_fill(0, todo, True)).nonzero().squeeze(1)
    if polish and todo.numel():
        u_p, nfev = _polish_scipy(evaluate, u[todo], lo[todo], hi[todo], todo)
        iters[todo] += nfev
        sub = todo.clone()
        st3 = trust_region(
            lambda uu, rows: evaluate(uu, sub[rows]),
            u_p,
            lo[sub],
            hi[sub],
            floor[sub],
            max_iter=max(3, max_iter // 10),
            xtol=xtol,
            delta0=max_step,
            path=None,
        )
        iters[todo] += st3.iters + 1
        better = _better(st3.status, st3.cost, status[todo], cost[todo])
        sel = todo[better]
        u[sel], r[sel], jac[sel], cost[sel], status[sel] = (
            st3.u[better],
            st3.r[better],
            st3.jac[better],
            st3.cost[better],
            st3.status[better],
        )
        recovered[sel] = st3.status[better] >= 0

    if keep_jacobian:  # at the final point (a converged problem's last Gauss-Newton step was not evaluated)
        r, jac = evaluate(u, torch.arange(b, device=dev))
        cost = 0.5 * (r * r).sum(-1)
    x = u * scl
    at_bound = ((u <= lo) | (u >= hi)).any(dim=1)
    if path is not None and not torch.equal(path[-1], x):
        path.append(x)
    with torch.no_grad():
        a = torch.einsum("bmk,bml->bkl", jac, jac)
        inv, info = torch.linalg.inv_ex(a)
        inv = torch.where((info == 0)[:, None, None], inv, torch.full_like(inv, math.nan))
        cov = inv * (scl[:, :, None] * scl[:, None, :])
        cond, null_direction = svd(jac)
    status = torch.where((cond > _SINGULAR_COND) & (status != -4), torch.full_like(status, -3), status)  # no unique optimum
    msg = identifiability_message(cond, null_direction, names, cond_warn)
    if msg is not None:
        warnings.warn(msg, UserWarning, stacklevel=2)
    return LSQResult(
        x=x,
        cov=cov,
        std=torch.diagonal(cov, dim1=-2, dim2=-1).clamp_min(0).sqrt(),
        cost=cost,
        residual_norm=(2.0 * cost).sqrt(),
        iterations=iters,
        converged=status >= 0,
        cond=cond,
        null_direction=null_direction,
        names=names,
        at_bound=at_bound,
        status=status,
        recovered=recovered & (status >= 0),
        path=torch.stack(path) if path is not None else None,
        jacobian=jac / scl[:, None, :] if keep_jacobian else None,
        residual=r if keep_jacobian else None,
    )
