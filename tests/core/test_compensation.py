"""Estimator D (Optimal Brain Surgeon on a fraction of weights, Hassibi & Stork 1993)
checked against dense Schur-complement solves in numpy, and the bisection on constructed
monotone curves."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from lmc.core import masks
from lmc.core.batching import batches_of
from lmc.core.compensation import (
    bisect_largest,
    compensated_increase,
    compensated_safe_ratio,
    count_ratios,
    default_damping,
    removal_rank,
)
from lmc.core.operators import DenseOperator, HessianOperator
from lmc.errors import ConfigError

DIM, ELIGIBLE = 12, 9  # the last 3 coordinates are never removed (like biases)


def problem(seed, spectrum=None):
    """(H, g, w, order): H SPD (or with the given spectrum), the removal order a random
    permutation of the eligible coordinates."""
    rng = np.random.default_rng(seed)
    if spectrum is None:
        a = rng.normal(size=(DIM, DIM))
        h = a @ a.T / DIM + 0.1 * np.eye(DIM)
    else:
        q = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0]
        h = (q * np.asarray(spectrum)) @ q.T
    h = (h + h.T) / 2
    return h, rng.normal(size=DIM), rng.normal(size=DIM), rng.permutation(ELIGIBLE)


def by_numpy(h, g, w, order, k, damping=0.0):
    """(q*, q(Δ)) in float64: δ_K = −(H_KK + λI)⁻¹(H_KP Δ_P + g_K), q* = q(Δ + δ)."""
    removed = np.zeros(len(w), bool)
    removed[order[:k]] = True
    kept = ~removed
    delta = np.where(removed, -w, 0.0)

    def q(x):
        return g @ x + 0.5 * x @ h @ x

    b = (h @ delta + g)[kept]
    d = np.zeros_like(w)
    d[kept] = np.linalg.solve(h[np.ix_(kept, kept)] + damping * np.eye(kept.sum()), -b)
    return q(delta + d), q(delta)


def run(h, g, w, order, k, damping=0.0, tol=1e-6, maxiter=50):
    op = DenseOperator(np.asarray(h, np.float32))
    return compensated_increase(op, jnp.asarray(g, jnp.float32), jnp.asarray(w, jnp.float32),
                                removal_rank(order, DIM), k, damping=damping, maxiter=maxiter,
                                tol=tol)


@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_matches_the_dense_schur_complement_solve(damping):
    h, g, w, order = problem(0)
    for k in range(ELIGIBLE + 1):
        got = run(h, g, w, order, k, damping)
        want, unc = by_numpy(h, g, w, order, k, damping)
        scale = max(abs(want), abs(unc), 1.0)
        assert got.removed == k
        assert abs(got.uncompensated - unc) <= 1e-5 * scale
        assert abs(got.increase - want) <= 1e-4 * scale, (k, got, want)
        assert got.cg_residual < 1e-4


def test_indefinite_hessian_with_damping_matches_the_damped_solve():
    spectrum = [3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.0, 0.0, -0.1, -0.3, -0.5, 1.5]
    h, g, w, order = problem(1, spectrum)
    for k in range(ELIGIBLE + 1):
        got = run(h, g, w, order, k, damping=1.0)  # H_KK + I ⪰ 0.5 I
        want, unc = by_numpy(h, g, w, order, k, damping=1.0)
        assert all(np.isfinite(got[:4]))
        assert abs(got.increase - want) <= 1e-4 * max(abs(want), abs(unc), 1.0)
        assert got.increase <= got.uncompensated + 1e-6  # damping > |λ_min|: never hurts


@pytest.mark.parametrize("seed", range(4))
def test_compensation_never_hurts_and_damping_only_recovers_less(seed):
    h, g, w, order = problem(seed)
    exact = [run(h, g, w, order, k).increase for k in range(ELIGIBLE + 1)]
    for k in range(ELIGIBLE + 1):
        for damping in (0.0, 0.05, 1.0):
            got = run(h, g, w, order, k, damping)
            assert got.increase <= got.uncompensated + 1e-5 * max(1, abs(got.uncompensated))
            assert got.increase >= exact[k] - 1e-5 * max(1, abs(exact[k]))
    # nested removal sets: the exact q* is nondecreasing in k
    assert np.all(np.diff(exact) >= -1e-5 * max(1, np.max(np.abs(exact))))


def test_compiles_once_across_removed_counts():
    traces = []

    def counting(matrix, v):  # a fresh function: a program of its own
        traces.append(1)
        return matrix @ v

    class Counting(DenseOperator):
        function = staticmethod(counting)

    h, g, w, order = problem(2)
    op = Counting(np.asarray(h, np.float32))
    rank = removal_rank(order, DIM)
    g, w = jnp.asarray(g, jnp.float32), jnp.asarray(w, jnp.float32)
    compensated_increase(op, g, w, rank, 0, damping=0.1)
    first = len(traces)
    assert first > 0
    for k in (1, 4, 9):
        compensated_increase(op, g, w, rank, k, damping=0.5 * k, tol=1e-5, maxiter=20 + k)
    compensated_safe_ratio(op, g, w, order, 0.5, damping=0.1)
    assert len(traces) == first


def test_safe_ratio_is_the_largest_count_with_q_star_within_epsilon():
    h, g, w, order = problem(3)
    g = 0.05 * g  # near a minimum: q* grows from about 0 (0.18, 0.88, 0.90, 0.92, 1.41, ...)
    exact = np.array([by_numpy(h, g, w, order, k)[0] for k in range(ELIGIBLE + 1)])
    epsilon = 1.0
    assert 0 < np.argmin(exact <= epsilon) < ELIGIBLE  # a crossing inside the range
    op = DenseOperator(np.asarray(h, np.float32))
    found = compensated_safe_ratio(op, jnp.asarray(g, jnp.float32),
                                   jnp.asarray(w, jnp.float32), order, epsilon, damping=0.0,
                                   cg_tol=1e-6)
    safe_k = int(np.argmin(exact <= epsilon)) - 1  # the last k before the first violation
    assert found.status == "crossing"
    assert found.removed == safe_k
    assert masks.prune_count(found.ratio, ELIGIBLE) == safe_k
    assert found.num_prunable == ELIGIBLE
    counts = [c.removed for _, c in found.evaluations]
    assert len(found.evaluations) <= math.ceil(math.log2(1e3)) + 1
    assert len(set(counts)) < len(counts)  # tol < 1/D: probes share counts, computed once
    # on the grid of ratios whose removed count is an integer: one probe per count
    grid = count_ratios(ELIGIBLE)
    on_grid = compensated_safe_ratio(op, jnp.asarray(g, jnp.float32),
                                     jnp.asarray(w, jnp.float32), order, epsilon, damping=0.0,
                                     cg_tol=1e-6, grid=grid)
    assert on_grid.removed == safe_k
    assert len(on_grid.evaluations) <= math.ceil(math.log2(ELIGIBLE + 1))
    with pytest.raises(ConfigError):
        compensated_safe_ratio(op, g, w, order, 0.0, damping=0.0)


@pytest.mark.parametrize("crossing", [0.3137, 0.0014, 0.9996, 0.5])
def test_bisection_finds_the_crossing_within_tol(crossing):
    tol = 1e-3
    found = bisect_largest(lambda p: p <= crossing, tol=tol)
    assert found.status == "crossing"
    assert crossing - tol <= found.ratio <= crossing
    assert len(found.evaluations) <= math.ceil(math.log2(1 / tol)) + 2
    ps = [p for p, _ in found.evaluations]
    assert len(set(ps)) == len(ps)
    assert all(ok == (p <= crossing) for p, ok in found.evaluations)


def test_bisection_statuses():
    above = bisect_largest(lambda p: True, tol=1e-2)
    assert above.status == "above" and above.ratio == 1.0
    assert above.evaluations[-1] == (1.0, True)
    assert len(above.evaluations) == math.ceil(math.log2(100)) + 1
    below = bisect_largest(lambda p: False, tol=1e-2)
    assert below.status == "below" and below.ratio == 0.0
    assert not below.evaluations[0][1]
    assert len(below.evaluations) == math.ceil(math.log2(100))
    capped = bisect_largest(lambda p: p < 0.7, 0.2, 0.9, tol=1e-6, max_steps=3)
    assert len(capped.evaluations) == 3 and 0.2 < capped.ratio < 0.7
    with pytest.raises(ConfigError):
        bisect_largest(lambda p: True, 0.5, 0.5)


def test_bisection_on_a_grid_is_exact():
    grid = np.arange(1, 21) / 20
    found = bisect_largest(lambda p: p <= 0.33, grid=grid)
    assert found.status == "crossing" and found.ratio == 0.3
    assert len(found.evaluations) <= math.ceil(math.log2(21))
    assert {p for p, _ in found.evaluations} <= set(grid)
    assert bisect_largest(lambda p: True, grid=grid).status == "above"
    below = bisect_largest(lambda p: False, grid=grid)
    assert below.status == "below" and below.ratio == 0.0


def test_count_ratios_remove_exactly_k():
    for d in [1, 6, 7, 9, 11, 59, 1000, 12347]:
        ratios = count_ratios(d)
        assert np.all(np.diff(ratios) > 0) and ratios[-1] == 1.0
        ks = [masks.prune_count(p, d) for p in ratios]
        assert ks == list(range(1, d + 1))


def test_default_damping():
    assert default_damping(2.0) == pytest.approx(0.02)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError):
            default_damping(bad)
    with pytest.raises(ConfigError):
        removal_rank([0, 0], 3)


def test_a_tiny_network_matches_its_dense_hessian(problem):
    """On the MLP of the core fixtures (all parameters; kernels eligible, biases kept and
    compensating), magnitude order, 30% removed. One batch of all the examples: fewer HVP
    copies to compile than the shared operator's four."""
    loss_fn, params, x, y = problem
    op = HessianOperator(loss_fn, params, batches_of(x, y, x.shape[0]))
    w = op.from_tree(params)
    grad = op.from_tree(jax.grad(loss_fn)(params, x, y))
    eligible = np.flatnonzero(ravel_pytree(jax.tree.map(
        lambda p, f: np.full(np.shape(p), f), params, masks.prunable(params)))[0])
    assert 0 < eligible.size < op.dim
    order = eligible[np.argsort(np.abs(np.asarray(w))[eligible], kind="stable")]
    k = masks.prune_count(0.3, eligible.size)
    h = np.asarray(op.dense(), np.float64)
    h = (h + h.T) / 2
    eig = np.linalg.eigvalsh(h)
    assert eig[0] < 0  # at initialisation: indefinite
    damping = max(default_damping(eig[-1]), 2 * -eig[0])  # the damped system ≻ 0
    got = compensated_increase(op, grad, w, removal_rank(order, op.dim), k, damping=damping,
                               maxiter=300, tol=1e-6)
    want, unc = by_numpy(h, np.asarray(grad, np.float64), np.asarray(w, np.float64), order, k,
                         damping)
    assert abs(got.uncompensated - unc) <= 1e-4 * abs(unc)
    assert abs(got.increase - want) <= 1e-4 * max(abs(want), abs(unc))
    assert got.increase < got.uncompensated
    assert got.cg_residual < 1e-4
