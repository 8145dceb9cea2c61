"""The Hessian operator, checked against an independent computation: the exact Hessian by
`jax.hessian` (float64) and finite differences of gradients; the dense operator."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from lmc.core.batching import batches_of
from lmc.core.masks import prunable
from lmc.core.operators import (
    DenseOperator,
    HessianOperator,
    LinearOperator,
    Subspace,
    data_parallel,
    make_hvp,
)
from lmc.core.policy import ExecutionPolicy
from lmc.errors import ConfigError

from .conftest import BATCH, SEED, WIDTH, N


def test_hvp_is_the_exact_hessian(op, dense, exact):
    assert op.dim == exact.shape[0] == 214
    np.testing.assert_allclose(dense, exact, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dense, dense.T, atol=1e-6)


def test_hvp_matches_finite_differences_of_gradients(problem, op):
    """(∇L(w+εv) − ∇L(w−εv)) / 2ε in float64, against the float32 HVP."""
    loss_fn, params, x, y = problem
    v = np.random.default_rng(1).normal(size=op.dim)
    hv = np.asarray(op.matvec(jnp.asarray(v, jnp.float32)))
    eps = 1e-5
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params))
        grad = jax.jit(jax.grad(lambda w: loss_fn(unravel(w), jnp.asarray(x, jnp.float64), y)))
        fd = np.asarray(grad(flat + eps * v) - grad(flat - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv, fd, rtol=1e-4, atol=1e-5 * np.abs(fd).max())


def test_pure_function_and_operands_are_the_matvec(op):
    """The protocol: `function(operands, v)` is `matvec(v)`; `at` moves the parameters and
    keeps the function (so compiled algorithms are shared)."""
    assert isinstance(op, LinearOperator)
    v = jax.random.normal(jax.random.key(0), (op.dim,))
    np.testing.assert_allclose(op.function(op.operands, v), op.matvec(v), rtol=1e-6, atol=1e-8)
    doubled = op.at(jax.tree.map(lambda p: 2 * p, op.params))
    assert doubled.function is op.function
    np.testing.assert_array_equal(doubled.params["output"]["kernel"],
                                  2 * op.params["output"]["kernel"])


def test_batches_accumulate_to_the_full_batch(problem, op, dense):
    loss_fn, params, x, y = problem
    xs, ys = batches_of(x, y, BATCH)
    assert xs.shape == (4, BATCH, *x.shape[1:]) and ys.shape == (4, BATCH)
    whole = HessianOperator(loss_fn, params, batches_of(x, y, N))
    vs = np.random.default_rng(4).normal(size=(3, op.dim)).astype(np.float32)
    np.testing.assert_allclose(whole.matmat(vs), vs @ dense.T, rtol=1e-4, atol=1e-6)
    # the batch loop scanned (as on accelerators) equals it unrolled (the CPU default)
    v = op.to_tree(jnp.asarray(vs[0]))
    scanned, unrolled = (jax.jit(make_hvp(loss_fn, ExecutionPolicy(unroll_batches=u)))(
        params, (xs, ys), v) for u in (0, 16))
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(unrolled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert batches_of(x[:250], y[:250], BATCH)[0].shape[0] == 2  # the incomplete batch dropped
    with pytest.raises(ConfigError, match="larger than the 400 examples"):
        batches_of(x, y, 401)


def test_masked_and_block_hessians_are_submatrices(problem, exact):
    """The Hessian at w restricted to the live weights (pruned weights need not be zero)."""
    from lmc.core.curvature import top_eigenpairs

    loss_fn, params, x, y = problem
    rng = np.random.default_rng(2)
    mask = jax.tree.map(lambda p, k: rng.random(p.shape) < 0.5 if k else np.ones(p.shape, bool),
                        params, prunable(params))
    live = np.flatnonzero(ravel_pytree(mask)[0])
    op = HessianOperator(loss_fn, params, batches_of(x, y, BATCH), mask=mask)
    assert op.dim == sum(int(np.sum(m)) for m in jax.tree.leaves(mask)) == live.size < 214
    sub = exact[np.ix_(live, live)]
    np.testing.assert_allclose(op.dense(), sub, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(top_eigenpairs(op, 3, steps=40).eigenvalues,
                               np.linalg.eigvalsh(sub)[::-1][:3], rtol=1e-4)
    v = rng.normal(size=op.dim)
    tree = op.to_tree(v)
    assert not any(np.any(t[~m]) for t, m in zip(jax.tree.leaves(tree), jax.tree.leaves(mask),
                                                 strict=True))
    # the operator's vectors are full flat vectors, zero outside the support
    assert op.size == 214 and op.from_tree(tree).shape == (214,)
    np.testing.assert_allclose(op.restrict(op.from_tree(tree)), v, rtol=1e-6)
    np.testing.assert_allclose(op.from_tree(tree), op.embed(v), rtol=1e-6)
    np.testing.assert_array_equal(op.to_tree(op.embed(v))["dense0"]["kernel"],
                                  tree["dense0"]["kernel"])
    hv = np.asarray(op.matvec(op.embed(v)))
    np.testing.assert_allclose(hv[live], sub @ v, rtol=1e-4, atol=1e-5)
    assert not np.any(np.delete(hv, live))

    block = HessianOperator(loss_fn, params, batches_of(x, y, BATCH), block=["output"])
    output = jax.tree_util.tree_map_with_path(
        lambda path, p: np.full(p.shape, path[0].key == "output"), params)
    index = np.flatnonzero(ravel_pytree(output)[0])
    assert block.dim == index.size == 4 * 10 + 10
    np.testing.assert_allclose(block.dense(), exact[np.ix_(index, index)], rtol=1e-4, atol=1e-6)


def test_prunable_selection_is_the_block_a_pruning_step_moves_in(problem, exact):
    """`select` (the prunable kernels outside keep_dense) with a mask: the operator's
    dimension is the live prunable count, and it is the exact Hessian's submatrix."""
    from lmc.core import masks

    loss_fn, params, x, y = problem
    rng = np.random.default_rng(5)
    mask = jax.tree.map(lambda p, k: rng.random(p.shape) < 0.6 if k else np.ones(p.shape, bool),
                        params, prunable(params))
    treedef = jax.tree.structure(params)
    select = jax.tree.unflatten(treedef, masks.eligible(params, ("output",)))
    op = HessianOperator(loss_fn, params, batches_of(x, y, BATCH), mask=mask, select=select)
    assert op.dim == masks.count_alive(mask, ("output",)) == int(mask["dense0"]["kernel"].sum())
    keep = jax.tree_util.tree_map_with_path(
        lambda path, m: m & (path[0].key == "dense0") & (path[-1].key == "kernel"), mask)
    index = np.flatnonzero(ravel_pytree(keep)[0])
    np.testing.assert_array_equal(op.subspace.index, index)
    np.testing.assert_allclose(op.dense(), exact[np.ix_(index, index)], rtol=1e-4, atol=1e-6)
    # per-leaf Python bools and arrays both select; a tree of another shape does not
    every_kernel = Subspace.of(params, mask, select=prunable(params))
    assert every_kernel.dim == masks.count_alive(mask)
    with pytest.raises(ConfigError, match="selection must be a tree shaped like"):
        Subspace.of(params, mask, select={"dense0": True})
    with pytest.raises(ConfigError, match="empty"):
        Subspace.of(params, block=["output"], select=select)


def test_subspace_errors(problem):
    loss_fn, params, x, y = problem
    batches = batches_of(x, y, N)
    with pytest.raises(ConfigError, match="unknown block.*nope.*valid blocks: dense0, output"):
        HessianOperator(loss_fn, params, batches, block=["nope"])
    with pytest.raises(ConfigError, match="empty"):
        HessianOperator(loss_fn, params, batches,
                        mask=jax.tree.map(lambda p: np.zeros(p.shape, bool), params))


def test_dense_operator():
    matrix = np.arange(9.0, dtype=np.float32).reshape(3, 3)
    matrix = matrix + matrix.T
    op = DenseOperator(matrix)
    assert isinstance(op, LinearOperator) and op.dim == 3 and op.dtype == np.float32
    v = np.array([1.0, -2.0, 0.5], np.float32)
    np.testing.assert_allclose(op.matvec(v), matrix @ v, rtol=1e-6)
    np.testing.assert_allclose(op.function(op.operands, v), matrix @ v, rtol=1e-6)
    vs = np.stack([v, 2 * v])
    np.testing.assert_allclose(op.matmat(vs), vs @ matrix.T, rtol=1e-6)
    with pytest.raises(ConfigError, match="square matrix"):
        DenseOperator(np.zeros((2, 3)))


def test_data_parallel_hvp_over_four_devices(tmp_path, data_dir, problem, op):
    """Batches split over 4 simulated CPU devices give the single-device HVP."""
    script = textwrap.dedent(f"""
        import json, jax, numpy as np
        from lmc.core.batching import batches_of
        from lmc.core.evaluate import cross_entropy
        from lmc.core.operators import HessianOperator, data_parallel
        from lmc.training.data import load_dataset
        from lmc.training.models import build_model, eval_apply, init_model
        ds = load_dataset("mnist1d", {str(data_dir)!r})
        module = build_model("mlp", 10, widths=({WIDTH},))
        params, state = init_model(module, jax.random.key({SEED}), ds.input_shape)
        f = eval_apply(module)
        loss_fn = lambda p, x, y: cross_entropy(f(p, state, x), y)
        batches = batches_of(ds.x_train[:{N}], ds.y_train[:{N}], {BATCH})
        (xs, _), _ = data_parallel(batches, params)
        op = HessianOperator(loss_fn, params, batches)
        v = jax.random.normal(jax.random.key(7), (op.dim,))
        np.save({str(tmp_path / "hv.npy")!r}, np.asarray(op.matvec(v)))
        print(json.dumps({{"devices": jax.device_count(),
                           "batches": len(xs.sharding.device_set),
                           "shard": list(xs.addressable_shards[0].data.shape[:2]),
                           "params": len(op.params["output"]["kernel"].sharding.device_set)}}))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"devices": 4, "batches": 4, "shard": [4, BATCH // 4], "params": 4}
    _, params, x, y = problem
    batches = batches_of(x, y, BATCH)
    assert data_parallel(batches, params)[0] is batches  # one device: batches unchanged
    v = jax.random.normal(jax.random.key(7), (op.dim,))
    np.testing.assert_allclose(np.load(tmp_path / "hv.npy"), op.matvec(v), rtol=1e-5, atol=1e-7)


def test_batchnorm_state_is_an_operand_not_a_constant():
    """A `StatefulLoss` puts the model state (BatchNorm statistics) among the operands:
    two checkpoints with other statistics share one pure HVP, and each operator is the
    Hessian at its own statistics (against a plain closure over them)."""
    import flax.linen as nn

    from lmc.core.evaluate import cross_entropy
    from lmc.core.operators import StatefulLoss

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(5)(x)
            x = nn.BatchNorm(use_running_average=True, name="norm")(x)
            return nn.Dense(3)(nn.relu(x))

    net = Net()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = rng.integers(0, 3, 32).astype(np.int32)
    variables = net.init(jax.random.key(0), x)
    params = variables["params"]

    def fn(p, state, x, y):
        return cross_entropy(net.apply({"params": p, **state}, x), y)

    def stats(shift):
        return {"batch_stats": {"norm": {"mean": shift * np.ones(5, np.float32),
                                         "var": (1 + shift) * np.ones(5, np.float32)}}}

    batches = batches_of(x, y, 16)
    ops = [HessianOperator(StatefulLoss(fn, stats(s)), params, batches) for s in (0.0, 0.5)]
    assert ops[0].function is ops[1].function
    for op, s in zip(ops, (0.0, 0.5), strict=True):
        state = stats(s)
        closure = HessianOperator(lambda p, x, y, state=state: fn(p, state, x, y), params,
                                  batches)
        np.testing.assert_allclose(op.dense(), closure.dense(), rtol=1e-5, atol=1e-6)
    assert np.abs(ops[0].dense() - ops[1].dense()).max() > 1e-3
