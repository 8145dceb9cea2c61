"""Small parameter trees for the mask and pruning tests."""

import jax
import numpy as np

from lmc.core.masks import flat_prunable
from lmc.training.models import build_model, init_model


def tiny(widths=(4,), inputs=5, classes=3, seed=0):
    """A 2-layer MLP: dense0/kernel (5, 4) and output/kernel (4, 3) by default."""
    module = build_model("mlp", classes, widths=widths)
    params, state = init_model(module, jax.random.key(seed), (inputs,))
    return module, params, state


def tied_params(seed=0):
    """The tiny MLP with kernels in {0, ±0.5, …, ±1.5}: many ties, and a -0.0."""
    _, params, _ = tiny()
    rng = np.random.default_rng(seed)

    def draw(a):
        return (rng.integers(-3, 4, np.shape(a)) * 0.5).astype(np.float32)

    params = jax.tree.map(draw, params)
    params["dense0"]["kernel"][0, 0] = -0.0
    params["dense0"]["kernel"][0, 1] = 0.0
    return params


def expected_removed(flat_scores, flat_live, n, invert=False):
    """Flat indices of the n live weights with the lowest scores, ties by position."""
    key = -np.asarray(flat_scores) if invert else np.asarray(flat_scores)
    live = np.flatnonzero(flat_live)
    return np.sort(live[np.argsort(key[live], kind="stable")][:n])


def removed_between(before, after):
    b, a = np.asarray(flat_prunable(before)), np.asarray(flat_prunable(after))
    assert not np.any(a & ~b), "a pruned weight came back"
    return np.flatnonzero(b & ~a)
