"""How far can one pruning step go? The "valley too steep" prediction (Paul et al. 2023,
§3.3; Zhang et al. 2024).

At a solution w, pruning a fraction p of the D live prunable weights moves the network by
Δ(p) (−w on the removed coordinates, 0 elsewhere), a distance R(p) = ‖Δ(p)‖. A loss
tolerance ε defines the sublevel set {L ≤ L(w) + ε}; pruning is predicted safe while Δ(p)
stays inside it. Four estimators of the largest safe ratio, from cheap to informed:

- A, λ_max bound: ½·λ_max·R(p)² ≤ ε (the sublevel set contains the ball of radius
  sqrt(2ε/λ_max); conservative).
- B, directional quadratic model: q(p) = gᵀΔ + ½ΔᵀHΔ ≤ ε, one HVP per ratio on the grid.
  The Rayleigh quotient ΔᵀHΔ/‖Δ‖² says how steep the removed direction is.
- C, Gaussian width (Larsen et al. 2022; Zhang et al. 2024): retraining in the pruned
  subspace succeeds while p ≤ p_theory(R(p)), p_theory(R) = mean over the Hessian's
  spectrum of 2ε/(2ε + |λ|·R²), the spectrum by stochastic Lanczos quadrature (SLQ).
- D, compensated quadratic model (Optimal Brain Surgeon, Hassibi & Stork 1993;
  `lmc.core.compensation`): q*(p) ≤ ε, the quadratic model's increase after the kept
  coordinates of the operator's space move optimally, found by bisection. B models pruning
  without retraining; D lets the survivors compensate (in basis "prunable" only the kept
  weights do; in "all" the biases too).

C has three choices, each named (the defaults are Zhang et al.'s):

- basis (`BASES`): "prunable", the Hessian of the live prunable weights only (the
  operator of `lmc.workflows.opened.OpenedCheckpoint.hessian(prunable_only=True)`), so that
  the mean over the spectrum runs over the same D coordinates p counts; or "all", every
  live parameter (biases, norm scales: directions never pruned that still enter the mean).
  The basis is the operator's: `predict_prune_ratio` reads it off `op.dim` vs D.
- eigenvalues (`EIGENVALUES`): "abs", |λ| (Zhang et al.: a negative direction limits the
  width as a positive one of the same size does); or "clip", max(λ, 0) (every negative
  direction counts as flat: contributes 1 to the mean whatever R, so a spectrum with much
  negative mass floors p_theory).
- epsilon (`EPSILONS`, or a number): "minibatch_std", the standard deviation over the
  operator's batches of the batch-mean training loss (Zhang et al.: the loss noise SGD
  sees); or "example_std", the standard deviation of the per-example loss (larger by about
  √batch).

The prediction also reports the zero-curvature mass, the SLQ weight on nodes with
|θ| ≤ 1e-3·λ_max (directions that count 1 at every R: the floor of p_theory), and the
negative mass (weight on θ < −1e-3·λ_max).

Everything lives in the flat space of a `HessianOperator` (the live weights of a sparse
network); the curves are computed on a grid of ratios and a safe ratio is the largest grid
point before the condition first fails (`largest_safe_ratio`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lmc.core import masks
from lmc.core.batching import Batches
from lmc.core.batching import mean_gradient as _mean_gradient
from lmc.core.compensation import compensated_safe_ratio, default_damping
from lmc.core.curvature import spectral_density, top_eigenpairs
from lmc.core.evaluate import Evaluator
from lmc.core.operators import HessianOperator, LossFn, split_loss, vector_size
from lmc.core.prune import removal_order
from lmc.errors import ConfigError, check_name

# Zhang et al. (2024) scan p in steps of 1/1000. Finer than that changes nothing an IMP
# schedule can use (levels prune 10-20%); A and C cost nothing per point, B one HVP.
DEFAULT_GRID = np.arange(1, 1000) / 1000


def ratio_grid(step: float) -> np.ndarray:
    """Ratios step, 2·step, ... below 1."""
    if not 0 < step < 0.5:
        raise ConfigError(f"the grid step must be in (0, 0.5), got {step}")
    return np.arange(step, 1 - 1e-9, step)

# A few thousand examples measure λ_max to a few percent on MNIST-1D
# (experiments/sharpness_sample_size.md); every grid point costs one HVP over them.
DEFAULT_EXAMPLES = 2000
# The operator's batch size: ε = "minibatch_std" is the spread over its batches, so they
# should be many (20 of 2000 examples) and near a training batch (128 by default).
DEFAULT_BATCH_SIZE = 100

# The named choices of estimator C (module docstring), defaults first (Zhang et al. 2024).
BASES = ("prunable", "all")
EIGENVALUES = ("abs", "clip")
EPSILONS = ("minibatch_std", "example_std")
# SLQ nodes with |θ| at most this fraction of λ_max count as zero curvature: such a direction
# counts ≥ 1/2 in p_theory until R is √1000 ≈ 32 times estimator A's radius sqrt(2ε/λ_max):
# nearly flat wherever the sharp directions already limit the width.
ZERO_CURVATURE = 1e-3


# ----------------------------------------------------------------------------- selection


def _op_order(op: HessianOperator, scores: Any, keep_dense: Sequence[str]) -> np.ndarray:
    """The indices, in the operator's vectors (the full flat parameter vector), of the
    live weights outside `keep_dense` in the order a pruning step by `scores` removes
    them: `lmc.core.prune.removal_order`, mapped from its index space (all prunable
    leaves) to the flat vector. Weights outside the operator's support count as dead: a
    prunable-basis operator built with another keep_dense never removes the weights it
    left out."""
    sizes = [int(np.size(leaf)) for leaf in jax.tree.leaves(op.params)]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    treedef = jax.tree.structure(op.params)
    position = jax.tree.unflatten(treedef, [
        o + np.arange(n, dtype=np.int64).reshape(np.shape(leaf))
        for o, n, leaf in zip(offsets, sizes, jax.tree.leaves(op.params), strict=True)])
    live = np.zeros(op.subspace.size_full, bool)
    live[op.subspace.index] = True
    mask = jax.tree.unflatten(treedef, [live[p] for p in jax.tree.leaves(position)])
    order = removal_order(scores, mask, keep_dense)
    return masks.flat_prunable(position)[order]


def removed_counts(grid: np.ndarray, num_prunable: int) -> np.ndarray:
    """Weights a step of ratio p removes, for every p of the grid (`lmc.core.masks.prune_count`)."""
    return np.array([masks.prune_count(p, num_prunable) for p in grid], np.int64)


# ----------------------------------------------------------------------------- one shot


def one_shot_curve(apply_fn: Callable, params: Any, state: Any, x: jax.Array, y: jax.Array,
                   grid: Any, *, scores: Any = None, mask: Any = None,
                   keep_dense: Sequence[str] = (), chunk: int = 64,
                   batch_size: int = 1000) -> dict[str, Any]:
    """Loss and accuracy on (x, y) of the network pruned in one shot, without fine-tuning,
    at every ratio p of `grid`: the first ceil(p · live) weights of `removal_order` (by
    `scores`, global magnitude by default) set to zero. Zhang et al. 2024 measure the safe
    ratio this way (on L1-trained networks); it is what estimator C predicts.

    The pruned networks are built and evaluated `chunk` at a time in one vmapped program;
    `apply_fn(params, state, x)` is the eval-mode apply function.
    """
    grid = check_grid(grid)
    if scores is None:
        scores = jax.tree.map(lambda w: np.abs(np.asarray(w, np.float32)), params)
    order = removal_order(scores, mask, keep_dense)
    flat = masks.flat_prunable(params)
    live = (np.ones(flat.size, bool) if mask is None
            else masks.flat_prunable(masks.check_mask(mask, params)))
    # rank[i]: when weight i goes (its place in the order); pruned weights -1 (gone
    # already), kept-dense ones never.
    rank = np.where(live, np.iinfo(np.int32).max, -1).astype(np.int32)  # int32 on device
    rank[order] = np.arange(order.size)
    counts = removed_counts(grid, order.size)
    flags = masks.eligible(params)  # the prunable leaves: the index space of `rank`
    leaves, treedef = jax.tree.flatten(params)
    splits = np.cumsum([np.size(leaf) for leaf, f in zip(leaves, flags, strict=True) if f])
    rank_j = jnp.asarray(rank)

    def pruned(count):
        keep = iter(jnp.split(rank_j >= count, splits[:-1]))
        return jax.tree.unflatten(treedef, [
            jnp.where(next(keep).reshape(np.shape(leaf)), leaf, 0) if f else leaf
            for leaf, f in zip(leaves, flags, strict=True)])

    make = jax.jit(jax.vmap(pruned))
    evaluator = Evaluator(apply_fn, batch_size, network_axes=(0, None))
    dense = Evaluator(apply_fn, batch_size)(params, state, x, y)
    loss, accuracy = [], []
    for start in range(0, counts.size, chunk):
        part = counts[start:start + chunk]
        padded = np.pad(part, (0, chunk - part.size), mode="edge")  # one compiled shape
        out = evaluator(make(jnp.asarray(padded)), state, x, y)
        loss += np.asarray(out["loss"])[: part.size].tolist()
        accuracy += np.asarray(out["accuracy"])[: part.size].tolist()
    return {"grid": grid.tolist(), "removed": counts.tolist(), "loss": loss,
            "accuracy": accuracy, "dense_loss": float(dense["loss"]),
            "dense_accuracy": float(dense["accuracy"]), "num_live": int(order.size)}


def largest_passing_ratio(grid: Any, passes: Any) -> float:
    """The largest p of `grid` such that it and every smaller p pass; 0 if the smallest
    fails (a curve that fails and passes again counts only up to its first failure)."""
    grid, passes = np.asarray(grid, float), np.asarray(passes, bool)
    failed = np.flatnonzero(~passes)
    if failed.size == 0:
        return float(grid[-1])
    return 0.0 if failed[0] == 0 else float(grid[failed[0] - 1])


# ----------------------------------------------------------------------------- curves


def check_eigenvalues(eigenvalues: str) -> str:
    return check_name("eigenvalue treatment", eigenvalues, EIGENVALUES)


def gaussian_width_ratio(radius: np.ndarray, nodes: np.ndarray, weights: np.ndarray,
                         epsilon: float, eigenvalues: str = "abs") -> np.ndarray:
    """p_theory(R) = mean over probes of Σ_j τ_j·2ε/(2ε + f(θ_j)·R²) for every R.

    eigenvalues "abs": f(θ) = |θ| (Zhang et al. 2024: a negative direction limits the
    width as a positive one of the same size does);
    "clip": f(θ) = max(θ, 0), a negative direction is flat and counts 1. Unclipped and
    without |·| a negative θ would count more than 1 and divide by zero at θR² = −2ε.
    """
    check_eigenvalues(eigenvalues)
    r2 = np.asarray(radius, np.float64) ** 2
    nodes = np.asarray(nodes, np.float64)
    lam = np.abs(nodes) if eigenvalues == "abs" else np.maximum(nodes, 0.0)
    weights = np.asarray(weights, np.float64)
    out = np.zeros_like(r2)
    for theta, tau in zip(lam, weights, strict=True):  # one probe at a time: bounded memory
        out += (tau * (2 * epsilon) / (2 * epsilon + theta * r2[:, None])).sum(axis=1)
    return out / len(lam)


class CurvatureMasses(NamedTuple):
    """Fractions of the spectrum (SLQ weight, mean over probes)."""

    zero: float  # |θ| ≤ ZERO_CURVATURE·scale: counts 1 in p_theory at every R
    negative: float  # θ < −ZERO_CURVATURE·scale


def curvature_masses(nodes: np.ndarray, weights: np.ndarray, lambda_max: float,
                     rel: float = ZERO_CURVATURE) -> CurvatureMasses:
    """The zero-curvature and negative mass of an SLQ spectrum; the scale is λ_max (the
    largest |θ| if that is larger, e.g. when λ_max ≤ 0)."""
    nodes = np.asarray(nodes, np.float64)
    weights = np.asarray(weights, np.float64)
    scale = max(float(lambda_max), float(np.abs(nodes).max(initial=0.0)))
    tol = rel * scale
    n = max(nodes.shape[0], 1)
    return CurvatureMasses(float(weights[np.abs(nodes) <= tol].sum() / n),
                           float(weights[nodes < -tol].sum() / n))


# `lmc.core.compensation.Bisection` statuses in the words of `SafeRatio`
_BISECTION_STATUS = {"crossing": "crossing", "above": "above_grid", "below": "below_grid"}


class SafeRatio(NamedTuple):
    """The largest safe ratio found on a grid.

    ratio: the last grid point before the condition first fails (0.0 if it fails at the
    first point); interpolated: where the margin, linear between that point and the next,
    reaches 0 (below the first point: from p = 0, where every condition holds); status:
    "crossing", "above_grid" (holds on the whole grid: the ratio is a lower bound) or
    "below_grid"."""

    ratio: float
    interpolated: float
    status: str


def largest_safe_ratio(grid: np.ndarray, margin: np.ndarray,
                       margin_at_zero: float | None = None) -> SafeRatio:
    """The largest p before a monotone-ish condition `margin(p) >= 0` first fails.

    The first violation, not the last point where the condition holds: curves measured
    on a network can wiggle back (a negative gradient term, SLQ noise), and the safe
    region is the one connected to p = 0. NaN counts as a violation.
    """
    grid = np.asarray(grid, np.float64)
    margin = np.asarray(margin, np.float64)
    ok = margin >= 0
    if ok.all():
        return SafeRatio(float(grid[-1]), float(grid[-1]), "above_grid")
    first = int(np.argmin(ok))
    if first == 0:
        m0, m1 = margin_at_zero, margin[0]
        if m0 is None or not m0 > 0 or not np.isfinite(m1):
            return SafeRatio(0.0, 0.0, "below_grid")
        return SafeRatio(0.0, float(grid[0] * m0 / (m0 - m1)), "below_grid")
    i = first - 1
    m0, m1 = margin[i], margin[first]
    step = (grid[first] - grid[i]) * m0 / (m0 - m1) if np.isfinite(m1) and m0 - m1 > 0 else 0.0
    return SafeRatio(float(grid[i]), float(grid[i] + step), "crossing")


# The estimators by name, in the order the command line and figures show them.
ESTIMATORS = ("gaussian_width", "quadratic", "lambda_max", "compensated")


class SafeRatios(NamedTuple):
    """The estimators' safe ratios (A, B, C of this module's docstring; D of
    `lmc.core.compensation`)."""

    lambda_max: SafeRatio  # A
    quadratic: SafeRatio  # B
    gaussian_width: SafeRatio  # C
    compensated: SafeRatio  # D


class Spectrum(NamedTuple):
    """What the estimators need of the Hessian besides HVPs along Δ, with diagnostics."""

    lambda_max: float  # top Ritz value of Lanczos
    lanczos_residual: float  # ‖H v − λ v‖
    lanczos_converged: bool  # residual <= 1e-3·|λ|
    lanczos_steps: int
    nodes: np.ndarray  # SLQ (probes, steps)
    weights: np.ndarray  # SLQ (probes, steps), rows sum to 1
    trace: float  # implied by the quadrature: dim · mean Σ τ θ
    num_matvecs: int
    seconds: float


def hessian_spectrum(op: HessianOperator, *, lanczos_steps: int = 100, slq_probes: int = 4,
                     slq_steps: int = 90, seed: int = 0) -> Spectrum:
    """λ_max (Lanczos) and the spectral density (SLQ), computed once and shared by all
    criteria."""
    start = time.perf_counter()
    top = top_eigenpairs(op, 1, steps=lanczos_steps, seed=seed)
    sd = spectral_density(op, num_probes=slq_probes, steps=slq_steps, seed=seed)
    return Spectrum(float(top.eigenvalues[0]), float(top.residuals[0]), bool(top.converged[0]),
                    top.iterations, sd.nodes, sd.weights, sd.trace(),
                    top.num_matvecs + sd.nodes.size, time.perf_counter() - start)


class Diagnostics(NamedTuple):
    lanczos_residual: float
    lanczos_converged: bool
    lanczos_steps: int
    slq_probes: int
    slq_steps: int
    spectrum_matvecs: int  # Lanczos + SLQ (shared between criteria when passed in)
    spectrum_seconds: float
    curve_matvecs: int  # one HVP per distinct removed count on the grid
    curve_seconds: float  # gradient, ε and the curves of this criterion


class PrunePrediction(NamedTuple):
    """Curves over the grid of ratios and the safe ratios of one pruning criterion."""

    criterion: str
    grid: np.ndarray  # (P,) ratios p
    removed: np.ndarray  # (P,) ceil(p·D)
    num_prunable: int  # D: live eligible weights
    radius: np.ndarray  # R(p) = ‖Δ(p)‖
    linear: np.ndarray  # gᵀΔ
    curvature: np.ndarray  # ΔᵀHΔ
    quadratic: np.ndarray  # q(p) = gᵀΔ + ½ΔᵀHΔ
    rayleigh: np.ndarray  # ΔᵀHΔ / ‖Δ‖² (NaN where Δ = 0)
    p_theory: np.ndarray  # Gaussian-width ratio at R(p)
    lambda_max: float
    trace: float
    epsilon: float
    epsilon_source: str  # one of EPSILONS, or "given"
    safe: SafeRatios
    diagnostics: Diagnostics
    basis: str = "all"  # "prunable": the operator's space is the D weights p counts
    dim: int = 0  # the operator's dimension: the directions p_theory averages over
    eigenvalues: str = "abs"  # how C treats negative SLQ nodes (EIGENVALUES)
    zero_curvature_mass: float = float("nan")  # SLQ weight on |θ| ≤ 1e-3·λ_max
    negative_mass: float = float("nan")  # SLQ weight on θ < −1e-3·λ_max


def check_grid(grid: Any) -> np.ndarray:
    """Ratios in (0, 1), sorted and without repeats."""
    grid = np.unique(np.asarray(grid, np.float64).ravel())
    if grid.size == 0:
        raise ConfigError("the grid of pruning ratios is empty")
    bad = grid[~((grid > 0) & (grid < 1))]
    if bad.size:
        raise ConfigError(f"pruning ratios must lie in (0, 1); got {bad[0]:g}")
    return grid


def check_epsilon(epsilon: float, source: str = "given") -> float:
    if not epsilon > 0:  # also NaN
        hint = "" if source == "given" else f" ({source}); give epsilon explicitly"
        raise ConfigError(f"the loss tolerance epsilon must be positive, got {epsilon:g}{hint}")
    return float(epsilon)


# The loss programs below are cached on the loss's stable function (`split_loss`: one per
# network for `OpenedCheckpoint.loss_fn`), its state an argument: one compilation per
# network shape, not per checkpoint.


@functools.lru_cache(maxsize=32)
def _per_example_program(fn: Callable) -> Callable:
    return jax.jit(jax.vmap(lambda p, s, x, y: fn(p, s, x[None], y[None]),
                            in_axes=(None, None, 0, 0)))


@functools.lru_cache(maxsize=32)
def _batch_loss_program(fn: Callable) -> Callable:
    return jax.jit(fn)


@functools.lru_cache(maxsize=32)
def _gradient_program(fn: Callable, policy: Any) -> Callable:
    def grad(p, s, b):
        return _mean_gradient(lambda q, x, y: fn(q, s, x, y), p, b, policy)

    return jax.jit(grad)


def per_example_losses(loss_fn: LossFn, params: Any, batches: tuple[jax.Array, jax.Array]
                       ) -> np.ndarray:
    """The loss of every example of `batches`, as a batch of one (evaluation mode)."""
    fn, state = split_loss(loss_fn)
    one = _per_example_program(fn)
    xs, ys = batches
    return np.concatenate([np.asarray(one(params, state, xs[i], ys[i]))
                           for i in range(xs.shape[0])])


def batch_losses(loss_fn: LossFn, params: Any, batches: Batches) -> np.ndarray:
    """The mean loss of every batch of `batches` (shape (num_batches,))."""
    fn, state = split_loss(loss_fn)
    one = _batch_loss_program(fn)
    xs, ys = batches
    return np.array([float(one(params, state, xs[i], ys[i])) for i in range(xs.shape[0])],
                    np.float64)


def mean_gradient(loss_fn: LossFn, params: Any, batches: Batches, policy=None) -> Any:
    """∇ of the mean loss over equal-size batches: the gradient the HVPs differentiate."""
    fn, state = split_loss(loss_fn)
    return _gradient_program(fn, policy)(params, state, batches)


def loss_std_epsilon(losses: np.ndarray) -> tuple[float, str]:
    """ε = standard deviation of the per-example loss on the Hessian's examples ("example_std"),
    with a description of where it came from."""
    losses = np.asarray(losses, np.float64)
    source = f"std of the per-example loss on the Hessian's {losses.size} examples"
    return check_epsilon(float(np.std(losses)), source), source


def minibatch_std_epsilon(losses: np.ndarray, batch_size: int | None = None
                          ) -> tuple[float, str]:
    """ε = standard deviation over minibatches of the minibatch loss ("minibatch_std",
    Zhang et al. 2024), from the batch-mean losses; with a description. The sample std
    (ddof 1): there are few batches, and the population std understates the spread by
    sqrt((n−1)/n), √2 for two."""
    losses = np.asarray(losses, np.float64)
    size = f" of {batch_size} examples" if batch_size else ""
    source = f"std over the Hessian's {losses.size} batches{size} of the batch-mean loss"
    if losses.size < 2:
        raise ConfigError(f"epsilon 'minibatch_std' needs at least 2 batches, the operator has "
                          f"{losses.size}: use more examples or a smaller batch size, or "
                          "epsilon 'example_std' or a number")
    return check_epsilon(float(np.std(losses, ddof=1)), source), source


def epsilon_of(epsilon: float | str | None, loss_fn: LossFn, params: Any, batches: Batches
               ) -> tuple[float, str, str]:
    """(ε, source, description): `epsilon` a positive number (source "given") or one of
    `EPSILONS` (None: the first) measured on `batches` at `params`."""
    if epsilon is None:
        epsilon = EPSILONS[0]
    if isinstance(epsilon, str):
        check_name("epsilon", epsilon, EPSILONS, "epsilons (or a positive number)")
        if epsilon == "minibatch_std":
            value, text = minibatch_std_epsilon(batch_losses(loss_fn, params, batches),
                                                int(batches[0].shape[1]))
        else:
            value, text = loss_std_epsilon(per_example_losses(loss_fn, params, batches))
        return value, epsilon, text
    return check_epsilon(epsilon), "given", "given"


def check_scores(scores: Any, params: Any) -> None:
    same = jax.tree.structure(scores) == jax.tree.structure(params) and all(
        np.shape(s) == np.shape(p)
        for s, p in zip(jax.tree.leaves(scores), jax.tree.leaves(params), strict=True))
    if not same:
        raise ConfigError("the scores must be a tree shaped like the parameters")


def _chunk_size(dim: int) -> int:
    """Displacements per vmapped HVP: ≈64 MiB of float32 rows, at most 64. Called with the
    operator's vector length (`vector_size`), not the live count: one chunk shape, hence
    one compiled program, for every checkpoint of a network."""
    return max(1, min(64, 2 ** 24 // max(dim, 1)))


@functools.lru_cache(maxsize=32)
def _curvature_program(function: Callable) -> Callable:
    """`run(operands, w, rank, ks) -> ΔᵀHΔ` for a chunk of removed counts ks, compiled
    once per operator function (jit adds the shapes: the operator's vector length and the
    chunk, the same for every checkpoint of a network)."""
    def run(operands, w, rank, ks):
        deltas = jnp.where(rank[None] < ks[:, None], -w[None], 0.0).astype(w.dtype)
        h = jax.vmap(lambda d: function(operands, d))(deltas)
        return jnp.sum(deltas * h, axis=1)

    return jax.jit(run)


def _curvatures(op: HessianOperator, w: jax.Array, rank: jax.Array, counts: np.ndarray,
                chunk: int) -> np.ndarray:
    """ΔᵀHΔ for Δ(k) = −w on the coordinates of rank < k, for every k of `counts`: the
    rows of a chunk are built on the device and go through one vmapped HVP."""
    run = _curvature_program(op.function)
    out = []
    for i in range(0, len(counts), chunk):
        ks = np.zeros(chunk, np.int32)  # padded with k = 0 (Δ = 0): one compiled shape
        part = counts[i : i + chunk]
        ks[: len(part)] = part
        out.append(np.asarray(run(op.operands, w, rank, jnp.asarray(ks)))[: len(part)])
    return np.concatenate(out).astype(np.float64)


def predict_prune_ratio(
    op: HessianOperator, loss_fn: LossFn, scores: Any, *, criterion: str = "custom",
    grid: Any = None, epsilon: float | str | None = EPSILONS[0],
    eigenvalues: str = EIGENVALUES[0], keep_dense: Sequence[str] = (),
    grad: jax.Array | None = None, spectrum: Spectrum | None = None,
    lanczos_steps: int = 100, slq_probes: int = 4, slq_steps: int = 90, seed: int = 0,
    chunk: int | None = None,
) -> PrunePrediction:
    """Curves and safe ratios of one pruning criterion at `op.params`.

    loss_fn: the mean loss of the operator (its gradient and ε are taken on the
    operator's batches). scores: a params-shaped tree, higher = more important.
    epsilon: a positive number or one of `EPSILONS` (None: the first). eigenvalues: one of
    `EIGENVALUES`, for C. The basis of C is the operator's: "prunable" when its space is
    exactly the D live weights outside `keep_dense` a step may remove (build it with
    `select`, see `OpenedCheckpoint.hessian(prunable_only=True)`), else "all". grad (an
    operator vector: `op.from_tree` of the gradient tree) and spectrum: pass them to share
    them between criteria.
    """
    start = time.perf_counter()
    keep_dense = (keep_dense,) if isinstance(keep_dense, str) else tuple(keep_dense)
    grid = check_grid(DEFAULT_GRID if grid is None else grid)
    check_eigenvalues(eigenvalues)
    epsilon, source, _ = epsilon_of(epsilon, loss_fn, op.params, op.batches)
    check_scores(scores, op.params)
    order = _op_order(op, scores, keep_dense)
    num_prunable = len(order)
    if num_prunable == 0:
        raise ConfigError("no prunable weights: the live parameters hold no kernel outside "
                          f"keep_dense ({', '.join(keep_dense) or 'none'})")
    w = op.from_tree(op.params)
    counts = removed_counts(grid, num_prunable)
    if grad is None:
        grad = op.from_tree(mean_gradient(loss_fn, op.params, op.batches, op.policy))
    shared = spectrum is not None
    spectrum = spectrum or hessian_spectrum(op, lanczos_steps=lanczos_steps,
                                            slq_probes=slq_probes, slq_steps=slq_steps, seed=seed)

    # R and gᵀΔ are cumulative sums along the removal order (float64 on the host).
    w_sorted = np.asarray(w, np.float64)[order]
    cum_r2 = np.concatenate([[0.0], np.cumsum(w_sorted ** 2)])
    cum_gw = np.concatenate([[0.0], np.cumsum(np.asarray(grad, np.float64)[order] * w_sorted)])
    radius = np.sqrt(cum_r2[counts])
    linear = -cum_gw[counts]
    size = vector_size(op)
    rank = np.full(size, size + 1, np.int32)  # ineligible or outside the support: kept
    rank[order] = np.arange(num_prunable, dtype=np.int32)
    unique, inverse = np.unique(counts, return_inverse=True)  # small D: fewer HVPs
    curvature = _curvatures(op, w, jnp.asarray(rank), unique,
                            chunk or _chunk_size(size))[inverse]
    quadratic = linear + 0.5 * curvature
    with np.errstate(divide="ignore", invalid="ignore"):
        rayleigh = np.where(radius > 0, curvature / radius ** 2, np.nan)
    p_theory = gaussian_width_ratio(radius, spectrum.nodes, spectrum.weights, epsilon,
                                    eigenvalues)
    masses = curvature_masses(spectrum.nodes, spectrum.weights, spectrum.lambda_max)

    lam = max(spectrum.lambda_max, 0.0)  # no positive curvature: nothing bounds the ball
    # D: bisection (exact on the 1/1000 grid of Zhang et al.) rather than a curve
    damping = default_damping(max(lam, float(np.max(np.abs(spectrum.nodes)))))
    d = compensated_safe_ratio(op, grad, w, order, epsilon, damping=damping, tol=1e-3)
    safe = SafeRatios(
        largest_safe_ratio(grid, epsilon - 0.5 * lam * radius ** 2, epsilon),
        largest_safe_ratio(grid, epsilon - quadratic, epsilon),
        largest_safe_ratio(grid, p_theory - grid, 1.0),
        SafeRatio(d.ratio, d.ratio, _BISECTION_STATUS[d.status]))
    diagnostics = Diagnostics(
        spectrum.lanczos_residual, spectrum.lanczos_converged, spectrum.lanczos_steps,
        int(spectrum.nodes.shape[0]), int(spectrum.nodes.shape[1]), spectrum.num_matvecs,
        spectrum.seconds, len(unique),
        time.perf_counter() - start - (0.0 if shared else spectrum.seconds))
    return PrunePrediction(
        criterion, grid, counts, num_prunable, radius, linear, curvature, quadratic, rayleigh,
        p_theory, spectrum.lambda_max, spectrum.trace, epsilon, source, safe, diagnostics,
        basis="prunable" if op.dim == num_prunable else "all", dim=op.dim,
        eigenvalues=eigenvalues, zero_curvature_mass=masses.zero,
        negative_mass=masses.negative)
