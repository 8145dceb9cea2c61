"""Callers override the execution policy; operators that share a function share compiled
algorithms."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from lmc.core.curvature import _lanczos_program, top_eigenpairs
from lmc.core.evaluate import cross_entropy
from lmc.core.operators import HessianOperator
from lmc.core.policy import ExecutionPolicy
from lmc.training.config import TrainConfig
from lmc.training.models import build_model, eval_apply, init_model
from lmc.training.trainer import Trainer


def test_the_trainer_consults_the_policy_and_callers_override_it(mnist1d):
    config = TrainConfig(model="mlp", model_options={"widths": (8,)}, duration="10it")
    loop = dataclasses.replace(ExecutionPolicy.for_model(False), vmap_siblings=False,
                               steps_per_dispatch=3)
    trainer = Trainer(config, mnist1d, siblings=2, policy=loop)
    assert trainer.strategy == "loop" and trainer.steps_per_dispatch == 3
    assert Trainer(config, mnist1d, siblings=2, policy=ExecutionPolicy()).strategy == "vmap"


def test_operators_sharing_a_function_share_compiled_lanczos(mnist1d):
    module = build_model("mlp", 10, widths=(6,))
    params, state = init_model(module, jax.random.key(0), mnist1d.input_shape)
    apply = eval_apply(module)

    def loss(p, x, y):
        return cross_entropy(apply(p, state, x), y)

    batches = (mnist1d.x_train[:64].reshape(2, 32, -1), mnist1d.y_train[:64].reshape(2, 32))
    op = HessianOperator(loss, params, batches)
    moved = op.at(jax.tree.map(lambda p: 2 * p, params))
    assert moved.function is op.function
    top_eigenpairs(op, 1, steps=5)
    misses = _lanczos_program.cache_info().misses
    top_eigenpairs(moved, 1, steps=5)
    assert _lanczos_program.cache_info().misses == misses  # the program was reused
    # the moved operator is the Hessian at the new parameters
    exact = HessianOperator(loss, moved.params, batches).dense()
    np.testing.assert_allclose(moved.dense(), exact, rtol=1e-5, atol=1e-6)


