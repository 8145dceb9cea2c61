"""Hessian measurements, each checked against an independent computation: the exact
Hessian by `jax.hessian` (float64), finite differences of gradients, `numpy.linalg.eigh`,
and quadratics with a chosen spectrum."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from lmc.errors import ConfigError
from lmc.evaluate import cross_entropy
from lmc.hessian import (
    HessianOperator,
    batches_of,
    data_parallel,
    directional_curvature,
    hutchinson_trace,
    hutchpp_trace,
    make_hvp,
    power_iteration,
    spectral_density,
    top_eigenpairs,
)
from lmc.models import build_model, init_model, prunable
from lmc.train import eval_apply

N, BATCH = 400, 100  # examples, batch size: 4 batches
WIDTH, SEED = 4, 1  # 214 parameters; top eigenvalues 1.22, 1.01, 0.82, 0.66 (gaps ≈ 20%)


@pytest.fixture(scope="module")
def problem(mnist1d):
    """(loss_fn, params, x, y) of a tiny MLP at initialisation on 400 MNIST-1D examples."""
    module = build_model("mlp", 10, widths=(WIDTH,))
    params, state = init_model(module, jax.random.key(SEED), mnist1d.input_shape)
    f = eval_apply(module)
    return (lambda p, x, y: cross_entropy(f(p, state, x), y), params,
            mnist1d.x_train[:N], mnist1d.y_train[:N])


def exact_hessian(loss_fn, params, x, y):
    """The Hessian of the mean loss on the raveled parameters, in float64."""
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params))
        x = jnp.asarray(x, jnp.float64)
        return np.asarray(jax.jit(jax.hessian(lambda w: loss_fn(unravel(w), x, y)))(flat))


@pytest.fixture(scope="module")
def exact(problem):
    return exact_hessian(*problem)


@pytest.fixture(scope="module")
def op(problem):
    loss_fn, params, x, y = problem
    return HessianOperator(loss_fn, params, batches_of(x, y, BATCH))


@pytest.fixture(scope="module")
def dense(op):
    return op.dense()


def quadratic(A):
    """The operator of ½ wᵀAw (whose Hessian is A), on dummy data."""
    A = jnp.asarray(A, jnp.float32)
    batches = (jnp.zeros((1, 1)), jnp.zeros((1, 1), jnp.int32))
    return HessianOperator(lambda p, x, y: 0.5 * p["w"] @ A @ p["w"],
                           {"w": jnp.zeros(A.shape[0])}, batches)


SPECTRUM = np.array([10, 5, 2, 1, 0.5, 0.25, 0.1] + [0] * 12 + [-1.0])  # 9 distinct values
ROTATION = np.linalg.qr(np.random.default_rng(0).normal(size=(20, 20)))[0]


@pytest.fixture(scope="module")
def rotated():
    return quadratic((ROTATION * SPECTRUM) @ ROTATION.T)


def assert_same_vectors(a, b):
    """Rows of a and b are the same unit vectors up to sign."""
    cos = np.abs(np.sum(a * b, axis=1)) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.all(cos > 0.999), cos


def test_hvp_is_the_exact_hessian(op, dense, exact):
    assert op.dim == exact.shape[0] == 214
    np.testing.assert_allclose(dense, exact, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dense, dense.T, atol=1e-6)


def test_hvp_matches_finite_differences_of_gradients(problem, op):
    """(∇L(w+εv) − ∇L(w−εv)) / 2ε in float64, against the float32 HVP."""
    loss_fn, params, x, y = problem
    v = np.random.default_rng(1).normal(size=op.dim)
    hv = np.asarray(op.matvec(jnp.asarray(v, jnp.float32)))
    eps = 1e-5
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params))
        grad = jax.jit(jax.grad(lambda w: loss_fn(unravel(w), jnp.asarray(x, jnp.float64), y)))
        fd = np.asarray(grad(flat + eps * v) - grad(flat - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv, fd, rtol=1e-4, atol=1e-5 * np.abs(fd).max())


def test_batches_accumulate_to_the_full_batch(problem, op, dense):
    loss_fn, params, x, y = problem
    xs, ys = batches_of(x, y, BATCH)
    assert xs.shape == (4, BATCH, *x.shape[1:]) and ys.shape == (4, BATCH)
    whole = HessianOperator(loss_fn, params, batches_of(x, y, N))
    vs = np.random.default_rng(4).normal(size=(3, op.dim)).astype(np.float32)
    np.testing.assert_allclose(whole.matmat(vs), vs @ dense.T, rtol=1e-4, atol=1e-6)
    # the batch loop scanned (as on accelerators) equals it unrolled (the CPU default)
    v = op.to_tree(jnp.asarray(vs[0]))
    scanned, unrolled = (jax.jit(make_hvp(loss_fn, unroll=u))(params, (xs, ys), v)
                         for u in (False, True))
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(unrolled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert batches_of(x[:250], y[:250], BATCH)[0].shape[0] == 2  # the incomplete batch dropped
    with pytest.raises(ConfigError, match="larger than the 400 examples"):
        batches_of(x, y, 401)


def test_top_eigenpairs_match_eigh(op, exact):
    values, vectors = np.linalg.eigh(exact)
    values, vectors = values[::-1], vectors[:, ::-1].T
    lanczos = top_eigenpairs(op, 3, steps=40)
    np.testing.assert_allclose(lanczos.eigenvalues, values[:3], rtol=1e-4)
    assert_same_vectors(lanczos.eigenvectors, vectors[:3])
    assert np.all(lanczos.residuals < 1e-4 * values[:3]) and lanczos.converged.all()
    assert lanczos.iterations == 40 and lanczos.num_matvecs == 43
    power = power_iteration(op, 2, max_iterations=300, tol=1e-7)
    np.testing.assert_allclose(power.eigenvalues, values[:2], rtol=1e-4)
    assert_same_vectors(power.eigenvectors, vectors[:2])
    assert np.all(power.residuals < 1e-2 * values[:2]) and power.iterations < 300 * 2


def test_trace_estimators_and_spectral_density(op, exact):
    trace, spectrum = np.trace(exact), np.linalg.eigvalsh(exact)
    # Probes in batches of 33, the shape Hutch++ uses too: one compiled program.
    hutchinson = hutchinson_trace(op, 396, probe_batch=33)
    assert hutchinson.num_matvecs == 396
    assert abs(hutchinson.trace - trace) < 3 * hutchinson.standard_error < 0.05 * trace
    early = hutchinson_trace(op, 990, probe_batch=33, tol=0.02)
    assert early.num_matvecs < 990 and early.standard_error <= 0.02 * abs(early.trace)
    hutchpp = hutchpp_trace(op, 99)
    assert hutchpp.num_matvecs == 99
    assert abs(hutchpp.trace - trace) < 3 * hutchpp.standard_error < 0.05 * trace
    offdiagonal = np.sum(exact ** 2) - np.sum(np.diag(exact) ** 2)  # Var zᵀHz = 2 × this
    assert hutchpp.standard_error < 0.75 * np.sqrt(2 * offdiagonal / 99)  # beats Hutchinson

    slq = spectral_density(op, num_probes=64, steps=30)
    assert slq.nodes.shape == slq.weights.shape == (64, 30) and slq.dim == op.dim
    np.testing.assert_allclose(slq.weights.sum(axis=1), 1, rtol=1e-5)
    assert spectrum[0] - 1e-4 <= slq.nodes.min() and slq.nodes.max() <= spectrum[-1] + 1e-4
    np.testing.assert_allclose(slq.nodes.max(axis=1), spectrum[-1], rtol=1e-4)
    assert abs(slq.trace() - trace) < 0.1 * trace
    grid, density = slq.smoothed()
    assert np.trapezoid(density, grid) == pytest.approx(1, abs=1e-3)
    sigma = np.sqrt(1e-5 * (slq.nodes.max() - slq.nodes.min()))
    inside = (grid >= spectrum[0] - 5 * sigma) & (grid <= spectrum[-1] + 5 * sigma)
    assert np.trapezoid(density * inside, grid) > 0.999


def test_quadratic_with_a_known_spectrum(rotated):
    vectors = ROTATION[:, :3].T  # eigenvectors of 10, 5, 2
    lanczos = top_eigenpairs(rotated, 3)
    np.testing.assert_allclose(lanczos.eigenvalues, [10, 5, 2], rtol=1e-5)
    assert_same_vectors(lanczos.eigenvectors, vectors)
    assert lanczos.converged.all() and lanczos.iterations == 20  # steps capped at the dimension
    power = power_iteration(rotated, 2, max_iterations=200, tol=1e-7)
    np.testing.assert_allclose(power.eigenvalues, [10, 5], rtol=1e-5)
    assert_same_vectors(power.eigenvectors, vectors[:2])

    trace = SPECTRUM.sum()
    hutchinson = hutchinson_trace(rotated, 400, probe_batch=100)
    assert abs(hutchinson.trace - trace) < 3 * hutchinson.standard_error
    # Rank 8: a sketch of 10 captures the whole range, so Hutch++ is exact where
    # Hutchinson with as many matvecs is not.
    hutchpp = hutchpp_trace(rotated, 30)
    assert hutchpp.trace == pytest.approx(trace, rel=1e-5) and hutchpp.standard_error < 1e-4
    assert hutchinson_trace(rotated, 30, probe_batch=30).standard_error > 0.5
    slq = spectral_density(rotated, num_probes=32)
    per_probe = slq.dim * np.sum(slq.weights * slq.nodes, axis=1)  # zᵀAz of each probe
    assert abs(slq.trace() - trace) < 3 * per_probe.std(ddof=1) / np.sqrt(per_probe.size)
    np.testing.assert_allclose(np.sort(slq.nodes[0])[[0, -1]], [-1, 10], rtol=1e-4)


def test_spectral_density_of_a_diagonal_quadratic_is_its_spectrum():
    """With Rademacher probes and a diagonal matrix every probe gives the exact spectral
    measure: nodes at the eigenvalues, weights multiplicity / dim, moments tr(Aᵖ) / dim."""
    slq = spectral_density(quadratic(np.diag(SPECTRUM)), num_probes=3)
    assert slq.nodes.shape == (3, 20)
    for value in np.unique(SPECTRUM):
        near = np.abs(slq.nodes - value) < 1e-4
        np.testing.assert_allclose((slq.weights * near).sum(axis=1),
                                   np.mean(SPECTRUM == value), atol=1e-5)
    for p in range(4):
        np.testing.assert_allclose((slq.weights * slq.nodes ** p).sum(axis=1),
                                   np.mean(SPECTRUM ** p), rtol=1e-4)
    assert slq.trace() == pytest.approx(SPECTRUM.sum(), rel=1e-5)


def test_masked_and_block_hessians_are_submatrices(problem, exact):
    """The Hessian at w restricted to the live weights (pruned weights need not be zero)."""
    loss_fn, params, x, y = problem
    rng = np.random.default_rng(2)
    mask = jax.tree.map(lambda p, k: rng.random(p.shape) < 0.5 if k else np.ones(p.shape, bool),
                        params, prunable(params))
    live = np.flatnonzero(ravel_pytree(mask)[0])
    op = HessianOperator(loss_fn, params, batches_of(x, y, BATCH), mask=mask)
    assert op.dim == sum(int(np.sum(m)) for m in jax.tree.leaves(mask)) == live.size < 214
    sub = exact[np.ix_(live, live)]
    np.testing.assert_allclose(op.dense(), sub, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(top_eigenpairs(op, 3, steps=40).eigenvalues,
                               np.linalg.eigvalsh(sub)[::-1][:3], rtol=1e-4)
    v = rng.normal(size=op.dim)
    tree = op.to_tree(v)
    assert not any(np.any(t[~m]) for t, m in zip(jax.tree.leaves(tree), jax.tree.leaves(mask),
                                                 strict=True))
    np.testing.assert_allclose(op.from_tree(tree), v, rtol=1e-6)

    block = HessianOperator(loss_fn, params, batches_of(x, y, BATCH), block=["output"])
    output = jax.tree_util.tree_map_with_path(
        lambda path, p: np.full(p.shape, path[0].key == "output"), params)
    index = np.flatnonzero(ravel_pytree(output)[0])
    assert block.dim == index.size == 4 * 10 + 10
    np.testing.assert_allclose(block.dense(), exact[np.ix_(index, index)], rtol=1e-4, atol=1e-6)


def test_subspace_errors(problem):
    loss_fn, params, x, y = problem
    batches = batches_of(x, y, N)
    with pytest.raises(ConfigError, match="unknown block.*nope.*valid blocks: dense0, output"):
        HessianOperator(loss_fn, params, batches, block=["nope"])
    with pytest.raises(ConfigError, match="empty"):
        HessianOperator(loss_fn, params, batches,
                        mask=jax.tree.map(lambda p: np.zeros(p.shape, bool), params))


def test_directional_curvature(op, exact):
    v = np.random.default_rng(3).normal(size=op.dim)
    assert directional_curvature(op, v) == pytest.approx(v @ exact @ v / (v @ v), rel=1e-4)
    u = np.linalg.eigh(exact)[1][:, -1]
    assert directional_curvature(op, u) == pytest.approx(np.linalg.eigvalsh(exact)[-1], rel=1e-4)


def test_reproducible_from_a_seed(op, rotated):
    a, b = hutchinson_trace(op, 33, probe_batch=33), hutchinson_trace(op, 33, probe_batch=33)
    assert a == b
    assert hutchinson_trace(op, 33, probe_batch=33, seed=1).trace != a.trace
    assert hutchpp_trace(op, 99) == hutchpp_trace(op, 99)
    first, again = top_eigenpairs(rotated, 2, seed=5), top_eigenpairs(rotated, 2, seed=5)
    assert np.array_equal(first.eigenvalues, again.eigenvalues)
    assert np.array_equal(first.eigenvectors, again.eigenvectors)


def test_data_parallel_hvp_over_four_devices(tmp_path, data_dir, problem, op):
    """Batches split over 4 simulated CPU devices give the single-device HVP."""
    script = textwrap.dedent(f"""
        import json, jax, numpy as np
        from lmc.data import load_dataset
        from lmc.evaluate import cross_entropy
        from lmc.hessian import HessianOperator, batches_of, data_parallel
        from lmc.models import build_model, init_model
        from lmc.train import eval_apply
        ds = load_dataset("mnist1d", {str(data_dir)!r})
        module = build_model("mlp", 10, widths=({WIDTH},))
        params, state = init_model(module, jax.random.key({SEED}), ds.input_shape)
        f = eval_apply(module)
        loss_fn = lambda p, x, y: cross_entropy(f(p, state, x), y)
        batches = batches_of(ds.x_train[:{N}], ds.y_train[:{N}], {BATCH})
        (xs, _), _ = data_parallel(batches, params)
        op = HessianOperator(loss_fn, params, batches)
        v = jax.random.normal(jax.random.key(7), (op.dim,))
        np.save({str(tmp_path / "hv.npy")!r}, np.asarray(op.matvec(v)))
        print(json.dumps({{"devices": jax.device_count(),
                           "batches": len(xs.sharding.device_set),
                           "shard": list(xs.addressable_shards[0].data.shape[:2]),
                           "params": len(op.params["output"]["kernel"].sharding.device_set)}}))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"devices": 4, "batches": 4, "shard": [4, BATCH // 4], "params": 4}
    _, params, x, y = problem
    batches = batches_of(x, y, BATCH)
    assert data_parallel(batches, params)[0] is batches  # one device: batches unchanged
    v = jax.random.normal(jax.random.key(7), (op.dim,))
    np.testing.assert_allclose(np.load(tmp_path / "hv.npy"), op.matvec(v), rtol=1e-5, atol=1e-7)


def test_lanczos_breakdown_keeps_only_the_krylov_space():
    """With fewer distinct eigenvalues than steps the recursion stops; no fake Ritz pairs."""
    negative = top_eigenpairs(quadratic(-np.eye(5)), 1)
    assert negative.eigenvalues[0] == pytest.approx(-1.0, rel=1e-5)
    assert np.all(np.isfinite(negative.eigenvectors)) and negative.iterations == 1
    with pytest.raises(ConfigError, match="Krylov space has dimension 1"):
        top_eigenpairs(quadratic(2 * np.eye(5)), 2)
    density = spectral_density(quadratic(np.diag([3.0, 3.0, 1.0, 1.0])), num_probes=2)
    grid, _ = density.smoothed()
    assert grid.min() > 0.5 and grid.max() < 3.5  # padded zero nodes do not stretch the grid


def test_power_iteration_flag_is_its_stopping_rule():
    result = power_iteration(quadratic(np.diag([1.0, 0.9, 0.5, 0.1])), 1)
    assert result.converged.tolist() == [True] and result.iterations < 100
