"""The one place that turns a checkpoint file into what an analysis needs.

`open_checkpoint(path)` reads the file once and returns an `OpenedCheckpoint`: the flax
module its description names, its evaluation- and train-mode apply functions, params,
model state, mask, the execution policy of the model, and its data set (loaded on first
use). Every workflow starts from it; the core never sees a file.

A checkpoint of your own network (`lmc.training.interop`, `lmc.training.formats`: an orbax
directory, a flax msgpack file, an ``.npz`` or ``.safetensors`` of arrays) opens with
``model="package.module:factory"``, ``model_options`` and ``data`` (a registered data set or
an ``.npz`` with x_train, y_train, x_test, y_test): the same fields, no mask, the
convolutional execution policy unless `policy` says otherwise, and a meta holding the model
description and data set name that records are written with.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from lmc.core import masks
from lmc.core.batching import Batches, batches_of, fixed_subset
from lmc.core.evaluate import cross_entropy
from lmc.core.interpolate import check_same_structure
from lmc.core.operators import HessianOperator, StatefulLoss
from lmc.core.policy import ExecutionPolicy
from lmc.errors import CheckpointError, ConfigError, check_name
from lmc.training.checkpoint import Checkpoint, load_checkpoint
from lmc.training.data import Dataset, load_dataset
from lmc.training.formats import load_data_npz, read_tree
from lmc.training.interop import UserModel, split_saved_tree, user_model
from lmc.training.models import eval_apply, model_from_description, policy_for, train_apply

SPLITS = ("train", "test")


@functools.lru_cache(maxsize=8)
def _network(description: str) -> tuple[Any, Callable, Callable]:
    """Module and apply functions per model description: the same function objects for
    every checkpoint of one network, so compiled programs keyed on them are reused."""
    module = model_from_description(json.loads(description))
    return module, eval_apply(module), train_apply(module)


@functools.lru_cache(maxsize=8)
def _eval_loss(apply: Callable) -> Callable:
    """`(params, state, x, y) -> mean cross-entropy` of an evaluation-mode apply function:
    the same object for every checkpoint of one network (`_network` caches `apply`)."""

    def loss(p, state, x, y):
        return cross_entropy(apply(p, state, x), y)

    return loss


@dataclasses.dataclass
class OpenedCheckpoint:
    """A checkpoint with its network and data set, ready for the core functions."""

    checkpoint: Checkpoint
    module: Any
    eval_apply: Callable  # (params, state, x) -> logits, evaluation mode
    train_apply: Callable  # (params, state, x) -> new state, train mode
    policy: ExecutionPolicy
    data_dir: str | os.PathLike | None = None
    _dataset: Dataset | None = dataclasses.field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    @property
    def meta(self) -> dict[str, Any]:
        return self.checkpoint.meta

    @property
    def params(self) -> Any:
        return self.checkpoint.params

    @property
    def state(self) -> Any:
        return self.checkpoint.state

    @property
    def mask(self) -> Any:
        return self.checkpoint.mask

    @property
    def has_state(self) -> bool:
        return bool(jax.tree.leaves(self.state))

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_dataset(self.meta["data"]["name"], self.data_dir)
        return self._dataset

    def split(self, split: str, size: int | None = None, seed: int = 0
              ) -> tuple[jax.Array, jax.Array]:
        """Inputs and labels of a fixed random subset of `size` examples of a split (all
        of them, in order, when size is None)."""
        check_name("split", split, SPLITS)
        ds = self.dataset
        x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
        idx = fixed_subset(len(y), size, seed)
        return x[idx], y[idx]

    def batches(self, split: str = "train", examples: int | None = None,
                batch_size: int = 500) -> Batches:
        """A fixed subset of a split in equal batches (the form HVPs and criteria take)."""
        x, y = self.split(split, examples)
        return batches_of(x, y, min(batch_size, len(y)))

    def loss_fn(self) -> StatefulLoss:
        """`(params, x, y) -> mean cross-entropy` in evaluation mode (fixed statistics): a
        `StatefulLoss` of one function per network (`_eval_loss`) and this checkpoint's
        model state, so that the Hessians of all checkpoints of a network share their
        compiled programs (the state is an operand, not a constant)."""
        return StatefulLoss(_eval_loss(self.eval_apply), self.state)

    def hessian(self, split: str = "train", examples: int | None = None,
                batch_size: int = 500, *, masked: bool = True,
                block: Sequence[str] | None = None, params: Any = None,
                prunable_only: bool = False, keep_dense: Sequence[str] = ()) -> HessianOperator:
        """The Hessian of the loss on a fixed subset of a split, in evaluation mode;
        restricted to the live weights when the checkpoint has a mask (and `masked`), and
        with `prunable_only` to the prunable kernels outside `keep_dense` (the
        coordinates a pruning ratio counts: `lmc.core.masks.eligible`; biases and norm
        parameters left out). `params` overrides the checkpoint's."""
        params = self.params if params is None else params
        select = None
        if prunable_only:
            flags = masks.eligible(params, keep_dense)
            select = jax.tree.unflatten(jax.tree.structure(params), flags)
        elif keep_dense:
            raise ConfigError("keep_dense restricts the Hessian only with prunable_only")
        return HessianOperator(self.loss_fn(), params,
                               self.batches(split, examples, batch_size),
                               mask=self.mask if masked else None, block=block,
                               select=select, policy=self.policy)

    def criterion_inputs(self, criterion: str, *, examples: int = 1000,
                         batch_size: int = 500, key: jax.Array | None = None
                         ) -> dict[str, Any]:
        """The keyword arguments `lmc.core.prune.scores`/`prune` need for `criterion`:
        apply function, state, input shape, key, and training batches for SNIP/GraSP."""
        inputs = {"apply_fn": self.eval_apply, "state": self.state,
                  "input_shape": tuple(self.meta["model"]["input_shape"]), "key": key}
        if criterion in ("snip", "grasp"):
            inputs["batches"] = self.batches("train", examples, batch_size)
        return inputs


def open_data(data: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Dataset:
    """A registered data set by name (from `data_dir`), or an ``.npz`` file with x_train,
    y_train, x_test and y_test."""
    if str(data).endswith(".npz") or Path(data).is_file():
        return load_data_npz(data)
    return load_dataset(str(data), data_dir)


@functools.lru_cache(maxsize=8)
def _user_network(spec: str, options: str, input_shape: tuple[int, ...],
                  num_classes: int) -> UserModel:
    """A user's model per factory, options and input: one set of apply functions for every
    checkpoint of it (compiled programs are reused, as for `_network`)."""
    example = jnp.zeros((1, *input_shape), jnp.float32)
    return user_model(spec, json.loads(options), example, num_classes)


def _check_fits(path: Any, spec: str, saved: Any, expected: Any, what: str) -> None:
    try:
        check_same_structure(saved, expected, what)
    except ConfigError as e:
        raise CheckpointError(f"{path} does not fit the model {spec} (A: the checkpoint, "
                              f"B: the model's init): {e}") from None


def _open_foreign(path: Path, spec: str, options: dict[str, Any], dataset: Dataset,
                  policy: ExecutionPolicy | None, data_dir: Any) -> OpenedCheckpoint:
    net = _user_network(spec, json.dumps(options, sort_keys=True, default=str),
                        dataset.input_shape, dataset.num_classes)
    tree, fmt = read_tree(path)
    params, state, layout = split_saved_tree(net, tree)
    _check_fits(path, spec, params, net.params, "parameter")
    _check_fits(path, spec, state, net.state, "model state")
    meta = {"format": fmt, "layout": layout, "step": None,
            "model": net.description(dataset.input_shape, dataset.num_classes),
            "data": {"name": dataset.name, "num_train": dataset.num_train,
                     "num_classes": dataset.num_classes}}
    ckpt = Checkpoint(params=params, state=state, step=0, meta=meta, path=path)
    # a foreign module does not declare whether it convolves: policy_for assumes so (safe)
    return OpenedCheckpoint(ckpt, net.module, net.eval_apply, net.train_apply,
                            policy or policy_for(net.module), data_dir, dataset)


def open_checkpoint(path: str | os.PathLike, *, dataset: Dataset | None = None,
                    data_dir: str | os.PathLike | None = None,
                    policy: ExecutionPolicy | None = None, model: str | None = None,
                    model_options: dict[str, Any] | None = None,
                    data: str | os.PathLike | None = None) -> OpenedCheckpoint:
    """Read a checkpoint and rebuild its network; `dataset` (else `data`, else loaded on
    first use from `data_dir`) and `policy` (else the model's) override the defaults.

    With `model` (``package.module:factory``, or one of lmc's model names) and
    `model_options` the file is a checkpoint of that model in any of
    `lmc.training.formats.FOREIGN_FORMATS`; it then needs `dataset` or `data`.
    """
    if dataset is None and data is not None:
        dataset = open_data(data, data_dir)
    if model is not None:
        if dataset is None:
            raise ConfigError(f"{path}: a checkpoint of your own model needs a data set "
                              "(--data NAME or --data FILE.npz with x_train, y_train, x_test, "
                              "y_test)")
        return _open_foreign(Path(path), model, dict(model_options or {}), dataset, policy,
                             data_dir)
    if model_options:
        raise ConfigError("model options need --model package.module:factory")
    if Path(path).is_dir():
        raise CheckpointError(f"{path} is a directory, not an lmc checkpoint; an orbax "
                              "checkpoint of your own network needs --model "
                              "package.module:factory and --data")
    ckpt = load_checkpoint(path)  # its error lists the accepted formats
    module, evaluate, update = _network(json.dumps(ckpt.meta["model"], sort_keys=True))
    return OpenedCheckpoint(ckpt, module, evaluate, update, policy or policy_for(module),
                            data_dir, dataset)


def check_same_network(a: OpenedCheckpoint, b: OpenedCheckpoint) -> None:
    """Two checkpoints of one architecture on one data set, or a ConfigError."""
    for key in ("model", "data"):
        if a.meta.get(key) != b.meta.get(key):
            raise ConfigError(f"{a.path} and {b.path} have different {key} specs: "
                              f"{a.meta.get(key)} vs {b.meta.get(key)}")
