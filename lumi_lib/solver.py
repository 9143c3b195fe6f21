"""Batched, bounded Levenberg-Marquardt for many independent small least-squares problems.

Each of the ``B`` problems has ``K`` unknowns (``K`` small, e.g. <= 4) and ``M`` weighted residuals

    r_bm(x_b) = (f_m(x_b) - c_bm) / sigma_bm,        cost_b = 1/2 sum_m r_bm^2.

The iteration works in scaled unknowns ``u = x / scale`` (so that u ~ 1) and solves, for every active problem,

    (J^T J + lambda diag(J^T J)) du = -J^T r,        u <- clip(u + du, lower, upper),

with Nielsen's damping update. The Jacobian ``J = dr/du`` (B, M, K) comes from autograd: reverse mode on
per-residual copies of the unknowns (one forward + one backward pass), or forward mode with the K tangents
batched into one dual-number pass. Converged problems leave the active set, so their rows cost nothing.

After convergence: covariance ``(J^T W J)^-1`` (W = 1/sigma^2, here J^T J of the weighted residuals) in physical
units, the 2-norm condition number of the scaled Jacobian, and its least-determined direction.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LSQResult", "solve_lm", "identifiability_message"]

Predict = Callable[[Tensor, Tensor], Tensor]
"""``predict(x, rows) -> (b, M)``: model values for unknowns ``x`` of shape (b, 1, K) or (b, M, K) (physical units)
belonging to the problems ``rows`` (int64, (b,)). Problems must be independent of each other."""


@dataclass(frozen=True)
class LSQResult:
    """Per-problem outcome of :func:`solve_lm` (leading dimension B everywhere).

    ``x`` (B, K) estimates; ``cov`` (B, K, K) = (J^T W J)^-1 in physical units (NaN where singular); ``std`` (B, K);
    ``cost`` (B,) = 1/2 |r|^2; ``residual_norm`` (B,) = |r|_2 (weighted); ``iterations`` (B,) int64 LM steps tried
    (one residual + Jacobian evaluation each, plus one at the start);
    ``converged`` (B,) bool; ``cond`` (B,) condition number of the scaled Jacobian (inf if rank deficient);
    ``null_direction`` (B, K) unit vector (scaled unknowns) of the smallest singular value;
    ``path`` (n_iter + 1, B, K) iterates if requested, else None; ``jacobian`` (B, M, K) dr/dx if requested.
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
    path: Tensor | None = None
    jacobian: Tensor | None = None


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


def identifiability_message(cond: Tensor, null_direction: Tensor, names: Sequence[str], threshold: float) -> str | None:
    """Human-readable warning text if any condition number exceeds ``threshold`` (else None)."""
    bad = ~(cond <= threshold)
    if not bool(bad.any()):
        return None
    i = int(torch.nan_to_num(cond, posinf=float("inf")).masked_fill(~bad, -1.0).argmax())
    v = null_direction[i]
    v = v * torch.sign(v[v.abs().argmax()])

    def combo(w: Tensor) -> str:
        terms = [(float(c), n) for c, n in zip(w, names) if abs(float(c)) > 1e-3]
        text = " ".join(f"{'-' if c < 0 else '+'} {abs(c):.3g}*{n}" for c, n in terms)
        return text[2:] if text.startswith("+ ") else "-" + text[2:]

    text = (
        f"the measurement plan cannot separate the unknowns ({', '.join(names)}) for {int(bad.sum())} of "
        f"{cond.numel()} inversions (Jacobian condition number up to {float(cond[i]):.3g} > {threshold:.3g}): "
        f"the combination {combo(v)} is not determined"
    )
    if len(names) == 2:
        text += f"; only {combo(torch.stack([v[1], -v[0]]) * torch.sign(v[1]) if float(v[1]) != 0 else v)} is measurable"
    else:
        text += "; only combinations orthogonal to it are measurable"
    return text + " (in units of the scale, e.g. 2.3e-6 m rad)."


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
    xtol: float = 1e-12,
    ftol: float = 1e-10,
    lambda0: float = 1e-9,
    max_step: float = 0.5,
    jacobian: str = "reverse",
    cond_warn: float = 1e8,
    names: Sequence[str] | None = None,
    record_path: bool = False,
    keep_jacobian: bool = False,
) -> LSQResult:
    """Minimise 1/2 |(predict(x) - target) / sigma|^2 independently for each of the B rows of ``x0`` (B, K).

    ``target``, ``sigma``: (B, M) measured values and their absolute uncertainties (> 0). ``scale``: typical size of
    the unknowns (scalar or (K,)); the iteration uses u = x / scale. ``lower``/``upper``: box bounds (scalar, (K,) or
    (B, K); default unbounded) that must contain ``x0``. ``max_step``: largest step |du| (a trust radius in scaled
    units, keeps the first steps near the start). Stops per problem when the Gauss-Newton step satisfies
    |du| <= xtol (xtol + |u|), or it would lower the cost (quadratic model) by <= ftol * cost, or an accepted step
    lowered it by <= ftol * cost (such problems are not evaluated again), or after ``max_iter``.
    Warns (``UserWarning``) when a condition number exceeds ``cond_warn``, naming the undetermined combination.
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
    names = tuple(names) if names is not None else tuple(f"x{i}" for i in range(k))
    dev = x0.device
    scl = _as_bk(scale, 1, k, default=1.0, like=x0, name="scale")
    if not bool((scl > 0).all()):
        raise ValueError("scale must be > 0")
    lo = _as_bk(lower, b, k, default=-math.inf, like=x0, name="lower") / scl
    hi = _as_bk(upper, b, k, default=math.inf, like=x0, name="upper") / scl
    u = x0 / scl
    if not bool(((lo <= u) & (u <= hi)).all()):
        bad = int((~((lo <= u) & (u <= hi))).any(dim=1).nonzero()[0])
        raise ValueError(
            f"bounds do not contain the start x0 (first offending problem {bad}: lower={(lo[bad] * scl[0]).tolist()}, "
            f"x0={x0[bad].tolist()}, upper={(hi[bad] * scl[0]).tolist()})"
        )
    target = target.to(torch.float64)
    sigma = sigma.to(torch.float64)
    all_rows = torch.arange(b, device=dev)
    sclb = scl.expand(b, k)

    def evaluate(uu: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        return _residuals_and_jacobian(predict, uu, rows, sclb[rows], target[rows], sigma[rows], jacobian)

    r, jac = evaluate(u, all_rows)
    cost = 0.5 * (r * r).sum(-1)
    lam = torch.full((b,), lambda0, dtype=torch.float64, device=dev)
    nu = torch.full((b,), 2.0, dtype=torch.float64, device=dev)
    iters = torch.zeros(b, dtype=torch.int64, device=dev)
    converged = torch.zeros(b, dtype=torch.bool, device=dev)
    done = ~torch.isfinite(cost)
    path = [u * scl] if record_path else None
    eye = torch.eye(k, dtype=torch.float64, device=dev)

    for _ in range(max_iter):
        rows = (~done).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        g = torch.einsum("bmk,bm->bk", jac[rows], r[rows])
        a = torch.einsum("bmk,bml->bkl", jac[rows], jac[rows])
        ua, ca, lo_a, hi_a = u[rows], cost[rows], lo[rows], hi[rows]
        fixed = ((ua <= lo_a) & (g > 0)) | ((ua >= hi_a) & (g < 0))
        free = (~fixed).to(torch.float64)
        a_free = a * (free[:, :, None] * free[:, None, :]) + eye * (1.0 - free)[:, None, :]
        rhs = -g * free
        # undamped Gauss-Newton step: if it is negligible, the problem has converged (no evaluation needed)
        gn_step, _ = torch.linalg.solve_ex(a_free, rhs)
        gn_step = torch.nan_to_num(gn_step, nan=math.inf, posinf=math.inf, neginf=-math.inf)
        gn_gain = 0.5 * (rhs * gn_step).sum(-1)
        unorm = ua.norm(dim=-1)
        negligible = (gn_step.norm(dim=-1) <= xtol * (xtol + unorm)) | (gn_gain.abs() <= ftol * ca)
        converged[rows[negligible]] = True
        last = negligible & (gn_step.norm(dim=-1) <= 1e-6 * (1.0 + unorm))  # apply a tiny final Newton step
        u[rows[last]] = torch.minimum(torch.maximum(ua[last] + gn_step[last], lo_a[last]), hi_a[last])
        done[rows[negligible]] = True
        keep = ~negligible
        rows, g, a, a_free, rhs, free = rows[keep], g[keep], a[keep], a_free[keep], rhs[keep], free[keep]
        ua, ca, lo_a, hi_a, unorm = ua[keep], ca[keep], lo_a[keep], hi_a[keep], unorm[keep]
        if rows.numel() == 0:
            break
        diag = torch.diagonal(a, dim1=-2, dim2=-1).clamp_min(1e-300)
        damped = a_free + torch.diag_embed(lam[rows, None] * diag * free)
        step, _ = torch.linalg.solve_ex(damped, rhs)
        step = step * (max_step / step.norm(dim=-1, keepdim=True).clamp_min(max_step))
        u_new = torch.minimum(torch.maximum(ua + step, lo_a), hi_a)
        step = u_new - ua
        r_new, j_new = evaluate(u_new, rows)
        c_new = 0.5 * (r_new * r_new).sum(-1)
        predicted = -(g * step).sum(-1) - 0.5 * torch.einsum("bk,bkl,bl->b", step, a, step)
        rho = (ca - c_new) / predicted.clamp_min(1e-300)
        accept = torch.isfinite(c_new) & (c_new <= ca) & (predicted >= 0)
        small_step = accept & (step.norm(dim=-1) <= xtol * (xtol + unorm))
        small_cost = accept & ((ca - c_new) <= ftol * ca)
        conv = small_step | small_cost
        # Nielsen's damping update
        lam_a, nu_a = lam[rows], nu[rows]
        shrink = torch.clamp(1.0 - (2.0 * rho - 1.0) ** 3, min=1.0 / 3.0)
        lam[rows] = torch.where(accept, lam_a * shrink, lam_a * nu_a)
        nu[rows] = torch.where(accept, torch.full_like(nu_a, 2.0), nu_a * 2.0)
        acc_rows = rows[accept]
        u[acc_rows] = u_new[accept]
        r[acc_rows] = r_new[accept]
        jac[acc_rows] = j_new[accept]
        cost[acc_rows] = c_new[accept]
        iters[rows] += 1
        converged[rows] = conv
        done[rows] = conv | (lam[rows] > 1e30)
        if path is not None:
            path.append(u * scl)

    x = u * scl
    if path is not None and not torch.equal(path[-1], x):
        path.append(x)
    with torch.no_grad():
        a = torch.einsum("bmk,bml->bkl", jac, jac)
        inv, info = torch.linalg.inv_ex(a)
        inv = torch.where((info == 0)[:, None, None], inv, torch.full_like(inv, math.nan))
        cov = inv * (scl[:, :, None] * scl[:, None, :])
        _, svals, vh = torch.linalg.svd(jac, full_matrices=False)
        smin = svals[:, -1]
        cond = torch.where(smin > 0, svals[:, 0] / smin.clamp_min(1e-300), torch.full_like(smin, math.inf))
        null_direction = vh[:, -1, :]
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
        converged=converged,
        cond=cond,
        null_direction=null_direction,
        names=names,
        path=torch.stack(path) if path is not None else None,
        jacobian=jac / scl[:, None, :] if keep_jacobian else None,
    )
