"""Interpolation between two networks and the barriers of its curves, checked against
direct computations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmc.core.evaluate import Evaluator
from lmc.core.interpolate import (
    PathEvaluator,
    alpha_grid,
    barriers,
    check_same_structure,
    lerp,
)
from lmc.core.policy import ExecutionPolicy
from lmc.errors import ConfigError
from lmc.training.models import eval_apply
from lmc.training.rng import noise_keys
from lmc.training.trainer import Trainer


@pytest.fixture(scope="module")
def two_networks(mnist1d, tiny_mlp_config):
    """Two siblings of the tiny MLP: one initialisation, different SGD noise."""
    t = Trainer(tiny_mlp_config, mnist1d)
    start = t.init_state()
    a, b = (t.run([start], [noise_keys(tiny_mlp_config, i)], progress=False).states[0]
            for i in (0, 1))
    return t.module, a.params, b.params


def test_barrier_definitions_on_a_made_up_curve():
    alphas = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    f = np.array([1.0, 4.0, 3.5, 2.0, 3.0])
    b = barriers(f, alphas)
    assert b["mean"] == pytest.approx(4.0 - 2.0)
    # chord at α: f − (1 + 2α): [0, 2.5, 1.5, −0.5, 0]
    assert b["chord"] == pytest.approx(2.5)
    assert b["midpoint"] == pytest.approx(3.5 - 2.0)
    # ½ off the grid: linear interpolation between its neighbours
    b30 = barriers([0.0, 1.0, 3.0, 0.0], [0.0, 0.4, 0.6, 1.0])
    assert b30["midpoint"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="increasing grid of alphas from 0 to 1"):
        barriers([1.0, 2.0], [0.0, 0.5])


def test_barrier_of_a_point_with_itself_is_zero(two_networks, mnist1d):
    module, a, _ = two_networks
    data = {"test": (mnist1d.x_test, mnist1d.y_test)}
    curves = PathEvaluator(eval_apply(module)).curves(a, a, data, alphas=9)
    for metric in ("loss", "error"):
        np.testing.assert_allclose(curves["test"][metric], curves["test"][metric][0], rtol=1e-6)
        for value in barriers(curves["test"][metric], alpha_grid(9)).values():
            assert value == pytest.approx(0.0, abs=1e-6)


def test_ends_equal_direct_evaluation_and_vmapped_equals_looped(two_networks, mnist1d):
    module, a, b = two_networks
    data = {"train": (mnist1d.x_train, mnist1d.y_train), "test": (mnist1d.x_test, mnist1d.y_test)}
    grid = alpha_grid(7)
    vmapped = PathEvaluator(eval_apply(module), policy=ExecutionPolicy(alpha_chunk=3)).curves(
        a, b, data, alphas=grid)
    looped = PathEvaluator(eval_apply(module), policy=ExecutionPolicy(alpha_chunk=1)).curves(
        a, b, data, alphas=grid)
    direct = Evaluator(eval_apply(module), batch_size=333)
    for split, (x, y) in data.items():
        # a plain Python loop over α, one network at a time (the peer scripts' way)
        reference = [direct(lerp(a, b, al), {}, x, y) for al in grid]
        for metric in ("loss", "error"):
            expected = np.array([r[metric] for r in reference])
            np.testing.assert_allclose(vmapped[split][metric], expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(looped[split][metric], expected, rtol=1e-5, atol=1e-6)
        assert vmapped[split]["loss"][0] == pytest.approx(float(direct(a, {}, x, y)["loss"]),
                                                          rel=1e-5)
        assert vmapped[split]["loss"][-1] == pytest.approx(float(direct(b, {}, x, y)["loss"]),
                                                           rel=1e-5)


def test_layerwise_moving_sets(two_networks, mnist1d):
    module, a, b = two_networks
    data = {"test": (mnist1d.x_test, mnist1d.y_test)}
    full = PathEvaluator(eval_apply(module)).curves(a, b, data, alphas=5)
    everything = PathEvaluator(eval_apply(module), moving={k: True for k in a}).curves(
        a, b, data, alphas=5)
    nothing = PathEvaluator(eval_apply(module), moving={k: False for k in a}).curves(
        a, b, data, alphas=5)
    np.testing.assert_allclose(everything["test"]["loss"], full["test"]["loss"], rtol=1e-6)
    np.testing.assert_allclose(nothing["test"]["loss"], full["test"]["loss"][0], rtol=1e-6)
    one = lerp(a, b, 0.5, {k: k == "dense0" for k in a})
    np.testing.assert_allclose(one["dense0"]["kernel"],
                               0.5 * (a["dense0"]["kernel"] + b["dense0"]["kernel"]), rtol=1e-6)
    np.testing.assert_array_equal(one["output"]["kernel"], a["output"]["kernel"])


class _TinyBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(6, name="hidden")(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.8, name="bn")(h)
        return nn.Dense(3, name="output")(nn.relu(h))


def test_bn_reset_equals_statistics_computed_directly():
    model = _TinyBN()
    x = jax.random.normal(jax.random.key(0), (4, 50, 5))  # 4 fixed batches of 50
    y = jax.random.randint(jax.random.key(1), (50,), 0, 3)
    va = model.init(jax.random.key(2), x[0])
    vb = model.init(jax.random.key(3), x[0])
    pa, pb, state = va["params"], vb["params"], {"batch_stats": va["batch_stats"]}

    def apply_fn(p, s, inputs):
        return model.apply({"params": p, **s}, inputs)

    def train_apply(p, s, inputs):
        return model.apply({"params": p, **s}, inputs, train=True, mutable=["batch_stats"])[1]

    alpha = 0.3
    # all α in one vmapped program (the internals below take a batch of α)
    evaluator = PathEvaluator(apply_fn, train_apply=train_apply, bn="reset",
                              policy=ExecutionPolicy(alpha_chunk=None))
    decay = evaluator._bn_decay(pa, state, x[0])
    np.testing.assert_allclose(decay["batch_stats"]["bn"]["mean"], 0.8, rtol=1e-6)
    stats = evaluator._reset_states(pa, pb, jnp.array([alpha]), state, x, decay)
    # direct: the hidden pre-activations of the interpolated network, batch by batch
    w = {k: (1 - alpha) * np.asarray(pa["hidden"][k]) + alpha * np.asarray(pb["hidden"][k])
         for k in ("kernel", "bias")}
    h = np.asarray(x, np.float64) @ w["kernel"] + w["bias"]
    mean = h.mean(axis=1).mean(axis=0)
    var = h.var(axis=1).mean(axis=0)
    np.testing.assert_allclose(stats["batch_stats"]["bn"]["mean"][0], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["batch_stats"]["bn"]["var"][0], var, rtol=1e-4, atol=1e-5)

    # the curve with reset statistics equals evaluating with the direct statistics
    curves = evaluator.curves(pa, pb, {"x": (x[0], y)}, state_a=state, alphas=[0.0, alpha, 1.0],
                              bn_batches=x)
    direct_state = {"batch_stats": {"bn": {"mean": jnp.asarray(mean, jnp.float32),
                                           "var": jnp.asarray(var, jnp.float32)}}}
    direct = Evaluator(apply_fn)(lerp(pa, pb, alpha), direct_state, x[0], y)
    assert curves["x"]["loss"][1] == pytest.approx(float(direct["loss"]), rel=1e-4)

    interpolated = PathEvaluator(apply_fn, bn="interpolate").curves(
        pa, pb, {"x": (x[0], y)}, state_a=state, alphas=[0.0, alpha, 1.0])
    assert interpolated["x"]["loss"][1] != pytest.approx(curves["x"]["loss"][1], rel=1e-3)
    with pytest.raises(ConfigError, match="bn_batches"):
        evaluator.curves(pa, pb, {"x": (x[0], y)}, state_a=state, alphas=3)


def test_mismatched_trees_name_the_leaves():
    a = {"dense": {"kernel": np.zeros((3, 4)), "bias": np.zeros(4)}, "out": {"kernel": np.zeros(2)}}
    b = {"dense": {"kernel": np.zeros((3, 5)), "bias": np.zeros(4, np.int32)},
         "extra": {"kernel": np.zeros(2)}}
    with pytest.raises(ConfigError) as info:
        check_same_structure(a, b)
    message = str(info.value)
    assert "['dense']['kernel'] shape (3, 4) vs (3, 5)" in message
    assert "['dense']['bias'] dtype float64 vs int32" in message
    assert "['out']['kernel'] only in A" in message and "['extra']['kernel'] only in B" in message
