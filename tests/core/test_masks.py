"""Masks: their representation, densities, which leaves are prunable, `keep_dense` path
prefixes, and the ablations that derive masks (shuffle, reinitialise)."""

import jax
import numpy as np
import pytest

from lmc.core.masks import (
    count_alive,
    dense_mask,
    density,
    eligible,
    layer_densities,
    prunable,
    prune_count,
    reinitialize,
    shuffle_mask,
)
from lmc.core.prune import prune
from lmc.errors import ConfigError
from lmc.training.models import init_model

from .trees import tiny


def test_dense_mask_density_and_layer_densities():
    _, params, _ = tiny()
    mask = dense_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert all(m.dtype == bool and m.all() for m in jax.tree.leaves(mask))
    assert count_alive(mask) == 5 * 4 + 4 * 3
    mask["output"]["kernel"][0] = False
    assert count_alive(mask) == 32 - 3 and density(mask) == pytest.approx(29 / 32)
    assert density(mask, keep_dense=("output",)) == 1.0
    assert layer_densities(mask) == {"dense0": 1.0, "output": 0.75}


def test_prune_count_is_exact():
    assert prune_count(0.7, 10) == 7  # 0.7 * 10 == 7.000000000000001 in floating point
    assert prune_count(0.2, 1) == 1 and prune_count(0.2, 0) == 0
    assert prune_count(0.2, 1001) == 201
    # k/D of D is k, though k/D prints slightly above its value (5/9 -> 0.5555555555555556)
    assert all(prune_count(k / d, d) == k for d in range(1, 200) for k in range(d + 1))


def test_shuffle_keeps_layer_densities_and_moves_positions():
    _, params, _ = tiny(widths=(32,), inputs=10)
    mask = prune(params, None, 0.7, "magnitude_layerwise")
    shuffled = shuffle_mask(mask, jax.random.key(0))
    assert layer_densities(shuffled) == layer_densities(mask)
    assert not np.array_equal(shuffled["dense0"]["kernel"], mask["dense0"]["kernel"])
    assert shuffled["dense0"]["bias"].all()
    kept = shuffle_mask(mask, jax.random.key(0), keep_dense=("output",))
    np.testing.assert_array_equal(kept["output"]["kernel"], mask["output"]["kernel"])
    np.testing.assert_array_equal(kept["dense0"]["kernel"], shuffled["dense0"]["kernel"])


def test_reinitialize_keeps_the_mask_and_takes_fresh_values():
    module, params, _ = tiny()
    fresh, _ = init_model(module, jax.random.key(7), (5,))
    mask = prune(params, None, 0.5)
    out = reinitialize(mask, fresh)
    for o, f, m in zip(jax.tree.leaves(out), jax.tree.leaves(fresh), jax.tree.leaves(mask),
                       strict=True):
        np.testing.assert_array_equal(np.asarray(o), np.where(m, f, 0))


def test_prunable_on_a_foreign_tree():
    params = {"enc": {"kernel": 1, "bias": 2, "scale": 3}, "kernel": 4, "embedding": 5}
    assert prunable(params) == {
        "enc": {"kernel": True, "bias": False, "scale": False},
        "kernel": True,
        "embedding": False,
    }
    # another predicate: every leaf whose path ends in "embedding"
    assert prunable(params, lambda path, leaf: path.endswith("embedding"))["embedding"] is True


def test_keep_dense_matches_path_prefixes():
    tree = {"block0": {"conv1": {"kernel": np.ones(2)}, "conv2": {"kernel": np.ones(3)}},
            "output": {"kernel": np.ones(4), "bias": np.ones(4)},
            "output2": {"kernel": np.ones(5)}}
    # jax.tree.leaves order: block0/conv1, block0/conv2, output/bias, output/kernel, output2
    assert eligible(tree) == [True, True, False, True, True]
    assert eligible(tree, "output") == [True, True, False, False, True]  # not "output2"
    assert eligible(tree, ("block0/conv1",)) == [False, True, False, True, True]
    assert eligible(tree, ("block0",)) == [False, False, False, True, True]
    assert density(dense_mask(tree), "block0") == 1.0
    with pytest.raises(ConfigError, match="unknown layer 'block0/conv3'; valid layers: block0"):
        eligible(tree, "block0/conv3")
    with pytest.raises(ConfigError, match="unknown layer 'outp'"):
        eligible(tree, "outp")  # a prefix of a name is not a path prefix
