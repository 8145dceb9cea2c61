"""Training: determinism, masks, the sibling axis, divergence, sharding."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmc.core.masks import prunable
from lmc.core.policy import ExecutionPolicy
from lmc.errors import TrainingDiverged
from lmc.training.config import TrainConfig
from lmc.training.rng import noise_keys
from lmc.training.trainer import Trainer, dispatch_lengths, l1_norm, l1_penalised, train

from ..conftest import TINY_MLP

SMALL = TINY_MLP.replace(duration="60it")
# The MLP's policy on the CPU with the sibling axis vmapped or looped.
VMAP = ExecutionPolicy.for_model(convolutional=False, backend="cpu")
LOOP = dataclasses.replace(VMAP, vmap_siblings=False)


def _equal(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


def _close(a, b, rtol=1e-5, atol=1e-6):
    return all(jax.tree.leaves(jax.tree.map(
        lambda x, y: bool(jnp.allclose(x, y, rtol=rtol, atol=atol)), a, b)))


def test_training_learns_and_is_deterministic(mnist1d):
    a = train(SMALL.replace(duration="300it"), mnist1d, eval_every="100it", progress=False)
    b = train(SMALL.replace(duration="300it"), mnist1d, eval_every="100it", progress=False)
    assert _equal(a.states[0].params, b.states[0].params)
    history = a.history[0]
    assert [h["step"] for h in history] == [0, 100, 200, 300]
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.3  # chance is 0.1
    c = train(SMALL.replace(duration="300it", seed=1), mnist1d, progress=False)
    assert not _equal(a.states[0].params, c.states[0].params)


def test_scan_dispatch_matches_one_step_per_dispatch(mnist1d):
    runs = []
    for k in (1, 25):
        t = Trainer(SMALL, mnist1d, policy=dataclasses.replace(VMAP, steps_per_dispatch=k))
        assert t.steps_per_dispatch == k
        runs.append(t.run([t.init_state()], [noise_keys(SMALL)], progress=False).states[0])
    assert _close(runs[0].params, runs[1].params)


def test_dispatch_lengths_are_full_dispatches_then_powers_of_two():
    assert dispatch_lengths(250, 100) == [100, 100, 32, 16, 2]
    assert dispatch_lengths(100, 100) == [100] and dispatch_lengths(7, 1) == [1] * 7
    for n in range(1, 300):
        parts = dispatch_lengths(n, 100)
        assert sum(parts) == n and len(set(parts) - {100}) == len(parts) - parts.count(100)


def test_uneven_event_gaps_compile_a_few_programs_and_change_no_number(mnist1d):
    """Events 1, 2, ..., 10 steps apart run as dispatches of 1, 2, 4 and 8 steps: four
    compiled step programs, not ten, and bit for bit the numbers of one step per
    dispatch."""
    # a recipe no other test trains: trainers of one config share their compiled programs
    config = SMALL.replace(lr=0.0321)
    policy = dataclasses.replace(VMAP, steps_per_dispatch=32)
    uneven = Trainer(config, mnist1d, policy=policy)
    events = np.cumsum(np.arange(1, 11)).tolist()  # 1, 3, 6, ..., 55: gaps 1 to 10; 60 ends
    out = uneven.run([uneven.init_state()], [noise_keys(config)], event_steps=events,
                     progress=False)
    assert uneven._steps._cache_size() == 4
    stepwise = Trainer(config, mnist1d, policy=dataclasses.replace(VMAP, steps_per_dispatch=1))
    ref = stepwise.run([stepwise.init_state()], [noise_keys(config)], progress=False)
    for a, b in zip(jax.tree.leaves(out.states[0].params), jax.tree.leaves(ref.states[0].params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_mask_keeps_pruned_weights_exactly_zero(mnist1d):
    t = Trainer(SMALL, mnist1d)
    params = t.init_state().params
    rng = np.random.default_rng(0)
    mask = jax.tree.map(lambda p: rng.random(p.shape) < 0.5, params)
    mask = jax.tree.map(lambda m, p: m if p else np.ones_like(m), mask, prunable(params))
    masked = Trainer(SMALL, mnist1d, mask=mask)
    start = masked.init_state()
    final = masked.run([start], [noise_keys(SMALL)], progress=False).states[0]
    for p0, p1, m in zip(jax.tree.leaves(start.params), jax.tree.leaves(final.params),
                         jax.tree.leaves(mask), strict=True):
        assert np.all(np.asarray(p1)[~m] == 0.0)
        assert np.all(np.asarray(p0)[~m] == 0.0)
        assert np.any(np.asarray(p1)[m] != np.asarray(p0)[m])  # the live weights train
    # momentum of pruned weights stays zero, so they could not come back later either
    momentum = final.opt_state[0].trace
    for trace, m in zip(jax.tree.leaves(momentum), jax.tree.leaves(mask), strict=True):
        assert np.all(np.asarray(trace)[~m] == 0.0)


def test_l1_penalty_shrinks_the_weights(mnist1d):
    config = SMALL.replace(duration="100it")
    plain = train(config, mnist1d, progress=False).states[0].params
    sparse = train(config.replace(l1=1e-3), mnist1d, progress=False).states[0].params
    assert float(l1_norm(sparse)) < 0.9 * float(l1_norm(plain))


def test_training_loss_includes_the_l1_penalty(mnist1d):
    """One plain-SGD step moves the parameters by -lr * grad(CE + l1 * sum|theta|)."""
    from lmc.core.evaluate import cross_entropy
    from lmc.training.data import steps_batch_indices
    from lmc.training.models import apply_model

    lr, l1 = 0.1, 1e-2
    config = SMALL.replace(optimizer="sgd", schedule="constant", lr=lr, l1=l1, augment=False,
                           duration="1it")
    t = Trainer(config, mnist1d)
    start, keys = t.init_state(), noise_keys(config)
    after = t.run([start], [keys], progress=False).states[0].params
    idx = steps_batch_indices(keys.data, 0, 1, mnist1d.num_train, config.batch_size)[0]
    xb, yb = mnist1d.x_train[idx], mnist1d.y_train[idx]

    def loss(params, penalty):
        logits, _ = apply_model(t.module, params, start.state, xb, train=True)
        return cross_entropy(logits, yb) + penalty * sum(
            jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(params))

    step = jax.tree.map(lambda a, b: (a - b) / lr, start.params, after)
    assert _close(step, jax.grad(loss)(start.params, l1), rtol=1e-3, atol=1e-5)
    assert not _close(step, jax.grad(loss)(start.params, 0.0), rtol=1e-3, atol=1e-5)


def test_l1_covers_weights_and_biases_but_not_norm_parameters():
    params = {"conv": {"kernel": 1, "bias": 2}, "norm": {"scale": 3, "bias": 4},
              "block": {"conv1": {"kernel": 5}, "norm1": {"bias": 6, "scale": 7}}}
    assert l1_penalised(params) == {"conv": {"kernel": True, "bias": True},
                                    "norm": {"scale": False, "bias": False},
                                    "block": {"conv1": {"kernel": True},
                                              "norm1": {"bias": False, "scale": False}}}


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_siblings_together_equal_each_sibling_alone(mnist1d, strategy):
    config = SMALL.replace(duration="80it")
    group = Trainer(config, mnist1d, siblings=3, policy=VMAP if strategy == "vmap" else LOOP)
    assert group.strategy == strategy
    start = group.init_state()
    together = group.run([start] * 3, [noise_keys(config, i) for i in range(3)],
                         eval_every=40, progress=False)
    alone_trainer = Trainer(config, mnist1d)
    for i in range(3):
        alone = alone_trainer.run([start], [noise_keys(config, i)], eval_every=40, progress=False)
        same = _equal if strategy == "loop" else _close
        assert same(together.states[i].params, alone.states[0].params)
        assert together.history[i][-1]["test_loss"] == pytest.approx(
            alone.history[0][-1]["test_loss"], rel=1e-5)
    # siblings share their start but not their SGD noise, so they end apart
    assert not _close(together.states[0].params, together.states[1].params)


def test_nan_loss_stops_training(mnist1d):
    config = SMALL.replace(lr=1e6, duration="200it")
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        train(config, mnist1d, progress=False)


def test_sibling_axis_is_sharded_over_devices(tmp_path, data_dir, mnist1d):
    """On 4 simulated CPU devices, 4 vmapped siblings spread over all and give the same result."""
    script = textwrap.dedent(f"""
        import json, jax, numpy as np
        from lmc.core.policy import ExecutionPolicy
        from lmc.training.config import TrainConfig
        from lmc.training.data import load_dataset
        from lmc.training.rng import noise_keys
        from lmc.training.trainer import Trainer
        config = TrainConfig.from_dict(json.loads({json.dumps(SMALL.to_dict())!r}))
        ds = load_dataset("mnist1d", {str(data_dir)!r})
        t = Trainer(config, ds, siblings=4, policy=ExecutionPolicy(vmap_siblings=True))
        start = t.init_state()
        keys = [noise_keys(config, i) for i in range(4)]
        placed, _ = t._place([start] * 4, keys)[0]
        devices = len(placed.params["output"]["kernel"].sharding.device_set)
        out = t.run([start] * 4, keys, progress=False).states
        np.savez({str(tmp_path / "out.npz")!r},
                 *[np.asarray(s.params["output"]["kernel"]) for s in out])
        print(json.dumps({{"devices": jax.device_count(), "used": devices}}))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"devices": 4, "used": 4}
    sharded = np.load(tmp_path / "out.npz")
    t = Trainer(SMALL, mnist1d)
    for i in range(4):
        alone = t.run([t.init_state()], [noise_keys(SMALL, i)], progress=False).states[0]
        np.testing.assert_allclose(sharded[f"arr_{i}"], alone.params["output"]["kernel"],
                                   rtol=1e-5, atol=1e-6)


def test_trains_on_tfds_mock_data_with_augmentation_and_batchnorm(mock_cifar10):
    """The flax-examples check: a few real steps on tfds mock data (CIFAR-10 shapes)."""
    config = TrainConfig(model="resnet20", dataset="cifar10", batch_size=16, duration="2it",
                         weight_decay=1e-4, lr=0.1)
    assert mock_cifar10.augmentation == "crop_flip"
    t = Trainer(config, mock_cifar10)
    start = t.init_state()
    out = t.run([start], [noise_keys(config)], progress=False)
    final = out.states[0]
    assert int(final.step) == 2 and np.isfinite(out.history[0][-1]["train_loss"])
    assert not _equal(start.state["batch_stats"], final.state["batch_stats"])


def test_default_policy_follows_the_model_kind(mnist1d, tiny_conv1d_config):
    """Without a policy the trainer takes its model's: convolutions on the CPU train as a
    loop of one step per dispatch, dense models vmapped with many steps per dispatch."""
    conv = Trainer(tiny_conv1d_config, mnist1d, siblings=2)
    assert conv.policy == ExecutionPolicy.for_model(True)
    dense = Trainer(SMALL, mnist1d, siblings=2)
    assert dense.policy == ExecutionPolicy.for_model(False)
    if conv.policy == ExecutionPolicy.for_model(True, "cpu"):
        assert (conv.strategy, conv.steps_per_dispatch) == ("loop", 1)
        assert (dense.strategy, dense.steps_per_dispatch) == ("vmap", 100)
    assert Trainer(SMALL, mnist1d).strategy == "loop"  # one sibling: nothing to vmap
