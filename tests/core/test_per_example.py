"""Per-example barriers along the path between two networks, checked against a direct loop
over examples and α, a constructed case and the aggregate curve."""

import jax
import numpy as np
import pytest

from lmc.constants import EXAMPLE_LOSS_THRESHOLD
from lmc.core.evaluate import Evaluator
from lmc.core.interpolate import (
    PathEvaluator,
    alpha_grid,
    barriers,
    connected_fractions,
    example_barriers,
    lerp,
)
from lmc.core.policy import ExecutionPolicy
from lmc.errors import ConfigError
from lmc.training.models import build_model, eval_apply, init_model

ALPHAS = alpha_grid(5)


@pytest.fixture(scope="module")
def pair():
    """A tiny MLP (5 -> 6 -> 3), two initialisations and 12 random examples."""
    module = build_model("mlp", 3, widths=(6,))
    a, b = (init_model(module, jax.random.key(k), (5,))[0] for k in (0, 1))
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 5)).astype(np.float32), rng.integers(0, 3, 12)
    return eval_apply(module), a, b, x, y


@pytest.fixture(scope="module")
def paths(pair):
    """The path's curves with per-example arrays, all α vmapped and α by α; without them;
    and from A to A. Batches of 5: an incomplete last batch."""
    apply_fn, a, b, x, y = pair
    data = {"train": (x, y)}
    vmapped, looped = (PathEvaluator(apply_fn, batch_size=5,
                                     policy=ExecutionPolicy(alpha_chunk=chunk))
                       for chunk in (None, 1))
    return {"vmapped": vmapped.curves(a, b, data, alphas=ALPHAS, per_example=True)["train"],
            "looped": looped.curves(a, b, data, alphas=ALPHAS, per_example=True)["train"],
            "aggregate": vmapped.curves(a, b, data, alphas=ALPHAS)["train"],
            "same": vmapped.curves(a, a, data, alphas=ALPHAS, per_example=True)["train"]}


def test_barriers_of_a_stack_of_curves_are_those_of_each_curve():
    f = np.random.default_rng(0).normal(size=(4, 3))
    alphas = [0.0, 0.4, 0.6, 1.0]  # ½ off the grid
    stacked = barriers(f, alphas)
    for j in range(f.shape[1]):
        for name, value in barriers(f[:, j], alphas).items():
            assert stacked[name][j] == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("layout", ["vmapped", "looped"])
def test_per_example_barriers_equal_a_direct_loop(pair, paths, layout):
    apply_fn, a, b, x, y = pair
    c = paths[layout]
    assert c["example_loss"].shape == c["example_correct"].shape == (len(ALPHAS), len(y))
    ours = example_barriers(c["example_loss"], c["example_correct"], ALPHAS)
    logits_of = jax.jit(lambda p, inputs: apply_fn(p, {}, inputs))
    for i in range(len(y)):
        loss, error = [], []
        for alpha in ALPHAS:  # one example, one network at a time
            logits = np.asarray(logits_of(lerp(a, b, float(alpha)), x[i : i + 1])[0], np.float64)
            z = logits - logits.max()
            loss.append(np.log(np.exp(z).sum()) - z[y[i]])
            error.append(float(logits.argmax() != y[i]))
        np.testing.assert_allclose(c["example_loss"][:, i], loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(c["example_correct"][:, i], np.array(error) == 0)
        chord = [max(f[k] - ((1 - al) * f[0] + al * f[-1]) for k, al in enumerate(ALPHAS))
                 for f in (loss, error)]
        assert ours["loss"][i] == pytest.approx(chord[0], abs=1e-5)
        assert ours["error"][i] == pytest.approx(chord[1], abs=1e-12)


def test_per_example_means_equal_the_curve(pair, paths):
    apply_fn, a, _, x, y = pair
    c, aggregate = paths["vmapped"], paths["aggregate"]
    assert set(aggregate) == {"loss", "error"}
    np.testing.assert_allclose(c["example_loss"].mean(1), c["loss"], rtol=1e-5)
    np.testing.assert_allclose(1 - c["example_correct"].mean(1), c["error"], atol=1e-12)
    np.testing.assert_allclose(c["loss"], aggregate["loss"], rtol=1e-6)
    np.testing.assert_array_equal(c["error"], aggregate["error"])
    # the Evaluator alone, one network: every example, in batches
    m = Evaluator(apply_fn, 5, per_example=True)(a, {}, x, y)
    assert m["example_loss"].shape == (12,) and m["example_correct"].dtype == bool
    assert m["example_loss"].mean() == pytest.approx(m["loss"], rel=1e-5)
    np.testing.assert_allclose(m["example_loss"], c["example_loss"][0], rtol=1e-5)


def test_identical_endpoints_connect_every_example(paths):
    c = paths["same"]
    each = example_barriers(c["example_loss"], c["example_correct"], ALPHAS)
    np.testing.assert_allclose(each["loss"], 0.0, atol=1e-6)
    np.testing.assert_array_equal(each["error"], 0.0)
    assert connected_fractions(each) == {"examples": 12, "loss_threshold": EXAMPLE_LOSS_THRESHOLD,
                                         "loss_connected": 1.0, "error_connected": 1.0}


def test_error_barrier_and_fractions_on_made_up_examples():
    # columns: always right; right at the ends, wrong in the middle; always wrong; right
    # until wrong at α = 1; wrong at α = 0 and ¼, then right
    correct = np.array([[1, 1, 0, 1, 0],
                        [1, 1, 0, 1, 0],
                        [1, 0, 0, 1, 1],
                        [1, 1, 0, 1, 1],
                        [1, 1, 0, 0, 1]], bool)
    each = example_barriers(np.zeros(correct.shape), correct, ALPHAS)
    np.testing.assert_allclose(each["error"], [0.0, 1.0, 0.0, 0.0, 0.25], atol=1e-12)
    fractions = connected_fractions({"loss": np.array([0.0, 0.05, 0.2, 0.5, 1.0]),
                                     "error": each["error"]}, loss_threshold=0.3)
    assert fractions == {"examples": 5, "loss_threshold": 0.3, "loss_connected": 0.6,
                         "error_connected": 0.6}
    with pytest.raises(ConfigError, match="threshold must be positive, got 0"):
        connected_fractions(each, loss_threshold=0)
