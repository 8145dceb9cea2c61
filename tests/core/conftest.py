"""Fixtures of the core tests: a tiny MLP's loss on MNIST-1D and its exact Hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from lmc.core.batching import batches_of
from lmc.core.evaluate import cross_entropy
from lmc.core.operators import HessianOperator
from lmc.training.models import build_model, eval_apply, init_model

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
