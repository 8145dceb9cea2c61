"""Training configs, durations, schedules, optimizers and the noise keys."""

import jax.numpy as jnp
import numpy as np
import pytest

from lmc.errors import ConfigError
from lmc.training.config import Duration, TrainConfig
from lmc.training.rng import noise_keys
from lmc.training.trainer import learning_rate_schedule, make_optimizer


def test_duration_parsing():
    assert Duration.parse("500it").steps(31) == 500
    assert Duration.parse("3ep").steps(31) == 93
    assert Duration.parse(7) == Duration(7, "it")
    assert str(Duration.parse(" 12 ep")) == "12ep"
    with pytest.raises(ConfigError, match="'500it' or epochs as '160ep'"):
        Duration.parse("500 steps")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr": -0.1}, "learning rate must be a positive number, got -0.1"),
        ({"lr": float("nan")}, "learning rate"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'; valid optimizers: adam, adamw"),
        ({"schedule": "poly"}, "valid schedules: constant, cosine, cyclic, step"),
        ({"batch_size": 0}, "batch size must be a positive integer"),
        ({"duration": "0it"}, "duration must be positive"),
        ({"momentum": 1.0}, "momentum must be in"),
        ({"l1": -1e-5}, "l1 penalty must be a finite number >= 0, got -1e-05"),
        ({"l1": float("inf")}, "l1 penalty"),
        ({"l1": float("nan")}, "l1 penalty"),
    ],
)
def test_bad_config_values_raise_readable_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_config_round_trip_and_unknown_fields():
    c = TrainConfig(model="mlp", model_options={"widths": (64, 64)}, milestones=("2ep",))
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown config field\\(s\\) learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_l1_field_leaves_older_run_ids_unchanged():
    from lmc.training.runs import RunSpec

    # The id of the default config, computed before `l1` existed: it must not change.
    assert RunSpec(TrainConfig()).run_id == "conv1d-mnist1d-35c1679f6137"
    assert RunSpec(TrainConfig(l1=0.0)).run_id == "conv1d-mnist1d-35c1679f6137"
    assert "l1" not in TrainConfig().to_dict()
    assert TrainConfig.from_dict({}).l1 == 0.0
    on = TrainConfig(l1=1e-4)
    assert on.to_dict()["l1"] == 1e-4 and TrainConfig.from_dict(on.to_dict()) == on
    assert RunSpec(on).run_id != RunSpec(TrainConfig()).run_id
    assert RunSpec(on).run_id != RunSpec(TrainConfig(l1=2e-4)).run_id


def test_schedules():
    step = TrainConfig(lr=1.0, schedule="step", milestones=("1ep", "20it"), duration="4ep")
    f = learning_rate_schedule(step, steps_per_epoch=10)
    assert [float(f(s)) for s in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    cos = learning_rate_schedule(TrainConfig(lr=2.0, schedule="cosine", duration="100it"), 10)
    assert float(cos(0)) == pytest.approx(2.0) and float(cos(50)) == pytest.approx(1.0)
    assert float(cos(100)) == pytest.approx(0.0, abs=1e-6)
    warm = learning_rate_schedule(TrainConfig(lr=1.0, schedule="constant", warmup="10it"), 10)
    assert float(warm(0)) == pytest.approx(0.1) and float(warm(9)) == pytest.approx(1.0)
    cyc = learning_rate_schedule(
        TrainConfig(lr=1.0, schedule="cyclic", cycle="10it", cycle_mult=2, duration="70it"), 10
    )
    # cycles [0, 10), [10, 30), [30, 70): restarts at 10 and 30, troughs just before.
    values = np.array([float(cyc(s)) for s in range(70)])
    assert values[0] == values[10] == values[30] == 1.0
    assert values[9] < 0.05 and values[29] < 0.01 and values[69] < 0.01
    assert float(cyc(20)) == pytest.approx(0.5)


def test_weight_decay_is_coupled_l2_for_sgd():
    tx = make_optimizer(TrainConfig(optimizer="sgd", lr=0.5, weight_decay=0.1), 10)
    params = {"w": jnp.array([2.0])}
    updates, _ = tx.update({"w": jnp.array([1.0])}, tx.init(params), params)
    assert float(updates["w"][0]) == pytest.approx(-0.5 * (1.0 + 0.1 * 2.0))


def test_sibling_index_changes_only_data_and_augmentation_keys():
    import jax

    c = TrainConfig(seed=3)
    base, child = noise_keys(c), noise_keys(c, sibling=1)
    same = lambda a, b: bool(jnp.all(jax.random.key_data(a) == jax.random.key_data(b)))  # noqa: E731
    assert not same(base.data, child.data) and not same(base.augment, child.augment)
    assert same(base.dropout, child.dropout)
    assert not same(base.data, base.augment)
