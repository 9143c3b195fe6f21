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

__all__ = ["LSQResult", "STATUS", "solve_lm", "identifiability_message", "uncertainty_message"]

Predict = Callable[[Tensor, Tensor], Tensor]
"""``predict(x, rows) -> (b, M)``: model values for unknowns ``x`` of shape (b, 1, K) or (b, M, K) (physical units)
belonging to the problems ``rows`` (int64, (b,)). Problems must be independent of each other; ``rows`` may repeat a
problem (restarts evaluate several points of one problem in one call)."""

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

_RANK_RCOND = 1e-15  # eigenvalues of A below this times the largest count as zero (cond(J) above ~3e7)
_SINGULAR_COND = 1e10  # final cond(J) from the SVD above which a problem is "undetermined" (restarts cannot help)
_EPS = torch.finfo(torch.float64).eps
_FINAL_STEP = 1e-6  # a converged problem's last Gauss-Newton step is applied if it is at most this (scaled units)


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


def _residuals_and_jacobian(
    predict: Predict, u: Tensor, rows: Tensor, scale: Tensor, target: Tensor, sigma: Tensor, mode: str
) -> tuple[Tensor, Tensor]:
    """Weighted residuals r (b, M) and J = dr/du (b, M, K) at scaled unknowns ``u`` (b, K)."""
    b, k = u.shape
    m = target.shape[-1]
    if mode == "reverse":
        with torch.enable_grad():
            ue = u.detach()[:, None, :].expand(b, m, k).clone().requires_grad_(True)
            r = (predict(ue * scale[:, None, :], rows) - target) / sigma
            (jac,) = torch.autograd.grad(r.sum(), ue)
        return r.detach(), jac
    if mode == "forward":
        import torch.autograd.forward_ad as fwAD

        eye = torch.eye(k, dtype=u.dtype, device=u.device)
        primal = u.detach()[None].expand(k, b, k).reshape(k * b, 1, k).clone()
        tangent = eye[:, None, :].expand(k, b, k).reshape(k * b, 1, k).clone()
        rows_k = rows.repeat(k)
        with fwAD.dual_level():
            dual = fwAD.make_dual(primal, tangent)
            xs = dual * scale.repeat(k, 1)[:, None, :]
            out = (predict(xs, rows_k) - target.repeat(k, 1)) / sigma.repeat(k, 1)
            val, tan = fwAD.unpack_dual(out)
        r = val.reshape(k, b, m)[0]
        jac = tan.reshape(k, b, m).permute(1, 2, 0)
        return r.detach(), jac.detach()
    raise ValueError(f"jacobian must be 'reverse' or 'forward', got {mode!r}")


def _combo(w: Tensor, names: Sequence[str]) -> str:
    """``w`` (K,) as a signed linear combination of ``names`` (terms below 1e-3 dropped)."""
    terms = [(float(c), n) for c, n in zip(w, names) if abs(float(c)) > 1e-3]
    text = " ".join(f"{'-' if c < 0 else '+'} {abs(c):.3g}*{n}" for c, n in terms)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def _undetermined(v: Tensor, names: Sequence[str]) -> str:
    """``the combination ...is not determined; only ... is measurable`` for a least-determined direction ``v``."""
    v = v * torch.sign(v[v.abs().argmax()])
    text = f"the combination {_combo(v, names)} is not determined"
    if len(names) == 2:
        text += f"; only {_combo(torch.stack([v[1], -v[0]]) * torch.sign(v[1]) if float(v[1]) != 0 else v, names)} is measurable"
    else:
        text += "; only combinations orthogonal to it are measurable"
    return text + " (in units of the scale, e.g. 2.3e-6 m rad)"


def identifiability_message(cond: Tensor, null_direction: Tensor, names: Sequence[str], threshold: float) -> str | None:
    """Human-readable warning text if any condition number exceeds ``threshold`` (else None)."""
    bad = ~(cond <= threshold)
    if not bool(bad.any()):
        return None
    i = int(torch.nan_to_num(cond, posinf=float("inf")).masked_fill(~bad, -1.0).argmax())
    return (
        f"the measurement plan cannot separate the unknowns ({', '.join(names)}) for {int(bad.sum())} of "
        f"{cond.numel()} inversions (Jacobian condition number up to {float(cond[i]):.3g} > {threshold:.3g}): "
        f"{_undetermined(null_direction[i], names)}."
    )


def uncertainty_message(
    rel_std: Tensor,
    names: Sequence[str],
    threshold: float,
    *,
    null_direction: Tensor | None = None,
    cond: Tensor | None = None,
    cond_threshold: float = math.inf,
    noise: str = "the configured noise",
) -> str | None:
    """Warning text when some unknown's relative uncertainty ``rel_std`` (B, K) (std from the covariance over the
    estimate) exceeds ``threshold`` in any of the B inversions, or when a condition number exceeds ``cond_threshold``
    (the exactly degenerate case, where the covariance is meaningless); None otherwise. Names the worst unknown and,
    with ``null_direction`` (B, K), the least-determined combination of the worst inversion."""
    rel = torch.nan_to_num(rel_std.detach().double(), nan=math.inf)
    bad = ~(rel <= threshold)
    cond_bad = torch.zeros(rel.shape[0], dtype=torch.bool) if cond is None else ~(cond.detach().cpu() <= cond_threshold)
    rows_bad = bad.any(dim=1).cpu() | cond_bad
    if not bool(rows_bad.any()):
        return None
    if bool(cond_bad.any()):
        assert cond is not None
        c = cond.detach().cpu()
        i = int(torch.nan_to_num(c, posinf=float("inf")).masked_fill(~cond_bad, -1.0).argmax())
        head = (
            f"the measurement plan cannot separate the unknowns ({', '.join(names)}) for {int(rows_bad.sum())} of "
            f"{rel.shape[0]} inversions (Jacobian condition number up to {float(c[i]):.3g} > {cond_threshold:.3g})"
        )
    else:
        worst = rel.masked_fill(~bad, -1.0).cpu()
        i, j = divmod(int(worst.argmax()), rel.shape[1])
        per = ", ".join(f"{n} {int(bad[:, k].sum())}" for k, n in enumerate(names) if bool(bad[:, k].any()))
        head = (
            f"the measurement plan does not determine the unknowns ({', '.join(names)}) to {100.0 * threshold:.3g} % "
            f"at {noise} for {int(rows_bad.sum())} of {rel.shape[0]} inversions (relative uncertainty up to "
            f"{100.0 * float(rel[i, j]):.3g} % on {names[j]}; inversions above {100.0 * threshold:.3g} % per unknown: {per})"
        )
    if null_direction is None:
        return head + "."
    v = null_direction[i].detach().cpu()
    if bool(cond_bad.any()):
        return f"{head}: {_undetermined(v, names)}."
    v = v * torch.sign(v[v.abs().argmax()])
    return f"{head}; the least-determined combination is {_combo(v, names)} (in units of the scale, e.g. 2.3e-6 m rad)."


@dataclass
class _State:
    """Iteration state of :func:`_trust_region` (all (b, ...) tensors, b problems)."""

    u: Tensor
    r: Tensor
    jac: Tensor
    cost: Tensor
    iters: Tensor
    status: Tensor


def _resolution(cost: Tensor, floor: Tensor) -> Tensor:
    """Resolution of the cost 1/2 |r|^2 when every residual carries a round-off error dr with |dr|^2 = ``floor``:
    |r.dr| + |dr|^2 / 2 <= sqrt(2 cost floor) + floor / 2 (Cauchy-Schwarz)."""
    return (2.0 * cost.clamp_min(0) * floor).sqrt() + 0.5 * floor


def _gn_quantities(jac: Tensor, r: Tensor, u: Tensor, lo: Tensor, hi: Tensor):
    """Free-set Gauss-Newton data at ``u``: (g_free, A, eigenvalues w (ascending, >= 0), eigenvectors q, c = q^T g,
    pseudo-inverse GN step p_gn, decrement g^T A^+ g, rank-deficient flag, free mask)."""
    g = torch.einsum("bmk,bm->bk", jac, r)
    a = torch.einsum("bmk,bml->bkl", jac, jac)
    fixed = ((u <= lo) & (g > 0)) | ((u >= hi) & (g < 0))
    free = (~fixed).to(a.dtype)
    k = u.shape[1]
    fill = (torch.diagonal(a, dim1=-2, dim2=-1).sum(-1) / k).clamp_min(1e-300)
    eye = torch.eye(k, dtype=a.dtype, device=a.device)
    a_free = a * (free[:, :, None] * free[:, None, :]) + eye * ((1.0 - free) * fill[:, None])[:, None, :]
    g_free = g * free
    w, q = torch.linalg.eigh(a_free)
    w = w.clamp_min(0.0)
    keep = w > _RANK_RCOND * w[:, -1:].clamp_min(1e-300)
    c = torch.einsum("bkl,bk->bl", q, g_free)
    coef = torch.where(keep, -c / torch.where(keep, w, torch.ones_like(w)), torch.zeros_like(c))
    p_gn = torch.einsum("bkl,bl->bk", q, coef)
    decrement = (c * c * torch.where(keep, 1.0 / torch.where(keep, w, torch.ones_like(w)), torch.zeros_like(w))).sum(-1)
    deficient = ~keep.all(dim=1)
    return g_free, a, w, q, c, p_gn, decrement, deficient, free


def _tr_step(w: Tensor, q: Tensor, c: Tensor, p_gn: Tensor, deficient: Tensor, delta: Tensor) -> Tensor:
    """Solution of min g.p + p^T A p / 2 subject to |p| <= delta (A = q diag(w) q^T, c = q^T g): the Gauss-Newton
    step where it fits, else p(lambda) = -q (c / (w + lambda)) with |p(lambda)| = delta (Newton on 1/|p| - 1/delta)."""
    need = deficient | (p_gn.norm(dim=-1) > delta)
    if not bool(need.any()):
        return p_gn
    wn, cn, dn = w[need], c[need], delta[need]
    cnorm = cn.norm(dim=-1)
    lam = torch.maximum(cnorm / dn - wn[:, -1], 1e-15 * wn[:, -1] + 1e-300)  # left of the root: Newton stays left
    for _ in range(30):
        den = wn + lam[:, None]
        p2 = (cn * cn / (den * den)).sum(-1)
        pn = p2.sqrt()
        d3 = (cn * cn / (den * den * den)).sum(-1).clamp_min(1e-300)
        lam = torch.clamp(lam + (pn - dn) / dn * p2 / d3, min=lam)
        if bool(((pn - dn).abs() <= 1e-3 * dn).all()):
            break
    step = torch.einsum("bkl,bl->bk", q[need], -cn / (wn + lam[:, None]))
    out = p_gn.clone()
    out[need] = step
    return out


def _trust_region(
    evaluate: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    u0: Tensor,
    lo: Tensor,
    hi: Tensor,
    floor: Tensor,
    *,
    max_iter: int,
    xtol: float,
    delta0: float,
    path: list[Tensor] | None,
    on_path: Callable[[Tensor], Tensor] | None = None,
) -> _State:
    """Run the bounded trust-region iteration from ``u0`` (b, K) for all b problems; ``evaluate(u, idx)`` gives the
    residuals and Jacobian of problems ``idx``; ``floor`` (b,) the squared round-off |dr|^2 of each residual vector."""
    b, k = u0.shape
    dev = u0.device
    u = u0.clone()
    idx_all = torch.arange(b, device=dev)
    r, jac = evaluate(u, idx_all)
    cost = 0.5 * (r * r).sum(-1)
    status = torch.full((b,), -1, dtype=torch.int64, device=dev)
    iters = torch.zeros(b, dtype=torch.int64, device=dev)
    bad = ~torch.isfinite(cost) | ~torch.isfinite(jac).all(dim=2).all(dim=1)
    status[bad] = -4
    done = bad.clone()
    delta = torch.full((b,), float(delta0), dtype=u0.dtype, device=dev)
    for it in range(max_iter + 1):
        rows = (~done).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        ua, lo_a, hi_a = u[rows], lo[rows], hi[rows]
        g, a, w, q, c, p_gn, dec, deficient, free = _gn_quantities(jac[rows], r[rows], ua, lo_a, hi_a)
        unorm = ua.abs().amax(dim=-1)
        res = _resolution(cost[rows], floor[rows])
        step_ok = p_gn.abs().amax(dim=-1) <= xtol * (1.0 + unorm)
        grad_ok = dec <= res
        stop = step_ok | grad_ok
        st = torch.where(step_ok, 0, 1)
        st = torch.where(((ua <= lo_a) | (ua >= hi_a)).any(dim=1), -5, st)
        st = torch.where(deficient, -3, st)
        status[rows[stop]] = st[stop]
        final = stop & ~deficient & (p_gn.abs().amax(dim=-1) <= _FINAL_STEP * (1.0 + unorm))
        u[rows[final]] = torch.minimum(torch.maximum(ua[final] + p_gn[final], lo_a[final]), hi_a[final])
        done[rows[stop]] = True
        if it == max_iter:  # the tests above may still pass at the last iterate; otherwise: iteration limit
            break
        keep = ~stop
        rows = rows[keep]
        if rows.numel() == 0:
            break
        ua, lo_a, hi_a, unorm, res = ua[keep], lo_a[keep], hi_a[keep], unorm[keep], res[keep]
        g, a, w, q, c, p_gn, deficient = g[keep], a[keep], w[keep], q[keep], c[keep], p_gn[keep], deficient[keep]
        d = delta[rows]
        p = _tr_step(w, q, c, p_gn, deficient, d)
        u_new = torch.minimum(torch.maximum(ua + p, lo_a), hi_a)
        s = u_new - ua
        r_new, j_new = evaluate(u_new, rows)
        c_new = 0.5 * (r_new * r_new).sum(-1)
        ca = cost[rows]
        predicted = -(g * s).sum(-1) - 0.5 * torch.einsum("bk,bkl,bl->b", s, a, s)
        actual = ca - c_new
        ok = torch.isfinite(c_new) & torch.isfinite(j_new).all(dim=2).all(dim=1)
        rho = torch.where(predicted > 0, actual / predicted.clamp_min(1e-300), torch.full_like(actual, -1.0))
        # below the cost's resolution the actual change is round-off: trust the quadratic model there
        tiny = (predicted <= res) & (actual >= -res)
        accept = ok & (((actual > 0) & (rho > 1e-4)) | tiny)
        snorm = s.norm(dim=-1)
        d = torch.where(~ok | ((rho < 0.25) & ~tiny), 0.25 * torch.minimum(snorm, d), d)
        d = torch.where(ok & (rho > 0.75) & (snorm >= 0.9 * d), 2.0 * d, d)
        delta[rows] = d
        acc = rows[accept]
        u[acc] = u_new[accept]
        r[acc] = r_new[accept]
        jac[acc] = j_new[accept]
        cost[acc] = c_new[accept]
        iters[rows] += 1
        stalled = d <= 1e-3 * xtol * (1.0 + unorm)
        status[rows[stalled]] = -2
        done[rows[stalled]] = True
        if path is not None and on_path is not None:
            path.append(on_path(u))
    return _State(u=u, r=r, jac=jac, cost=cost, iters=iters, status=status)


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
        return _residuals_and_jacobian(predict, uu, rows, sclb[rows], target[rows], sigma[rows], jacobian)

    path = [u0 * scl] if record_path else None
    st = _trust_region(
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
        st2 = _trust_region(
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
        st3 = _trust_region(
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
