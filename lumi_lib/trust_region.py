"""The batched, bounded trust-region Gauss-Newton iteration behind :func:`lumi_lib.solver.solve_lm`.

Per active problem and iteration, with ``A = J^T J`` and ``g = J^T r`` restricted to the free unknowns (an unknown on a
bound whose gradient points out of the box is held), the step is the exact solution of the trust-region subproblem

    min_p  g.p + 1/2 p^T A p   subject to  |p|_2 <= Delta,        p = -(A + lambda I)^-1 g,   lambda >= 0,

found from the eigen-decomposition of A (K x K) and a few batched Newton steps on the secular equation. The trial
point is projected onto the box, evaluated, and accepted if the cost falls; Delta follows the ratio of actual to
predicted reduction. Problems leave the active set as soon as they stop. The Jacobian ``J = dr/du`` comes from
autograd (:func:`residuals_and_jacobian`: reverse mode on per-residual copies of the unknowns, or forward mode with
the K tangents batched).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Predict", "TRState", "residuals_and_jacobian", "trust_region", "RANK_RCOND", "FINAL_STEP"]

Predict = Callable[[Tensor, Tensor], Tensor]
"""``predict(x, rows) -> (b, M)``: model values for unknowns ``x`` of shape (b, 1, K) or (b, M, K) (physical units)
belonging to the problems ``rows`` (int64, (b,)). Problems must be independent of each other; ``rows`` may repeat a
problem (restarts evaluate several points of one problem in one call)."""

RANK_RCOND = 1e-15  # eigenvalues of A below this times the largest count as zero (cond(J) above ~3e7)
FINAL_STEP = 1e-6  # a converged problem's last Gauss-Newton step is applied if it is at most this (scaled units)


def residuals_and_jacobian(
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


@dataclass
class TRState:
    """Iteration state of :func:`trust_region` (all (b, ...) tensors, b problems)."""

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
    keep = w > RANK_RCOND * w[:, -1:].clamp_min(1e-300)
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


def trust_region(
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
) -> TRState:
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
        final = stop & ~deficient & (p_gn.abs().amax(dim=-1) <= FINAL_STEP * (1.0 + unorm))
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
    return TRState(u=u, r=r, jac=jac, cost=cost, iters=iters, status=status)
