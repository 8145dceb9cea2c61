"""Curvature algorithms on linear operators, each checked against an independent
computation: `numpy.linalg.eigh` of the exact Hessian (float64), and dense matrices with a
chosen spectrum (`DenseOperator`)."""

import numpy as np
import pytest

from lmc.core.curvature import (
    directional_curvature,
    hutchinson_trace,
    hutchpp_trace,
    power_iteration,
    spectral_density,
    top_eigenpairs,
)
from lmc.core.operators import DenseOperator
from lmc.errors import ConfigError

SPECTRUM = np.array([10, 5, 2, 1, 0.5, 0.25, 0.1] + [0] * 12 + [-1.0])  # 9 distinct values
ROTATION = np.linalg.qr(np.random.default_rng(0).normal(size=(20, 20)))[0]


def matrix(A):
    """A symmetric matrix as a float32 operator."""
    return DenseOperator(np.asarray(A, np.float32))


@pytest.fixture(scope="module")
def rotated():
    return matrix((ROTATION * SPECTRUM) @ ROTATION.T)


def assert_same_vectors(a, b):
    """Rows of a and b are the same unit vectors up to sign."""
    cos = np.abs(np.sum(a * b, axis=1)) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.all(cos > 0.999), cos


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


def test_a_matrix_with_a_known_spectrum(rotated):
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


def test_spectral_density_of_a_diagonal_matrix_is_its_spectrum():
    """With Rademacher probes and a diagonal matrix every probe gives the exact spectral
    measure: nodes at the eigenvalues, weights multiplicity / dim, moments tr(Aᵖ) / dim."""
    slq = spectral_density(matrix(np.diag(SPECTRUM)), num_probes=3)
    assert slq.nodes.shape == (3, 20)
    for value in np.unique(SPECTRUM):
        near = np.abs(slq.nodes - value) < 1e-4
        np.testing.assert_allclose((slq.weights * near).sum(axis=1),
                                   np.mean(SPECTRUM == value), atol=1e-5)
    for p in range(4):
        np.testing.assert_allclose((slq.weights * slq.nodes ** p).sum(axis=1),
                                   np.mean(SPECTRUM ** p), rtol=1e-4)
    assert slq.trace() == pytest.approx(SPECTRUM.sum(), rel=1e-5)


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


def test_lanczos_breakdown_keeps_only_the_krylov_space():
    """With fewer distinct eigenvalues than steps the recursion stops; no fake Ritz pairs."""
    negative = top_eigenpairs(matrix(-np.eye(5)), 1)
    assert negative.eigenvalues[0] == pytest.approx(-1.0, rel=1e-5)
    assert np.all(np.isfinite(negative.eigenvectors)) and negative.iterations == 1
    with pytest.raises(ConfigError, match="Krylov space has dimension 1"):
        top_eigenpairs(matrix(2 * np.eye(5)), 2)
    density = spectral_density(matrix(np.diag([3.0, 3.0, 1.0, 1.0])), num_probes=2)
    grid, _ = density.smoothed()
    assert grid.min() > 0.5 and grid.max() < 3.5  # padded zero nodes do not stretch the grid


def test_power_iteration_flag_is_its_stopping_rule():
    result = power_iteration(matrix(np.diag([1.0, 0.9, 0.5, 0.1])), 1)
    assert result.converged.tolist() == [True] and result.iterations < 100


def test_lanczos_driven_from_python_equals_the_compiled_loop():
    """The execution policy's two layouts of Lanczos compute the same thing."""
    from lmc.core.policy import ExecutionPolicy

    A = np.asarray((ROTATION * SPECTRUM) @ ROTATION.T, np.float32)
    driven, looped = (top_eigenpairs(DenseOperator(A, ExecutionPolicy(drive_lanczos=d)), 3)
                      for d in (True, False))
    np.testing.assert_allclose(driven.eigenvalues, looped.eigenvalues, rtol=1e-6)
    assert_same_vectors(driven.eigenvectors, looped.eigenvectors)
