"""REPAIR (Jordan et al. 2023): renormalising the hidden units of an interpolated network.

Interpolating two (aligned) networks shrinks the variance of its hidden units ("variance
collapse"). REPAIR rescales and shifts every hidden unit of ``w(α) = (1 − α)·w_a + α·w_b``
so that its pre-activation mean and std on a fixed batch are the interpolation of the
endpoints', ``(1 − α)·stat_a + α·stat_b``. For a layer ``z = x·W + b`` and a unit with
measured mean μ and std σ in the interpolated network and target mean μ_t and std σ_t the
correction is folded into the layer:

    s = σ_t / σ,   W[..., j] ← s·W[..., j],   b[j] ← s·b[j] + (μ_t − s·μ)

(a unit whose σ is at most `epsilon`, dead on the batch, keeps its scale: s = 1, only the
mean moves). Correcting a layer changes the inputs of the layers after it, so exact REPAIR
re-measures the statistics after each layer: pass `repair` a function ``params -> stats``.

For networks with BatchNorm, REPAIR is the BatchNorm reset of the interpolated network
(`lmc.core.interpolate.PathEvaluator` with ``bn="reset"``: the statistics re-estimated in
train mode and the interpolated affine parameters already realise the target), so nothing
here is needed for them.

Statistics are mappings layer name -> (mean, std), each an array over the layer's output
units (the kernel's last axis); `lmc.training.activations.preactivation_stats` measures them
for lmc's models. Layer names are paths into `params` joined by "/" ("dense0",
"stage1_block0/conv1").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from lmc.core.alignment import PermutationSpec
from lmc.errors import ConfigError

Stats = Mapping[str, tuple[Any, Any]]  # layer -> (mean, std) over its output units
StatsFn = Callable[[Any], Stats]  # params -> the stats of the network with those params


def interpolated_stats(stats_a: Stats, stats_b: Stats, alpha: float,
                       layers: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray,
                                                                            np.ndarray]]:
    """Layer -> ((1 − α)·mean_a + α·mean_b, (1 − α)·std_a + α·std_b): REPAIR's targets."""
    alpha = _alpha(alpha)
    names = list(stats_a) if layers is None else list(layers)
    targets = {}
    for name in names:
        for which, stats in (("a", stats_a), ("b", stats_b)):
            if name not in stats:
                raise ConfigError(f"no statistics of layer {name!r} for network {which}")
        mean_a, std_a = _pair(stats_a[name], name, "a")
        mean_b, std_b = _pair(stats_b[name], name, "b")
        if mean_a.shape != mean_b.shape:
            raise ConfigError(f"layer {name!r} has {mean_a.shape} units in network a, "
                              f"{mean_b.shape} in network b")
        targets[name] = ((1 - alpha) * mean_a + alpha * mean_b,
                         (1 - alpha) * std_a + alpha * std_b)
    return targets


def repair(
    params_interp: Any,
    stats_interp: Stats | StatsFn,
    stats_a: Stats,
    stats_b: Stats,
    alpha: float,
    layers: PermutationSpec | Iterable[str] | None = None,
    *,
    epsilon: float = 1e-8,
) -> Any:
    """`params_interp` with every layer in `layers` corrected to REPAIR's targets at `alpha`.

    `stats_interp`: the statistics of the interpolated network on the batch that gave
    `stats_a` and `stats_b` — either a function ``params -> stats`` (exact REPAIR: the
    layers are corrected in the given order, the statistics measured on the network
    corrected so far before each layer) or a mapping measured once on
    `params_interp` (exact for the first layer only; the later ones are corrected with
    statistics that ignore the correction of the layers before them).

    `layers`: layer names in forward order, or a `PermutationSpec` of kind "sequential"
    (its groups are the hidden layers, in order), or None for the layers of `stats_a` in
    its order. Each must have a kernel and a bias in `params_interp` (a layer without bias
    cannot be shifted: with BatchNorm after it, use the BatchNorm reset instead).

    At α = 0 with ``params_interp = params_a`` (α = 1, b) the targets are the network's own
    statistics and it comes back unchanged up to rounding. Returns a new params tree;
    `params_interp` is not modified.
    """
    if isinstance(layers, PermutationSpec):
        names = list(layers.groups)
    elif layers is None:
        names = list(stats_a)
    elif isinstance(layers, str):
        raise ConfigError(f"layers must be a sequence of layer names, got the string {layers!r}")
    else:
        names = list(layers)
    if len(set(names)) != len(names):
        raise ConfigError(f"a layer is listed twice in {names}")
    if not isinstance(epsilon, (int, float)) or not epsilon >= 0:
        raise ConfigError(f"epsilon must be a non-negative number, got {epsilon!r}")
    targets = interpolated_stats(stats_a, stats_b, alpha, names)
    params = params_interp
    measured = None if callable(stats_interp) else stats_interp
    for name in names:
        if callable(stats_interp):
            measured = stats_interp(params)
        if name not in measured:
            raise ConfigError(f"no statistics of layer {name!r} for the interpolated network")
        mean, std = _pair(measured[name], name, "interpolated")
        target_mean, target_std = targets[name]
        if mean.shape != target_mean.shape:
            raise ConfigError(f"layer {name!r} has {mean.shape} units in the interpolated "
                              f"network, {target_mean.shape} in the endpoints")
        dead = std <= epsilon
        scale = np.where(dead, 1.0, target_std / np.where(dead, 1.0, std))
        shift = target_mean - scale * mean
        params = _corrected(params, name, scale, shift)
    return params


def _alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise ConfigError(f"alpha must be a number, got {alpha!r}")
    if not math.isfinite(float(alpha)):
        raise ConfigError(f"alpha must be finite, got {alpha!r}")
    return float(alpha)


def _pair(stats: Any, name: str, which: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        mean, std = stats
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the statistics of layer {name!r} (network {which}) must be a "
                          f"(mean, std) pair") from e
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean.ndim != 1 or mean.shape != std.shape:
        raise ConfigError(f"the statistics of layer {name!r} (network {which}) must be two "
                          f"vectors of the same length, got shapes {mean.shape} and "
                          f"{std.shape}")
    if np.any(std < 0) or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise ConfigError(f"the statistics of layer {name!r} (network {which}) must be "
                          f"finite, with non-negative stds")
    return mean, std


def _corrected(params: Any, name: str, scale: np.ndarray, shift: np.ndarray) -> Any:
    """A copy of `params` with layer `name`'s kernel columns scaled and its bias scaled and
    shifted (only the dicts on the way to the layer are copied)."""
    parts = name.split("/")
    node = params
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"no layer {name!r} in the parameters")
        node = node[part]
    if not isinstance(node, Mapping) or "kernel" not in node:
        raise ConfigError(f"layer {name!r} has no kernel")
    if "bias" not in node:
        raise ConfigError(f"layer {name!r} has no bias, so REPAIR cannot shift its units "
                          f"(with BatchNorm after it, reset the BatchNorm statistics instead)")
    kernel, bias = node["kernel"], node["bias"]
    units = np.shape(kernel)[-1]
    if scale.shape != (units,) or np.shape(bias) != (units,):
        raise ConfigError(f"layer {name!r} has {units} output units, its statistics "
                          f"{scale.shape[0]}")
    layer = dict(node)
    layer["kernel"] = kernel * jnp.asarray(scale, jnp.result_type(kernel))
    layer["bias"] = (bias * jnp.asarray(scale, jnp.result_type(bias))
                     + jnp.asarray(shift, jnp.result_type(bias)))

    def rebuild(tree: Mapping[str, Any], depth: int) -> dict[str, Any]:
        out = dict(tree)
        out[parts[depth]] = layer if depth == len(parts) - 1 else rebuild(tree[parts[depth]],
                                                                          depth + 1)
        return out

    return rebuild(params, 0)


__all__ = ["interpolated_stats", "repair"]
