"""EL2N and GraNd against a direct loop over examples (one `jax.grad` per example)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from lmc.core.evaluate import cross_entropy
from lmc.core.scores import SCORES, el2n_scores, example_scores, grand_scores
from lmc.errors import ConfigError
from lmc.training.models import build_model, eval_apply, init_model
from tests.workflows.user_models import LinenBN

N = 13  # not a multiple of the chunk sizes tried: the last chunk is padded


@pytest.fixture(scope="module")
def mlp(mnist1d):
    module = build_model("mlp", 10, widths=(8,))
    params, state = init_model(module, jax.random.key(0), mnist1d.input_shape)
    return eval_apply(module), params, state, mnist1d.x_train[:N], mnist1d.y_train[:N]


@pytest.fixture(scope="module")
def bn_network(mnist1d):
    """A BatchNorm MLP with running statistics far from (0, 1): eval mode matters."""
    module = LinenBN(width=8)
    params, state = init_model(module, jax.random.key(1), mnist1d.input_shape)
    stats = state["batch_stats"]["BatchNorm_0"]
    state = {"batch_stats": {"BatchNorm_0": {"mean": stats["mean"] + 0.5,
                                             "var": stats["var"] * 3.0}}}
    return eval_apply(module), params, state, mnist1d.x_train[:N], mnist1d.y_train[:N]


@functools.cache
def _one_example(apply_fn):
    """The loss, logits and gradient of one example: compiled once per network."""
    def loss(q, s, xi, yi):
        logits = apply_fn(q, s, xi)
        return cross_entropy(logits, yi), logits

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def direct(apply_fn, params, state, x, y, mask=None):
    """(EL2N, GraNd) per example by a Python loop: a softmax in numpy and one gradient
    of the one-example loss at a time, restricted to the live weights."""
    one = _one_example(apply_fn)
    el2n, grand = [], []
    for i in range(len(y)):
        (_, logits), g = one(params, state, x[i : i + 1], y[i : i + 1])
        logits = np.asarray(logits, np.float64)[0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        el2n.append(np.linalg.norm(p - np.eye(len(p))[int(y[i])]))
        if mask is not None:
            g = jax.tree.map(lambda a, m: a * m, g, mask)
        grand.append(np.linalg.norm(np.asarray(ravel_pytree(g)[0], np.float64)))
    return np.array(el2n), np.array(grand)


def test_scores_equal_a_direct_loop(mlp):
    el2n, grand = direct(*mlp)
    scores = example_scores(*mlp, chunk_size=16)
    assert tuple(scores) == SCORES
    np.testing.assert_allclose(scores["el2n"], el2n, rtol=1e-5)
    np.testing.assert_allclose(scores["grand"], grand, rtol=1e-4)
    assert scores["el2n"].shape == scores["grand"].shape == (N,)
    assert np.all(scores["el2n"] <= np.sqrt(2) + 1e-6)  # ‖p − e_y‖ ≤ √2


def test_chunked_equals_unchunked(mlp):
    whole = example_scores(*mlp, chunk_size=N)
    for chunk in (5, 1000):  # a padded last chunk; more than N (one chunk of N)
        part = example_scores(*mlp, chunk_size=chunk)
        for name in SCORES:
            np.testing.assert_allclose(part[name], whole[name], rtol=1e-5)
    np.testing.assert_allclose(el2n_scores(*mlp, chunk_size=5), whole["el2n"], rtol=1e-5)


def test_masked_grand_counts_live_weights_only(mlp):
    apply_fn, params, state, x, y = mlp
    rng = np.random.default_rng(0)
    mask = jax.tree_util.tree_map_with_path(
        lambda path, leaf: rng.random(leaf.shape) < 0.5 if path[-1].key == "kernel"
        else np.ones(leaf.shape, bool), params)
    pruned = jax.tree.map(lambda p, m: jnp.where(m, p, 0.0), params, mask)
    _, expected = direct(apply_fn, pruned, state, x, y, mask)
    masked = grand_scores(apply_fn, pruned, state, x, y, mask=mask, chunk_size=16)
    np.testing.assert_allclose(masked, expected, rtol=1e-4)
    # the pruned coordinates have gradients too: counting them gives larger norms
    _, unmasked = direct(apply_fn, pruned, state, x, y)
    assert np.all(unmasked > masked)


def test_batchnorm_networks_are_scored_in_eval_mode(bn_network):
    el2n, grand = direct(*bn_network)  # one example at a time: running statistics only
    scores = example_scores(*bn_network, chunk_size=N)
    np.testing.assert_allclose(scores["el2n"], el2n, rtol=1e-5)
    np.testing.assert_allclose(scores["grand"], grand, rtol=1e-4)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scores": ("forgetting",)}, "unknown data score 'forgetting'; valid data scores: el2n"),
    ({"scores": ()}, "name at least one data score"),
    ({"chunk_size": 0}, "chunk size must be a positive integer, got 0"),
])
def test_bad_arguments(mlp, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        example_scores(*mlp, **kwargs)
