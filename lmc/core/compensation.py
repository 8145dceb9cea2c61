"""Estimator D of the safe pruning ratio: the loss increase after the surviving weights
compensate, Optimal Brain Surgeon (Hassibi & Stork 1993) applied to a fraction of weights.

Why D exists: the quadratic model of `lmc.core.prune_ratio` (estimator B) models pruning
without retraining; D lets the surviving weights compensate, a second-order model of what
retraining in the kept subspace can recover locally.

At a solution w with gradient g and Hessian H (the flat space of a `HessianOperator`),
pruning the set P (the first k coordinates of a removal order) moves the network by Δ
(−w on P, 0 elsewhere), and the quadratic model predicts q(Δ) = gᵀΔ + ½ΔᵀHΔ. Every
coordinate that is not removed, K (the kept eligible weights and the coordinates that are
never pruned, such as biases), may then move by δ:

    q*(P) = min over δ supported on K of q(Δ + δ),
    H_KK δ_K = −(H_KP Δ_P + g_K),
    q* = q(Δ) + (g_K + H_KP Δ_P)ᵀ δ_K + ½ δ_Kᵀ H_KK δ_K.

Hassibi & Stork remove one weight at a time through H⁻¹; here the whole set P goes at once
and the system is solved by conjugate gradients with HVPs only (`jax.scipy.sparse.linalg.cg`),
never forming H. H_KK may be indefinite, so the solved system is damped,
(H_KK + λI) δ = −(g_K + H_KP Δ_P), and q* is evaluated with the true (undamped) quadratic at
the δ found (see `default_damping` for λ).

The removal sets of increasing ratios are nested, so the feasible sets {x : x_P = −w_P}
shrink and the exact q* is nondecreasing in p: the largest safe ratio, q*(p) ≤ ε, is found by
bisection (`bisect_largest`), not on a grid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg

from lmc.core import masks
from lmc.core.operators import support_of, vector_size
from lmc.errors import ConfigError

# The default damping, as a fraction of λ_max (`default_damping`).
DAMPING_FRACTION = 1e-2


def default_damping(lambda_max: float, fraction: float = DAMPING_FRACTION) -> float:
    """λ = fraction · λ_max, the damping D uses unless one is given (D needs λ_max or a
    damping: a damping is a curvature, in the units of H).

    Why 1% of λ_max:
    - conditioning: for a positive semi-definite H the eigenvalues of H_KK lie in
      [0, λ_max] (interlacing), so κ(H_KK + λI) ≤ 1 + 1/fraction = 101, and the CG bound
      2((√κ − 1)/(√κ + 1))^m reaches 1e-4 at m = 50: the default `maxiter` and `tol`
      converge whatever the network;
    - conservative: the damped δ minimises q(Δ + δ) + ½λ‖δ‖², so for H_KK ⪰ 0 the undamped
      q at it is ≥ the exact OBS q* (D never overstates what compensation recovers); a
      direction of curvature h keeps the fraction h(h + 2λ)/(h + λ)² of its exact gain
      (≥ 3/4 for h ≥ λ), only directions flatter than λ_max/100 are suppressed: the long
      moves along flat directions where a quadratic model is least trustworthy
      (a trust-region reading of Levenberg–Marquardt damping);
    - indefinite H: the damped system is positive definite while λ > −λ_min(H_KK), which
      1% of λ_max covers when the negative curvature is small, as at the end of training.
      For larger negative eigenvalues pass damping ≥ |λ_min| explicitly; a failed solve
      shows in `Compensation.cg_residual`.
    """
    if not (np.isfinite(lambda_max) and lambda_max > 0):
        raise ConfigError(f"the default damping needs a positive λ_max, got {lambda_max:g}; "
                          "give the damping explicitly")
    if not fraction > 0:
        raise ConfigError(f"the damping fraction must be positive, got {fraction:g}")
    return float(fraction * lambda_max)


def removal_rank(order: Any, dim: int) -> np.ndarray:
    """rank[i] = the position of coordinate i in the removal order `order` (operator-space
    indices, first removed first); coordinates outside it get rank `dim` and are never
    removed (k ≤ len(order) ≤ dim)."""
    order = np.asarray(order, np.int64).ravel()
    if order.size and (order.min() < 0 or order.max() >= dim):
        raise ConfigError(f"the removal order indexes outside the operator's {dim} coordinates")
    if np.unique(order).size != order.size:
        raise ConfigError("the removal order repeats coordinates")
    rank = np.full(dim, dim, np.int32)
    rank[order] = np.arange(order.size, dtype=np.int32)
    return rank


class Compensation(NamedTuple):
    """D at one removal set (floats on the host).

    increase: q* = q(Δ + δ), the undamped quadratic at the δ found; uncompensated: q(Δ)
    (estimator B); delta_norm: ‖δ‖; cg_residual: ‖(H_KK + λI)δ + b‖ / ‖b‖ of the damped
    system (b = g_K + H_KP Δ_P; 0 when b = 0), recomputed from δ rather than CG's recursion;
    removed: k. `jax.scipy.sparse.linalg.cg` does not report its iterations, so there is no
    iteration count."""

    increase: float
    uncompensated: float
    delta_norm: float
    cg_residual: float
    removed: int


@functools.lru_cache(maxsize=32)
def _compensation_program(function: Callable) -> Callable:
    """`run(operands, support, grad, w, rank, k, damping, tol, maxiter) -> (q*, q(Δ), ‖δ‖,
    residual)`, compiled once per operator function: the support (the coordinates of the
    operator's space among its vectors), k, damping, tol and maxiter are traced, so other
    masks and values do not recompile (jit adds the shapes)."""

    def run(operands, support, grad, w, rank, k, damping, tol, maxiter):
        kept = (rank >= k) & (support != 0)  # K: outside the operator's support never counts
        grad = jnp.where(support != 0, grad, 0.0)
        delta = jnp.where((rank < k) & (support != 0), -w, 0.0).astype(w.dtype)
        h_delta = function(operands, delta)
        uncompensated = grad @ delta + 0.5 * delta @ h_delta
        b = jnp.where(kept, h_delta + grad, 0.0)  # ∇ of q(Δ + δ) in δ at δ = 0, on K

        def damped(v):  # (H_KK + λI) v, on K; CG from 0 never leaves K (b is 0 on P)
            return jnp.where(kept, function(operands, jnp.where(kept, v, 0.0)) + damping * v,
                             0.0)

        d, _ = cg(damped, -b, tol=tol, maxiter=maxiter)
        d = jnp.where(kept, d, 0.0)
        h_d = jnp.where(kept, function(operands, d), 0.0)
        increase = uncompensated + b @ d + 0.5 * d @ h_d
        b_norm = jnp.linalg.norm(b)
        r_norm = jnp.linalg.norm(h_d + damping * d + b)
        residual = jnp.where(b_norm > 0, r_norm / jnp.where(b_norm > 0, b_norm, 1.0), r_norm)
        return increase, uncompensated, jnp.linalg.norm(d), residual

    return jax.jit(run)


def compensated_increase(op: Any, grad: jax.Array, w: jax.Array, rank: Any, k: int, *,
                         damping: float, maxiter: int = 50, tol: float = 1e-4) -> Compensation:
    """q* (OBS, Hassibi & Stork 1993) after removing the k coordinates of lowest `rank` and
    letting every other coordinate of the operator's space compensate.

    op: a `HessianOperator` (or any operator with `function`, `operands`, `dim`); grad and
    w: vectors of its space (length `vector_size(op)`: a `HessianOperator`'s full flat
    parameter vector, whose coordinates outside the support never count); rank: int, the
    position of each coordinate in the removal order (≥ the length: never removed;
    `removal_rank`); damping: λ of the solved
    system (`default_damping`); maxiter, tol: of CG (tol relative to ‖b‖). One compiled
    program per operator function, whatever k.
    """
    grad, w = jnp.asarray(grad), jnp.asarray(w)
    rank = jnp.asarray(rank, jnp.int32)
    size = vector_size(op)
    for name, a in (("grad", grad), ("w", w), ("rank", rank)):
        if a.shape != (size,):
            raise ConfigError(f"{name} must be a vector of the operator's {size} "
                              f"coordinates, got shape {a.shape}")
    if not (np.isfinite(damping) and damping >= 0):
        raise ConfigError(f"the damping must be a non-negative number, got {damping:g}")
    k = int(k)
    if not 0 <= k <= op.dim:
        raise ConfigError(f"cannot remove {k} of {op.dim} coordinates")
    run = _compensation_program(op.function)
    support = support_of(op)
    support = jnp.ones(size, grad.dtype) if support is None else support
    out = run(op.operands, support, grad, w.astype(grad.dtype), rank, jnp.int32(k),
              jnp.asarray(damping, grad.dtype), jnp.asarray(tol, grad.dtype), jnp.int32(maxiter))
    increase, uncompensated, delta_norm, residual = (float(x) for x in jax.device_get(out))
    return Compensation(increase, uncompensated, delta_norm, residual, k)


# ----------------------------------------------------------------------------- bisection


def count_ratios(num_prunable: int) -> np.ndarray:
    """The ratios k/D, k = 1..D, whose removed count `masks.prune_count(k/D, D)` is k: the
    grid for `bisect_largest(grid=...)` on which every removed count is probed once."""
    if num_prunable < 1:
        raise ConfigError(f"count_ratios needs D >= 1, got {num_prunable}")
    return np.arange(1, num_prunable + 1) / num_prunable


class Bisection(NamedTuple):
    """ratio: the largest probe where the predicate held (lo if none did); evaluations:
    (p, result) in the order evaluated; status: "crossing" (the predicate fails within tol,
    or at the next grid value, above ratio), "above" (it holds at hi: ratio = hi is a lower
    bound) or "below" (it failed at every probe: ratio = lo)."""

    ratio: float
    evaluations: list[tuple[float, bool]]
    status: str


def bisect_largest(predicate: Callable[[float], Any], lo: float = 0.0, hi: float = 1.0, *,
                   tol: float = 1e-3, max_steps: int | None = None,
                   grid: Sequence[float] | None = None) -> Bisection:
    """The largest p in [lo, hi] where a predicate, assumed monotone (true, then false),
    holds; every evaluation may be costly (a retraining), so none is repeated or spared.

    predicate(lo) is assumed true and never evaluated (at p = 0 nothing is removed). The
    interval is halved ⌈log2((hi − lo)/tol)⌉ times (at most max_steps); hi itself is
    evaluated only if every probe held, to tell "above" from a crossing within tol of hi:
    at most ⌈log2((hi − lo)/tol)⌉ + 1 evaluations. With `grid` (allowed values, e.g. the
    ratios whose removed count is an integer, `count_ratios`) only the grid values in
    (lo, hi] are probed and the result is exact on the grid: ⌈log2(n + 1)⌉ evaluations for
    n values; tol is then unused.
    """
    if not hi > lo:
        raise ConfigError(f"bisection needs lo < hi, got [{lo:g}, {hi:g}]")
    evaluations: list[tuple[float, bool]] = []

    def holds(p: float) -> bool:
        ok = bool(predicate(p))
        evaluations.append((p, ok))
        return ok

    if grid is not None:
        values = np.unique(np.asarray(grid, np.float64).ravel())
        values = values[(values > lo) & (values <= hi)]
        if values.size == 0:
            raise ConfigError(f"no grid value in ({lo:g}, {hi:g}]")
        good, bad = -1, values.size  # indices: good holds (−1: lo), bad fails (n: beyond)
        steps = max_steps if max_steps is not None else values.size
        while bad - good > 1 and steps > 0:
            mid = (good + bad) // 2
            if holds(float(values[mid])):
                good = mid
            else:
                bad = mid
            steps -= 1
        if good == values.size - 1:
            return Bisection(float(values[-1]), evaluations, "above")
        if good == -1:
            return Bisection(float(lo), evaluations, "below" if bad == 0 else "crossing")
        return Bisection(float(values[good]), evaluations, "crossing")

    if not tol > 0:
        raise ConfigError(f"the bisection tolerance must be positive, got {tol:g}")
    steps = max(0, math.ceil(math.log2((hi - lo) / tol)))
    if max_steps is not None:
        steps = min(steps, max_steps)
    good, bad = float(lo), float(hi)  # bad: not evaluated while every probe holds
    for _ in range(steps):
        mid = 0.5 * (good + bad)
        if holds(mid):
            good = mid
        else:
            bad = mid
    if bad == hi:  # every probe held (or none was made)
        if holds(float(hi)):
            return Bisection(float(hi), evaluations, "above")
    if good == lo and evaluations and not any(ok for _, ok in evaluations):
        return Bisection(float(lo), evaluations, "below")
    return Bisection(good, evaluations, "crossing")


# ----------------------------------------------------------------------------- estimator D


class CompensatedSafeRatio(NamedTuple):
    """The largest ratio with q*(p) ≤ ε (estimator D).

    ratio, status: of the bisection (`Bisection`); removed: k at that ratio;
    num_prunable: D; evaluations: (p, Compensation) in the order probed (a removed count
    already computed is not recomputed, so probes may share one); epsilon; damping."""

    ratio: float
    status: str
    removed: int
    num_prunable: int
    evaluations: list[tuple[float, Compensation]]
    epsilon: float
    damping: float


def compensated_safe_ratio(op: Any, grad: jax.Array, w: jax.Array, order: Any,
                           epsilon: float, *, damping: float, tol: float = 1e-3,
                           maxiter: int = 50, cg_tol: float = 1e-4,
                           grid: Sequence[float] | None = None) -> CompensatedSafeRatio:
    """Estimator D (OBS, Hassibi & Stork 1993): bisection over p of q*(p) ≤ ε, where a
    ratio p removes k = `lmc.core.masks.prune_count(p, D)` of the D = len(order) eligible
    coordinates, first in `order` (operator-space indices) first.

    tol: of the bisection over p (`bisect_largest`; with `grid`, only its values are
    probed); maxiter, cg_tol: of CG; damping: `default_damping`. NaN counts as unsafe.
    """
    if not epsilon > 0:  # also NaN
        raise ConfigError(f"the loss tolerance epsilon must be positive, got {epsilon:g}")
    rank = removal_rank(order, vector_size(op))
    num_prunable = int(np.size(order))
    if num_prunable == 0:
        raise ConfigError("no prunable weights: the removal order is empty")
    rank_device = jnp.asarray(rank)
    by_count: dict[int, Compensation] = {}
    evaluations: list[tuple[float, Compensation]] = []

    def safe(p: float) -> bool:
        k = masks.prune_count(p, num_prunable)
        if k not in by_count:
            by_count[k] = compensated_increase(op, grad, w, rank_device, k, damping=damping,
                                               maxiter=maxiter, tol=cg_tol)
        evaluations.append((p, by_count[k]))
        return by_count[k].increase <= epsilon

    found = bisect_largest(safe, 0.0, 1.0, tol=tol, grid=grid)
    return CompensatedSafeRatio(found.ratio, found.status,
                                masks.prune_count(found.ratio, num_prunable), num_prunable,
                                evaluations, float(epsilon), float(damping))
