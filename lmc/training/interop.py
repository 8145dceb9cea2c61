"""Your own network in lmc: a ``package.module:factory`` and flax linen or NNX adapters.

`model_factory(spec)` imports the callable ``factory`` of ``package.module``;
`user_model(spec, options, example)` calls it with the options as keyword arguments and
wraps the module it returns in a `UserModel`: pure apply functions and the initial params
and model state, all as plain nested dicts of arrays with string keys, the form every lmc
function takes.

* A linen module is called ``module.apply(variables, x, train=...)`` when its
  ``__call__`` has a ``train`` argument, else ``module.apply(variables, x)``; params are
  its ``"params"`` collection, model state its other collections (``batch_stats``, ...).
  It is initialised on one example.
* An NNX module (built by the factory itself, e.g. with ``nnx.Rngs(0)``: its initial values
  are replaced by a checkpoint's) is split as ``nnx.split(module, nnx.Param, nnx.RngState,
  ...)``: params are the ``nnx.Param`` variables, model state every other variable
  (``nnx.BatchStat``, ...), RNG state a constant of the adapter. Evaluation merges them and
  calls the module after ``.eval()``; train mode after ``.train()``, returning the new
  model state (what the BatchNorm reset of interpolated networks needs). `nnx_adapter`
  does this for any NNX module.

What a checkpoint of your own model holds (`split_saved_tree`), a nested dict of arrays:
the params alone (model state then comes from the model's init), linen variables
``{"params": ..., "batch_stats": ...}``, or, for an NNX module, its state
``nnx.state(module)`` (orbax keeps each variable as ``{"value": array}``) or that state's
``.to_pure_dict()``; RNG state in it is ignored.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from lmc.errors import ConfigError
from lmc.training.models import MODELS, build_model

Tree = dict[str, Any]


def model_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``package.module:factory`` (attributes may be dotted:
    ``package.module:Class.build``); a ConfigError saying what is wrong otherwise."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"--model {spec!r} is neither one of lmc's models nor written "
                          "package.module:factory")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"--model {spec!r}: cannot import {module_name!r}: {e}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"--model {spec!r}: {module_name!r} has no {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"--model {spec!r}: {attribute!r} is not callable")
    return obj


def accepts_train(module: nn.Module) -> bool:
    """Whether a linen module's ``__call__`` takes a ``train`` argument."""
    try:
        return "train" in inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        return False


def _key(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _variable_paths(state: nnx.State) -> list[tuple[str, ...]]:
    """The path of every leaf of an NNX state, string keys, without the variables' ``value``
    attribute: the address of the leaf in the state's pure dict."""
    paths = []
    for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]:
        keys = [_key(k) for k in path if not isinstance(k, jax.tree_util.GetAttrKey)]
        paths.append(tuple(keys))
    return paths


def _nest(paths: list[tuple[str, ...]], leaves: list[Any]) -> Tree:
    tree: Tree = {}
    for path, leaf in zip(paths, leaves, strict=True):
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return tree


def _lookup(tree: Tree, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@dataclasses.dataclass(frozen=True)
class _NnxCodec:
    """Between an NNX state and a pure nested dict with string keys, by leaf path (jit-safe:
    every state it builds holds fresh variables)."""

    treedef: Any
    paths: list[tuple[str, ...]]

    @classmethod
    def of(cls, state: nnx.State) -> _NnxCodec:
        return cls(jax.tree_util.tree_structure(state), _variable_paths(state))

    def to_pure(self, state: nnx.State) -> Tree:
        return _nest(self.paths, jax.tree_util.tree_leaves(state))

    def to_state(self, pure: Tree) -> nnx.State:
        # jax arrays: NNX updates variables in place, which read-only numpy arrays refuse
        return self.treedef.unflatten([jnp.asarray(_lookup(pure, p)) for p in self.paths])


def nnx_adapter(module: nnx.Module) -> tuple[Callable, Callable, Tree, Tree]:
    """``(eval_apply, train_apply, params, state)`` of an NNX module, with params and model
    state as pure nested dicts (see the module docstring)."""
    graphdef, params, rng, state = nnx.split(module, nnx.Param, nnx.RngState, ...)
    pcodec, scodec, rcodec = _NnxCodec.of(params), _NnxCodec.of(state), _NnxCodec.of(rng)
    rng_pure = rcodec.to_pure(rng)

    def merged(p: Tree, s: Tree) -> nnx.Module:
        return nnx.merge(graphdef, pcodec.to_state(p), rcodec.to_state(rng_pure),
                         scodec.to_state(s))

    def evaluate(p: Tree, s: Tree, x: jax.Array) -> jax.Array:
        model = merged(p, s)
        model.eval()
        return model(x)

    def update(p: Tree, s: Tree, x: jax.Array) -> Tree:
        if not scodec.paths:
            return s
        model = merged(p, s)
        model.train()
        model(x)
        _, _, _, new = nnx.split(model, nnx.Param, nnx.RngState, ...)
        return scodec.to_pure(new)

    return evaluate, update, pcodec.to_pure(params), scodec.to_pure(state)


def linen_adapter(module: nn.Module, example: jax.Array, key: jax.Array | None = None
                  ) -> tuple[Callable, Callable, Tree, Tree]:
    """``(eval_apply, train_apply, params, state)`` of a linen module initialised on the
    batch `example` (see the module docstring)."""
    mode = accepts_train(module)
    key = jax.random.key(0) if key is None else key

    def kwargs(train: bool) -> dict[str, bool]:
        return {"train": train} if mode else {}

    variables = jax.jit(lambda k: module.init(k, example, **kwargs(False)))(key)
    variables = _string_keys(flax.core.unfreeze(variables))
    params = variables.pop("params", {})

    def evaluate(p: Tree, s: Tree, x: jax.Array) -> jax.Array:
        return module.apply({"params": p, **s}, x, **kwargs(False))

    def update(p: Tree, s: Tree, x: jax.Array) -> Tree:
        if not s:
            return s
        _, new = module.apply({"params": p, **s}, x, mutable=list(s), **kwargs(True))
        return {**s, **flax.core.unfreeze(new)}

    return evaluate, update, params, variables


def _string_keys(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {str(k): _string_keys(v) for k, v in tree.items()}
    return tree


@dataclasses.dataclass(frozen=True, eq=False)
class UserModel:
    """A user's module with lmc's functional interface."""

    spec: str  # package.module:factory
    options: dict[str, Any]
    kind: str  # "linen" or "nnx"
    module: Any
    eval_apply: Callable  # (params, state, x) -> logits, evaluation mode
    train_apply: Callable  # (params, state, x) -> new state, train mode
    params: Tree  # initial values: the structure a checkpoint must have
    state: Tree

    def description(self, input_shape: tuple[int, ...], num_classes: int | None) -> dict:
        """The ``model`` field of records: the factory, its options and the input."""
        return {"name": self.spec, "factory": self.spec, "kind": self.kind,
                "options": json.loads(json.dumps(self.options, default=str)),
                "input_shape": list(input_shape), "num_classes": num_classes}


def user_model(spec: str, options: dict[str, Any] | None, example: jax.Array,
               num_classes: int | None = None) -> UserModel:
    """Build ``factory(**options)`` of `spec` and adapt it; `example` is one batch of inputs
    (linen modules are initialised on it). `spec` may also be one of lmc's `MODELS`, built
    with `num_classes` outputs (for a file of its params written elsewhere)."""
    options = dict(options or {})
    if spec in MODELS:
        module = build_model(spec, num_classes or 0, **options)
    else:
        factory = model_factory(spec)
        try:
            module = factory(**options)
        except TypeError as e:
            raise ConfigError(f"--model {spec!r} with options {options}: {e}") from None
    example = jnp.asarray(example)
    if isinstance(module, nnx.Module):
        kind, adapted = "nnx", nnx_adapter(module)
    elif isinstance(module, nn.Module):
        kind, adapted = "linen", linen_adapter(module, example)
    else:
        raise ConfigError(f"--model {spec!r} returned a {type(module).__name__}, not a flax "
                          "linen or NNX module")
    return UserModel(spec, options, kind, module, *adapted)


def _unwrap_values(tree: Any) -> Any:
    """An NNX state as orbax saves it (each variable ``{"value": array}``) as a pure dict."""
    if isinstance(tree, dict):
        if set(tree) == {"value"} and not isinstance(tree["value"], dict):
            return tree["value"]
        return {k: _unwrap_values(v) for k, v in tree.items()}
    return tree


def _leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if not isinstance(tree, dict):
        return {prefix}
    return set().union(*(_leaf_paths(v, (*prefix, k)) for k, v in tree.items())) if tree \
        else set()


def _select(tree: Tree, template: Tree) -> Tree:
    """The leaves of `tree` at the leaf paths of `template` (all present)."""
    return {k: _select(tree[k], v) if isinstance(v, dict) else tree[k]
            for k, v in template.items()}


def _is_rng_leaf(path: tuple[str, ...]) -> bool:
    """An NNX RNG stream's key or count (``.../rngs/<stream>/key``), as `nnx.state` holds."""
    return len(path) >= 3 and path[-3] == "rngs" and path[-1] in ("key", "count")


def split_saved_tree(model: UserModel, tree: Tree) -> tuple[Tree, Tree, str]:
    """``(params, state, layout)`` of a saved tree by the convention of the module
    docstring; layout is "params", "variables" or "nnx_state". Missing model state is the
    model's init. The structure is not checked here: compare the result with
    `model.params` and `model.state` (`lmc.core.interpolate.check_same_structure`).
    """
    tree = _unwrap_values(tree)
    if isinstance(tree.get("params"), dict) and "params" not in model.params:
        rest = {k: v for k, v in tree.items() if k != "params"}
        return tree["params"], rest or model.state, "variables"
    if model.kind != "nnx":
        return tree, model.state, "params"
    saved = _leaf_paths(tree)
    tree = _drop(tree, {p for p in saved if _is_rng_leaf(p)})
    state_paths = _leaf_paths(model.state)
    if state_paths and state_paths <= saved:
        return _drop(tree, state_paths), _select(tree, model.state), "nnx_state"
    return tree, model.state, "params"


def _drop(tree: Tree, paths: set[tuple[str, ...]], prefix: tuple[str, ...] = ()) -> Tree:
    out = {}
    for k, v in tree.items():
        here = (*prefix, k)
        if isinstance(v, dict):
            kept = _drop(v, paths, here)
            if kept:
                out[k] = kept
        elif here not in paths:
            out[k] = v
    return out


__all__ = ["UserModel", "accepts_train", "linen_adapter", "model_factory", "nnx_adapter",
           "split_saved_tree", "user_model"]
