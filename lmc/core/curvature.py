"""Curvature algorithms on any `LinearOperator`: top eigenpairs (Lanczos with full
re-orthogonalisation, power iteration), trace (Hutchinson, Hutch++) and spectral density
(stochastic Lanczos quadrature), with convergence diagnostics; and λ_max along a path.

Algorithms only call `matvec`/`matmat`, or compile `op.function` with `op.operands` as
arguments; each keeps its compiled programs in its own cache, keyed by the operator's
function and the step count (jit adds the shapes), so operators that share a function share
programs. A `HessianOperator`'s function is one object per network (loss, parameter layout,
policy), whatever its mask or selection: its vectors are full parameter vectors and the
support is an operand (`lmc.core.operators`), so checkpoints of one architecture share every
program here. Vectors are drawn in the space's `dim` coordinates and embedded
(`space_vectors`): starting vectors and probes vanish outside the support, so the Krylov
spaces, and SLQ's spectral measure, are exactly those of the restricted Hessian (no
spurious zero eigenvalues from the coordinates outside). Whether Lanczos runs as one
`fori_loop` or as steps driven from Python is the operator's execution policy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lmc.core.interpolate import lerp
from lmc.core.operators import HessianOperator, LinearOperator, space_vectors
from lmc.errors import ConfigError

Matvec = Callable[[jax.Array], jax.Array]


class Eigenpairs(NamedTuple):
    """Top eigenpairs with diagnostics; eigenvalues in decreasing order."""

    eigenvalues: np.ndarray  # (k,)
    eigenvectors: np.ndarray  # (k, size): the operator's vectors, unit norm
    residuals: np.ndarray  # (k,) ‖H v − λ v‖
    iterations: int  # Lanczos steps or power iterations (total over deflation)
    converged: np.ndarray  # (k,) residual <= tol · |λ|
    num_matvecs: int


def _lanczos(matvec: Matvec, v0: jax.Array, steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Lanczos with full re-orthogonalisation: (alpha (m,), beta (m,), Q (m, dim)).

    beta[i] couples q_i and q_{i+1}; a zero beta (invariant subspace found) stops the
    recursion: the remaining q are zero and their alphas 0.
    """
    carry = _lanczos_init(v0, steps)
    carry = jax.lax.fori_loop(0, steps, lambda i, c: _lanczos_step(matvec, i, c), carry)
    return _lanczos_result(carry)


def _lanczos_init(v0: jax.Array, steps: int) -> tuple:
    q0 = v0 / jnp.linalg.norm(v0)
    return (jnp.zeros((steps, v0.shape[0]), v0.dtype), jnp.zeros(steps, v0.dtype),
            jnp.zeros(steps, v0.dtype), q0, jnp.zeros_like(q0), jnp.zeros((), v0.dtype))


def _lanczos_result(carry: tuple) -> tuple[jax.Array, jax.Array, jax.Array]:
    Q, alpha, beta, *_ = carry
    return alpha, beta, Q


def _lanczos_step(matvec: Matvec, i: jax.Array, carry: tuple) -> tuple:
    """Step i of `_lanczos`: one HVP, fully re-orthogonalised."""
    Q, alpha, beta, q, q_prev, b_prev = carry
    Q = Q.at[i].set(q)  # before re-orthogonalising, so that w is cleaned against q too
    w = matvec(q)
    a = jnp.vdot(q, w)
    w = w - a * q - b_prev * q_prev
    for _ in range(2):  # twice is enough (Parlett's "twice is enough")
        w = w - Q.T @ (Q @ w)
    b = jnp.linalg.norm(w)
    ok = b > 1e-10 * jnp.maximum(1.0, jnp.abs(a))
    q_next = jnp.where(ok, w / jnp.where(ok, b, 1.0), 0.0)
    return (Q, alpha.at[i].set(a), beta.at[i].set(jnp.where(ok, b, 0.0)),
            q_next, q, jnp.where(ok, b, 0.0))


def _tridiagonal(alpha: jax.Array, beta: jax.Array) -> jax.Array:
    return jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)


def _krylov_size(beta: np.ndarray) -> int:
    """Steps before the recursion broke down (an invariant subspace was found)."""
    zero = np.flatnonzero(np.asarray(beta) == 0)
    return int(zero[0]) + 1 if zero.size else len(beta)


@functools.lru_cache(maxsize=32)
def _lanczos_program(function: Callable, steps: int, batched: bool, drive: bool) -> Callable:
    """`run(operands, v0) -> (alpha, beta, Q)`, compiled once per operator function, step
    count, probe batching and driving. Driven: one compiled step per iteration from Python
    (XLA's CPU convolutions inside a `fori_loop` are ~5x slower: conv1d, 100 steps, 9.9 s
    in the loop, 1.8 s driven)."""
    if drive:
        def one(operands, i, carry):
            return _lanczos_step(lambda u: function(operands, u), i, carry)

        step = jax.jit(jax.vmap(one, in_axes=(None, None, 0)) if batched else one)
        init = jax.jit(jax.vmap(_lanczos_init, in_axes=(0, None)) if batched
                       else _lanczos_init, static_argnums=1)

        def run(operands, v):
            carry = init(v, steps)
            for i in range(steps):
                carry = step(operands, jnp.asarray(i, jnp.int32), carry)
            return _lanczos_result(carry)

        return run

    def lanczos(operands, v):
        return _lanczos(lambda u: function(operands, u), v, steps)

    return jax.jit(jax.vmap(lanczos, in_axes=(None, 0)) if batched else lanczos)


def lanczos(op: LinearOperator, v0: jax.Array, steps: int) -> tuple[jax.Array, jax.Array,
                                                                       jax.Array]:
    """`steps` Lanczos steps from `v0` (or from every row of a 2-D `v0`, vmapped):
    (alpha, beta, Q), see `_lanczos`."""
    v0 = jnp.asarray(v0, op.dtype)
    run = _lanczos_program(op.function, steps, v0.ndim == 2, op.policy.drive_lanczos)
    return run(op.operands, v0)


def top_eigenpairs(op: LinearOperator, k: int = 1, *, steps: int = 100, tol: float = 1e-3,
                   seed: int = 0) -> Eigenpairs:
    """The k largest eigenvalues (algebraically) by Lanczos with full re-orthogonalisation.

    Residuals are ‖H v − λ v‖ of the returned Ritz pairs, computed with one HVP each.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    steps = min(steps, op.dim)
    if k > steps:
        raise ConfigError(f"k = {k} needs at least {k} Lanczos steps (dimension {op.dim})")
    v0 = space_vectors(op, jax.random.normal(jax.random.key(seed), (op.dim,), op.dtype))
    alpha, beta, Q = lanczos(op, v0, steps)
    m = _krylov_size(beta)
    if k > m:
        raise ConfigError(f"the Krylov space has dimension {m} only: at most {m} eigenpairs")
    alpha, beta, Q = alpha[:m], beta[:m], Q[:m]
    theta, S = jnp.linalg.eigh(_tridiagonal(alpha, beta))
    order = jnp.argsort(-theta)[:k]
    values = theta[order]
    vectors = (Q.T @ S[:, order]).T
    vectors = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
    residuals = jnp.linalg.norm(op.matmat(vectors) - values[:, None] * vectors, axis=1)
    values, vectors, residuals = (np.asarray(a) for a in (values, vectors, residuals))
    return Eigenpairs(values, vectors, residuals, m,
                      residuals <= tol * np.maximum(np.abs(values), 1e-12), m + k)


def power_iteration(op: LinearOperator, k: int = 1, *, max_iterations: int = 100,
                    tol: float = 1e-3, seed: int = 0) -> Eigenpairs:
    """The k eigenvalues of largest magnitude by power iteration with deflation — the
    simple reference (PyHessian's algorithm and defaults: 100 iterations, relative
    tolerance 1e-3 on the eigenvalue). `converged` says whether that stopping rule fired;
    the residuals are reported beside it."""
    key = jax.random.key(seed)
    values, vectors, total, stopped = [], [], 0, []
    for j in range(k):
        v = space_vectors(op, jax.random.normal(jax.random.fold_in(key, j), (op.dim,),
                                                op.dtype))
        v = v / jnp.linalg.norm(v)
        value = None
        for _ in range(max_iterations):
            w = op.matvec(v)
            total += 1
            for u, lam in zip(vectors, values, strict=True):
                w = w - lam * jnp.vdot(u, v) * u
            new = float(jnp.vdot(v, w))
            v = w / jnp.linalg.norm(w)
            done = value is not None and abs(new - value) <= tol * (abs(value) + 1e-12)
            value = new
            if done:
                break
        stopped.append(done)
        values.append(value)
        vectors.append(v)
    vectors_arr = jnp.stack(vectors)
    values_arr = np.asarray(values)
    residuals = np.asarray(jnp.linalg.norm(op.matmat(vectors_arr)
                                           - values_arr[:, None] * vectors_arr, axis=1))
    return Eigenpairs(values_arr, np.asarray(vectors_arr), residuals, total,
                      np.asarray(stopped), total + k)


class TraceEstimate(NamedTuple):
    trace: float
    standard_error: float
    num_matvecs: int


def _rademacher(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    return jax.random.rademacher(key, shape, jnp.int32).astype(dtype)


def hutchinson_trace(op: LinearOperator, num_probes: int = 100, *, probe_batch: int = 10,
                     tol: float | None = None, seed: int = 0) -> TraceEstimate:
    """Hutchinson's estimator mean(zᵀ H z) with Rademacher probes (Hutchinson 1989), in
    vmapped batches of probes; stops early once the standard error falls below
    `tol · |trace|` (if given). `tol` bounds the estimated one-sigma relative error: the
    true error exceeds it about a third of the time, and early on the standard error
    itself is noisy, so ask for a smaller `tol` than the accuracy you need."""
    key, samples = jax.random.key(seed), []
    while len(samples) < num_probes:
        n = min(probe_batch, num_probes - len(samples))
        z = space_vectors(op, _rademacher(jax.random.fold_in(key, len(samples)),
                                          (n, op.dim), op.dtype))
        samples += list(np.asarray(jnp.sum(z * op.matmat(z), axis=1), np.float64))
        if tol is not None and len(samples) > 1:
            mean, se = np.mean(samples), np.std(samples, ddof=1) / np.sqrt(len(samples))
            if se <= tol * abs(mean):
                break
    s = np.asarray(samples)
    se = float(s.std(ddof=1) / np.sqrt(s.size)) if s.size > 1 else float("nan")
    return TraceEstimate(float(s.mean()), se, int(s.size))


def hutchpp_trace(op: LinearOperator, num_matvecs: int = 99, *, seed: int = 0) -> TraceEstimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): the trace of a low-rank projection
    exactly plus Hutchinson on the rest; with m = num_matvecs, m/3 each for the sketch,
    the projection and the residual probes. Standard error from the residual probes."""
    m = num_matvecs // 3
    if m < 2:
        raise ConfigError(f"Hutch++ needs at least 6 matvecs, got {num_matvecs}")
    k1, k2 = jax.random.split(jax.random.key(seed))
    S = space_vectors(op, _rademacher(k1, (m, op.dim), op.dtype))
    Q, _ = jnp.linalg.qr(op.matmat(S).T)  # (size, m), orthonormal basis of H S
    exact = jnp.trace(Q.T @ op.matmat(Q.T).T)
    G = space_vectors(op, _rademacher(k2, (m, op.dim), op.dtype))
    G = G - (G @ Q) @ Q.T  # project out the sketched subspace
    residual = np.asarray(jnp.sum(G * op.matmat(G), axis=1), np.float64)
    return TraceEstimate(float(exact) + float(residual.mean()),
                         float(residual.std(ddof=1) / np.sqrt(m)), 3 * m)


class SpectralDensity(NamedTuple):
    """Stochastic Lanczos quadrature: per probe, Ritz values (nodes) and weights."""

    nodes: np.ndarray  # (probes, steps)
    weights: np.ndarray  # (probes, steps), each row sums to 1
    dim: int

    def smoothed(self, grid: np.ndarray | None = None, sigma_squared: float | None = None,
                 points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(grid, density) with Gaussian smoothing, σ² = 1e-5·(λmax − λmin) by default
        (Ghorbani, Krishnan & Xiao 2019); the density integrates to 1."""
        live = self.nodes[self.weights > 0]  # padded steps after a breakdown weigh nothing
        lo, hi = float(live.min()), float(live.max())
        span = max(hi - lo, 1e-12)
        s2 = sigma_squared if sigma_squared is not None else 1e-5 * span
        if grid is None:
            pad = 0.01 * span + 5 * np.sqrt(s2)
            grid = np.linspace(lo - pad, hi + pad, points)
        d = grid[:, None, None] - self.nodes[None]
        kernel = np.exp(-d ** 2 / (2 * s2)) / np.sqrt(2 * np.pi * s2)
        return grid, (kernel * self.weights[None]).sum(axis=2).mean(axis=1)

    def trace(self) -> float:
        """The trace implied by the quadrature: dim · mean_probe Σ τ_j θ_j."""
        return float(self.dim * np.mean(np.sum(self.weights * self.nodes, axis=1)))


def spectral_density(op: LinearOperator, *, num_probes: int = 4, steps: int = 90,
                     seed: int = 0) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ghorbani et al. 2019) with
    Rademacher probes on the operator's space (its `dim` coordinates; `space_vectors`),
    all probes in one vmapped program; the trace's dimension is `op.dim`."""
    steps = min(steps, op.dim)
    z = space_vectors(op, _rademacher(jax.random.key(seed), (num_probes, op.dim), op.dtype))
    # After a breakdown the padded steps decouple: their nodes get weight exactly 0.
    alpha, beta, _ = lanczos(op, z, steps)
    theta, S = jnp.linalg.eigh(jax.vmap(_tridiagonal)(alpha, beta))
    return SpectralDensity(np.asarray(theta), np.asarray(S[:, 0, :] ** 2), op.dim)


def directional_curvature(op: LinearOperator, v: jax.Array) -> float:
    """vᵀ H v / ‖v‖²: the curvature along a direction (e.g. a pruning displacement)."""
    v = jnp.asarray(v, op.dtype)
    return float(jnp.vdot(v, op.matvec(v)) / jnp.vdot(v, v))




@functools.lru_cache(maxsize=32)
def _path_program(function: Callable, steps: int) -> Callable:
    """`run(alphas, a, b, rest, v0) -> λ_max` at every α of a chunk, compiled once per
    operator function and step count."""
    def top(alpha, a, b, rest, v0):
        al, be, _ = _lanczos(lambda u: function((lerp(a, b, alpha), *rest), u), v0, steps)
        # Padded steps after a breakdown add zero eigenvalues, harmless to the largest
        # unless the whole spectrum is negative.
        return jnp.linalg.eigvalsh(_tridiagonal(al, be))[-1]

    return jax.jit(jax.vmap(top, in_axes=(0, None, None, None, None)))


def lambda_max_along_path(op: HessianOperator, params_b: Any, alphas: np.ndarray, *,
                          steps: int = 50, seed: int = 0) -> np.ndarray:
    """λ_max of the Hessian at every point `(1 − α)·op.params + α·params_b` of the path,
    by Lanczos from one start vector; the α of a chunk (`op.policy.alpha_chunk`) run as
    one vmapped program of Lanczos runs."""
    steps = min(steps, op.dim)
    v0 = space_vectors(op, jax.random.normal(jax.random.key(seed), (op.dim,), op.dtype))
    moved = op.at(params_b)
    a, b, rest = op.params, moved.params, tuple(op.operands[1:])
    chunk = op.policy.alpha_chunk or len(alphas)
    batched = _path_program(op.function, steps)
    return np.concatenate([
        np.asarray(batched(jnp.asarray(alphas[i : i + chunk], op.dtype), a, b, rest, v0))
        for i in range(0, len(alphas), chunk)])
