"""REPAIR (lmc.core.repair, lmc.training.activations): the interpolated network's hidden
units get the interpolated means and stds of the endpoints' on the batch used."""

import jax
import numpy as np
import pytest

from lmc.core.alignment import spec_from_params
from lmc.core.repair import interpolated_stats, repair
from lmc.errors import ConfigError
from lmc.training.activations import preactivation_stats, repair_model
from lmc.training.models import build_model, init_model

MODELS = {"mlp": ({"widths": (16, 12)}, (5, 4)), "conv1d": ({"channels": 6}, (40, 1))}


def endpoints(name):
    """(module, params a, params b, a batch of 64 inputs): two different random inits."""
    options, shape = MODELS[name]
    module = build_model(name, 10, **options)
    a, _ = init_model(module, jax.random.key(0), shape)
    b, _ = init_model(module, jax.random.key(1), shape)
    # non-zero biases, so the means differ between the endpoints too
    b = jax.tree.map(lambda w: w + 0.2 * jax.random.normal(jax.random.key(2), w.shape), b)
    x = jax.random.normal(jax.random.key(3), (64, *shape))
    return module, a, b, x


def midpoint(a, b, alpha=0.5):
    return jax.tree.map(lambda u, v: (1 - alpha) * u + alpha * v, a, b)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_repair_restores_the_interpolated_statistics(name):
    module, a, b, x = endpoints(name)
    stats_a, stats_b = (preactivation_stats(module, p, {}, x) for p in (a, b))
    assert list(stats_a) == list(spec_from_params(a, {}).groups)  # every hidden layer
    targets = interpolated_stats(stats_a, stats_b, 0.5)
    interp = midpoint(a, b)
    before = preactivation_stats(module, interp, {}, x)
    # the variance collapse REPAIR corrects: the midpoint's units are too narrow
    for layer, (_, std) in before.items():
        assert np.mean(std / targets[layer][1]) < 0.9, layer
    repaired = repair_model(module, interp, a, b, x, 0.5)
    after = preactivation_stats(module, repaired, {}, x)
    for layer, (mean, std) in after.items():
        target_mean, target_std = targets[layer]
        scale = float(np.abs(target_std).max())
        np.testing.assert_allclose(mean, target_mean, atol=1e-5 * scale, err_msg=layer)
        np.testing.assert_allclose(std, target_std, rtol=1e-4, atol=1e-6 * scale,
                                   err_msg=layer)
    # only the hidden layers' kernels and biases change
    np.testing.assert_array_equal(repaired["output"]["kernel"], interp["output"]["kernel"])
    np.testing.assert_array_equal(repaired["output"]["bias"], interp["output"]["bias"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_stats_measured_once_repair_the_first_layer_exactly(name):
    module, a, b, x = endpoints(name)
    stats_a, stats_b = (preactivation_stats(module, p, {}, x) for p in (a, b))
    interp = midpoint(a, b)
    spec = spec_from_params(a, {})
    once = repair(interp, preactivation_stats(module, interp, {}, x), stats_a, stats_b, 0.5,
                  spec)
    after = preactivation_stats(module, once, {}, x)
    first = next(iter(spec.groups))
    targets = interpolated_stats(stats_a, stats_b, 0.5)
    np.testing.assert_allclose(after[first][1], targets[first][1], rtol=1e-4)
    # later layers see the corrected inputs: one pass is not exact there
    last = list(spec.groups)[-1]
    assert not np.allclose(after[last][1], targets[last][1], rtol=1e-3)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_repair_at_an_endpoint_leaves_it_unchanged(name, alpha):
    module, a, b, x = endpoints(name)
    end = a if alpha == 0 else b
    repaired = repair_model(module, end, a, b, x, alpha)
    for u, v in zip(jax.tree.leaves(repaired), jax.tree.leaves(end), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_repair_by_hand():
    params = {"h": {"kernel": np.array([[1.0, 2.0]]), "bias": np.array([0.0, 1.0])}}
    stats = {"h": (np.array([1.0, 1.0]), np.array([2.0, 0.0]))}  # unit 1 dead
    target_a = {"h": (np.array([0.0, 3.0]), np.array([1.0, 5.0]))}
    target_b = {"h": (np.array([4.0, 3.0]), np.array([3.0, 5.0]))}
    out = repair(params, stats, target_a, target_b, 0.5, ["h"])
    # unit 0: scale 2 / 2 = 1, shift 2 − 1; unit 1 (dead): scale 1, shift 3 − 1
    np.testing.assert_allclose(out["h"]["kernel"], [[1.0, 2.0]])
    np.testing.assert_allclose(out["h"]["bias"], [1.0, 3.0])
    out = repair(params, stats, target_a, target_a, 0.0, ["h"])
    np.testing.assert_allclose(out["h"]["kernel"], [[0.5, 2.0]])
    np.testing.assert_allclose(out["h"]["bias"], [-0.5, 3.0])
    np.testing.assert_array_equal(params["h"]["bias"], [0.0, 1.0])  # not modified


def test_repair_errors():
    params = {"h": {"kernel": np.ones((1, 2))}, "g": {"kernel": np.ones((2, 2)),
                                                      "bias": np.zeros(2)}}
    stats = {"h": (np.zeros(2), np.ones(2)), "g": (np.zeros(2), np.ones(2))}
    with pytest.raises(ConfigError, match="no bias"):
        repair(params, stats, stats, stats, 0.5, ["h"])
    with pytest.raises(ConfigError, match="no layer 'x'"):
        repair(params, stats | {"x": stats["g"]}, stats | {"x": stats["g"]},
               stats | {"x": stats["g"]}, 0.5, ["x"])
    with pytest.raises(ConfigError, match="no statistics of layer 'g' for network b"):
        repair(params, stats, stats, {"h": stats["h"]}, 0.5, ["g"])
    with pytest.raises(ConfigError, match="non-negative"):
        repair(params, {"g": (np.zeros(2), -np.ones(2))}, stats, stats, 0.5, ["g"])
    with pytest.raises(ConfigError, match="alpha must be finite"):
        repair(params, stats, stats, stats, float("nan"), ["g"])
    with pytest.raises(ConfigError, match="2 output units, its statistics 3"):
        three = {"g": (np.zeros(3), np.ones(3))}
        repair(params, three, three, three, 0.5, ["g"])
