"""Permutation alignment of two networks (Ainsworth et al. 2022, "Git Re-Basin"): weight
matching and activation matching, on the permutation specs of `lmc.core.permutations`.

`weight_matching(spec, a, b)` returns the perms that, applied to `b`, align it to `a`; if
``b = apply_permutation(spec, pi, a)`` that is ``argsort(pi)``.
`activation_matching(spec, activations_a, activations_b)` matches units by the correlation
of their activations on a fixed batch instead (Ainsworth et al. 2022, §3.1); the caller
collects the activations (`lmc.training.activations.sequential_activations` for lmc's
sequential models, `resnet_activations` for its ResNets). REPAIR is in `lmc.core.repair`.
The spec, applying permutations and deriving specs are re-exported here, so that this
module is the whole alignment API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from lmc.core.permutations import (
    KINDS,
    PermutationSpec,
    PermutedAxis,
    apply_permutation,
    leaves_by_path,
    permute_leaf,
    random_permutation,
    spec_from_params,
)
from lmc.errors import ConfigError


def weight_matching(
    spec: PermutationSpec,
    params_a: Any,
    params_b: Any,
    state_a: Any = None,
    state_b: Any = None,
    *,
    max_sweeps: int = 100,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], list[float]]:
    """Permutations of `b` that maximise Σ over the spec's leaves of ⟨W_a, P(W_b)⟩.

    Coordinate descent (Ainsworth et al. 2022): sweeps over the groups in a random order
    (from `seed`); each step solves the linear assignment of one group with the others
    fixed, accepted only if it strictly improves that group's term, so the objective never
    decreases. Stops after a sweep without improvement or `max_sweeps` sweeps. The states,
    if given (both or neither), count in the objective too (BatchNorm mean/var).

    Returns (perms, history): perms for `apply_permutation(spec, perms, params_b, state_b)`,
    history the objective (float64) at the identity and after every sweep.
    """
    if (state_a is None) != (state_b is None):
        raise ConfigError("weight matching needs the states of both networks or neither")
    if isinstance(max_sweeps, bool) or not isinstance(max_sweeps, int) or max_sweeps < 1:
        raise ConfigError(f"max_sweeps must be a positive integer, got {max_sweeps!r}")
    sizes = spec.check(params_a, state_a, need_state=False)
    if spec.check(params_b, state_b, need_state=False) != sizes:
        raise ConfigError("the two networks' permutation groups differ in size")
    leaves_a, leaves_b = leaves_by_path(params_a, state_a), leaves_by_path(params_b, state_b)
    by_leaf = {path: axes for path, axes in spec.by_leaf().items() if path in leaves_a}
    a = {}
    b = {}
    for path in by_leaf:
        a[path] = np.asarray(leaves_a[path], np.float64)
        b[path] = np.asarray(leaves_b[path], np.float64)
        if a[path].shape != b[path].shape:
            raise ConfigError(f"leaf {path!r} has shape {a[path].shape} in the first network, "
                              f"{b[path].shape} in the second")
    perms = {name: np.arange(n) for name, n in sizes.items()}

    def objective():
        return float(sum(np.vdot(a[p], permute_leaf(b[p], axes, perms, np.take))
                         for p, axes in by_leaf.items()))

    def similarity(group):
        n = sizes[group]
        s = np.zeros((n, n))
        for axis in spec.groups[group]:
            if axis.path not in by_leaf:
                continue  # a state leaf, without states
            wb = permute_leaf(b[axis.path], by_leaf[axis.path], perms, np.take, skip=group)
            wa = a[axis.path]
            ax = axis.axis % wa.ndim
            if axis.channels is not None:  # (blocks, channels): the channels are permuted
                shape = (*wa.shape[:ax], -1, axis.channels, *wa.shape[ax + 1:])
                wa, wb, ax = wa.reshape(shape), wb.reshape(shape), ax + 1
            s += np.moveaxis(wa, ax, 0).reshape(n, -1) @ np.moveaxis(wb, ax, 0).reshape(n, -1).T
        return s

    rng = np.random.default_rng(seed)
    names = list(spec.groups)
    history = [objective()]
    for _ in range(max_sweeps):
        improved = False
        for i in rng.permutation(len(names)):
            group = names[i]
            s = similarity(group)
            _, cols = linear_sum_assignment(s, maximize=True)
            rows = np.arange(len(cols))
            new, old = s[rows, cols].sum(), s[rows, perms[group]].sum()
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[group] = cols.astype(np.int64)
                improved = True
        history.append(objective())
        if not improved:
            break
    return perms, history


def _unit_matrix(activations: Mapping[str, Any], group: str, which: str) -> np.ndarray:
    if group not in activations:
        raise ConfigError(f"no activations of permutation group {group!r} for network {which}")
    x = np.asarray(activations[group], np.float64)
    if x.ndim < 2:
        raise ConfigError(f"the activations of group {group!r} (network {which}) must be an "
                          f"array (examples, ..., units), got shape {x.shape}")
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] < 2:
        raise ConfigError(f"the activations of group {group!r} (network {which}) have "
                          f"{x.shape[0]} example(s); correlations need at least 2")
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"the activations of group {group!r} (network {which}) are not "
                          f"all finite")
    return x


def _standardised(x: np.ndarray, epsilon: float) -> np.ndarray:
    """Each column centred and divided by its std; a constant (dead) column becomes 0."""
    centred = x - x.mean(axis=0)
    std = centred.std(axis=0)
    return np.where(std > epsilon, centred / np.maximum(std, epsilon), 0.0)


def activation_correlation(activations_a: Any, activations_b: Any,
                           epsilon: float = 1e-8) -> np.ndarray:
    """The (units_a, units_b) matrix of Pearson correlations between the units (last axis)
    of two activation arrays over all other axes (examples and positions); a unit whose
    std is at most `epsilon` (dead on the batch) correlates 0 with everything."""
    a = _unit_matrix({"x": activations_a}, "x", "a")
    b = _unit_matrix({"x": activations_b}, "x", "b")
    if a.shape[0] != b.shape[0]:
        raise ConfigError(f"the activations have {a.shape[0]} and {b.shape[0]} examples")
    return _correlation(a, b, epsilon)


def _correlation(a: np.ndarray, b: np.ndarray, epsilon: float) -> np.ndarray:
    return _standardised(a, epsilon).T @ _standardised(b, epsilon) / a.shape[0]


def activation_matching(spec: PermutationSpec, activations_a: Mapping[str, Any],
                        activations_b: Mapping[str, Any], *,
                        epsilon: float = 1e-8) -> dict[str, np.ndarray]:
    """Permutations of `b` that maximise, per group, the summed correlation of matched units.

    `activations_x` maps every group of `spec` to the activations of its units on a fixed
    batch, shape (examples, ..., units) with the units last (positions of a convolution are
    folded into the examples); keys that are not groups are ignored. Both networks must be
    fed the same batch. Per group, the linear assignment on `activation_correlation` (a's
    units as rows) gives ``perm[i]``: the unit of b matched to unit i of a. The groups are
    matched independently (the activations do not depend on the perms).

    Returns perms in the convention of `weight_matching`:
    ``apply_permutation(spec, perms, params_b, state_b)`` is b aligned to a.
    """
    perms = {}
    for group in spec.groups:
        a = _unit_matrix(activations_a, group, "a")
        b = _unit_matrix(activations_b, group, "b")
        if a.shape != b.shape:
            raise ConfigError(f"the activations of group {group!r} have shape {a.shape} in "
                              f"the first network, {b.shape} in the second")
        _, cols = linear_sum_assignment(_correlation(a, b, epsilon), maximize=True)
        perms[group] = cols.astype(np.int64)
    return perms


__all__ = [
    "KINDS",
    "PermutationSpec",
    "PermutedAxis",
    "activation_correlation",
    "activation_matching",
    "apply_permutation",
    "random_permutation",
    "spec_from_params",
    "weight_matching",
]
