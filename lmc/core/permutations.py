"""Permutation specs and permutations of a network's hidden units (Entezari et al. 2022;
Ainsworth et al. 2022, "Git Re-Basin").

Hidden units of a network can be permuted without changing its function if every leaf that
reads or writes them is permuted consistently. A `PermutationSpec` says which: it maps each
permutation *group* (a set of interchangeable units) to the list of `PermutedAxis` it acts
on, i.e. (leaf path, axis). Paths are those of the flax variables tree
``{"params": params, **state}``, as `lmc.core.masks.path_name` writes them:
``"params/dense0/kernel"``, ``"batch_stats/norm0/mean"``. An axis that is a flattened
(spatial × channels) axis, channels last — the input axis of the first dense layer after a
convolution — is permuted in blocks: ``PermutedAxis(path, axis, channels=C)`` reshapes it to
(size / C, C) and permutes the C part. `spec_from_params` derives the spec of lmc's
sequential models and ResNets from the parameter tree; a user writes the dict form for a
model of their own.

Convention: a permutation ``perm`` of a group acts as a gather, ``new[i] = old[perm[i]]``
along each of its axes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lmc.core.masks import path_name
from lmc.errors import ConfigError, check_name

KINDS = ("sequential", "resnet")
OUTPUT = "output"  # the name of the final dense layer of lmc's models (not permuted)


class PermutedAxis(NamedTuple):
    """One axis a permutation group acts on; `channels`: see the module docstring."""

    path: str
    axis: int
    channels: int | None = None


@dataclass(frozen=True)
class PermutationSpec:
    """Permutation group name -> the axes it permutes.

    Built by `spec_from_params`, or directly from a dict
    ``{group: [(path, axis), (path, axis, channels), ...]}``. An (path, axis) may belong
    to one group only. `check` validates a spec against a variables tree.
    """

    groups: Mapping[str, tuple[PermutedAxis, ...]]

    def __init__(self, groups: Mapping[str, Iterable[Any]]):
        normalised: dict[str, tuple[PermutedAxis, ...]] = {}
        seen: dict[tuple[str, int], str] = {}
        for name, entries in groups.items():
            axes = []
            for entry in entries:
                try:
                    axis = PermutedAxis(*entry)
                except TypeError as e:
                    raise ConfigError(f"permutation group {name!r}: an entry must be (path, "
                                      f"axis) or (path, axis, channels), got {entry!r}") from e
                if not isinstance(axis.path, str) or not isinstance(axis.axis, int):
                    raise ConfigError(f"permutation group {name!r}: bad entry {entry!r}")
                if axis.channels is not None and (not isinstance(axis.channels, int)
                                                  or axis.channels < 1):
                    raise ConfigError(f"permutation group {name!r}: channels of {axis.path} "
                                      f"must be a positive integer, got {axis.channels!r}")
                key = (axis.path, axis.axis)
                if key in seen:
                    raise ConfigError(f"axis {axis.axis} of {axis.path} is in permutation "
                                      f"groups {seen[key]!r} and {name!r}")
                seen[key] = name
                axes.append(axis)
            if not axes:
                raise ConfigError(f"permutation group {name!r} permutes nothing")
            normalised[str(name)] = tuple(axes)
        object.__setattr__(self, "groups", normalised)

    def by_leaf(self) -> dict[str, list[tuple[str, PermutedAxis]]]:
        """Leaf path -> the (group, axis) pairs acting on it."""
        leaves: dict[str, list[tuple[str, PermutedAxis]]] = {}
        for name, axes in self.groups.items():
            for axis in axes:
                leaves.setdefault(axis.path, []).append((name, axis))
        return leaves

    def check(self, params: Any, state: Any = None, *, need_state: bool = True) -> dict[str, int]:
        """Group name -> its size, after checking every axis against the tree.

        Raises ConfigError naming the leaf for a missing leaf, an axis out of range, a
        blocked axis whose size is not a multiple of its channels, or axes of one group
        of different sizes. With ``need_state=False`` entries outside 'params' are
        skipped when `state` is None.
        """
        leaves = leaves_by_path(params, state)
        sizes: dict[str, int] = {}
        for name, axes in self.groups.items():
            for axis in axes:
                if axis.path not in leaves:
                    if state is None and not need_state and not axis.path.startswith("params/"):
                        continue
                    raise ConfigError(f"permutation group {name!r}: no leaf {axis.path!r} in "
                                      f"the variables tree")
                shape = np.shape(leaves[axis.path])
                if not -len(shape) <= axis.axis < len(shape):
                    raise ConfigError(f"permutation group {name!r}: leaf {axis.path!r} of "
                                      f"shape {shape} has no axis {axis.axis}")
                size = shape[axis.axis]
                if axis.channels is not None:
                    if size % axis.channels:
                        raise ConfigError(f"permutation group {name!r}: axis {axis.axis} of "
                                          f"leaf {axis.path!r} has size {size}, not a "
                                          f"multiple of its {axis.channels} channels")
                    size = axis.channels
                if sizes.setdefault(name, size) != size:
                    raise ConfigError(f"permutation group {name!r}: axis {axis.axis} of leaf "
                                      f"{axis.path!r} has size {size}, other axes of the "
                                      f"group {sizes[name]}")
        return sizes


def _variables(params: Any, state: Any) -> dict[str, Any]:
    state = dict(state or {})
    if "params" in state:
        raise ConfigError("the model state may not have a 'params' collection")
    return {"params": params, **state}


def leaves_by_path(params: Any, state: Any) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(_variables(params, state))[0]
    return {path_name(p): leaf for p, leaf in flat}


def _index(axis: PermutedAxis, size: int, perm: np.ndarray) -> np.ndarray:
    """The gather index along an axis of `size` for the group permutation `perm`."""
    if axis.channels is None:
        return perm
    blocks = size // axis.channels
    return (np.arange(blocks)[:, None] * axis.channels + perm[None, :]).ravel()


def permute_leaf(leaf: Any, axes: list[tuple[str, PermutedAxis]], perms: Mapping[str, np.ndarray],
             take: Any, skip: str | None = None) -> Any:
    for name, axis in axes:
        if name != skip:
            leaf = take(leaf, _index(axis, leaf.shape[axis.axis], perms[name]), axis=axis.axis)
    return leaf


def _check_perms(spec: PermutationSpec, perms: Mapping[str, Any],
                 sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    unknown = sorted(set(perms) - set(spec.groups))
    missing = sorted(set(spec.groups) - set(perms))
    if unknown or missing:
        raise ConfigError(f"permutations do not match the spec's groups: missing {missing}, "
                          f"unknown {unknown}")
    checked = {}
    for name, perm in perms.items():
        perm = np.asarray(perm)
        if perm.shape != (sizes[name],) or not np.array_equal(np.sort(perm),
                                                             np.arange(sizes[name])):
            raise ConfigError(f"the permutation of group {name!r} is not a permutation of "
                              f"{sizes[name]} units")
        checked[name] = perm.astype(np.int64)
    return checked


def apply_permutation(spec: PermutationSpec, perms: Mapping[str, Any], params: Any,
                      state: Any = None) -> tuple[Any, Any]:
    """`(params, state)` with every axis of `spec` gathered by its group's permutation."""
    sizes = spec.check(params, state)
    perms = _check_perms(spec, perms, sizes)
    by_leaf = spec.by_leaf()

    def permute(path, leaf):
        axes = by_leaf.get(path_name(path))
        return leaf if axes is None else permute_leaf(leaf, axes, perms, jnp.take)

    variables = jax.tree_util.tree_map_with_path(permute, _variables(params, state))
    new_params = variables.pop("params")
    return new_params, (variables if state is not None else None)


def random_permutation(spec: PermutationSpec, params: Any, key: jax.Array,
                       state: Any = None) -> dict[str, np.ndarray]:
    """A uniformly random permutation of every group (for tests)."""
    sizes = spec.check(params, state, need_state=False)
    keys = jax.random.split(key, len(sizes))
    return {name: np.asarray(jax.random.permutation(k, sizes[name]))
            for k, name in zip(keys, sizes, strict=True)}


# --- specs of lmc's models, from the parameter tree -----------------------------------------


def _subtree(tree: Any, parts: Iterable[str]) -> Any:
    for part in parts:
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _output_axes(params: Any, state: Any, conv: str, norm: str | None) -> list[PermutedAxis]:
    """The output-unit axes of layer `conv` ("a/b") and of the norm `norm` after it."""
    layer = _subtree(params, conv.split("/"))
    axes = [PermutedAxis(f"params/{conv}/kernel", np.ndim(layer["kernel"]) - 1)]
    if "bias" in layer:
        axes.append(PermutedAxis(f"params/{conv}/bias", 0))
    if norm is not None:
        for name in sorted(_subtree(params, norm.split("/")) or {}):
            axes.append(PermutedAxis(f"params/{norm}/{name}", 0))
        for collection, tree in sorted((state or {}).items()):
            for name in sorted(_subtree(tree, norm.split("/")) or {}):
                axes.append(PermutedAxis(f"{collection}/{norm}/{name}", 0))
    return axes


def _input_axis(params: Any, layer: str, channels: int) -> PermutedAxis:
    """The input axis of `layer`'s kernel for `channels` incoming units (blocked after a
    flatten)."""
    kernel = _subtree(params, layer.split("/"))["kernel"]
    ax = np.ndim(kernel) - 2
    size = np.shape(kernel)[ax]
    if size == channels:
        return PermutedAxis(f"params/{layer}/kernel", ax)
    if np.ndim(kernel) == 2 and size % channels == 0:
        return PermutedAxis(f"params/{layer}/kernel", ax, channels)
    raise ConfigError(f"leaf 'params/{layer}/kernel' has {size} inputs, which do not fit the "
                      f"{channels} outputs of the layer before it")


def _numbered(name: str) -> int | None:
    match = re.fullmatch(r"[A-Za-z_]*?(\d+)", name)
    return None if match is None else int(match.group(1))


def _sequential_spec(params: Any, state: Any) -> PermutationSpec:
    weights, norms = [], {}
    for name, layer in params.items():
        number = _numbered(name)
        if isinstance(layer, Mapping) and "kernel" in layer:
            if name == OUTPUT:
                continue
            if number is None:
                raise ConfigError(f"layer {name!r}: a sequential model's layers are named "
                                  f"<kind><index> (e.g. dense0, conv1) or {OUTPUT!r}")
            # convolutions come before dense layers, by index within each
            weights.append((np.ndim(layer["kernel"]) == 2, number, name))
        elif number is not None:
            norms[number] = name
        else:
            raise ConfigError(f"layer {name!r} of a sequential model is neither a numbered "
                              f"weight or norm layer nor {OUTPUT!r}")
    if OUTPUT not in params:
        raise ConfigError(f"a sequential model needs a final layer {OUTPUT!r}")
    weights.sort()
    if len({key[:2] for key in weights}) != len(weights):
        raise ConfigError(f"ambiguous layer order: {[w[2] for w in weights]}")
    order = [w[2] for w in weights]
    if norms and max(norms) >= len(order):
        raise ConfigError(f"norm layer {norms[max(norms)]!r} follows no hidden layer")
    groups = {}
    for i, name in enumerate(order):
        axes = _output_axes(params, state, name, norms.get(i))
        following = order[i + 1] if i + 1 < len(order) else OUTPUT
        width = np.shape(params[name]["kernel"])[-1]
        groups[name] = [*axes, _input_axis(params, following, width)]
    return PermutationSpec(groups)


def _resnet_spec(params: Any, state: Any) -> PermutationSpec:
    blocks = []
    for name in params:
        match = re.fullmatch(r"stage(\d+)_block(\d+)", name)
        if match:
            blocks.append((int(match.group(1)), int(match.group(2)), name))
        elif name not in ("stem_conv", "stem_norm", OUTPUT):
            raise ConfigError(f"layer {name!r} is not a layer of a ResNet (stem_conv, "
                              f"stem_norm, stage<s>_block<b>, {OUTPUT})")
    for required in ("stem_conv", OUTPUT):
        if required not in params:
            raise ConfigError(f"a ResNet needs a layer {required!r}")
    blocks.sort()

    def norm(layer):  # the norm layer `layer` if the model has one
        return layer if _subtree(params, layer.split("/")) is not None else None

    def width(layer):
        return np.shape(_subtree(params, layer.split("/"))["kernel"])[-1]

    groups: dict[str, list[PermutedAxis]] = {}
    streams: list[tuple[list[PermutedAxis], str]] = []  # the residual streams, with names
    stream = _output_axes(params, state, "stem_conv", norm("stem_norm"))
    label, channels = "stem", width("stem_conv")
    for stage, _, block in blocks:
        inner = f"{block}/conv1"
        groups[inner] = [*_output_axes(params, state, inner, norm(f"{block}/norm1")),
                         _input_axis(params, f"{block}/conv2", width(inner))]
        stream.append(_input_axis(params, inner, channels))
        out = _output_axes(params, state, f"{block}/conv2", norm(f"{block}/norm2"))
        if "shortcut_conv" in params[block]:  # a new stream begins
            stream.append(_input_axis(params, f"{block}/shortcut_conv", channels))
            streams.append((stream, label))
            stream = out + _output_axes(params, state, f"{block}/shortcut_conv",
                                        norm(f"{block}/shortcut_norm"))
        else:
            stream.extend(out)
        label, channels = f"stage{stage}", width(f"{block}/conv2")
    stream.append(_input_axis(params, OUTPUT, channels))
    streams.append((stream, label))
    for axes, name in streams:
        if name in groups:
            raise ConfigError(f"two residual streams named {name!r}")
        groups[name] = axes
    return PermutationSpec(groups)


def spec_from_params(params: Any, state: Any = None, kind: str = "sequential") -> PermutationSpec:
    """The permutation spec of one of lmc's models, derived from its variables.

    kind="sequential" (MLP, conv1d, ConvNet, VGG): numbered weight layers (convolutions
    before dense layers, by index), each hidden one's output units a group (named after
    the layer) acting on its kernel's last axis, its bias, the norm ``norm<i>`` after the
    i-th hidden layer (parameters and state) and the next layer's kernel input axis (in
    channel blocks after a flatten). kind="resnet": one group per residual stream, named
    "stem" or after the last stage writing to it ("stage1", ...), acting on the stem, every
    block's conv2/norm2, the shortcut conv/norm that starts it and the input axes of the
    convolutions reading it; and one group per block's inner units (``<block>/conv1``).
    The output layer's outputs are never permuted.
    """
    check_name("model kind", kind, KINDS)
    spec = (_sequential_spec if kind == "sequential" else _resnet_spec)(params, state)
    spec.check(params, state, need_state=False)
    return spec


__all__ = ["KINDS", "PermutationSpec", "PermutedAxis", "apply_permutation", "leaves_by_path",
           "permute_leaf", "random_permutation", "spec_from_params"]
