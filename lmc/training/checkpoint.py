"""Self-describing checkpoints: plain arrays in an .npz file, never pickle.

A checkpoint holds parameters, model state (e.g. BatchNorm statistics), optimizer state,
mask, step and a JSON description (training config, model and data spec, seeds, lineage,
metric history, lmc version) — enough to rebuild the network from the file alone.
Files are written atomically.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lmc.errors import CheckpointError
from lmc.files import atomic_write

FORMAT = "lmc-checkpoint"
FORMAT_VERSION = 1
_META = "__meta__"
# What `load_checkpoint`'s errors list as readable; extend it where another format is read.
ACCEPTED_FORMATS: tuple[str, ...] = (
    "an lmc checkpoint (.npz written by lmc)",
    "with a model of your own (--model package.module:factory): an orbax checkpoint "
    "directory, a flax msgpack file, or an .npz or .safetensors of arrays",
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip file (empty: end record only)


@dataclass
class Checkpoint:
    params: dict
    state: dict
    step: int
    meta: dict[str, Any]
    mask: dict | None = None
    opt_state: Any = None  # restored only when load_checkpoint gets an opt_state template
    path: Path | None = field(default=None, compare=False)


def _flatten_dict_tree(prefix: str, tree: dict) -> dict[str, np.ndarray]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [str(getattr(k, "key", k)) for k in path]
        flat["/".join([prefix, *keys])] = np.asarray(leaf)
    return flat


def _unflatten_dict_tree(prefix: str, arrays: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in arrays.items():
        parts = name.split("/")
        if parts[0] != prefix:
            continue
        node = tree
        for key in parts[1:-1]:
            node = node.setdefault(key, {})
        node[parts[-1]] = value
    return tree


def save_checkpoint(
    path: str | Path,
    *,
    params: dict,
    state: dict,
    step: int,
    meta: dict[str, Any],
    opt_state: Any = None,
    mask: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename)."""
    arrays = _flatten_dict_tree("params", params)
    arrays.update(_flatten_dict_tree("state", state))
    if mask is not None:
        arrays.update(_flatten_dict_tree("mask", mask))
    opt_paths = []
    if opt_state is not None:
        for i, (p, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(opt_state)[0]):
            opt_paths.append(jax.tree_util.keystr(p))
            arrays[f"opt_state/{i}"] = np.asarray(leaf)
    full_meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "has_mask": mask is not None,
        "opt_state_paths": opt_paths if opt_state is not None else None,
        **meta,
    }
    arrays[_META] = np.frombuffer(json.dumps(full_meta).encode(), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: str | Path, opt_state_template: Any = None) -> Checkpoint:
    """Read a checkpoint; errors name the file and say what is wrong with it.

    The optimizer state is restored into the structure of `opt_state_template`
    (e.g. `optimizer.init(params)`) when one is given.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if not head:
        raise _foreign(path, "the file is empty")
    if head not in _ZIP_MAGIC:
        # np.load would read an .npy array, or try to unpickle anything else.
        raise _foreign(path, "it is not an .npz file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as e:
        if "pickle" in str(e):  # numpy refuses object arrays and says how to load them anyway
            raise _foreign(path, "it holds Python object arrays, which lmc never loads") from None
        raise _corrupt(path, e) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
        raise _corrupt(path, e) from None
    if _META not in arrays:
        raise _foreign(path, "it has no lmc metadata")
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} has corrupt lmc metadata: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise _foreign(path, f"format {found!r}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer lmc (checkpoint format {meta['format_version']}); "
            "upgrade lmc to read it"
        )
    ckpt = Checkpoint(
        params=_unflatten_dict_tree("params", arrays),
        state=_unflatten_dict_tree("state", arrays),
        step=int(meta["step"]),
        meta=meta,
        mask=_unflatten_dict_tree("mask", arrays) if meta.get("has_mask") else None,
        path=path,
    )
    if opt_state_template is not None:
        ckpt.opt_state = _restore_opt_state(path, meta, arrays, opt_state_template)
    return ckpt


def _foreign(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is not an lmc checkpoint ({why}); accepted formats: "
                           + "; ".join(ACCEPTED_FORMATS))


def _corrupt(path: Path, error: Exception) -> CheckpointError:
    detail = str(error) or type(error).__name__
    if "pickle" in detail:  # never pass on advice to load a file unsafely
        detail = type(error).__name__
    return CheckpointError(f"{path} is not a readable lmc checkpoint (truncated or corrupt: "
                           f"{detail}); accepted formats: " + "; ".join(ACCEPTED_FORMATS))


def _restore_opt_state(path: Path, meta: dict, arrays: dict, template: Any) -> Any:
    saved = meta.get("opt_state_paths")
    if saved is None:
        raise CheckpointError(f"{path} holds no optimizer state")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = [jax.tree_util.keystr(p) for p, _ in leaves]
    if saved != expected:
        differ = sorted(set(saved) ^ set(expected)) or ["(same leaves, different order)"]
        raise CheckpointError(
            f"{path}: optimizer state does not match this optimizer; differing leaves: "
            + ", ".join(differ[:8])
        )
    restored = []
    for i, (p, leaf) in enumerate(leaves):
        value = arrays[f"opt_state/{i}"]
        if value.shape != np.shape(leaf):
            raise CheckpointError(
                f"{path}: optimizer leaf {jax.tree_util.keystr(p)} has shape {value.shape}, "
                f"expected {np.shape(leaf)}"
            )
        restored.append(value)
    return jax.tree_util.tree_unflatten(treedef, restored)
