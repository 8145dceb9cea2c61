"""The one mask representation, and which parameters are prunable.

A mask is a pytree of the structure of `params` with one boolean numpy array per leaf,
True = alive. Only prunable leaves are ever False. Which leaves are prunable is a
predicate of the leaf's path and value, `is_kernel` by default: the conv and dense
weight tensors, named 'kernel' in flax; biases and norm scales/offsets are not pruned
(Frankle & Carbin 2019). Layers matched by `keep_dense` (a path prefix such as
``"output"`` or ``"stage1_block0/conv1"``) are never pruned and do not count among the
alive weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmc.errors import ConfigError

# (path, leaf) -> whether the leaf is prunable; path as "layer/sublayer/name".
Predicate = Callable[[str, Any], bool]


def path_name(path: tuple[Any, ...]) -> str:
    """A pytree key path as "stage1_block0/conv1/kernel"."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)


def is_kernel(path: str, leaf: Any) -> bool:
    """The default predicate: leaves named 'kernel' (flax's conv and dense weights)."""
    return path.rsplit("/", 1)[-1] == "kernel"


def prunable(params: Any, predicate: Predicate | None = None) -> Any:
    """Python bools of the structure of `params`: True for the prunable leaves."""
    predicate = predicate or is_kernel
    return jax.tree_util.tree_map_with_path(lambda p, leaf: bool(predicate(path_name(p), leaf)),
                                            params)


def apply_mask(tree: Any, mask: Any) -> Any:
    """Zero the entries of `tree` where `mask` is False (None means no mask)."""
    if mask is None:
        return tree
    return jax.tree.map(lambda t, m: jnp.where(m, t, jnp.zeros_like(t)), tree, mask)


def _flags(tree: Any, predicate: Predicate | None) -> list[bool]:
    """The per-leaf prunable flags; a tree without any is an error (nothing to prune)."""
    flags = jax.tree.leaves(prunable(tree, predicate))
    if not any(flags):
        raise ConfigError("no prunable weights: no leaf of the parameter tree is prunable "
                          "(by default, leaves named 'kernel')")
    return flags


def _matches(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def keep_dense_names(keep_dense: str | Sequence[str]) -> tuple[str, ...]:
    return (keep_dense,) if isinstance(keep_dense, str) else tuple(keep_dense)


def eligible(tree: Any, keep_dense: str | Sequence[str] = (),
             predicate: Predicate | None = None) -> list[bool]:
    """Per leaf (``jax.tree.leaves`` order): prunable and outside the `keep_dense` layers.
    A `keep_dense` entry that matches no leaf is an error listing the top-level layers."""
    keep_dense = keep_dense_names(keep_dense)
    flags = _flags(tree, predicate)
    paths = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    for prefix in keep_dense:
        if not any(_matches(p, prefix) for p in paths):
            layers = sorted({p.split("/", 1)[0] for p in paths})
            raise ConfigError(f"unknown layer {prefix!r}; valid layers: {', '.join(layers)} "
                              "(or a path inside one, e.g. layer/sublayer)")
    return [f and not any(_matches(p, k) for k in keep_dense)
            for f, p in zip(flags, paths, strict=True)]


def check_mask(mask: Any, params: Any) -> Any:
    """`mask` (None: dense) as numpy bools, checked against the structure of `params`."""
    if mask is None:
        return dense_mask(params)
    if jax.tree.structure(mask) != jax.tree.structure(params):
        raise ConfigError("the mask does not have the structure of the parameters")
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params), strict=True):
        if np.shape(m) != np.shape(p):
            raise ConfigError(f"mask leaf of shape {np.shape(m)} for a parameter of shape "
                              f"{np.shape(p)}")
    return jax.tree.map(lambda m: np.asarray(m, bool), mask)


def dense_mask(params: Any) -> Any:
    """All True: the mask of the unpruned network."""
    return jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)


def count_alive(mask: Any, keep_dense: str | Sequence[str] = (),
                predicate: Predicate | None = None) -> int:
    """Live prunable weights outside the `keep_dense` layers: what a pruning step sees."""
    leaves = jax.tree.leaves(mask)
    return sum(int(np.count_nonzero(m))
               for m, e in zip(leaves, eligible(mask, keep_dense, predicate), strict=True) if e)


def density(mask: Any, keep_dense: str | Sequence[str] = (),
            predicate: Predicate | None = None) -> float:
    """Fraction of the prunable weights outside `keep_dense` that are alive."""
    flags = eligible(mask, keep_dense, predicate)
    total = sum(np.size(m) for m, e in zip(jax.tree.leaves(mask), flags, strict=True) if e)
    if total == 0:
        raise ConfigError("no prunable weights outside the keep_dense layers")
    return count_alive(mask, keep_dense, predicate) / total


def layer_densities(mask: Any, predicate: Predicate | None = None) -> dict[str, float]:
    """``{layer path: fraction alive}`` for every prunable leaf, e.g. ``'stage1_block0/conv1'``
    (the leaf name 'kernel' left out)."""
    flags = _flags(mask, predicate)
    out = {}
    for (path, m), f in zip(jax.tree_util.tree_flatten_with_path(mask)[0], flags, strict=True):
        if f:
            name = path_name(path)
            out[name.rsplit("/", 1)[0] if "/" in name else name] = (
                float(np.count_nonzero(m)) / max(np.size(m), 1))
    return out


def flat_prunable(tree: Any, predicate: Predicate | None = None) -> np.ndarray:
    """The prunable leaves of `tree` (params, mask or scores) raveled and concatenated in
    ``jax.tree.leaves`` order, as one numpy vector of their dtype: the index space of
    `lmc.core.prune.removal_order`."""
    flags = _flags(tree, predicate)
    leaves = jax.tree.leaves(tree)
    return np.concatenate([np.ravel(leaf) for leaf, f in zip(leaves, flags, strict=True) if f])


def prune_count(fraction: float, alive: int) -> int:
    """``ceil(fraction · alive)``, with `fraction` taken as the decimal it prints as, so that
    e.g. 0.7 of 10 is 7 (in floating point 0.7 · 10 = 7.000000000000001), and an excess
    below 1e-9 dropped, so that k/D of D is k (5/9 prints as 0.5555555555555556)."""
    return math.ceil(Fraction(repr(float(fraction))) * alive - Fraction(1, 10**9))


def shuffle_mask(mask: Any, key: jax.Array, keep_dense: str | Sequence[str] = (),
                 predicate: Predicate | None = None) -> Any:
    """`mask` with the alive and pruned positions of each prunable layer outside
    `keep_dense` randomly permuted: the per-layer densities stay exactly, the positions
    are random (the layerwise-shuffle ablation of Frankle et al. 2021)."""
    flags = eligible(mask, keep_dense, predicate)
    mask = check_mask(mask, mask)
    leaves, treedef = jax.tree.flatten(mask)
    out = []
    for i, (m, e) in enumerate(zip(leaves, flags, strict=True)):
        if e:
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), m.size))
            m = m.ravel()[perm].reshape(m.shape)
        out.append(m)
    return jax.tree.unflatten(treedef, out)


def reinitialize(mask: Any, fresh_params: Any) -> Any:
    """The pruned network with every parameter from a fresh initialisation (`fresh_params`,
    e.g. `lmc.init_model` with another key) and the pruned weights zero (the reinitialise
    ablation: the mask kept, the values forgotten; biases and norms are fresh too, as the
    reference re-runs the whole initialisation)."""
    return apply_mask(fresh_params, check_mask(mask, fresh_params))
