"""Permutation specs, permutations and weight matching (lmc.core.alignment), checked on the
function of the permuted networks and on the recovery of known permutations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmc.core.alignment import (
    PermutationSpec,
    PermutedAxis,
    activation_correlation,
    activation_matching,
    apply_permutation,
    random_permutation,
    spec_from_params,
    weight_matching,
)
from lmc.core.masks import path_name
from lmc.errors import ConfigError
from lmc.training.activations import resnet_activations, sequential_activations
from lmc.training.models import build_model, eval_apply, init_model

# name -> (options, input shape, spec kind, number of permutation groups)
MODELS = {
    "mlp": ({"widths": (8, 6)}, (5, 4), "sequential", 2),
    "conv1d": ({"channels": 4}, (40, 1), "sequential", 3),
    "conv2": ({}, (8, 8, 3), "sequential", 4),
    "vgg11": ({"norm": "batch"}, (32, 32, 3), "sequential", 8),
    "resnet20": ({"norm": "batch", "width": 1}, (32, 32, 3), "resnet", 12),
}
WITH_BATCHNORM = ("vgg11", "resnet20")


def perturbed(params, state, key):
    """Every leaf moved off its initialisation: biases non-zero, BatchNorm scales, means
    and variances different per channel (so a wrong permutation of any of them shows)."""
    k1, k2 = jax.random.split(key)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(k1, len(leaves))
    params = jax.tree.unflatten(tree, [leaf + 0.1 * jax.random.normal(k, leaf.shape)
                                       for leaf, k in zip(leaves, keys, strict=True)])
    flat, tree = jax.tree_util.tree_flatten_with_path(state)
    keys = jax.random.split(k2, max(len(flat), 1))
    stats = [jax.random.uniform(k, leaf.shape, minval=0.5, maxval=2.0)
             if path_name(path).endswith("var") else 0.5 * jax.random.normal(k, leaf.shape)
             for (path, leaf), k in zip(flat, keys[:len(flat)], strict=True)]
    return params, jax.tree.unflatten(tree, stats)


@functools.cache
def make_network(name):
    """(name, jitted eval apply, perturbed params, state, spec, a batch of 2 inputs)."""
    options, shape, kind, _ = MODELS[name]
    module = build_model(name, 10, **options)
    params, state = perturbed(*init_model(module, jax.random.key(0), shape), jax.random.key(1))
    spec = spec_from_params(params, state, kind)
    x = jax.random.normal(jax.random.key(2), (2, *shape))
    return name, jax.jit(eval_apply(module)), params, state, spec, x


@pytest.fixture(params=sorted(MODELS))
def network(request):
    return make_network(request.param)


def same_tree(a, b):
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_group_counts(network):
    name, _, _, _, spec, _ = network
    assert len(spec.groups) == MODELS[name][3]


def test_a_random_permutation_keeps_the_function(network):
    name, f, params, state, spec, x = network
    perms = random_permutation(spec, params, jax.random.key(3), state)
    assert any(not np.array_equal(p, np.arange(len(p))) for p in perms.values())
    new_params, new_state = apply_permutation(spec, perms, params, state)
    assert not same_tree(new_params, params)
    logits = f(params, state, x)
    np.testing.assert_allclose(f(new_params, new_state, x), logits, rtol=1e-4,
                               atol=1e-4 * float(jnp.abs(logits).max()))


@pytest.mark.parametrize("name", WITH_BATCHNORM)
def test_the_batchnorm_statistics_must_be_permuted_too(name):
    _, f, params, state, spec, x = make_network(name)
    params_only = PermutationSpec({g: [a for a in axes if a.path.startswith("params/")]
                                   for g, axes in spec.groups.items()})
    perms = random_permutation(spec, params, jax.random.key(3), state)
    new_params, same_state = apply_permutation(params_only, perms, params, state)
    assert same_tree(same_state, state)
    assert not np.allclose(f(new_params, state, x), f(params, state, x), rtol=1e-3, atol=1e-3)


def test_weight_matching_recovers_a_permutation(network):
    _, _, params, state, spec, _ = network
    pi = random_permutation(spec, params, jax.random.key(4), state)
    params_b, state_b = apply_permutation(spec, pi, params, state)
    perms, history = weight_matching(spec, params, params_b, state, state_b)
    for group, p in pi.items():
        np.testing.assert_array_equal(perms[group], np.argsort(p), err_msg=group)
    back_params, back_state = apply_permutation(spec, perms, params_b, state_b)
    # the networks are equal, so the straight path between them is constant: no barrier
    assert same_tree(back_params, params) and same_tree(back_state, state)
    assert np.all(np.diff(history) >= 0) and history[-1] > history[0]


def test_weight_matching_of_independent_networks():
    module = build_model("mlp", 10, widths=(16, 12))
    a, _ = init_model(module, jax.random.key(0), (5, 4))
    b, _ = init_model(module, jax.random.key(1), (5, 4))
    spec = spec_from_params(a, {})
    perms, history = weight_matching(spec, a, b, seed=3)
    assert len(history) >= 3  # at least one improving sweep and the final one
    assert np.all(np.diff(history) >= 0) and history[-1] > history[0]
    aligned, _ = apply_permutation(spec, perms, b, {})
    direct = sum(float(np.vdot(np.asarray(u, np.float64), np.asarray(v, np.float64)))
                 for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(aligned),
                                 strict=True))
    assert history[-1] == pytest.approx(direct, rel=1e-9)
    # a converged matching is a fixed point: the aligned copy needs no further permutation
    again, history_again = weight_matching(spec, a, aligned, seed=5)
    assert all(np.array_equal(p, np.arange(len(p))) for p in again.values())
    assert history_again[0] == pytest.approx(history[-1], rel=1e-9)


def test_the_residual_streams_of_a_resnet():
    spec = make_network("resnet20")[4]
    assert sorted(g for g in spec.groups if "/" not in g) == ["stage1", "stage2", "stage3"]
    stream = {a.path: a.axis for a in spec.groups["stage1"]}
    assert stream["params/stem_conv/kernel"] == 3
    assert stream["batch_stats/stem_norm/mean"] == 0
    for b in range(3):
        assert stream[f"params/stage1_block{b}/conv1/kernel"] == 2  # input
        assert stream[f"params/stage1_block{b}/conv2/kernel"] == 3  # output
    assert stream["params/stage2_block0/conv1/kernel"] == 2
    assert stream["params/stage2_block0/shortcut_conv/kernel"] == 2
    stage2 = {a.path: a.axis for a in spec.groups["stage2"]}
    assert stage2["params/stage2_block0/shortcut_conv/kernel"] == 3
    assert stage2["batch_stats/stage2_block0/shortcut_norm/var"] == 0
    assert {a.path: a.axis for a in spec.groups["stage3"]}["params/output/kernel"] == 0


def test_a_spec_written_by_hand():
    module = build_model("mlp", 10, widths=(8,))
    params, _ = init_model(module, jax.random.key(0), (5, 4))
    spec = PermutationSpec({"dense0": [("params/dense0/kernel", 1), ("params/dense0/bias", 0),
                                       ("params/output/kernel", 0)]})
    assert spec == spec_from_params(params, {})
    assert spec.groups["dense0"][0] == PermutedAxis("params/dense0/kernel", 1)
    assert spec.check(params) == {"dense0": 8}


def test_the_flattened_input_of_a_dense_layer_is_permuted_in_channel_blocks():
    module = build_model("conv1d", 10, channels=4)
    params, _ = init_model(module, jax.random.key(0), (40, 1))
    spec = spec_from_params(params, {})
    axis = spec.groups["conv2"][-1]
    assert axis == PermutedAxis("params/output/kernel", 0, 4)
    perm = np.array([2, 0, 3, 1])
    perms = {g: np.arange(4) for g in spec.groups} | {"conv2": perm}
    new, _ = apply_permutation(spec, perms, params, {})
    kernel = np.asarray(params["output"]["kernel"])  # (5 positions x 4 channels, 10)
    expected = kernel.reshape(5, 4, 10)[:, perm].reshape(20, 10)
    np.testing.assert_array_equal(new["output"]["kernel"], expected)


@pytest.mark.parametrize(("groups", "message"), [
    ({"h": [("params/dense0/kernel", 1), ("params/dense1/kernel", 1)]},
     "'params/dense1/kernel' has size 6"),
    ({"h": [("params/dense0/kernel", 1), ("params/dense9/kernel", 0)]},
     "no leaf 'params/dense9/kernel'"),
    ({"h": [("params/dense0/bias", 1)]}, "'params/dense0/bias' of shape (8,) has no axis 1"),
    ({"h": [("params/dense0/kernel", 0, 3)]}, "not a multiple of its 3 channels"),
])
def test_a_spec_that_does_not_fit_the_tree(groups, message):
    module = build_model("mlp", 10, widths=(8, 6))
    params, _ = init_model(module, jax.random.key(0), (5, 4))
    spec = PermutationSpec(groups)
    with pytest.raises(ConfigError) as error:
        spec.check(params)
    assert message in str(error.value)
    with pytest.raises(ConfigError):
        apply_permutation(spec, {"h": np.arange(8)}, params)


def test_malformed_specs_and_permutations():
    with pytest.raises(ConfigError, match="groups 'a' and 'b'"):
        PermutationSpec({"a": [("params/x/kernel", 1)], "b": [("params/x/kernel", 1)]})
    with pytest.raises(ConfigError, match="permutes nothing"):
        PermutationSpec({"a": []})
    with pytest.raises(ConfigError, match="unknown model kind"):
        spec_from_params({}, {}, "transformer")
    module = build_model("mlp", 10, widths=(8, 6))
    params, _ = init_model(module, jax.random.key(0), (5, 4))
    spec = spec_from_params(params, {})
    good = {"dense0": np.arange(8), "dense1": np.arange(6)}
    with pytest.raises(ConfigError, match="not a permutation of 8"):
        apply_permutation(spec, good | {"dense0": np.zeros(8, int)}, params, {})
    with pytest.raises(ConfigError, match="missing \\['dense1'\\]"):
        apply_permutation(spec, {"dense0": np.arange(8)}, params, {})
    with pytest.raises(ConfigError, match="both networks or neither"):
        weight_matching(spec, params, params, {}, None)


# --- activation matching --------------------------------------------------------------------


def matching_network(name):
    """(module, perturbed params, spec, a batch of 64 inputs) of an MLP or conv1d."""
    options, shape, _, _ = MODELS[name]
    module = build_model(name, 10, **options)
    params, state = perturbed(*init_model(module, jax.random.key(0), shape), jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (64, *shape))
    acts = functools.partial(sequential_activations, module, state=state, x=x)
    return params, state, spec_from_params(params, state), acts


@pytest.mark.parametrize("name", ["mlp", "conv1d"])
def test_activation_matching_of_a_network_with_itself_is_the_identity(name):
    params, _, spec, acts = matching_network(name)
    a = acts(params)
    assert set(a) == set(spec.groups)
    perms = activation_matching(spec, a, a)
    for group, perm in perms.items():
        np.testing.assert_array_equal(perm, np.arange(len(perm)), err_msg=group)


@pytest.mark.parametrize("name", ["mlp", "conv1d"])
def test_activation_matching_recovers_a_permutation(name):
    params, state, spec, acts = matching_network(name)
    pi = random_permutation(spec, params, jax.random.key(4), state)
    assert all(not np.array_equal(p, np.arange(len(p))) for p in pi.values())
    params_b, _ = apply_permutation(spec, pi, params, state)
    a, b = acts(params), acts(params_b)
    for group in spec.groups:  # no dead unit on the batch, so every match is unambiguous
        assert np.all(np.asarray(a[group]).std(axis=0) > 1e-3), group
    perms = activation_matching(spec, a, b)
    for group, p in pi.items():
        np.testing.assert_array_equal(perms[group], np.argsort(p), err_msg=group)
    aligned, _ = apply_permutation(spec, perms, params_b, state)
    assert same_tree(aligned, params)


@functools.cache
def resnet_matching():
    """The ResNet-20 of `make_network` (BatchNorm, perturbed statistics) and a randomly
    permuted copy, with their activations on 16 inputs of 16x16 (a convolutional network
    takes any size): (module, params, state, spec, pi, params_b, state_b, activations of
    a, activations of b, x)."""
    module = build_model("resnet20", 10, **MODELS["resnet20"][0])
    _, _, params, state, spec, _ = make_network("resnet20")
    pi = random_permutation(spec, params, jax.random.key(4), state)
    params_b, state_b = apply_permutation(spec, pi, params, state)
    x = jax.random.normal(jax.random.key(2), (16, 16, 16, 3))
    a = resnet_activations(module, params, state, x)
    b = resnet_activations(module, params_b, state_b, x)
    return module, params, state, spec, pi, params_b, state_b, a, b, x


def test_the_activations_of_a_resnet_per_group():
    _, _, _, spec, _, _, _, a, _, _ = resnet_matching()
    assert set(a) == set(spec.groups)
    # inner groups: one position (16 inputs x 16x16, 8x8, 4x4 pixels)
    for stage, (pixels, channels) in enumerate([(256, 16), (64, 32), (16, 64)], start=1):
        for block in range(3):
            assert a[f"stage{stage}_block{block}/conv1"].shape == (16 * pixels, channels)
    # streams: stacked over the layers writing them, stem + 3 blocks, then 3 blocks each
    assert a["stage1"].shape == (4 * 16 * 256, 16)
    assert a["stage2"].shape == (3 * 16 * 64, 32)
    assert a["stage3"].shape == (3 * 16 * 16, 64)
    assert np.all(np.asarray(a["stage2"]) >= 0)  # post-ReLU block outputs


def test_activation_matching_of_a_resnet_with_itself_is_the_identity():
    _, _, _, spec, _, _, _, a, _, _ = resnet_matching()
    for group, perm in activation_matching(spec, a, a).items():
        np.testing.assert_array_equal(perm, np.arange(len(perm)), err_msg=group)


def test_activation_matching_recovers_the_permutation_of_a_resnet():
    module, params, state, spec, pi, params_b, state_b, a, b, x = resnet_matching()
    assert all(not np.array_equal(p, np.arange(len(p))) for p in pi.values())
    f = jax.jit(eval_apply(module))
    logits = f(params, state, x)
    np.testing.assert_allclose(f(params_b, state_b, x), logits, rtol=1e-4,
                               atol=1e-4 * float(jnp.abs(logits).max()))
    for group in spec.groups:  # no dead unit on the batch, so every match is unambiguous
        assert np.all(np.asarray(a[group]).std(axis=0) > 1e-3), group
    perms = activation_matching(spec, a, b)
    for group, p in pi.items():
        np.testing.assert_array_equal(perms[group], np.argsort(p), err_msg=group)
    aligned, aligned_state = apply_permutation(spec, perms, params_b, state_b)
    assert same_tree(aligned, params) and same_tree(aligned_state, state)


def test_resnet_activations_of_some_groups_only():
    module, params, state, _, _, _, _, a, _, x = resnet_matching()
    some = resnet_activations(module, params, state, x, groups=["stage3", "stage1_block0/conv1"])
    assert set(some) == {"stage3", "stage1_block0/conv1"}
    np.testing.assert_array_equal(some["stage3"], a["stage3"])
    with pytest.raises(ConfigError, match="no permutation group 'stage4'"):
        resnet_activations(module, params, state, x, groups=["stage4"])


def test_the_activation_correlation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3))
    b = np.stack([3.0 * a[:, 2] + 1.0, -a[:, 0], np.zeros(50)], axis=1)  # last unit dead
    corr = activation_correlation(a, b)
    np.testing.assert_allclose(corr[2, 0], 1.0, rtol=1e-12)
    np.testing.assert_allclose(corr[0, 1], -1.0, rtol=1e-12)
    np.testing.assert_array_equal(corr[:, 2], 0.0)
    expected = np.c_[np.corrcoef(a.T, b[:, :2].T)[:3, 3:], np.zeros(3)]
    np.testing.assert_allclose(corr, expected, atol=1e-12)
    perms = activation_matching(PermutationSpec({"h": [("params/h/kernel", 1)]}),
                                {"h": a}, {"h": b})
    np.testing.assert_array_equal(perms["h"], [2, 1, 0])  # unit 0 of a: not anticorrelated b1


def test_malformed_activations():
    spec = PermutationSpec({"h": [("params/h/kernel", 1)]})
    good = np.ones((4, 3))
    with pytest.raises(ConfigError, match="no activations of permutation group 'h'"):
        activation_matching(spec, {"h": good}, {"g": good})
    with pytest.raises(ConfigError, match="shape"):
        activation_matching(spec, {"h": good}, {"h": np.ones((5, 3))})
    with pytest.raises(ConfigError, match="at least 2"):
        activation_matching(spec, {"h": good[:1]}, {"h": good[:1]})
    with pytest.raises(ConfigError, match="finite"):
        activation_matching(spec, {"h": good}, {"h": np.full((4, 3), np.nan)})
