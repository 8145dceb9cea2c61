"""The safe-pruning-ratio predictor (Paul et al. 2023, §3.3; Larsen et al. 2022; Zhang et
al. 2024), checked against closed forms on quadratics whose Hessian is known, against numpy
sorting, and on constructed curves."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from lmc.core import masks, prune
from lmc.core.batching import batches_of
from lmc.core.curvature import _rademacher
from lmc.core.evaluate import cross_entropy
from lmc.core.operators import HessianOperator, StatefulLoss
from lmc.core.prune_ratio import (
    DEFAULT_GRID,
    EPSILONS,
    curvature_masses,
    epsilon_of,
    gaussian_width_ratio,
    hessian_spectrum,
    largest_safe_ratio,
    mean_gradient,
    per_example_losses,
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


def quadratic(A, basis="all"):
    """(operator, loss_fn) of ½(w−w*)ᵀA(w−w*) + ½c‖b‖², at its stationary point (w*, 0);
    basis "prunable": the operator on the kernel only."""
    A = jnp.asarray(A, jnp.float32)
    w_star = jnp.asarray(W_STAR, jnp.float32)

    def loss_fn(p, x, y):
        d = p["layer"]["kernel"] - w_star
        return 0.5 * d @ A @ d + 0.5 * BIAS_CURVATURE * jnp.sum(p["layer"]["bias"] ** 2)

    params = {"layer": {"kernel": w_star, "bias": jnp.zeros(2)}}
    dummies = (jnp.zeros((1, 1, 1)), jnp.zeros((1, 1), jnp.int32))
    select = masks.prunable(params) if basis == "prunable" else None
    return HessianOperator(loss_fn, params, dummies, select=select), loss_fn


def by_hand(A, epsilon, basis="all", eigenvalues="abs"):
    """Closed forms at w* (g = 0) for magnitude pruning: Δ_k = −w* on the k smallest |w*|."""
    order = np.argsort(np.abs(W_STAR), kind="stable")
    eig = np.linalg.eigvalsh(A)
    if basis == "all":  # the bias directions enter C's mean over the spectrum
        eig = np.concatenate([eig, [BIAS_CURVATURE] * 2])
    ks = np.arange(N + 1)
    deltas = [np.where(np.isin(np.arange(N), order[:k]), -W_STAR, 0.0) for k in ks]
    r2 = np.array([d @ d for d in deltas])
    q = np.array([0.5 * d @ A @ d for d in deltas])

    def first_violation(ok):  # ok[k] for k = 1..N; if k first fails, (k − 1)/N is safe
        return np.argmin(ok) / N if not ok.all() else DEFAULT_GRID[-1]

    safe_a = first_violation(0.5 * eig.max() * r2[1:] <= epsilon)
    safe_b = first_violation(q[1:] <= epsilon)
    # C: p ≤ mean_i 2ε / (2ε + f(λ_i)·R(p)²), on the grid itself (depends on p, not k)
    k_of_p = np.ceil(np.round(DEFAULT_GRID * N, 6)).astype(int)
    lam = np.abs(eig) if eigenvalues == "abs" else np.maximum(eig, 0)
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


@pytest.mark.parametrize("basis", ["prunable", "all"])
@pytest.mark.parametrize("eigenvalues", ["abs", "clip"])
def test_gaussian_width_crossing_of_a_diagonal_quadratic_is_exact(basis, eigenvalues):
    """Rademacher SLQ on a diagonal matrix is exact: zᵀf(A)z = Σ f(λ_i) when z_i² = 1."""
    epsilon = 0.5
    op, loss_fn = quadratic(np.diag(SPECTRUM), basis)
    pred = predict_prune_ratio(op, loss_fn, prune.scores("magnitude", op.params), epsilon=epsilon,
                               eigenvalues=eigenvalues, **SMALL)
    safe_a, safe_b, safe_c, _, _, p_theory, eig = by_hand(np.diag(SPECTRUM), epsilon, basis,
                                                          eigenvalues)
    dim = N if basis == "prunable" else N + 2
    assert op.dim == pred.dim == eig.size == dim and pred.num_prunable == N
    assert pred.basis == basis and pred.eigenvalues == eigenvalues
    np.testing.assert_allclose(pred.p_theory, p_theory, rtol=1e-4)  # float32 Lanczos
    assert pred.trace == pytest.approx(eig.sum(), rel=1e-5)
    # 12 of SPECTRUM's eigenvalues are 0, one is −1: masses over the operator's dimension
    assert pred.zero_curvature_mass == pytest.approx(12 / dim, rel=1e-5)
    assert pred.negative_mass == pytest.approx(1 / dim, rel=1e-5)
    assert pred.safe.gaussian_width.ratio == pytest.approx(safe_c)
    assert pred.safe.gaussian_width.status == "crossing"
    # the bulk of flat directions makes C the most permissive estimator here
    assert pred.safe.lambda_max.ratio == pytest.approx(safe_a)
    assert pred.safe.quadratic.ratio == pytest.approx(safe_b)
    assert safe_a < safe_b < safe_c


def test_abs_and_clip_differ_by_the_negative_eigenvalue_only():
    """SPECTRUM has one eigenvalue −1: clipped it counts 1 at every R, with |λ| it counts
    2ε/(2ε + R²), so p_theory differs by exactly (1 − 2ε/(2ε + R²))/D, and C with |λ| is
    the stricter (a smaller safe ratio)."""
    epsilon = 0.5
    op, loss_fn = quadratic(np.diag(SPECTRUM), "prunable")
    scores = prune.scores("magnitude", op.params)
    spectrum = hessian_spectrum(op, lanczos_steps=40, slq_probes=2, slq_steps=40)
    pred = {e: predict_prune_ratio(op, loss_fn, scores, epsilon=epsilon, eigenvalues=e,
                                   spectrum=spectrum)
            for e in ("abs", "clip")}
    r2 = pred["abs"].radius ** 2
    np.testing.assert_allclose(pred["clip"].p_theory - pred["abs"].p_theory,
                               (1 - 2 * epsilon / (2 * epsilon + r2)) / N, rtol=1e-4, atol=1e-7)
    assert pred["abs"].safe.gaussian_width.ratio < pred["clip"].safe.gaussian_width.ratio
    # A and B do not depend on the choice
    assert pred["abs"].safe[:2] == pred["clip"].safe[:2]


def test_negative_and_zero_eigenvalues_in_the_width():
    radius = np.array([0.0, 1.0, 10.0])
    nodes = np.array([[-2.0, 0.0, 1.0]])  # one probe: a negative, a flat and a steep node
    weights = np.array([[0.25, 0.25, 0.5]])
    # clipped: the first two nodes count 1 each
    clip = gaussian_width_ratio(radius, nodes, weights, epsilon=1.0, eigenvalues="clip")
    np.testing.assert_allclose(clip, 0.5 + 0.5 * 2 / (2 + radius ** 2))
    # |λ|: the negative node is as steep as λ = 2
    absolute = gaussian_width_ratio(radius, nodes, weights, epsilon=1.0)
    np.testing.assert_allclose(absolute, 0.25 * 2 / (2 + 2 * radius ** 2) + 0.25
                               + 0.5 * 2 / (2 + radius ** 2))
    # at θR² = −2ε a signed formula divides by zero; neither choice does
    for e in ("abs", "clip"):
        assert np.isfinite(gaussian_width_ratio(np.array([1.0]), np.array([[-2.0]]),
                                                np.array([[1.0]]), 1.0, e)).all()
    # probes are averaged
    two = gaussian_width_ratio(radius, np.array([[0.0], [1.0]]), np.ones((2, 1)), 1.0)
    np.testing.assert_allclose(two, 0.5 + 0.5 * 2 / (2 + radius ** 2))
    with pytest.raises(ConfigError, match="valid eigenvalue treatments: abs, clip"):
        gaussian_width_ratio(radius, nodes, weights, 1.0, "signed")


def test_zero_curvature_and_negative_mass_of_a_constructed_spectrum():
    # two probes; λ_max 10: |θ| ≤ 0.01 is zero curvature, θ < −0.01 negative
    nodes = np.array([[-3.0, -0.005, 0.0, 0.008, 10.0],
                      [-0.02, 0.0, 0.5, 2.0, 9.0]])
    weights = np.array([[0.1, 0.2, 0.3, 0.1, 0.3],
                        [0.4, 0.2, 0.2, 0.1, 0.1]])
    m = curvature_masses(nodes, weights, lambda_max=10.0)
    assert m.zero == pytest.approx((0.2 + 0.3 + 0.1 + 0.2) / 2)
    assert m.negative == pytest.approx((0.1 + 0.4) / 2)
    # the scale is the largest |θ| when λ_max is smaller (here: an all-negative spectrum)
    m = curvature_masses(np.array([[-100.0, -0.05, -1.0]]), np.array([[0.2, 0.3, 0.5]]), -1.0)
    assert m.zero == pytest.approx(0.3) and m.negative == pytest.approx(0.7)


def test_gaussian_width_by_slq_matches_the_exact_eigendecomposition(mnist1d):
    """C from SLQ (steps = dim) against the exact spectrum of a 4-6-3 MLP's Hessian on its
    42 prunable weights: per probe z the quadrature is exact, Σ τ_j f(θ_j) = zᵀf(H)z/‖z‖²
    with f(λ) = 2ε/(2ε + |λ|R²); averaged over the probes it estimates mean_i f(λ_i)
    within a few of its standard errors (Rademacher: Var zᵀMz = 2 Σ_{i≠j} M_ij²)."""
    module = build_model("mlp", 3, widths=(6,))
    params, state = init_model(module, jax.random.key(3), (4,))
    f = eval_apply(module)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)

    def loss_fn(p, x, y):
        return cross_entropy(f(p, state, x), y)

    op = HessianOperator(loss_fn, params, batches_of(x, y, 32), select=masks.prunable(params))
    assert op.dim == 4 * 6 + 6 * 3
    eig, vec = np.linalg.eigh(op.dense().astype(np.float64))
    assert eig.min() < 0 < eig.max()  # an indefinite Hessian: |λ| matters
    probes, epsilon = 64, 0.01
    pred = predict_prune_ratio(op, loss_fn, prune.scores("magnitude", params), epsilon=epsilon,
                               grid=np.arange(1, 20) / 20, lanczos_steps=op.dim,
                               slq_probes=probes, slq_steps=op.dim)
    z = np.asarray(_rademacher(jax.random.key(0), (probes, op.dim), jnp.float32), np.float64)
    zu2 = (z @ vec) ** 2 / op.dim  # (zᵀu_i)²/‖z‖²
    for r, p in zip(pred.radius, pred.p_theory, strict=True):
        fl = 2 * epsilon / (2 * epsilon + np.abs(eig) * r ** 2)
        assert p == pytest.approx(np.mean(zu2 @ fl), rel=1e-3)  # the quadrature identity
        F = (vec * fl) @ vec.T
        off = F - np.diag(np.diag(F))
        se = np.sqrt(2 * np.sum(off ** 2) / probes) / op.dim
        assert abs(p - fl.mean()) <= 4 * se + 1e-6  # the trace it estimates
    assert pred.lambda_max == pytest.approx(eig.max(), rel=1e-4)


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
    assert pred.epsilon_source == "minibatch_std" and pred.basis == "all"
    d = pred.diagnostics
    assert d.curve_matvecs == len(grid) and d.spectrum_matvecs >= 10 + 1 + 10
    assert d.slq_probes == 1 and d.curve_seconds > 0 and d.spectrum_seconds > 0


def test_epsilon_choices(mlp):
    """minibatch_std: the sample std of the 2 batch-mean losses (numpy, from the
    per-example losses); example_std: the std of the per-example losses."""
    op, loss_fn, params, _ = mlp
    per_example = per_example_losses(loss_fn, params, op.batches).astype(np.float64)
    assert op.batches[0].shape[:2] == (2, 100) and per_example.shape == (200,)
    by_batch = per_example.reshape(2, 100).mean(axis=1)
    value, source, detail = epsilon_of("minibatch_std", loss_fn, params, op.batches)
    assert value == pytest.approx(np.std(by_batch, ddof=1), rel=1e-5)
    assert source == "minibatch_std" and "2 batches of 100 examples" in detail
    assert epsilon_of(None, loss_fn, params, op.batches)[:2] == (value, source)  # the default
    value, source, _ = epsilon_of("example_std", loss_fn, params, op.batches)
    assert value == pytest.approx(np.std(per_example), rel=1e-5) and source == "example_std"
    assert epsilon_of(0.25, loss_fn, params, op.batches) == (0.25, "given", "given")
    assert EPSILONS == ("minibatch_std", "example_std")
    with pytest.raises(ConfigError, match="valid epsilons.*example_std, minibatch_std"):
        epsilon_of("batch_std", loss_fn, params, op.batches)
    one = (op.batches[0][:1], op.batches[1][:1])
    with pytest.raises(ConfigError, match="needs at least 2 batches, the operator has 1"):
        epsilon_of("minibatch_std", loss_fn, params, one)


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
    # a measured ε: every example (and batch) has the same loss, so its std is 0
    with pytest.raises(ConfigError, match="std of the per-example loss.*give epsilon"):
        predict_prune_ratio(op_w, lambda p, x, y: jnp.sum(p["w"] ** 4), w, epsilon="example_std")
    with pytest.raises(ConfigError, match="needs at least 2 batches"):
        predict_prune_ratio(op_w, lambda p, x, y: jnp.sum(p["w"] ** 4), w)
    with pytest.raises(ConfigError, match="valid eigenvalue treatments"):
        predict_prune_ratio(op, loss_fn, scores, epsilon=1.0, eigenvalues="signed")


# ------------------------------------------- one compilation per network shape (item 8)

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compilations():
    """The names of the programs XLA compiles inside the block (jax.monitoring)."""
    names = []

    def listen(event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            name = str(kwargs.get("fun_name"))
            names.append(name.removeprefix("jit(").removesuffix(")"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def test_a_second_checkpoint_of_the_network_reuses_every_compiled_program(mnist1d):
    """Two checkpoints of one MLP (other initialisation, other mask, other live count,
    the state an operand): the second prediction traces the loss not once (no HVP,
    Lanczos, SLQ, curvature, compensation, gradient or loss program is rebuilt) and
    compiles none of those programs; the first does."""
    module = build_model("mlp", 10, widths=(8,))
    f = eval_apply(module)
    traces = []

    def fn(p, state, x, y):
        traces.append(1)  # Python runs only when JAX traces
        return cross_entropy(f(p, state, x), y)

    batches = batches_of(mnist1d.x_train[:200], mnist1d.y_train[:200], 100)

    def predict(seed, density):
        params, state = init_model(module, jax.random.key(seed), mnist1d.input_shape)
        rng = np.random.default_rng(seed)
        mask = jax.tree.map(lambda p: rng.random(p.shape) < density, params)
        loss = StatefulLoss(fn, state)
        op = HessianOperator(loss, params, batches, mask=mask,
                             select=masks.prunable(params))
        pred = predict_prune_ratio(op, loss, prune.scores("magnitude", params),
                                   grid=np.arange(1, 20) / 20, lanczos_steps=12,
                                   slq_probes=2, slq_steps=12)
        return op, pred

    with compilations() as first_names:
        op_a, _ = predict(0, 0.8)
    first = len(traces)
    with compilations() as second_names:
        op_b, pred = predict(1, 0.5)
    assert op_a.dim != op_b.dim and op_a.function is op_b.function
    assert first > 0 and len(traces) == first, "the second prediction traced the loss again"
    # the HVP (matvec), Lanczos (driven: init and step "one"; or in a loop), the curvature
    # and compensation programs ("run"), the gradient and the batch losses ("fn")
    hvp_based = {"hvp", "lanczos", "_lanczos_init", "one", "run", "grad", "fn"}
    assert hvp_based & set(first_names)
    assert not hvp_based & set(second_names), second_names
    assert len(second_names) < len(first_names) // 2
    assert np.isfinite(pred.lambda_max) and pred.dim == op_b.dim == pred.num_prunable


def test_masked_prediction_matches_the_restricted_dense_hessian(mlp, mnist1d):
    """λ_max, SLQ (nodes and weights, steps = dim: the quadrature is exact per probe), the
    radius and B curve, and D's compensated increases of a masked operator (full vectors,
    the support an operand) against the exact float64 Hessian restricted to the live
    coordinates with numpy, on the probes of a space of dimension dim."""
    from .conftest import exact_hessian

    op, loss_fn, params, mask = mlp
    x, y = mnist1d.x_train[:200], mnist1d.y_train[:200]
    live = np.flatnonzero(np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask)]))
    assert op.dim == live.size < op.size
    full = exact_hessian(loss_fn, params, x, y)
    h = full[np.ix_(live, live)]
    eig, vec = np.linalg.eigh(h)
    epsilon, probes, grid = 0.01, 3, np.arange(1, 20) / 20
    pred = predict_prune_ratio(op, loss_fn, prune.scores("magnitude", params), grid=grid,
                               epsilon=epsilon, lanczos_steps=op.dim, slq_probes=probes,
                               slq_steps=op.dim)
    spectrum = hessian_spectrum(op, lanczos_steps=op.dim, slq_probes=probes,
                                slq_steps=op.dim)
    assert pred.lambda_max == pytest.approx(eig.max(), rel=1e-4)
    assert pred.dim == op.dim and pred.basis == "all"
    # SLQ's measure is that of the restricted matrix: Σ τ θ^m = zᵀ hᵐ z / ‖z‖², no zero
    # eigenvalues from the dead coordinates
    z = np.asarray(_rademacher(jax.random.key(0), (probes, op.dim), jnp.float32), np.float64)
    zu2 = (z @ vec) ** 2 / op.dim
    scale = np.abs(eig).max()
    for m in range(4):
        np.testing.assert_allclose(np.sum(spectrum.weights * spectrum.nodes ** m, axis=1),
                                   zu2 @ eig ** m, rtol=1e-3, atol=1e-4 * scale ** m)
    for r, p in zip(pred.radius, pred.p_theory, strict=True):
        fl = 2 * epsilon / (2 * epsilon + np.abs(eig) * r ** 2)
        assert p == pytest.approx(np.mean(zu2 @ fl), rel=1e-3)
    assert spectrum.trace == pytest.approx(np.mean(np.sum((z @ h) * z, axis=1)), rel=1e-3)
    # B: magnitude order over the live kernels, Δ = −w on the removed ones
    flat = np.concatenate([np.ravel(np.asarray(p, np.float64))
                           for p in jax.tree.leaves(params)])
    kernel = np.concatenate([np.full(np.size(p), k) for p, k in
                             zip(jax.tree.leaves(params),
                                 jax.tree.leaves(masks.prunable(params)), strict=True)])
    eligible = live[kernel[live]]
    order = eligible[np.argsort(np.abs(flat[eligible]), kind="stable")]
    assert pred.num_prunable == order.size
    curvature = []
    for k in pred.removed:
        delta = np.zeros_like(flat)
        delta[order[:k]] = -flat[order[:k]]
        curvature.append(delta @ full @ delta)
    np.testing.assert_allclose(pred.radius, [np.linalg.norm(flat[order[:k]])
                                             for k in pred.removed], rtol=1e-6)
    np.testing.assert_allclose(pred.curvature, curvature, rtol=2e-3,
                               atol=1e-4 * np.max(np.abs(curvature)))
    # D: the compensated increase of every count the bisection probed, by a dense solve on
    # K = the live coordinates not removed (the dead ones never move)
    from lmc.core.compensation import compensated_safe_ratio, default_damping

    with jax.enable_x64(True):
        flat_p, unravel = ravel_pytree(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                                                    params))
        g = np.asarray(jax.grad(lambda w: loss_fn(unravel(w), jnp.asarray(x, jnp.float64),
                                                  y))(flat_p))
    damping = default_damping(max(pred.lambda_max, float(np.max(np.abs(spectrum.nodes)))))
    grad = op.from_tree(mean_gradient(loss_fn, op.params, op.batches, op.policy))
    d = compensated_safe_ratio(op, grad, op.from_tree(op.params), order, epsilon,
                               damping=damping, tol=1e-3)
    assert pred.safe.compensated.ratio == d.ratio
    # at initialisation H is indefinite: against the dense solve, damp past |λ_min| and
    # converge CG tightly (the default damping's CG is D's approximation, not the system)
    damping = max(damping, 2 * -eig[0])
    d = compensated_safe_ratio(op, grad, op.from_tree(op.params), order, epsilon,
                               damping=damping, tol=1e-3, maxiter=300, cg_tol=1e-6)
    assert len(d.evaluations) > 3
    for _, comp in d.evaluations:
        removed = order[:comp.removed]
        kept = np.setdiff1d(live, removed)
        delta = np.zeros_like(flat)
        delta[removed] = -flat[removed]
        b = (full @ delta + g)[kept]
        step = np.linalg.solve(full[np.ix_(kept, kept)] + damping * np.eye(kept.size), -b)
        want = (g @ delta + 0.5 * delta @ full @ delta + b @ step
                + 0.5 * step @ full[np.ix_(kept, kept)] @ step)
        assert comp.increase == pytest.approx(want, rel=2e-3, abs=1e-5)


def test_one_shot_curve_equals_pruning_and_evaluating_each_ratio(mnist1d):
    """The positive control's measurement: the vmapped one-shot curve against lmc's own
    pruning at each ratio and a plain evaluation, with a mask and a dense layer kept."""
    from lmc.core.evaluate import Evaluator
    from lmc.core.prune_ratio import largest_passing_ratio, one_shot_curve

    module = build_model("mlp", 10, widths=(8,))
    params, state = init_model(module, jax.random.key(3), mnist1d.input_shape)
    f = eval_apply(module)
    mask = jax.tree.map(lambda p: np.random.default_rng(p.size).random(p.shape) < 0.8, params)
    params = masks.apply_mask(params, mask)
    x, y = mnist1d.x_test[:300], mnist1d.y_test[:300]
    grid = np.array([0.05, 0.2, 1 / 3, 0.5, 0.9, 0.99])
    curve = one_shot_curve(f, params, state, x, y, grid, mask=mask, keep_dense=("output",),
                           chunk=4)  # two chunks, the second padded
    evaluate = Evaluator(f, 1000)
    for p, loss, accuracy in zip(grid, curve["loss"], curve["accuracy"], strict=True):
        pruned = masks.apply_mask(params, prune.prune(params, mask, float(p), "magnitude",
                                                      keep_dense=("output",)))
        direct = evaluate(pruned, state, x, y)
        assert accuracy == pytest.approx(float(direct["accuracy"]), abs=1e-7)
        assert loss == pytest.approx(float(direct["loss"]), rel=1e-5)
    assert curve["num_live"] == masks.count_alive(mask, ("output",))
    dense = evaluate(params, state, x, y)
    assert curve["dense_accuracy"] == pytest.approx(float(dense["accuracy"]))
    # the measured ratio: the largest p before the first failure
    assert largest_passing_ratio(grid, [True, True, False, True, False, False]) == 0.2
    assert largest_passing_ratio(grid, [False] * 6) == 0.0
    assert largest_passing_ratio(grid, [True] * 6) == 0.99
