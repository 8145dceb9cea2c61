"""Pruning criteria, each checked against an independent computation: numpy sorts for the
selection rule, finite differences (SNIP), the exact Hessian by `jax.hessian` in float64
(GraSP) and SynFlow's closed-form path sums on two-layer nets."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmc.core.batching import batches_of
from lmc.core.masks import count_alive, dense_mask, density, flat_prunable, prune_count
from lmc.core.prune import CRITERIA, prune, prune_by_scores, removal_order, scores
from lmc.errors import ConfigError
from lmc.training.models import build_model, eval_apply, init_model

from .trees import expected_removed, removed_between, tied_params, tiny


def test_magnitude_removes_the_smallest_with_ties_by_position_and_never_revives():
    params = tied_params()
    flat_abs = np.abs(np.asarray(flat_prunable(params)))
    m1 = prune(params, None, 0.2)
    n1 = math.ceil(0.2 * 32)
    np.testing.assert_array_equal(removed_between(dense_mask(params), m1),
                                  expected_removed(flat_abs, np.ones(32, bool), n1))
    assert m1["dense0"]["kernel"][0, 0] == m1["dense0"]["kernel"][0, 1] == False  # noqa: E712
    assert m1["dense0"]["bias"].all() and m1["output"]["bias"].all()

    # Again on the pruned network: only live weights are candidates, none comes back.
    m2 = prune(params, m1, 0.3)
    live1 = np.asarray(flat_prunable(m1))
    np.testing.assert_array_equal(removed_between(m1, m2),
                                  expected_removed(flat_abs, live1, math.ceil(0.3 * 25)))
    assert count_alive(m1) == 32 - 7 and count_alive(m2) == 25 - 8
    assert all(m.dtype == bool for m in jax.tree.leaves(m2))


def test_pruned_weights_stay_pruned_whatever_their_value():
    params = tied_params()
    mask = dense_mask(params)
    mask["dense0"]["kernel"][:] = False  # pruned, though the weights themselves are not 0
    out = prune(params, mask, 0.5)
    assert not out["dense0"]["kernel"].any()
    assert out["output"]["kernel"].sum() == 12 - 6


def test_keep_dense_layers_are_not_pruned_and_not_counted():
    params = tied_params()
    m = prune(params, None, 0.5, keep_dense=("output",))
    assert m["output"]["kernel"].all()
    assert count_alive(m, ("output",)) == 20 - 10
    flat_abs = np.abs(np.asarray(flat_prunable(params)))
    live = np.r_[np.ones(20, bool), np.zeros(12, bool)]
    np.testing.assert_array_equal(removed_between(dense_mask(params), m),
                                  expected_removed(flat_abs, live, 10))


def test_layerwise_prunes_ceil_of_each_layer():
    params = tied_params()
    m = prune(params, None, 0.3, "magnitude_layerwise")
    assert m["dense0"]["kernel"].sum() == 20 - 6  # ceil(0.3 · 20) = 6
    assert m["output"]["kernel"].sum() == 12 - 4  # ceil(0.3 · 12) = 4
    for layer, size in (("dense0", 20), ("output", 12)):
        k = np.abs(np.asarray(params[layer]["kernel"])).ravel()
        removed = np.flatnonzero(~m[layer]["kernel"].ravel())
        np.testing.assert_array_equal(removed,
                                      expected_removed(k, np.ones(size, bool), len(removed)))
    m2 = prune(params, m, 0.5, "magnitude_layerwise", keep_dense="output")
    assert m2["output"]["kernel"].sum() == 8 and m2["dense0"]["kernel"].sum() == 14 - 7


def test_invert_prunes_the_largest():
    params = tied_params()
    m = prune(params, None, 0.25, invert=True)
    flat_abs = np.abs(np.asarray(flat_prunable(params)))
    np.testing.assert_array_equal(removed_between(dense_mask(params), m),
                                  expected_removed(flat_abs, np.ones(32, bool), 8, invert=True))


def test_removal_order_is_the_rule_prune_uses():
    _, params, _ = tiny()
    mask = prune(params, None, 0.4, "random", key=jax.random.key(1))
    s = scores("random", params, mask, key=jax.random.key(2))
    order = removal_order(s, mask)
    live = np.asarray(flat_prunable(mask))
    assert len(order) == live.sum() and live[order].all()
    assert np.all(np.diff(np.asarray(flat_prunable(s))[order]) >= 0)
    n = prune_count(0.5, int(live.sum()))
    expected = np.sort(order[:n])
    np.testing.assert_array_equal(removed_between(mask, prune_by_scores(s, mask, 0.5)), expected)
    # prune with the same key scores the same way in one round
    np.testing.assert_array_equal(
        removed_between(mask, prune(params, mask, 0.5, "random", key=jax.random.key(2))),
        expected)
    inverted = removal_order(s, mask, invert=True)
    np.testing.assert_array_equal(
        removed_between(mask, prune_by_scores(s, mask, 0.5, invert=True)), np.sort(inverted[:n]))
    # ties, -0.0 == 0.0 included, go by position
    zeros = jax.tree.map(lambda a: np.where(np.arange(a.size).reshape(a.shape) % 2, -0.0, 0.0),
                         params)
    np.testing.assert_array_equal(removal_order(zeros), np.arange(32))


def test_random_depends_only_on_the_key():
    _, params, _ = tiny()
    a = prune(params, None, 0.5, "random", key=jax.random.key(0))
    b = prune(params, None, 0.5, "random", key=jax.random.key(0))
    c = prune(params, None, 0.5, "random", key=jax.random.key(1))
    assert jax.tree.all(jax.tree.map(np.array_equal, a, b))
    assert not jax.tree.all(jax.tree.map(np.array_equal, a, c))


def test_iterating_magnitude_changes_nothing():
    params = tied_params()
    one = prune(params, None, 0.6)
    many = prune(params, None, 0.6, rounds=7)
    assert jax.tree.all(jax.tree.map(np.array_equal, one, many))


# ------------------------------------------------------------- scores by hand


def np_loss(w1, b1, w2, b2, x, y, temperature=1.0):
    """Mean cross-entropy of relu(x w1 + b1) w2 + b2, in numpy float64."""
    z = (np.maximum(x @ w1 + b1, 0) @ w2 + b2) / temperature
    z = z - z.max(1, keepdims=True)
    return np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y])


def data(n=24, inputs=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return x, y


def some_mask(params):
    mask = dense_mask(params)
    mask["dense0"]["kernel"][1] = False
    mask["output"]["kernel"][2, 1] = False
    return mask


def as64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def test_snip_matches_finite_differences():
    module, params, state = tiny()
    x, y = data()
    mask = some_mask(params)
    s = scores("snip", params, mask, apply_fn=eval_apply(module), state=state,
               batches=batches_of(x, y, 8))
    p = as64(jax.tree.map(lambda w, m: np.where(m, w, 0), params, mask))
    args = [p["dense0"]["kernel"], p["dense0"]["bias"], p["output"]["kernel"], p["output"]["bias"]]
    for arg, layer in ((0, "dense0"), (2, "output")):
        expected = np.zeros_like(args[arg])
        for i in np.ndindex(args[arg].shape):
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[arg][i] += 1e-6
            minus[arg][i] -= 1e-6
            grad = (np_loss(*plus, x, y) - np_loss(*minus, x, y)) / 2e-6
            expected[i] = abs(grad * args[arg][i])
        np.testing.assert_allclose(s[layer]["kernel"], expected, rtol=1e-4, atol=1e-7)
        assert np.all(s[layer]["kernel"][~mask[layer]["kernel"]] == 0)


def test_grasp_matches_the_exact_hessian():
    module, params, state = tiny()
    x, y = data()
    mask = some_mask(params)
    s = scores("grasp", params, mask, apply_fn=eval_apply(module), state=state,
               batches=batches_of(x, y, 12))
    p = as64(jax.tree.map(lambda w, m: np.where(m, w, 0), params, mask))
    shapes = [(5, 4), (4, 3)]
    with jax.enable_x64(True):
        def loss(theta):  # the loss as a function of the two kernels, logits / 200
            w1, w2 = theta[:20].reshape(shapes[0]), theta[20:].reshape(shapes[1])
            h = jax.nn.relu(x.astype(np.float64) @ w1 + p["dense0"]["bias"])
            z = (h @ w2 + p["output"]["bias"]) / 200.0
            return -jnp.mean(jax.nn.log_softmax(z)[np.arange(len(y)), y])

        theta = np.r_[p["dense0"]["kernel"].ravel(), p["output"]["kernel"].ravel()]
        live = np.asarray(flat_prunable(mask))
        g = np.asarray(jax.grad(loss)(theta)) * live  # the subnetwork's kernels only
        hg = np.asarray(jax.hessian(loss)(theta)) @ g
    expected = theta * hg
    got = np.asarray(flat_prunable(s))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    assert np.abs(expected).max() > 0


def test_synflow_matches_the_path_sums():
    module, params, state = tiny()
    params = jax.tree.map(np.array, params)
    params["dense0"]["bias"] = np.linspace(-1, 1, 4).astype(np.float32)  # |b| counts
    mask = some_mask(params)
    s = scores("synflow", params, mask, apply_fn=eval_apply(module), input_shape=(5,))
    w1 = np.abs(np.where(mask["dense0"]["kernel"], params["dense0"]["kernel"], 0)).astype(float)
    w2 = np.abs(np.where(mask["output"]["kernel"], params["output"]["kernel"], 0)).astype(float)
    a = w1.sum(0) + np.abs(params["dense0"]["bias"])  # hidden units on an all-ones input
    np.testing.assert_allclose(s["dense0"]["kernel"], w1 * w2.sum(1), rtol=1e-12)
    np.testing.assert_allclose(s["output"]["kernel"], w2 * a[:, None], rtol=1e-12)
    assert s["dense0"]["kernel"].dtype == np.float64


class NormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(4, name="dense0")(x)
        x = nn.BatchNorm(use_running_average=not train, name="norm")(x)
        return nn.Dense(3, name="output")(nn.relu(x))


def test_synflow_uses_running_statistics_and_their_absolute_values():
    module = NormNet()
    params, state = init_model(module, jax.random.key(0), (5,))
    state = {"batch_stats": {"norm": {"mean": -0.01 * np.ones(4, np.float32),
                                      "var": np.linspace(0.5, 4, 4).astype(np.float32)}}}
    s = scores("synflow", params, apply_fn=eval_apply(module), state=state, input_shape=(5,))
    w1 = np.abs(np.asarray(params["dense0"]["kernel"], float))
    w2 = np.abs(np.asarray(params["output"]["kernel"], float))
    gain = 1 / np.sqrt(np.linspace(0.5, 4, 4) + 1e-5)  # scale 1, |mean| subtracted
    hidden = (w1.sum(0) - 0.01) * gain
    np.testing.assert_allclose(s["dense0"]["kernel"], w1 * gain * w2.sum(1), rtol=1e-5)
    np.testing.assert_allclose(s["output"]["kernel"], w2 * hidden[:, None], rtol=1e-5)


def test_iterative_synflow_reaches_the_target_exactly():
    module, params, state = tiny(widths=(16, 8), inputs=10)
    start = prune(params, None, 0.3)
    alive = count_alive(start, ("output",))
    m = prune(params, start, 0.9, "synflow", apply_fn=eval_apply(module),
              input_shape=(10,), keep_dense=("output",))
    assert count_alive(m, ("output",)) == alive - math.ceil(0.9 * alive)
    removed_between(start, m)  # nothing revived
    np.testing.assert_array_equal(m["output"]["kernel"], start["output"]["kernel"])
    once = prune(params, start, 0.9, "synflow", apply_fn=eval_apply(module),
                 input_shape=(10,), keep_dense=("output",), rounds=1)
    assert count_alive(once, ("output",)) == count_alive(m, ("output",))


def test_data_criteria_on_mnist1d(mnist1d):
    module = build_model("conv1d", 10, channels=8)
    params, state = init_model(module, jax.random.key(0), mnist1d.input_shape)
    batches = batches_of(mnist1d.x_train[:128], mnist1d.y_train[:128], 64)
    alive = count_alive(dense_mask(params), ("output",))
    for criterion in ("snip", "grasp", "synflow"):
        m = prune(params, None, 0.5, criterion, apply_fn=eval_apply(module), state=state,
                  batches=batches, keep_dense=("output",), rounds=3)
        assert count_alive(m, ("output",)) == alive - math.ceil(0.5 * alive)
        assert m["output"]["kernel"].all()


# ------------------------------------------------------------------- errors


def test_errors():
    module, params, state = tiny()
    with pytest.raises(ConfigError, match="unknown .*'l1'.*: " + ", ".join(sorted(CRITERIA))):
        prune(params, None, 0.2, "l1")
    for bad in (0, 1, -0.1, 1.5, float("nan"), True, "0.2"):
        with pytest.raises(ConfigError, match="fraction"):
            prune(params, None, bad)
    with pytest.raises(ConfigError, match="no prunable weights"):
        prune({"norm": {"scale": jnp.ones(3)}}, None, 0.2)
    with pytest.raises(ConfigError, match="unknown layer 'outptu'; valid layers: dense0, output"):
        prune(params, None, 0.2, keep_dense=("outptu",))
    with pytest.raises(ConfigError, match="no prunable weights outside"):
        density(dense_mask(params), ("dense0", "output"))
    with pytest.raises(ConfigError, match="missing: batches"):
        prune(params, None, 0.2, "snip", apply_fn=eval_apply(module))
    with pytest.raises(ConfigError, match="missing: apply_fn, batches"):
        scores("grasp", params)
    with pytest.raises(ConfigError, match="missing: input_shape"):
        prune(params, None, 0.2, "synflow", apply_fn=eval_apply(module))
    with pytest.raises(ConfigError, match="missing: key"):
        prune(params, None, 0.2, "random")
    with pytest.raises(ConfigError, match="structure"):
        prune(params, {"dense0": dense_mask(params)["dense0"]}, 0.2)
    with pytest.raises(ConfigError, match="rounds"):
        prune(params, None, 0.2, rounds=0)


def test_synflow_does_not_overflow_where_float32_would():
    module, params, _ = tiny(widths=(16,) * 16, inputs=10)
    params = jax.tree.map(lambda a: np.asarray(a) * 100, params)
    h = np.ones((1, 10))
    for layer in [f"dense{i}" for i in range(16)] + ["output"]:
        h = h @ np.abs(params[layer]["kernel"]) + np.abs(params[layer]["bias"])
    assert h.sum() > np.finfo(np.float32).max  # R overflows float32
    s = scores("synflow", params, apply_fn=eval_apply(module), input_shape=(10,))
    flat = flat_prunable(s)
    assert flat.dtype == np.float64 and np.isfinite(flat).all() and flat.max() > 1e38
    order = removal_order(s)
    np.testing.assert_array_equal(order, np.argsort(flat, kind="stable"))
    n = prune_count(0.5, flat.size)
    np.testing.assert_array_equal(removed_between(dense_mask(s), prune_by_scores(s, None, 0.5)),
                                  np.sort(order[:n]))
    m = prune(params, None, 0.5, "synflow", apply_fn=eval_apply(module), input_shape=(10,),
              rounds=10)
    assert count_alive(m) == flat.size - n
