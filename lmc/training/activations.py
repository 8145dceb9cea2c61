"""Hidden activations and pre-activation statistics of lmc's models on a batch, for
activation matching (`lmc.core.alignment.activation_matching`) and REPAIR
(`lmc.core.repair.repair`).

Captured with flax's ``capture_intermediates`` in evaluation mode: the outputs of every
``nn.Dense`` and ``nn.Conv`` (the pre-activations) and of every norm layer (and, for
ResNets, of every residual block). A layer's name is its module path joined by "/"
("dense0", "conv1", "stage1_block0/conv1"), as in the parameter tree; the output layer
("output") is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmc.core.permutations import spec_from_params
from lmc.core.repair import repair
from lmc.errors import ConfigError
from lmc.training.models import OUTPUT_LAYER, BasicBlock

_CAPTURED = (nn.Dense, nn.Conv, nn.BatchNorm, nn.LayerNorm)


def _intermediates(module: nn.Module, params: Any, state: Any, x: jax.Array, *,
                   types: tuple[type, ...] = _CAPTURED, names: set[str] | None = None
                   ) -> dict[str, tuple[bool, jax.Array]]:
    """Module path -> (whether it is a weight layer, its output), in call order, for the
    modules of `types` (only those named in `names`, if given: less memory)."""
    kinds: dict[str, bool] = {}

    def keep(mdl: nn.Module, method: str) -> bool:
        return (method == "__call__" and isinstance(mdl, types)
                and (names is None or "/".join(mdl.path) in names))

    _, updates = module.apply({"params": params, **(state or {})}, x, train=False,
                              capture_intermediates=keep, mutable=["intermediates"])
    found: dict[str, tuple[bool, jax.Array]] = {}

    def walk(tree: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in tree.items():
            if key == "__call__":
                if prefix:
                    found["/".join(prefix)] = value[0]
            elif isinstance(value, Mapping):
                walk(value, (*prefix, key))

    walk(updates.get("intermediates", {}), ())
    # which captured outputs belong to weight layers: those whose params have a kernel
    for name in found:
        node: Any = params
        for part in name.split("/"):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        kinds[name] = isinstance(node, Mapping) and "kernel" in node
    return {name: (kinds[name], out) for name, out in found.items()}


def _units(x: jax.Array) -> jax.Array:
    """(examples · positions, units): positions of a convolution folded into examples."""
    return jnp.reshape(x, (-1, x.shape[-1]))


def _hidden(found: Mapping[str, tuple[bool, jax.Array]],
            layers: Iterable[str] | None) -> list[str]:
    hidden = [name for name, (weighted, _) in found.items()
              if weighted and name != OUTPUT_LAYER]
    if layers is None:
        return hidden
    layers = list(layers)
    missing = [name for name in layers if name not in hidden]
    if missing:
        raise ConfigError(f"no hidden weight layer(s) {missing} in the model; it has {hidden}")
    return layers


def _norm_after(name: str, found: Mapping[str, Any]) -> str | None:
    """The norm layer of lmc's sequential models after weight layer `name` (conv3 -> norm3),
    if the model has one."""
    head, _, last = name.rpartition("/")
    digits = last.lstrip("abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    if not digits:
        return None
    norm = f"{head}/norm{digits}" if head else f"norm{digits}"
    return norm if norm in found else None


def sequential_activations(module: nn.Module, params: Any, state: Any, x: jax.Array, *,
                           layers: Iterable[str] | None = None) -> dict[str, jax.Array]:
    """Layer -> the post-ReLU activations of its units on `x`, shape (examples ·
    positions, units), for lmc's sequential models (MLP, conv1d, conv2/4/6, VGG).

    The activation of hidden layer ``<kind><i>`` is the ReLU of its output, or of the
    output of ``norm<i>`` when the model has that norm layer (VGG): what the next layer
    reads (before any max-pool). `layers` (default: every hidden Dense/Conv layer) are the
    groups of ``spec_from_params(params, state, "sequential")``, so the result is what
    `activation_matching` takes.
    """
    found = _intermediates(module, params, state, x)
    out = {}
    for name in _hidden(found, layers):
        norm = _norm_after(name, found)
        out[name] = _units(nn.relu(found[norm if norm else name][1]))
    return out


def _resnet_sources(spec: Any, params: Any, groups: Iterable[str]
                    ) -> dict[str, list[tuple[str, str | None]]]:
    """Group -> the (position, norm or None) pairs whose post-ReLU outputs it permutes.

    A position is a layer whose kernel's output axis the group permutes: "stem_conv" (its
    activation: ReLU of stem_norm), "<block>/conv1" (ReLU of <block>/norm1), or a block
    whose conv2 or shortcut_conv writes the group's stream (its activation: the block's
    output, ReLU(shortcut + residual), already post-ReLU; norm None).
    """
    sources: dict[str, list[tuple[str, str | None]]] = {}
    for group in groups:
        if group not in spec.groups:
            raise ConfigError(f"no permutation group {group!r} in the ResNet; it has "
                              f"{list(spec.groups)}")
        positions: list[tuple[str, str | None]] = []
        for axis in spec.groups[group]:
            layer = axis.path.removeprefix("params/").removesuffix("/kernel")
            if not axis.path.startswith("params/") or not axis.path.endswith("/kernel"):
                continue
            if axis.axis % np.ndim(_leaf(params, layer)) != np.ndim(_leaf(params, layer)) - 1:
                continue  # an input axis: a reader of the group, not a writer
            head, _, last = layer.rpartition("/")
            if layer == "stem_conv":
                source = ("stem_conv", "stem_norm")
            elif last == "conv1":
                source = (layer, f"{head}/norm1")
            elif last in ("conv2", "shortcut_conv"):
                source = (head, None)
            else:
                raise ConfigError(f"layer {layer!r} is not a layer of lmc's ResNets")
            if source not in positions:  # conv2 and shortcut_conv: one block output
                positions.append(source)
        sources[group] = positions
    return sources


def _leaf(params: Any, layer: str) -> Any:
    node = params
    for part in layer.split("/"):
        node = node[part]
    return node["kernel"]


def resnet_activations(module: nn.Module, params: Any, state: Any, x: jax.Array, *,
                       groups: Iterable[str] | None = None) -> dict[str, jax.Array]:
    """Permutation group -> the post-ReLU activations of its units on `x`, shape
    (examples · positions, channels), for lmc's ResNets (evaluation mode: BatchNorm
    running statistics); what `activation_matching` takes for the groups of
    ``spec_from_params(params, state, "resnet")``.

    A block's inner group ``<block>/conv1``: ReLU of its norm1 output (of conv1 without a
    norm). A residual stream: the stream after every layer that writes to it — ReLU of
    the stem's norm, and the output of every block of the stream — stacked along the
    examples axis (block after block), so that one permutation matches the stream at every
    depth, as Ainsworth et al. (2022) and Jordan et al. (2023) match residual streams.
    `groups` defaults to every group of the spec.
    """
    spec = spec_from_params(params, state, "resnet")
    sources = _resnet_sources(spec, params, spec.groups if groups is None else groups)
    wanted = {name for positions in sources.values() for pair in positions
              for name in pair if name is not None}
    found = _intermediates(module, params, state, x, types=(*_CAPTURED, BasicBlock),
                           names=wanted)
    out = {}
    for group, positions in sources.items():
        parts = []
        for layer, norm in positions:
            if norm is None:  # a block's output: post-ReLU already
                parts.append(_units(found[layer][1]))
            else:
                parts.append(_units(nn.relu(found[norm if norm in found else layer][1])))
        out[group] = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
    return out


def preactivation_stats(module: nn.Module, params: Any, state: Any, x: jax.Array, *,
                        layers: Iterable[str] | None = None
                        ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Layer -> (mean, std) of the outputs of each hidden Dense/Conv layer's units on `x`
    (before any norm and ReLU), over examples and positions: REPAIR's statistics.

    Population std (ddof 0), float64. `layers` defaults to every hidden weight layer.
    """
    found = _intermediates(module, params, state, x)
    stats = {}
    for name in _hidden(found, layers):
        z = np.asarray(_units(found[name][1]), np.float64)
        stats[name] = (z.mean(axis=0), z.std(axis=0))
    return stats


def repair_model(module: nn.Module, params_interp: Any, params_a: Any, params_b: Any,
                 x: jax.Array, alpha: float, *, state: Any = None,
                 layers: Iterable[str] | None = None, epsilon: float = 1e-8,
                 endpoint_stats: tuple[dict, dict] | None = None) -> Any:
    """REPAIR of the interpolated network `params_interp` at `alpha` between `params_a`
    and `params_b` (aligned already, if they are to be), on the batch `x`, for a model
    without BatchNorm (with BatchNorm, reset its statistics instead).

    The endpoint statistics are measured once; the interpolated network's are re-measured
    after correcting each layer, in forward order, so afterwards every hidden layer's units
    have exactly the target means and stds on `x`. `state` is the (BatchNorm-free) model
    state, ``{}`` by default. `endpoint_stats`: the endpoints' `preactivation_stats` on `x`,
    measured once for all points of a path. Returns the corrected params.
    """
    state = {} if state is None else state
    stats_a, stats_b = endpoint_stats or (
        preactivation_stats(module, params_a, state, x, layers=layers),
        preactivation_stats(module, params_b, state, x, layers=layers))
    names = list(stats_a)

    def measure(params: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return preactivation_stats(module, params, state, x, layers=names)

    return repair(params_interp, measure, stats_a, stats_b, alpha, names, epsilon=epsilon)


__all__ = ["preactivation_stats", "repair_model", "resnet_activations",
           "sequential_activations"]
