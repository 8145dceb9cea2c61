"""Data sets that live on the device; batches gathered by index, augmented on device.

A batch depends only on `(data_key, step)` and its augmentation only on `(aug_key, step)`,
so a resumed run sees exactly the batches an uninterrupted one would, and siblings that
differ in their keys differ in SGD noise only (Frankle et al. 2020, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis").

tfds sets are read without TensorFlow from `array_record` files; preparing them (the
one-time download and conversion) runs tfds' own builders, which need TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import math
import os
import pathlib
import random
import socket
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lmc.errors import ConfigError, DataError, check_name
from lmc.files import atomic_write
from lmc.training.cache import default_cache_dir

if TYPE_CHECKING:
    import tensorflow_datasets as tfds


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a data set comes from and how it is augmented in training."""

    augmentation: str
    download_url: str | None = None  # None: generated offline


_SOURCES = {
    "mnist1d": _Source("none"),
    "mnist": _Source("none", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion_mnist": _Source("none", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "kmnist": _Source("none", "http://codh.rois.ac.jp/kmnist/"),
    "cifar10": _Source("crop_flip", "https://www.cs.toronto.edu/~kriz/"),
    "cifar100": _Source("crop_flip", "https://www.cs.toronto.edu/~kriz/"),
    # Digits: a horizontal flip would turn some into other classes.
    "svhn_cropped": _Source("crop", "http://ufldl.stanford.edu/housenumbers/"),
}
DATASETS: tuple[str, ...] = tuple(_SOURCES)
AUGMENTATIONS: tuple[str, ...] = ("none", "crop", "crop_flip")

_CROP_PADDING = 4
_FEISTEL_ROUNDS = 8  # Luby-Rackoff needs 4; more for small domains
_REACHABILITY_TIMEOUT_S = 3.0
_TFDS_CACHE_NAME = "lmc_arrays.npz"  # decoded uint8 arrays, beside tfds' own files


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification data set on the device, standardised per channel.

    `x_*` are float32 `(N, *input_shape)` (channels last), `y_*` int32 `(N,)`.
    `augmentation` is the set's training augmentation: 'none', 'crop_flip' or 'crop'.
    """

    name: str
    x_train: jax.Array = dataclasses.field(repr=False)
    y_train: jax.Array = dataclasses.field(repr=False)
    x_test: jax.Array = dataclasses.field(repr=False)
    y_test: jax.Array = dataclasses.field(repr=False)
    num_classes: int
    augmentation: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @functools.cached_property
    def signature(self) -> dict:
        """What identifies the contents, for a run to record what it was trained and
        evaluated on (`lmc.training.runs`): per split the shape, a digest of the labels
        and four moments of the inputs (mean, mean square, two order-sensitive means), in
        float64; the classes and augmentation. Inputs are compared by their moments, not
        their bytes, so that the same data standardised on another device (last-bit
        differences) still match (`same_data`). Computed once per data set."""
        out: dict = {"num_classes": self.num_classes, "augmentation": self.augmentation}
        for split, x, y in (("train", self.x_train, self.y_train),
                            ("test", self.x_test, self.y_test)):
            x = np.asarray(x).reshape(len(y), -1)  # per-example sums: no big temporaries
            i = np.arange(len(y))
            per = x.mean(axis=1, dtype=np.float64)
            square = np.einsum("ij,ij->i", x, x, dtype=np.float64) / max(x.shape[1], 1)
            moments = [per, square, per * (i % 2 * 2 - 1), per * (i % 7 - 3)]
            out[split] = {
                "shape": list(x.shape),
                "labels": hashlib.sha256(np.ascontiguousarray(np.asarray(y, np.int64))
                                         ).hexdigest()[:16],
                "moments": [float(m.mean()) if len(y) else 0.0 for m in moments]}
        return out


def same_data(a: dict, b: dict, rtol: float = 1e-4) -> bool:
    """Whether two `Dataset.signature`s describe the same data: equal shapes, labels,
    classes and augmentation, input moments within `rtol` (relative, or absolute near
    zero)."""
    if {k: v for k, v in a.items() if k not in ("train", "test")} != {
            k: v for k, v in b.items() if k not in ("train", "test")}:
        return False
    for split in ("train", "test"):
        p, q = a[split], b[split]
        if p["shape"] != q["shape"] or p["labels"] != q["labels"]:
            return False
        if not np.allclose(p["moments"], q["moments"], rtol=rtol, atol=rtol, equal_nan=True):
            return False
    return True


def default_data_dir() -> pathlib.Path:
    """`$LMC_DATA_DIR`, else `data/` in the lmc cache directory (`$LMC_CACHE_DIR`, default
    `~/.cache/lmc`)."""
    env = os.environ.get("LMC_DATA_DIR")
    return pathlib.Path(env).expanduser() if env else default_cache_dir() / "data"


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> Dataset:
    """Load a data set onto the default device, preparing it first if needed.

    MNIST-1D (Greydanus 2020) is generated offline and cached as `mnist1d.npz`; the others
    come from tensorflow-datasets in `data_dir` (`default_data_dir()` if None). Raises
    ConfigError for an unknown name and DataError when the set cannot be loaded or prepared.
    """
    check_name("data set", name, DATASETS)
    root = pathlib.Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "mnist1d":
        arrays, num_classes = _cached(root / "mnist1d.npz", _make_mnist1d), 10
    else:
        arrays, num_classes = _load_tfds(name, root, download)
    x_train, x_test = _standardise(arrays["x_train"], arrays["x_test"])
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=jnp.asarray(arrays["y_train"], jnp.int32),
        x_test=x_test,
        y_test=jnp.asarray(arrays["y_test"], jnp.int32),
        num_classes=num_classes,
        augmentation=_SOURCES[name].augmentation,
    )


@jax.jit
def _standardise(x_train: jax.Array, x_test: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cast to float32 and standardise each channel with the train set's mean and std.

    Standardising is scale-invariant, so uint8 pixels need no division by 255 first.
    """
    x_train, x_test = x_train.astype(jnp.float32), x_test.astype(jnp.float32)
    axes = tuple(range(x_train.ndim - 1))
    mean, std = x_train.mean(axes), x_train.std(axes)
    std = jnp.where(std > 0, std, 1.0)  # a constant channel stays finite
    return (x_train - mean) / std, (x_test - mean) / std


def _cached(
    path: pathlib.Path, build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Arrays from the .npz at `path`, or from `build()`, saved there (best effort)."""
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read {path} ({e}); delete it to rebuild it") from e
    arrays = build()
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:  # e.g. a read-only shared data directory: still usable, just slower
        warnings.warn(f"could not cache the arrays in {path}: {e}", stacklevel=3)
    return arrays


def _make_mnist1d() -> dict[str, np.ndarray]:
    """Generate MNIST-1D with its default arguments (offline, deterministic)."""
    from mnist1d.data import get_dataset_args, make_dataset  # slow import (matplotlib)

    # make_dataset reseeds the global `random` and NumPy generators; leave them as they were.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x_train": data["x"][..., None].astype(np.float32),
        "y_train": data["y"].astype(np.int32),
        "x_test": data["x_test"][..., None].astype(np.float32),
        "y_test": data["y_test"].astype(np.int32),
    }


def _load_tfds(name: str, root: pathlib.Path, download: bool) -> tuple[dict[str, np.ndarray], int]:
    """uint8 images and int32 labels of a tfds set, and its number of classes."""
    import tensorflow_datasets as tfds  # slow import, only for tfds sets

    builder = tfds.builder(name, data_dir=root)
    # The first test only spares the user tfds' warning about a missing dataset_info.json.
    if not (builder.data_path / "dataset_info.json").exists() or not builder.is_prepared():
        _check_can_prepare(name, root, download)
        try:
            builder.download_and_prepare(file_format="array_record")
        except OSError as e:
            raise DataError(f"preparing {name} in {root} failed: {e}") from e
    file_format = builder.info.file_format
    if file_format != tfds.core.FileFormat.ARRAY_RECORD:
        stored = file_format.value if file_format else "tfrecord"  # tfds' old default
        raise DataError(
            f"{name} in {builder.data_path} is stored as {stored}, which needs "
            f"TensorFlow to read; delete that folder and load it again to prepare it as "
            f"array_record"
        )

    def decode() -> dict[str, np.ndarray]:
        train, test = (_read_split(builder, split) for split in ("train", "test"))
        return {"x_train": train[0], "y_train": train[1], "x_test": test[0], "y_test": test[1]}

    arrays = _cached(pathlib.Path(builder.data_path) / _TFDS_CACHE_NAME, decode)
    return arrays, builder.info.features["label"].num_classes


def _read_split(builder: tfds.core.DatasetBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode every example of a split (TensorFlow-free `array_record` data source)."""
    from tqdm import tqdm

    source = builder.as_data_source(split=split)
    # One record at a time: tfds' mock data source breaks `__getitems__`, and the PNG
    # decoding costs more than the reads anyway. It happens once; the arrays are cached.
    examples = [source[i] for i in tqdm(range(len(source)), f"decoding {builder.name} {split}")]
    images = np.stack([e["image"] for e in examples])
    labels = np.array([e["label"] for e in examples], np.int32)
    return images, labels


def _check_can_prepare(name: str, root: pathlib.Path, download: bool) -> None:
    """Raise a DataError in one sentence, quickly, if `name` cannot be prepared here."""
    hint = (
        f"prepare it on a machine with internet access and TensorFlow "
        f"(python -c 'import lmc; lmc.load_dataset(\"{name}\")') and copy {root / name} "
        f"into {root}"
    )
    if not download:
        raise DataError(f"{name} is not prepared in {root} and download=False; {hint}")
    problems = []
    if not _tensorflow_installed():
        problems.append("TensorFlow (which tfds needs to prepare it) is not installed")
    url = _SOURCES[name].download_url
    if not _reachable(url):
        host = urllib.parse.urlsplit(url).hostname
        problems.append(f"there is no network ({host} is unreachable)")
    if problems:
        raise DataError(
            f"{name} is not prepared in {root} and cannot be prepared here: "
            f"{' and '.join(problems)}; {hint}"
        )


def _tensorflow_installed() -> bool:
    """tfds' image builders read raw files with tf.io.gfile and encode with tf.image."""
    return importlib.util.find_spec("tensorflow") is not None


def _reachable(url: str, timeout: float = _REACHABILITY_TIMEOUT_S) -> bool:
    """Whether a TCP connection to `url`'s host (or the proxy for it) opens in time.

    Checked before downloading because tfds retries for minutes when offline.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    target = urllib.parse.urlsplit(urllib.request.getproxies().get(scheme, url))
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((target.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch, `num_examples // batch_size` (the last partial one is dropped)."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {batch_size}")
    if batch_size > num_examples:
        raise ConfigError(
            f"batch size {batch_size} is larger than the data set ({num_examples} examples)"
        )
    return num_examples // batch_size


@functools.partial(jax.jit, static_argnames=("num_examples", "batch_size"))
def batch_indices(
    data_key: jax.Array, step: int | jax.Array, num_examples: int, batch_size: int
) -> jax.Array:
    """int32 `(batch_size,)` indices of the examples in batch `step`.

    Epoch `e = step // steps_per_epoch` visits the examples in the order of a pseudo-random
    permutation keyed by `fold_in(data_key, e)`, so every example is seen once per epoch
    and a batch depends only on `(data_key, step)`. `step` may be traced.
    """
    return steps_batch_indices(data_key, step, 1, num_examples, batch_size)[0]


@functools.partial(jax.jit, static_argnames=("num_steps", "num_examples", "batch_size"))
def steps_batch_indices(
    data_key: jax.Array, first_step: int | jax.Array, num_steps: int, num_examples: int,
    batch_size: int,
) -> jax.Array:
    """int32 `(num_steps, batch_size)`: `batch_indices` of steps `first_step + i`.

    Computed together, far more cheaply than step by step (the Feistel round functions
    are tabulated once per epoch the steps touch, see `_permute`); the values are the same.
    """
    spe = steps_per_epoch(num_examples, batch_size)
    span = 1 + -(-(num_steps - 1) // spe)  # the most epochs num_steps consecutive steps touch
    first_epoch = first_step // spe
    epoch, position = jnp.divmod(first_step + jnp.arange(num_steps), spe)
    positions = position[:, None] * batch_size + jnp.arange(batch_size)
    epoch_keys = jax.vmap(lambda e: jax.random.fold_in(data_key, e))(first_epoch + jnp.arange(span))
    tables = jax.vmap(lambda k: _round_tables(k, num_examples))(epoch_keys)
    return _permute(tables, (epoch - first_epoch)[:, None], positions, num_examples)


def _half_bits(n: int) -> int:
    return max(1, math.ceil(math.log2(n) / 2))


def _round_tables(key: jax.Array, n: int) -> jax.Array:
    """uint32 `(_FEISTEL_ROUNDS, 2^h)`: the round functions of `_permute`'s Feistel network
    keyed by `key`, tabulated: entry `[i, r]` is `bits(fold_in(round_keys[i], r)) & mask`."""
    half_bits = _half_bits(n)
    values = jnp.arange(1 << half_bits, dtype=jnp.uint32)

    def table(round_key: jax.Array) -> jax.Array:
        return jax.vmap(lambda r: jax.random.bits(jax.random.fold_in(round_key, r),
                                                  dtype=jnp.uint32))(values)

    return jax.vmap(table)(jax.random.split(key, _FEISTEL_ROUNDS)) & jnp.uint32(values[-1])


def _permute(tables: jax.Array, table: jax.Array, positions: jax.Array, n: int) -> jax.Array:
    """The entries at `positions` of pseudo-random permutations of [0, n).

    `tables` holds the tabulated round functions (`_round_tables`) of one permutation per
    leading index; `table` (broadcast against `positions`) says which one each position
    uses. Drawing a whole permutation by sorting n random keys (`jax.random.permutation`)
    costs 1.5 ms for n = 4000 on XLA's CPU backend, which made an MLP step on MNIST-1D 3x
    slower; here only the requested entries are computed. A balanced Feistel network
    permutes [0, 4^h) for 4^h >= n, and cycle-walking (applying it again until the value
    is below n) restricts it to a permutation of [0, n) (Black & Rogaway 2002, "Ciphers
    with arbitrary finite domains"). Its round function, a threefry hash of the right half
    keyed per round, takes only 2^h values, so it is tabulated (8 x 2^h hashes per
    permutation) instead of hashed for every position in every round.
    """
    half_bits = _half_bits(n)
    mask = jnp.uint32((1 << half_bits) - 1)
    flat = tables.reshape(-1)
    base = jnp.broadcast_to(table, positions.shape).astype(jnp.uint32) * (
        _FEISTEL_ROUNDS << half_bits)

    def feistel(v: jax.Array) -> jax.Array:
        left, right = v >> half_bits, v & mask
        for i in range(_FEISTEL_ROUNDS):
            f = flat.at[base + (i << half_bits) + right].get(mode="promise_in_bounds")
            left, right = right, left ^ f
        return (left << half_bits) | right

    def walk(v: jax.Array) -> jax.Array:
        return jnp.where(v >= n, feistel(v), v)

    v = lax.while_loop(lambda v: jnp.any(v >= n), walk, feistel(positions.astype(jnp.uint32)))
    return v.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("augmentation",))
def augment(
    aug_key: jax.Array, step: int | jax.Array, x: jax.Array, augmentation: str
) -> jax.Array:
    """Augment a batch of NHWC images; deterministic in `(aug_key, step)`.

    'crop': each image is zero-padded by 4 pixels (zero is the train mean after
    standardisation) and cropped back at a random offset in [0, 8]^2; 'crop_flip' also
    flips it horizontally with probability 1/2 (the CIFAR recipe of He et al. 2016);
    'none' returns `x`.
    """
    check_name("augmentation", augmentation, AUGMENTATIONS)
    if augmentation == "none":
        return x
    if x.ndim != 4:
        raise ConfigError(f"augmentation {augmentation!r} needs NHWC images, got shape {x.shape}")
    crop_key, flip_key = jax.random.split(jax.random.fold_in(aug_key, step))
    n, h, w, c = x.shape
    p = _CROP_PADDING
    padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * p + 1)
    x = jax.vmap(lambda image, o: lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c)))(
        padded, offsets
    )
    if augmentation == "crop_flip":
        flip = jax.random.bernoulli(flip_key, 0.5, (n,))
        x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    return x


@functools.partial(jax.jit, static_argnames=("batch_size", "augmentation"))
def get_batch(
    x: jax.Array,
    y: jax.Array,
    data_key: jax.Array,
    aug_key: jax.Array,
    step: int | jax.Array,
    batch_size: int,
    augmentation: str,
) -> tuple[jax.Array, jax.Array]:
    """Batch `step` of the on-device arrays `(x, y)`, augmented.

    Pass `x` and `y` as arguments of the jitted caller, not as closed-over constants.
    """
    idx = batch_indices(data_key, step, x.shape[0], batch_size)
    return augment(aug_key, step, x[idx], augmentation), y[idx]
