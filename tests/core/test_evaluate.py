"""The evaluation function: loss and accuracy over batches, of one network or a stack."""

import jax
import numpy as np
import pytest

from lmc.core.evaluate import Evaluator, cross_entropy
from lmc.training.models import build_model, eval_apply, init_model


@pytest.fixture(scope="module")
def networks():
    module = build_model("mlp", 3, widths=(6,))
    keys = jax.random.split(jax.random.key(0), 2)
    params = [init_model(module, k, (5,))[0] for k in keys]
    x = np.asarray(jax.random.normal(jax.random.key(1), (103, 5)))
    y = np.asarray(jax.random.randint(jax.random.key(2), (103,), 0, 3))
    return eval_apply(module), params, x, y


def direct(apply_fn, params, x, y):
    logits = np.asarray(apply_fn(params, {}, x), np.float64)
    z = logits - logits.max(1, keepdims=True)
    losses = np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]
    return losses.mean(), np.mean(logits.argmax(1) == y)


def test_batched_sums_equal_the_whole_set(networks):
    apply_fn, params, x, y = networks
    loss, accuracy = direct(apply_fn, params[0], x, y)
    for batch_size in (10, 103, 1000):  # an incomplete last batch; one batch; larger than n
        m = Evaluator(apply_fn, batch_size)(params[0], {}, x, y)
        assert m["loss"] == pytest.approx(loss, rel=1e-5)
        assert m["accuracy"] == pytest.approx(accuracy) and m["error"] == pytest.approx(
            1 - accuracy)
    assert float(cross_entropy(apply_fn(params[0], {}, x), y)) == pytest.approx(loss, rel=1e-5)


def test_a_stack_of_networks_in_one_program(networks):
    apply_fn, params, x, y = networks
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *params)
    m = Evaluator(apply_fn, 25, network_axes=(0, None))(stacked, {}, x, y)
    for i, p in enumerate(params):
        loss, accuracy = direct(apply_fn, p, x, y)
        assert m["loss"][i] == pytest.approx(loss, rel=1e-5)
        assert m["accuracy"][i] == pytest.approx(accuracy)
