"""The safe-pruning-ratio predictor (Paul et al. 2023, §3.3; Larsen et al. 2022; Zhang et
al. 2024), checked against closed forms on quadratics whose Hessian is known, against numpy
sorting, and on constructed curves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmc.core import prune
from lmc.core.batching import batches_of
from lmc.core.evaluate import cross_entropy
from lmc.core.operators import HessianOperator
from lmc.core.prune_ratio import (
    DEFAULT_GRID,
    gaussian_width_ratio,
    largest_safe_ratio,
    predict_prune_ratio,
    removed_counts,
)
from lmc.errors import ConfigError
from lmc.training.models import build_model, eval_apply, init_model

N = 20  # prunable weights of the quadratic; 1000 / N is an integer, so k/N lies on the grid
BIAS_CURVATURE = 0.3  # a non-prunable leaf, part of the Hessian's space but never removed
W_STAR = np.random.default_rng(0).normal(size=N)
SPECTRUM = np.array([10, 5, 2, 1, 0.5, 0.25, 0.1] + [0] * 12 + [-1.0])
ROTATION = np.linalg.qr(np.random.default_rng(1).normal(size=(N, N)))[0]
SMALL = {"lanczos_steps": 40, "slq_probes": 2, "slq_steps": 40}  # ≥ the dimension: exact


def quadratic(A):
    """(operator, loss_fn) of ½(w−w*)ᵀA(w−w*) + ½c‖b‖², at its stationary point (w*, 0)."""
    A = jnp.asarray(A, jnp.float32)
    w_star = jnp.asarray(W_STAR, jnp.float32)

    def loss_fn(p, x, y):
        d = p["layer"]["kernel"] - w_star
        return 0.5 * d @ A @ d + 0.5 * BIAS_CURVATURE * jnp.sum(p["layer"]["bias"] ** 2)

    params = {"layer": {"kernel": w_star, "bias": jnp.zeros(2)}}
    dummies = (jnp.zeros((1, 1, 1)), jnp.zeros((1, 1), jnp.int32))
    return HessianOperator(loss_fn, params, dummies), loss_fn


def by_hand(A, epsilon):
    """Closed forms at w* (g = 0) for magnitude pruning: Δ_k = −w* on the k smallest |w*|."""
    order = np.argsort(np.abs(W_STAR), kind="stable")
    eig = np.concatenate([np.linalg.eigvalsh(A), [BIAS_CURVATURE] * 2])
    ks = np.arange(N + 1)
    deltas = [np.where(np.isin(np.arange(N), order[:k]), -W_STAR, 0.0) for k in ks]
    r2 = np.array([d @ d for d in deltas])
    q = np.array([0.5 * d @ A @ d for d in deltas])

    def first_violation(ok):  # ok[k] for k = 1..N; if k first fails, (k − 1)/N is safe
        return np.argmin(ok) / N if not ok.all() else DEFAULT_GRID[-1]

    safe_a = first_violation(0.5 * eig.max() * r2[1:] <= epsilon)
    safe_b = first_violation(q[1:] <= epsilon)
    # C: p ≤ mean_i 2ε / (2ε + max(λ_i, 0)·R(p)²), on the grid itself (depends on p, not k)
    k_of_p = np.ceil(np.round(DEFAULT_GRID * N, 6)).astype(int)
    lam = np.maximum(eig, 0)
    p_theory = np.array([np.mean(2 * epsilon / (2 * epsilon + lam * r2[k])) for k in k_of_p])
    ok = DEFAULT_GRID <= p_theory
    safe_c = DEFAULT_GRID[np.argmin(ok) - 1]
    return safe_a, safe_b, safe_c, r2, q, p_theory, eig


@pytest.mark.parametrize("epsilon", [0.1, 0.5])
def test_safe_ratios_of_a_quadratic_match_closed_forms(epsilon):
    A = (ROTATION * SPECTRUM) @ ROTATION.T
    op, loss_fn = quadratic(A)
    pred = predict_prune_ratio(op, loss_fn, prune.scores("magnitude", op.params), epsilon=epsilon,
                               **SMALL)
    safe_a, safe_b, _, r2, q, _, eig = by_hand(A, epsilon)
    k = pred.removed
    np.testing.assert_allclose(pred.radius ** 2, r2[k], rtol=1e-5)
    np.testing.assert_allclose(pred.quadratic, q[k], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.linear, 0, atol=1e-6)  # g = 0 at w*
    np.testing.assert_allclose(pred.rayleigh, 2 * q[k] / r2[k], rtol=1e-4, atol=1e-6)
    assert pred.lambda_max == pytest.approx(eig.max(), rel=1e-5)
    assert pred.num_prunable == N and pred.epsilon == epsilon
    assert 0 < safe_a < safe_b < DEFAULT_GRID[-1]  # the cases are not degenerate
    assert pred.safe.lambda_max.ratio == pytest.approx(safe_a)
    assert pred.safe.quadratic.ratio == pytest.approx(safe_b)
    assert pred.safe.lambda_max.status == pred.safe.quadratic.status == "crossing"
    # refined: the margin is linear between the last safe grid point and the next one
    i = np.searchsorted(pred.grid, safe_a + 1e-9)
    m0, m1 = (epsilon - 0.5 * eig.max() * r2[k[j]] for j in (i - 1, i))
    assert pred.safe.lambda_max.interpolated == pytest.approx(
        safe_a + 0.001 * m0 / (m0 - m1), rel=1e-5)
    assert safe_a < pred.safe.lambda_max.interpolated < safe_a + 0.001


def test_gaussian_width_crossing_of_a_diagonal_quadratic_is_exact():
    """Rademacher SLQ on a diagonal matrix is exact: zᵀf(A)z = Σ f(λ_i) when z_i² = 1."""
    epsilon = 0.5
    op, loss_fn = quadratic(np.diag(SPECTRUM))
    pred = predict_prune_ratio(op, loss_fn, prune.scores("magnitude", op.params), epsilon=epsilon,
                               **SMALL)
    safe_a, safe_b, safe_c, _, _, p_theory, _ = by_hand(np.diag(SPECTRUM), epsilon)
    np.testing.assert_allclose(pred.p_theory, p_theory, rtol=1e-4)  # float32 Lanczos
    assert pred.trace == pytest.approx(SPECTRUM.sum() + 2 * BIAS_CURVATURE, rel=1e-5)
    assert pred.safe.gaussian_width.ratio == pytest.approx(safe_c)
    assert pred.safe.gaussian_width.status == "crossing"
    # the bulk of flat directions makes C the most permissive estimator here
    assert pred.safe.lambda_max.ratio == pytest.approx(safe_a)
    assert pred.safe.quadratic.ratio == pytest.approx(safe_b)
    assert safe_a < safe_b < safe_c


def test_negative_and_zero_eigenvalues_never_limit_the_width():
    radius = np.array([0.0, 1.0, 10.0])
    nodes = np.array([[-2.0, 0.0, 1.0]])  # one probe: a negative, a flat and a steep node
    weights = np.array([[0.25, 0.25, 0.5]])
    p = gaussian_width_ratio(radius, nodes, weights, epsilon=1.0)
    expected = 0.5 + 0.5 * 2 / (2 + radius ** 2)  # the first two nodes count 1 each
    np.testing.assert_allclose(p, expected)
    # at θR² = −2ε an unclipped formula divides by zero; the clipped one does not
    assert np.isfinite(gaussian_width_ratio(np.array([1.0]), np.array([[-2.0]]),
                                            np.array([[1.0]]), 1.0)).all()
    # probes are averaged
    two = gaussian_width_ratio(radius, np.array([[0.0], [1.0]]), np.ones((2, 1)), 1.0)
    np.testing.assert_allclose(two, 0.5 + 0.5 * 2 / (2 + radius ** 2))


def test_largest_safe_ratio_on_constructed_curves():
    grid = np.arange(1, 100) / 100
    clear = largest_safe_ratio(grid, 0.505 - grid)  # holds up to 0.505
    assert clear.ratio == pytest.approx(0.5) and clear.status == "crossing"
    assert clear.interpolated == pytest.approx(0.505)
    # wiggles back above 0 later: the first violation counts
    wiggle = np.where((grid > 0.3) & (grid < 0.4), -1.0, 1.0)
    assert largest_safe_ratio(grid, wiggle).ratio == pytest.approx(0.3)
    assert largest_safe_ratio(grid, np.where(grid < 0.2, 1.0, np.nan)).ratio == pytest.approx(
        0.19)  # NaN is a violation
    everywhere = largest_safe_ratio(grid, np.ones_like(grid))
    assert everywhere == (0.99, 0.99, "above_grid")
    only_first = largest_safe_ratio(grid, 0.015 - grid)
    assert only_first.ratio == pytest.approx(0.01) and only_first.status == "crossing"
    nowhere = largest_safe_ratio(grid, -np.ones_like(grid))
    assert nowhere == (0.0, 0.0, "below_grid")
    # with the margin at p = 0, interpolated from there: 1 − p/0.005 crosses at 0.005
    below = largest_safe_ratio(grid, 1 - grid / 0.005, margin_at_zero=1.0)
    assert below.ratio == 0 and below.interpolated == pytest.approx(0.005)


def test_removal_counts_and_order():
    assert removed_counts(np.array([0.1, 0.3, 0.35, 0.999]), 10).tolist() == [1, 3, 4, 10]


@pytest.fixture(scope="module")
def mlp(mnist1d):
    """A tiny MLP at initialisation on 200 MNIST-1D examples, with a random mask."""
    module = build_model("mlp", 10, widths=(8,))
    params, state = init_model(module, jax.random.key(0), mnist1d.input_shape)
    f = eval_apply(module)
    mask = jax.tree.map(lambda p: np.random.default_rng(p.size).random(p.shape) < 0.7, params)

    def loss_fn(p, x, y):
        return cross_entropy(f(p, state, x), y)

    batches = batches_of(mnist1d.x_train[:200], mnist1d.y_train[:200], 100)
    return HessianOperator(loss_fn, params, batches, mask=mask), loss_fn, params, mask


def test_radius_of_magnitude_pruning_is_the_norm_of_the_removed_weights(mlp):
    op, loss_fn, params, mask = mlp
    grid = np.array([0.05, 0.2, 0.5, 0.8, 0.95])
    pred = predict_prune_ratio(op, loss_fn, prune.scores("magnitude", params), grid=grid,
                               keep_dense=("output",), lanczos_steps=10, slq_probes=1,
                               slq_steps=10)
    # live kernels outside "output", concatenated in tree order; smallest |w| first
    live = [np.asarray(params[k]["kernel"])[np.asarray(mask[k]["kernel"])]
            for k in sorted(params) if k != "output"]
    w = np.concatenate(live).astype(np.float64)
    removed_sq = np.sort(w ** 2, kind="stable")
    counts = np.ceil(grid * w.size).astype(int)
    assert pred.num_prunable == w.size
    np.testing.assert_allclose(pred.radius, np.sqrt(np.cumsum(removed_sq)[counts - 1]),
                               rtol=1e-6)
    # random scores remove about p of the squared norm: a larger radius than magnitude
    rand = predict_prune_ratio(op, loss_fn, prune.scores("random", params, key=jax.random.key(0)),
                               grid=grid, keep_dense=("output",), epsilon=pred.epsilon,
                               lanczos_steps=10, slq_probes=1, slq_steps=10)
    assert np.all(rand.radius >= pred.radius)
    assert np.all(np.isfinite(pred.quadratic)) and np.all(np.isfinite(pred.rayleigh))
    assert pred.epsilon_source.startswith("std of the per-example loss on")
    d = pred.diagnostics
    assert d.curve_matvecs == len(grid) and d.spectrum_matvecs >= 10 + 1 + 10
    assert d.slq_probes == 1 and d.curve_seconds > 0 and d.spectrum_seconds > 0


def test_errors(mlp):
    op, loss_fn, params, _ = mlp
    scores = prune.scores("magnitude", params)
    with pytest.raises(ConfigError, match=r"pruning ratios must lie in \(0, 1\); got 1"):
        predict_prune_ratio(op, loss_fn, scores, grid=[0.5, 1.0])
    with pytest.raises(ConfigError, match="got 0"):
        predict_prune_ratio(op, loss_fn, scores, grid=[0.0, 0.5])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="epsilon must be positive"):
            predict_prune_ratio(op, loss_fn, scores, epsilon=bad)
    with pytest.raises(ConfigError, match="no prunable weights"):
        predict_prune_ratio(op, loss_fn, scores, keep_dense=("dense0", "output"), epsilon=1.0)
    with pytest.raises(ConfigError, match="unknown layer.*valid layers: dense0, output"):
        predict_prune_ratio(op, loss_fn, scores, keep_dense="conv", epsilon=1.0)
    with pytest.raises(ConfigError, match="shaped like the parameters"):
        predict_prune_ratio(op, loss_fn, {"output": scores["output"]}, epsilon=1.0)
    # parameters without any 'kernel' leaf
    w = {"w": jnp.ones(3)}
    op_w = HessianOperator(lambda p, x, y: jnp.sum(p["w"] ** 4), w,
                           (jnp.zeros((1, 2, 1)), jnp.zeros((1, 2), jnp.int32)))
    with pytest.raises(ConfigError, match="no prunable weights"):
        predict_prune_ratio(op_w, lambda p, x, y: jnp.sum(p["w"] ** 4), w, epsilon=1.0)
    # the default ε: every example has the same loss, so its std is 0
    with pytest.raises(ConfigError, match="std of the per-example loss.*give epsilon"):
        predict_prune_ratio(op_w, lambda p, x, y: jnp.sum(p["w"] ** 4), w)
