"""The execution policy is the one owner of vmap-or-loop choices; operators are a protocol
that a dense matrix and the Hessian both implement; compiled algorithms are shared."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmc.core.curvature import _lanczos_program, lanczos, spectral_density, top_eigenpairs
from lmc.core.evaluate import cross_entropy
from lmc.core.masks import density, prunable
from lmc.core.operators import DenseOperator, HessianOperator, LinearOperator
from lmc.core.policy import ExecutionPolicy
from lmc.errors import ConfigError
from lmc.training.config import TrainConfig
from lmc.training.models import build_model, eval_apply, init_model, policy_for
from lmc.training.trainer import Trainer


def test_policy_per_model_kind_and_backend():
    assert ExecutionPolicy.for_model(True, "gpu") == ExecutionPolicy()
    conv, dense = ExecutionPolicy.for_model(True, "cpu"), ExecutionPolicy.for_model(False, "cpu")
    assert not conv.vmap_siblings and conv.steps_per_dispatch == 1 and conv.alpha_chunk == 1
    assert conv.drive_lanczos and not dense.drive_lanczos
    assert dense.vmap_siblings and dense.alpha_chunk == 5
    assert policy_for(build_model("conv1d", 10)) == ExecutionPolicy.for_model(True)
    assert policy_for(build_model("mlp", 10)) == ExecutionPolicy.for_model(False)


def test_the_trainer_consults_the_policy_and_callers_override_it(mnist1d):
    config = TrainConfig(model="mlp", model_options={"widths": (8,)}, duration="10it")
    loop = dataclasses.replace(ExecutionPolicy.for_model(False), vmap_siblings=False,
                               steps_per_dispatch=3)
    trainer = Trainer(config, mnist1d, siblings=2, policy=loop)
    assert trainer.strategy == "loop" and trainer.steps_per_dispatch == 3
    assert Trainer(config, mnist1d, siblings=2, policy=ExecutionPolicy()).strategy == "vmap"


def symmetric(n: int, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, n))
    return (a + a.T) / 2


@pytest.mark.parametrize("drive", [True, False])
def test_lanczos_on_a_dense_operator_matches_eigh(drive):
    matrix = symmetric(12)
    op = DenseOperator(matrix, dataclasses.replace(ExecutionPolicy(), drive_lanczos=drive))
    assert isinstance(op, LinearOperator)
    top = top_eigenpairs(op, 3, steps=12)
    np.testing.assert_allclose(top.eigenvalues, np.linalg.eigvalsh(matrix)[::-1][:3],
                               rtol=1e-4, atol=1e-4)
    assert top.converged.all()
    # A full Krylov space: every probe's Ritz values are the eigenvalues
    sd = spectral_density(op, num_probes=2, steps=12)
    for nodes in sd.nodes:
        np.testing.assert_allclose(np.sort(nodes), np.linalg.eigvalsh(matrix), atol=1e-4)


def test_driven_and_looped_lanczos_agree():
    matrix = symmetric(10, seed=1)
    v0 = jnp.ones(10)
    a = lanczos(DenseOperator(matrix, ExecutionPolicy(drive_lanczos=True)), v0, 6)
    b = lanczos(DenseOperator(matrix, ExecutionPolicy(drive_lanczos=False)), v0, 6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)


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


def test_prunable_is_a_predicate_and_keep_dense_matches_paths():
    params = {"stage": {"conv": {"kernel": np.ones((2, 2)), "bias": np.ones(2)}},
              "output": {"kernel": np.ones((2, 3))}}
    assert prunable(params) == {"stage": {"conv": {"kernel": True, "bias": False}},
                                "output": {"kernel": True}}
    only_output = prunable(params, lambda path, leaf: path.startswith("output/"))
    assert only_output["stage"]["conv"]["kernel"] is False
    mask = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)
    mask["stage"]["conv"]["kernel"][0, 0] = False
    assert density(mask, keep_dense="output") == 3 / 4
    assert density(mask, keep_dense="stage/conv") == 1.0
    with pytest.raises(ConfigError, match="unknown layer 'stage/nothing'; valid layers: "
                                          "output, stage"):
        density(mask, keep_dense="stage/nothing")
