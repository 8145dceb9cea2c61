"""Permutation alignment of two checkpoints (Git Re-Basin; Entezari et al. 2022).

`align_checkpoints(a, b)` opens both checkpoints and permutes the hidden units of B so
that it matches A (weight matching: `lmc.core.alignment.weight_matching`; or activation
matching of lmc's models on training data: `activation_matching`), choosing the
permutation spec from the model description (lmc's ResNets: one group per residual
stream and per block; every other lmc model: one group per hidden layer). The permuted B
computes the same function as B. `write_aligned` writes it as an lmc checkpoint beside
its source: same metadata as B plus ``aligned_to`` (A's path, the method and the matching
objective before and after), B's mask permuted the same way; the optimizer state is
dropped — an aligned checkpoint is for analysis (interpolation, sharpness), not for
resuming training. `lmc.workflows.interpolation.interpolate_checkpoints(..., align=...)`
adds the barriers of the aligned pair to the interpolation record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lmc.core.alignment import (
    PermutationSpec,
    activation_matching,
    apply_permutation,
    spec_from_params,
    weight_matching,
)
from lmc.errors import ConfigError, check_name
from lmc.training.activations import resnet_activations, sequential_activations
from lmc.training.checkpoint import save_checkpoint
from lmc.training.data import Dataset
from lmc.training.models import MODELS
from lmc.workflows.opened import OpenedCheckpoint, check_same_network, open_checkpoint

METHODS = ("weight", "activation")
ACTIVATION_EXAMPLES = 1000  # training examples (fixed subset) activation matching correlates on
# keys save_checkpoint writes itself: never copied from the source's metadata
_FORMAT_KEYS = ("format", "format_version", "step", "has_mask", "opt_state_paths")


def spec_kind(model: dict[str, Any]) -> str:
    """The `spec_from_params` kind of a model description: "resnet" for lmc's ResNets,
    "sequential" for every other model."""
    name = str(model.get("name", ""))
    return "resnet" if name in ("resnet20", "resnet56") else "sequential"


def permutation_spec(opened: OpenedCheckpoint) -> PermutationSpec:
    """The permutation spec of an opened checkpoint's network."""
    return spec_from_params(opened.params, opened.state, spec_kind(opened.meta["model"]))


def _states(a: OpenedCheckpoint, b: OpenedCheckpoint) -> tuple[Any, Any]:
    return (a.state, b.state) if a.has_state else (None, None)


def align_opened(a: OpenedCheckpoint, b: OpenedCheckpoint, method: str = "weight",
                 seed: int = 0, examples: int = ACTIVATION_EXAMPLES
                 ) -> tuple[Any, Any, dict[str, np.ndarray], dict[str, Any]]:
    """B's params and state permuted to match A, the permutations and an info dict
    (method, spec kind, group sizes, the weight-matching objective ⟨A, P(B)⟩ before
    and after, and, for weight matching, its history per sweep).

    method="weight": `weight_matching`, sweeps ordered by `seed`. method="activation":
    `activation_matching` on the post-ReLU activations of both networks, in evaluation
    mode, on a fixed subset of `examples` training examples (subset seed `seed`); lmc's
    models only (`sequential_activations`; for ResNets `resnet_activations`: each residual
    stream on its stacked post-block activations).
    """
    check_name("alignment method", method, METHODS)
    check_same_network(a, b)
    spec = permutation_spec(a)
    state_a, state_b = _states(a, b)
    kind = spec_kind(a.meta["model"])
    if method == "weight":
        perms, history = weight_matching(spec, a.params, b.params, state_a, state_b, seed=seed)
    else:
        if a.meta["model"].get("name") not in MODELS:
            # a user's model: which activations its groups permute is unknown to lmc
            raise ConfigError(f"activation matching supports lmc's models (MLP, conv, VGG, "
                              f"ResNet), not {a.meta['model'].get('name')!r}; use "
                              f"--method weight")
        x, _ = a.split("train", examples, seed)
        groups = list(spec.groups)
        if kind == "resnet":
            acts_a = resnet_activations(a.module, a.params, a.state, x, groups=groups)
            acts_b = resnet_activations(b.module, b.params, b.state, x, groups=groups)
        else:
            acts_a = sequential_activations(a.module, a.params, a.state, x, layers=groups)
            acts_b = sequential_activations(b.module, b.params, b.state, x, layers=groups)
        perms = activation_matching(spec, acts_a, acts_b)
        del acts_a, acts_b  # (examples · positions, units) per group: large for a ResNet
        # the weight-matching objective at the identity and at the perms, for comparison
        history = [weight_matching(spec, a.params, b.params, state_a, state_b,
                                   max_sweeps=1)[1][0],
                   _objective(spec, a, b, perms, state_a, state_b)]
    params, state = apply_permutation(spec, perms, b.params, b.state)
    info = {"method": method, "kind": kind, "seed": int(seed),
            "groups": {name: int(len(p)) for name, p in perms.items()},
            "objective_before": float(history[0]), "objective_after": float(history[-1]),
            "history": [float(h) for h in history]}
    if method == "activation":
        info["examples"] = int(len(x))
    return params, state, perms, info


def _objective(spec: PermutationSpec, a: OpenedCheckpoint, b: OpenedCheckpoint,
               perms: dict[str, np.ndarray], state_a: Any, state_b: Any) -> float:
    """The weight-matching objective ⟨A, P(B)⟩ at `perms`: the identity objective of A
    and B permuted."""
    params, state = apply_permutation(spec, perms, b.params, b.state)
    state = state if state_b is not None else None
    return weight_matching(spec, a.params, params, state_a, state, max_sweeps=1)[1][0]


def align_checkpoints(
    path_a: str | os.PathLike,
    path_b: str | os.PathLike,
    method: str = "weight",
    seed: int = 0,
    dataset: Dataset | None = None,
    data_dir: str | os.PathLike | None = None,
) -> tuple[OpenedCheckpoint, Any, Any, dict[str, np.ndarray], dict[str, Any]]:
    """Align checkpoint B to A: (A opened, B's params and state permuted, the
    permutations, info); see `align_opened`. `seed` orders the sweeps of weight matching
    (activation matching: picks its subset of training examples, from `dataset` or
    `data_dir`).
    """
    a = open_checkpoint(path_a, dataset=dataset, data_dir=data_dir)
    b = open_checkpoint(path_b, dataset=dataset, data_dir=data_dir)
    params, state, perms, info = align_opened(a, b, method, seed)
    info["a"], info["b"] = str(path_a), str(path_b)
    return a, params, state, perms, info


def write_aligned(path_b: str | os.PathLike, params: Any, state: Any,
                  out: str | os.PathLike, *, perms: dict[str, Any] | None = None,
                  info: dict[str, Any] | None = None) -> Path:
    """Write B with `params` and `state` (B permuted) as an lmc checkpoint at `out`,
    atomically.

    The metadata is B's plus ``aligned_to``: from `info` (as `align_checkpoints` returns
    it) A's path, the method and the objective before and after. B's mask, if it has
    one, is permuted by `perms` (needed then); the optimizer state is dropped.
    """
    b = open_checkpoint(path_b)
    mask = b.mask
    if mask is not None:
        if perms is None:
            raise ConfigError(f"{path_b} has a mask: writing it aligned needs the permutations")
        # the state goes along only because the spec may name state leaves
        mask, _ = apply_permutation(permutation_spec(b), perms, mask, b.state)
        mask = _tree_map_bool(mask)
    info = dict(info or {})
    meta = {k: v for k, v in b.meta.items() if k not in _FORMAT_KEYS}
    meta["aligned_to"] = {
        "checkpoint": info.get("a"), "source": str(path_b), "method": info.get("method"),
        "objective_before": info.get("objective_before"),
        "objective_after": info.get("objective_after"),
        "optimizer_state": "dropped",
    }
    return save_checkpoint(out, params=_as_numpy(params), state=_as_numpy(state or {}),
                           step=b.checkpoint.step, meta=meta, mask=mask)


def _as_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _as_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def _tree_map_bool(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _tree_map_bool(v) for k, v in tree.items()}
    return np.asarray(tree, bool)


__all__ = ["METHODS", "align_checkpoints", "align_opened", "permutation_spec", "spec_kind",
           "write_aligned"]
