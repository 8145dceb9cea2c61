"""Learning-rate schedules (built from optax) against the formulas they implement."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmc.training.config import Duration, TrainConfig
from lmc.training.trainer import learning_rate_schedule, make_optimizer


def reference(config: TrainConfig, spe: int, step: int) -> float:
    """The schedule written out directly, in float64."""
    lr, total = config.lr, Duration.parse(config.duration).steps(spe)
    if config.schedule == "constant":
        value = lr
    elif config.schedule == "step":
        passed = sum(step >= Duration.parse(m).steps(spe) for m in config.milestones)
        value = lr * config.gamma ** passed
    elif config.schedule == "cosine":
        value = lr * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
    else:  # cycle i lasts ceil(cycle * cycle_mult**i) steps
        first, begin, i = Duration.parse(config.cycle).steps(spe), 0, 0
        while step >= begin + math.ceil(first * config.cycle_mult ** i):
            begin += math.ceil(first * config.cycle_mult ** i)
            i += 1
        length = math.ceil(first * config.cycle_mult ** i)
        value = lr * 0.5 * (1 + math.cos(math.pi * (step - begin) / length))
    warmup = Duration.parse(config.warmup).steps(spe)
    return value * min(1.0, (step + 1) / warmup) if warmup else value


def evaluate(config: TrainConfig, spe: int, steps: int) -> np.ndarray:
    """The schedule at steps 0..steps-1, jitted on int32 counts as optax's optimizers do."""
    f = learning_rate_schedule(config, spe)
    return np.asarray(jax.jit(jax.vmap(f))(jnp.arange(steps, dtype=jnp.int32)))


def assert_matches_reference(config: TrainConfig, spe: int) -> np.ndarray:
    total = Duration.parse(config.duration).steps(spe)
    got = evaluate(config, spe, total)
    want = np.array([reference(config, spe, s) for s in range(total)])
    assert got.dtype == np.float32
    # float32 rounding only: a few ulps relative, and ulps of lr near the zeros of cos.
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * config.lr)
    return got


CONFIGS = [
    dict(schedule="constant", lr=0.05),
    dict(schedule="constant", lr=0.1, warmup="7it"),
    dict(schedule="constant", lr=0.3, warmup="41it"),  # float32 (1/41) * 41 < 1
    dict(schedule="constant", lr=0.1, warmup="1it"),
    dict(schedule="step", lr=1.0, milestones=("1ep", "20it"), duration="4ep"),
    dict(schedule="step", lr=0.4, milestones=("25it", "0it", "12it", "25it"), gamma=0.5,
         duration="40it", warmup="6it"),
    dict(schedule="step", lr=0.1, milestones=("3ep",), gamma=0.2, duration="2ep"),  # never hit
    dict(schedule="cosine", lr=2.0, duration="100it"),
    dict(schedule="cosine", lr=0.05, duration="3ep", warmup="1ep"),
    dict(schedule="cyclic", lr=1.0, cycle="10it", cycle_mult=2.0, duration="70it"),
    dict(schedule="cyclic", lr=0.1, cycle="7it", cycle_mult=1.5, duration="250it"),
    dict(schedule="cyclic", lr=0.2, cycle="5it", cycle_mult=1.3, duration="120it",
         warmup="9it"),
    dict(schedule="cyclic", lr=0.1, cycle="1ep", cycle_mult=1.0, duration="5ep", warmup="4it"),
]


@pytest.mark.parametrize("changes", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_schedule_equals_its_formula_at_every_step(changes):
    assert_matches_reference(TrainConfig(**changes), spe=10)


def test_constant_and_step_values_are_exact_after_warmup():
    lr = np.float32(0.3)
    for w in (2, 7, 41, 83):
        got = assert_matches_reference(TrainConfig(schedule="constant", lr=0.3, warmup=f"{w}it",
                                                   duration="100it"), 10)
        assert np.all(got[w - 1:] == lr), w  # the warmup factor ends at exactly 1
    assert np.all(evaluate(TrainConfig(schedule="constant", lr=0.3), 10, 50) == lr)
    step = evaluate(TrainConfig(schedule="step", lr=0.5, gamma=0.5, milestones=("10it", "20it"),
                                duration="30it"), 10, 30)
    np.testing.assert_array_equal(step, np.repeat(np.float32([0.5, 0.25, 0.125]), 10))


def test_cyclic_restarts_at_the_cycle_boundaries():
    """cycle_mult 1.5 from 7 steps: cycles of 7, 11, 16, 24, 36, 54, 80 steps."""
    config = TrainConfig(schedule="cyclic", lr=0.1, cycle="7it", cycle_mult=1.5,
                         duration="228it")
    got = assert_matches_reference(config, 10)
    restarts = np.cumsum([0, 7, 11, 16, 24, 36, 54])
    np.testing.assert_array_equal(got[restarts], np.float32(0.1))
    assert np.all(got[restarts[1:] - 1] < 0.1 * 0.05)  # a trough just before each restart
    rising = np.flatnonzero(np.diff(got) > 0) + 1
    np.testing.assert_array_equal(rising, restarts[1:])  # decreasing within every cycle
    beyond = evaluate(config, 10, 240)[228:]  # past the last cycle: 0, never NaN
    np.testing.assert_allclose(beyond, 0.0, atol=1e-7)


def test_cyclic_ends_where_the_run_ends_mid_cycle():
    config = TrainConfig(schedule="cyclic", lr=1.0, cycle="10it", cycle_mult=2.0,
                         duration="50it")  # cycles [0, 10), [10, 30), [30, 70)
    got = assert_matches_reference(config, 10)
    assert got[30] == 1.0  # the last cycle keeps its length: 19 of its 40 steps by the end
    assert float(got[49]) == pytest.approx(0.5 * (1 + math.cos(math.pi * 19 / 40)))


def test_optimizer_applies_the_schedule_from_step_zero():
    config = TrainConfig(optimizer="sgd", schedule="cyclic", lr=0.2, cycle="4it",
                         cycle_mult=1.5, duration="20it", warmup="3it")
    tx = make_optimizer(config, 10)
    params = {"w": jnp.zeros(2)}
    grads = {"w": jnp.array([1.0, -2.0])}
    state = tx.init(params)
    update = jax.jit(lambda s: tx.update(grads, s, params))
    for step in range(20):
        updates, state = update(state)
        np.testing.assert_allclose(np.asarray(updates["w"]),
                                   -reference(config, 10, step) * np.array([1.0, -2.0]),
                                   rtol=1e-6, atol=1e-7)
