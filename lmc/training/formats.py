"""Readers of checkpoints and data sets written outside lmc (storage layer; never pickle).

`read_tree(path)` returns the nested dict of arrays saved in

* an orbax checkpoint directory (e.g. written by ``ocp.StandardCheckpointer().save(path,
  tree)``), restored without a target;
* a flax msgpack file (``flax.serialization.msgpack_serialize(tree)`` or ``to_bytes``),
  read with ``msgpack_restore``, which builds arrays and dicts only;
* an ``.npz`` or ``.safetensors`` file of arrays whose names are the leaves' paths joined
  by "/" (or by "." when no name holds a "/"), e.g. ``Dense_0/kernel``. safetensors is
  optional: ``pip install safetensors``.

What the tree means (params, linen variables or an NNX state) is decided against the
model in `lmc.training.interop`. `load_data_npz` reads a data set from an ``.npz`` with
``x_train``, ``y_train``, ``x_test`` and ``y_test``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from lmc.errors import CheckpointError, DataError
from lmc.training.data import Dataset

FOREIGN_FORMATS = ("orbax", "msgpack", "npz", "safetensors")
DATA_KEYS = ("x_train", "y_train", "x_test", "y_test")


def checkpoint_format(path: str | os.PathLike) -> str:
    """The format of a checkpoint path: a directory is orbax, ``.npz`` and
    ``.safetensors`` by suffix, any other file flax msgpack."""
    path = Path(path)
    if path.is_dir():
        return "orbax"
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    suffix = path.suffix.lower()
    return {".npz": "npz", ".safetensors": "safetensors"}.get(suffix, "msgpack")


def read_tree(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """The nested dict of numpy arrays saved at `path`, and its format (one of
    `FOREIGN_FORMATS`); a CheckpointError naming the file when it cannot be read."""
    path = Path(path)
    fmt = checkpoint_format(path)
    reader = {"orbax": _read_orbax, "msgpack": _read_msgpack, "npz": _read_npz,
              "safetensors": _read_safetensors}[fmt]
    tree = reader(path)
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path} ({fmt}) holds a {type(tree).__name__}, not a tree "
                              "of named arrays")
    return _as_numpy(tree), fmt


def _as_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {str(k): _as_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):  # orbax and msgpack keep sequences as lists
        return {str(i): _as_numpy(v) for i, v in enumerate(tree)}
    return np.asarray(tree)


def _read_orbax(path: Path) -> Any:
    # orbax is imported on use: it starts threads and is slow to import
    import orbax.checkpoint as ocp

    try:
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(path.resolve())
    except (FileNotFoundError, ValueError, KeyError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable orbax checkpoint: {e}") from None


def _read_msgpack(path: Path) -> Any:
    # flax.serialization is imported on use: only msgpack checkpoints need it
    from flax import serialization

    try:
        return serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises its own exception types for any bad byte
        raise CheckpointError(
            f"{path} is not a flax msgpack checkpoint (nor a directory of orbax, an .npz or a "
            f".safetensors file): {type(e).__name__}: {e}") from None


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} is not a readable .npz of arrays: {e}") from None
    return unflatten_names(arrays, path)


def _read_safetensors(path: Path) -> dict:
    try:
        # optional dependency, imported on use
        from safetensors.numpy import load_file
    except ImportError:
        raise CheckpointError(f"{path} is a safetensors file: reading it needs the "
                              "safetensors package (pip install safetensors)") from None
    try:
        arrays = load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    return unflatten_names(arrays, path)


def unflatten_names(arrays: dict[str, np.ndarray], path: Path | None = None) -> dict:
    """``{"a/b": x}`` (or ``{"a.b": x}`` when no name holds a "/") as ``{"a": {"b": x}}``."""
    sep = "/" if any("/" in name for name in arrays) else "."
    tree: dict = {}
    for name, value in sorted(arrays.items()):
        node = tree
        *parents, leaf = name.split(sep)
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"{path}: array {name!r} lies under another array")
        if isinstance(node.get(leaf), dict):
            raise CheckpointError(f"{path}: array {name!r} is also a prefix of other arrays")
        node[leaf] = value
    return tree


def load_data_npz(path: str | os.PathLike) -> Dataset:
    """A data set from an ``.npz`` holding `DATA_KEYS`: inputs as given (float32, channels
    last, already preprocessed as the model expects), integer labels; the number of
    classes is the largest label + 1, no training augmentation."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in DATA_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"data file {path} lacks {', '.join(missing)}: it must hold "
                                f"{', '.join(DATA_KEYS)} (it has {', '.join(npz.files)})")
            arrays = {k: npz[k] for k in DATA_KEYS}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise DataError(f"data file {path} is not a readable .npz: {e}") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if y.ndim != 1 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"data file {path}: y_{split} must be integer labels, one per "
                            f"row of x_{split} (shapes {x.shape} and {y.shape}, {y.dtype})")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(f"data file {path}: x_train and x_test have different example "
                        f"shapes {arrays['x_train'].shape[1:]} and {arrays['x_test'].shape[1:]}")
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    if labels.size and labels.min() < 0:
        raise DataError(f"data file {path}: labels must be non-negative")
    return Dataset(
        name=str(path),
        x_train=jnp.asarray(arrays["x_train"], jnp.float32),
        y_train=jnp.asarray(arrays["y_train"], jnp.int32),
        x_test=jnp.asarray(arrays["x_test"], jnp.float32),
        y_test=jnp.asarray(arrays["y_test"], jnp.int32),
        num_classes=int(labels.max()) + 1 if labels.size else 0,
        augmentation="none",
    )


__all__ = ["DATA_KEYS", "FOREIGN_FORMATS", "checkpoint_format", "load_data_npz", "read_tree",
           "unflatten_names"]
