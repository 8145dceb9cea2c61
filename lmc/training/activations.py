"""Hidden activations and pre-activation statistics of lmc's models on a batch, for
activation matching (`lmc.core.alignment.activation_matching`) and REPAIR
(`lmc.core.repair.repair`).

Captured with flax's ``capture_intermediates`` in evaluation mode: the outputs of every
``nn.Dense`` and ``nn.Conv`` (the pre-activations) and of every norm layer. A layer's name
is its module path joined by "/" ("dense0", "conv1", "stage1_block0/conv1"), as in the
parameter tree; the output layer ("output") is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmc.core.repair import repair
from lmc.errors import ConfigError
from lmc.training.models import OUTPUT_LAYER

_CAPTURED = (nn.Dense, nn.Conv, nn.BatchNorm, nn.LayerNorm)


def _intermediates(module: nn.Module, params: Any, state: Any, x: jax.Array
                   ) -> dict[str, tuple[bool, jax.Array]]:
    """Module path -> (whether it is a weight layer, its output), in call order."""
    kinds: dict[str, bool] = {}

    def keep(mdl: nn.Module, method: str) -> bool:
        return method == "__call__" and isinstance(mdl, _CAPTURED)

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


__all__ = ["preactivation_stats", "repair_model", "sequential_activations"]
