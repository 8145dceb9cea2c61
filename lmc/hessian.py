"""Hessian of the training loss: Hessian-vector products over a data set, top eigenpairs,
trace and spectral density, with convergence diagnostics.

Operators are separate from algorithms (as in hessian-eigenthings): a `HessianOperator`
is `v -> H v` on a flat vector space — all parameters, or only the live weights of a
pruned network (`m ⊙ H(m ⊙ v)` restricted to the mask), or one block of the parameter
tree — and the algorithms take any such matvec.

HVPs are forward-over-reverse, `jvp(grad(L), (w,), (v,))` (Pearlmutter 1994), averaged
over a fixed set of equal-size batches inside one compiled program, so that the result
is the Hessian of the loss on the whole set rather than of one noisy batch.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmc.errors import ConfigError

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, x, y) -> mean loss
Matvec = Callable[[jax.Array], jax.Array]


def batches_of(x: jax.Array, y: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Reshape a data set into (num_batches, batch_size, ...) equal-size batches; the last
    incomplete batch is dropped (say so with a smaller `batch_size` if that matters)."""
    n = x.shape[0] // batch_size * batch_size
    if n == 0:
        raise ConfigError(f"batch size {batch_size} is larger than the {x.shape[0]} examples")
    return (x[:n].reshape(-1, batch_size, *x.shape[1:]), y[:n].reshape(-1, batch_size))


# On the CPU, XLA runs convolutions inside a loop (scan/while) several times slower than
# outside one (measured: conv1d HVP on 2,000 MNIST-1D examples, 124 ms in a scan vs 15 ms
# unrolled), so up to this many batches are unrolled there; beyond it, compile time wins.
UNROLL_CPU_BATCHES = 16


def batch_mean(fn: Callable[[jax.Array, jax.Array], Any], batches: tuple[jax.Array, jax.Array],
               unroll: bool | None = None) -> Any:
    """The mean over equal-size batches of `fn(x, y)` (any pytree), traceable. `unroll`: a
    Python loop over the batches instead of `lax.scan` (default: on the CPU, up to
    UNROLL_CPU_BATCHES batches)."""
    xs, ys = batches
    count = xs.shape[0]
    loop = unroll if unroll is not None else (
        jax.default_backend() == "cpu" and count <= UNROLL_CPU_BATCHES)
    if loop:
        total = fn(xs[0], ys[0])
        for i in range(1, count):
            total = jax.tree.map(jnp.add, total, fn(xs[i], ys[i]))
    else:
        first = fn(xs[0], ys[0])  # the scan's carry starts from the first batch

        def body(total, batch):
            return jax.tree.map(jnp.add, total, fn(*batch)), None

        total, _ = jax.lax.scan(body, first, (xs[1:], ys[1:]))
    return jax.tree.map(lambda t: t / count, total)


def make_hvp(loss_fn: LossFn, unroll: bool | None = None) -> Callable:
    """`hvp(params, batches, v_tree) -> H v` (trees) of the mean loss over all batches,
    `batches` = (xs, ys) shaped (num_batches, batch, ...). The batches are an argument,
    not a closure, so a compiled HVP takes them as input instead of baking them into the
    program. `unroll`: see `batch_mean`."""

    def hvp(params, batches, v):
        def one(x, y):
            return jax.jvp(lambda p: jax.grad(loss_fn)(p, x, y), (params,), (v,))[1]

        return batch_mean(one, batches, unroll)

    return hvp


def data_parallel(batches: tuple[jax.Array, jax.Array], params: Any) -> tuple[Any, Any]:
    """With several devices, split every batch over them (the HVP's mean over the batch
    becomes a cross-device reduction) and replicate the parameters; else unchanged."""
    devices = jax.devices()
    if len(devices) == 1 or batches[0].shape[1] % len(devices):
        return batches, jax.tree.map(jnp.asarray, params)
    mesh = Mesh(np.array(devices), ("data",))
    return (jax.device_put(batches, NamedSharding(mesh, PartitionSpec(None, "data"))),
            jax.device_put(params, NamedSharding(mesh, PartitionSpec())))


@dataclass(frozen=True)
class Subspace:
    """The coordinates an operator acts on: indices into the flat parameter vector."""

    index: np.ndarray  # int, sorted
    size_full: int

    @classmethod
    def of(cls, params: Any, mask: Any = None, block: Sequence[str] | None = None) -> Subspace:
        """All parameters, restricted to `mask` (live weights: True) and to the top-level
        entries `block` of the parameter tree."""
        keep = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)
        if isinstance(block, str):
            block = [block]
        if block is not None:
            unknown = sorted(set(block) - set(params))
            if unknown:
                raise ConfigError(f"unknown block(s) {', '.join(unknown)}; "
                                  f"valid blocks: {', '.join(sorted(params))}")
            keep = {k: jax.tree.map(lambda b, k=k: b & (k in block), v) for k, v in keep.items()}
        if mask is not None:
            keep = jax.tree.map(lambda k, m: k & np.asarray(m, bool), keep, mask)
        flat = np.concatenate([np.ravel(k) for k in jax.tree.leaves(keep)])
        if not flat.any():
            raise ConfigError("the selected parameters are empty (everything masked or no block)")
        return cls(np.flatnonzero(flat), flat.size)

    @property
    def dim(self) -> int:
        return int(self.index.size)

    def embed(self, v: jax.Array) -> jax.Array:
        return jnp.zeros(self.size_full, v.dtype).at[self.index].set(v)

    def restrict(self, w: jax.Array) -> jax.Array:
        return w[self.index]


class HessianOperator:
    """`v -> H v` for flat vectors of the selected parameters (see `Subspace.of`).

    loss_fn(params, x, y) -> mean loss of a batch (use evaluation mode for BatchNorm
    networks: fixed statistics). `batches` = (xs, ys) with shape (num_batches, batch, ...).
    """

    def __init__(self, loss_fn: LossFn, params: Any, batches: tuple[jax.Array, jax.Array], *,
                 mask: Any = None, block: Sequence[str] | None = None):
        batches, params = data_parallel(batches, params)
        self.loss_fn, self.params = loss_fn, params
        self.num_examples = int(batches[0].shape[0] * batches[0].shape[1])
        self.subspace = Subspace.of(params, mask, block)
        flat, self._unravel = ravel_pytree(params)
        self.dtype = flat.dtype
        self.batches = batches
        hvp_tree = make_hvp(loss_fn)
        sub = self.subspace

        def hvp(p, b, v):
            hv = hvp_tree(p, b, self._unravel(sub.embed(v)))
            return sub.restrict(ravel_pytree(hv)[0])

        # `hvp(params, batches, v)` is pure, so that algorithms compiled around it take the
        # parameters and data as arguments rather than as constants baked into the program.
        self.hvp = hvp
        self._matvec = jax.jit(hvp)
        self._matmat = jax.jit(jax.vmap(hvp, in_axes=(None, None, 0)))
        self.compiled: dict = {}  # compiled algorithms, see _compiled_lanczos

    def apply(self, params: Any, v: jax.Array) -> jax.Array:
        """H(params) v on this operator's data."""
        return self._matvec(params, self.batches, v)

    def matvec(self, v: jax.Array) -> jax.Array:
        return self.apply(self.params, v)

    def matmat(self, vs: jax.Array) -> jax.Array:
        """H v for every row v of `vs` (one vmapped program)."""
        return self._matmat(self.params, self.batches, vs)

    @property
    def dim(self) -> int:
        return self.subspace.dim

    def to_tree(self, v: jax.Array) -> Any:
        """A flat vector of this space as a parameter pytree (zeros outside it)."""
        return self._unravel(self.subspace.embed(jnp.asarray(v, self.dtype)))

    def from_tree(self, tree: Any) -> jax.Array:
        return self.subspace.restrict(ravel_pytree(tree)[0])

    def dense(self) -> np.ndarray:
        """The full matrix, one HVP per column: for tests and tiny models only."""
        return np.asarray(self.matmat(jnp.eye(self.dim, dtype=self.dtype))).T


# ----------------------------------------------------------------------------- algorithms


class Eigenpairs(NamedTuple):
    """Top eigenpairs with diagnostics; eigenvalues in decreasing order."""

    eigenvalues: np.ndarray  # (k,)
    eigenvectors: np.ndarray  # (k, dim), unit norm
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


def _compiled_lanczos(op: HessianOperator, steps: int, batched: bool = False) -> Callable:
    """Lanczos compiled once per operator, step count and probe batching. On the CPU the
    steps are driven from Python, one compiled step each: XLA's CPU convolutions inside a
    `fori_loop` are ~5x slower (conv1d: 100 steps 9.9 s in the loop, 1.8 s driven)."""
    key = (steps, batched)
    if key not in op.compiled:
        if jax.default_backend() == "cpu":
            def one(p, b, i, carry):
                return _lanczos_step(lambda u: op.hvp(p, b, u), i, carry)

            step = jax.jit(jax.vmap(one, in_axes=(None, None, None, 0)) if batched else one)
            init = jax.jit(jax.vmap(_lanczos_init, in_axes=(0, None)) if batched
                           else _lanczos_init, static_argnums=1)

            def run(p, b, v):
                carry = init(v, steps)
                for i in range(steps):
                    carry = step(p, b, jnp.asarray(i, jnp.int32), carry)
                return _lanczos_result(carry)
        else:
            def lanczos(p, b, v):
                return _lanczos(lambda u: op.hvp(p, b, u), v, steps)

            run = jax.jit(jax.vmap(lanczos, in_axes=(None, None, 0)) if batched else lanczos)
        op.compiled[key] = run
    return functools.partial(op.compiled[key], op.params, op.batches)


def top_eigenpairs(op: HessianOperator, k: int = 1, *, steps: int = 100, tol: float = 1e-3,
                   seed: int = 0) -> Eigenpairs:
    """The k largest eigenvalues (algebraically) by Lanczos with full re-orthogonalisation.

    Residuals are ‖H v − λ v‖ of the returned Ritz pairs, computed with one HVP each.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    steps = min(steps, op.dim)
    if k > steps:
        raise ConfigError(f"k = {k} needs at least {k} Lanczos steps (dimension {op.dim})")
    v0 = jax.random.normal(jax.random.key(seed), (op.dim,), op.dtype)
    alpha, beta, Q = _compiled_lanczos(op, steps)(v0)
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


def power_iteration(op: HessianOperator, k: int = 1, *, max_iterations: int = 100,
                    tol: float = 1e-3, seed: int = 0) -> Eigenpairs:
    """The k eigenvalues of largest magnitude by power iteration with deflation — the
    simple reference (PyHessian's algorithm and defaults: 100 iterations, relative
    tolerance 1e-3 on the eigenvalue). `converged` says whether that stopping rule fired;
    the residuals are reported beside it."""
    key = jax.random.key(seed)
    values, vectors, total, stopped = [], [], 0, []
    for j in range(k):
        v = jax.random.normal(jax.random.fold_in(key, j), (op.dim,), op.dtype)
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


def hutchinson_trace(op: HessianOperator, num_probes: int = 100, *, probe_batch: int = 10,
                     tol: float | None = None, seed: int = 0) -> TraceEstimate:
    """Hutchinson's estimator mean(zᵀ H z) with Rademacher probes (Hutchinson 1989), in
    vmapped batches of probes; stops early once the standard error falls below
    `tol · |trace|` (if given). `tol` bounds the estimated one-sigma relative error: the
    true error exceeds it about a third of the time, and early on the standard error
    itself is noisy, so ask for a smaller `tol` than the accuracy you need."""
    key, samples = jax.random.key(seed), []
    while len(samples) < num_probes:
        n = min(probe_batch, num_probes - len(samples))
        z = _rademacher(jax.random.fold_in(key, len(samples)), (n, op.dim), op.dtype)
        samples += list(np.asarray(jnp.sum(z * op.matmat(z), axis=1), np.float64))
        if tol is not None and len(samples) > 1:
            mean, se = np.mean(samples), np.std(samples, ddof=1) / np.sqrt(len(samples))
            if se <= tol * abs(mean):
                break
    s = np.asarray(samples)
    se = float(s.std(ddof=1) / np.sqrt(s.size)) if s.size > 1 else float("nan")
    return TraceEstimate(float(s.mean()), se, int(s.size))


def hutchpp_trace(op: HessianOperator, num_matvecs: int = 99, *, seed: int = 0) -> TraceEstimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): the trace of a low-rank projection
    exactly plus Hutchinson on the rest; with m = num_matvecs, m/3 each for the sketch,
    the projection and the residual probes. Standard error from the residual probes."""
    m = num_matvecs // 3
    if m < 2:
        raise ConfigError(f"Hutch++ needs at least 6 matvecs, got {num_matvecs}")
    k1, k2 = jax.random.split(jax.random.key(seed))
    S = _rademacher(k1, (m, op.dim), op.dtype)
    Q, _ = jnp.linalg.qr(op.matmat(S).T)  # (dim, m), orthonormal basis of H S
    exact = jnp.trace(Q.T @ op.matmat(Q.T).T)
    G = _rademacher(k2, (m, op.dim), op.dtype)
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


def spectral_density(op: HessianOperator, *, num_probes: int = 4, steps: int = 90,
                     seed: int = 0) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ghorbani et al. 2019) with
    Rademacher probes, all probes in one vmapped program."""
    steps = min(steps, op.dim)
    z = _rademacher(jax.random.key(seed), (num_probes, op.dim), op.dtype)
    # After a breakdown the padded steps decouple: their nodes get weight exactly 0.
    alpha, beta, _ = _compiled_lanczos(op, steps, batched=True)(z)
    theta, S = jnp.linalg.eigh(jax.vmap(_tridiagonal)(alpha, beta))
    return SpectralDensity(np.asarray(theta), np.asarray(S[:, 0, :] ** 2), op.dim)


def directional_curvature(op: HessianOperator, v: jax.Array) -> float:
    """vᵀ H v / ‖v‖²: the curvature along a direction (e.g. a pruning displacement)."""
    v = jnp.asarray(v, op.dtype)
    return float(jnp.vdot(v, op.matvec(v)) / jnp.vdot(v, v))


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_operator(
    ckpt: Any, dataset: Any, *, split: str = "train", examples: int | None = None,
    batch_size: int = 500, masked: bool = True, block: Sequence[str] | None = None,
    params: Any = None,
) -> HessianOperator:
    """The Hessian of the cross-entropy of a checkpoint's network on a fixed subset of a
    split, in evaluation mode (BatchNorm statistics fixed); restricted to the live weights
    when the checkpoint has a mask (and `masked`). `params` overrides the checkpoint's."""
    from lmc.errors import check_name
    from lmc.evaluate import cross_entropy
    from lmc.interpolate import fixed_subset
    from lmc.train import eval_apply, network_from_meta

    check_name("split", split, ("train", "test"))
    module = network_from_meta(ckpt.meta)
    apply = eval_apply(module)
    state = ckpt.state

    def loss(p, x, y):
        return cross_entropy(apply(p, state, x), y)

    x, y = (dataset.x_train, dataset.y_train) if split == "train" else (dataset.x_test,
                                                                       dataset.y_test)
    idx = fixed_subset(len(y), examples)
    batch_size = min(batch_size, len(idx))
    return HessianOperator(loss, ckpt.params if params is None else params,
                           batches_of(x[idx], y[idx], batch_size),
                           mask=ckpt.mask if masked else None, block=block)


def sharpness_record(
    path: str, *, top_k: int = 1, steps: int = 100, trace_probes: int = 100,
    density: bool = False, density_probes: int = 4, density_steps: int = 90,
    split: str = "train", examples: int | None = None, batch_size: int = 500,
    block: Sequence[str] | None = None, seed: int = 0, dataset: Any = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Top eigenvalues, trace (Hutchinson and Hutch++) and optionally the spectral density
    of a checkpoint's loss Hessian, as a JSON-ready record (kind "sharpness")."""
    import time

    from lmc.checkpoint import load_checkpoint
    from lmc.data import load_dataset

    ckpt = load_checkpoint(path)
    dataset = dataset or load_dataset(ckpt.meta["data"]["name"], data_dir)
    op = checkpoint_operator(ckpt, dataset, split=split, examples=examples,
                             batch_size=batch_size, block=block)
    start = time.perf_counter()
    top = top_eigenpairs(op, top_k, steps=steps, seed=seed)
    hutch = hutchinson_trace(op, trace_probes, seed=seed)
    hpp = hutchpp_trace(op, max(6, trace_probes), seed=seed)
    record = {
        "kind": "sharpness", "checkpoint": str(path), "model": ckpt.meta["model"],
        "data": ckpt.meta["data"]["name"], "split": split,
        "examples": op.num_examples, "dim": op.dim, "masked": ckpt.mask is not None,
        "block": list(block) if block else None, "seed": seed,
        "top_eigenvalues": {
            "eigenvalues": top.eigenvalues.tolist(), "residuals": top.residuals.tolist(),
            "converged": top.converged.tolist(), "lanczos_steps": top.iterations,
            "num_matvecs": top.num_matvecs},
        "trace": {name: est._asdict() for name, est in (("hutchinson", hutch), ("hutchpp", hpp))},
    }
    if density:
        sd = spectral_density(op, num_probes=density_probes, steps=density_steps, seed=seed)
        grid, values = sd.smoothed()
        record["density"] = {"grid": grid.tolist(), "density": values.tolist(),
                             "nodes": sd.nodes.tolist(), "weights": sd.weights.tolist(),
                             "trace": sd.trace()}
    record["seconds"] = time.perf_counter() - start
    return record


def at(op: HessianOperator, params: Any) -> HessianOperator:
    """The same operator (data, subspace, compiled HVP) at other parameters."""
    moved = copy.copy(op)
    moved.params = params
    return moved


def path_sharpness_record(
    path_a: str, path_b: str, *, alphas: int = 11, steps: int = 50, trace_probes: int = 30,
    split: str = "train", examples: int | None = None, batch_size: int = 500, seed: int = 0,
    dataset: Any = None, data_dir: str | None = None,
) -> dict[str, Any]:
    """λ_max and trace of the loss Hessian along the straight path between two checkpoints
    (kind "sharpness_path"), beside the path's loss and error curves. λ_max of a chunk of
    α is computed in one vmapped program of Lanczos runs."""
    from lmc.checkpoint import load_checkpoint
    from lmc.data import load_dataset
    from lmc.interpolate import alpha_batching, alpha_grid, interpolate_checkpoints, lerp
    from lmc.train import network_from_meta

    record = interpolate_checkpoints(path_a, path_b, alphas=alphas, dataset=dataset,
                                     data_dir=data_dir)
    ca, cb = load_checkpoint(path_a), load_checkpoint(path_b)
    dataset = dataset or load_dataset(ca.meta["data"]["name"], data_dir)
    op = checkpoint_operator(ca, dataset, split=split, examples=examples, batch_size=batch_size)
    steps = min(steps, op.dim)
    v0 = jax.random.normal(jax.random.key(seed), (op.dim,), op.dtype)
    a, b = op.params, jax.device_put(cb.params, jax.tree.map(lambda t: t.sharding, op.params))

    def lambda_max(alpha, a, b, data):
        p = lerp(a, b, alpha)
        al, be, _ = _lanczos(lambda u: op.hvp(p, data, u), v0, steps)
        # Padded steps after a breakdown add zero eigenvalues, harmless to the largest
        # unless the whole spectrum is negative.
        return jnp.linalg.eigvalsh(_tridiagonal(al, be))[-1]

    grid = alpha_grid(alphas)
    vectorize, chunk = alpha_batching(network_from_meta(ca.meta))
    chunk = (chunk or len(grid)) if vectorize else 1
    batched = jax.jit(jax.vmap(lambda_max, in_axes=(0, None, None, None)))
    tops = np.concatenate([
        np.asarray(batched(jnp.asarray(grid[i : i + chunk], op.dtype), a, b, op.batches))
        for i in range(0, len(grid), chunk)])
    traces = [hutchinson_trace(at(op, lerp(a, b, float(al))), trace_probes, seed=seed)
              for al in grid]
    record.update({
        "kind": "sharpness_path", "split_hessian": split, "examples_hessian": op.num_examples,
        "lanczos_steps": steps, "lambda_max": tops.tolist(),
        "trace": [t.trace for t in traces], "trace_standard_error": [t.standard_error
                                                                     for t in traces]})
    return record
