"""Data sets (lmc.training.data): loading (MNIST-1D, mocked tfds), batch order, augmentation."""

from __future__ import annotations

import pathlib
import re
import socket
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lmc.errors import ConfigError, DataError
from lmc.training import data
from lmc.training.data import (
    DATASETS,
    augment,
    batch_indices,
    default_data_dir,
    get_batch,
    load_dataset,
    steps_per_epoch,
)


@pytest.fixture(scope="module")
def mnist1d_dir(tmp_path_factory):
    """A data directory in which MNIST-1D has been generated once."""
    path = tmp_path_factory.mktemp("data")
    load_dataset("mnist1d", path)
    return path


def test_mnist1d_shapes_dtypes_and_normalisation(mnist1d_dir):
    ds = load_dataset("mnist1d", mnist1d_dir)
    assert ds.x_train.shape == (4000, 40, 1) and ds.x_test.shape == (1000, 40, 1)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == jnp.float32 and ds.y_train.dtype == jnp.int32
    assert ds.input_shape == (40, 1) and ds.num_train == 4000 and ds.num_classes == 10
    assert ds.augmentation == "none"
    assert set(np.unique(ds.y_train).tolist()) == set(range(10))
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-4
    assert abs(float(ds.x_test.mean())) < 0.1 and abs(float(ds.x_test.std()) - 1) < 0.1


def test_mnist1d_is_cached_as_npz_and_reread(mnist1d_dir, monkeypatch):
    assert [p.name for p in mnist1d_dir.iterdir()] == ["mnist1d.npz"]  # no temp files left
    with np.load(mnist1d_dir / "mnist1d.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["x_test", "x_train", "y_test", "y_train"]
        cached_labels = f["y_train"]
    import mnist1d.data

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(mnist1d.data, "make_dataset", fail)
    ds = load_dataset("mnist1d", mnist1d_dir)
    np.testing.assert_array_equal(ds.y_train, cached_labels)


def test_mnist1d_generation_leaves_global_rngs_alone(tmp_path):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    load_dataset("mnist1d", tmp_path)
    assert np.random.rand() == expected


def test_unreadable_cache_is_a_data_error(tmp_path):
    (tmp_path / "mnist1d.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError, match="delete it"):
        load_dataset("mnist1d", tmp_path)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LMC_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("LMC_DATA_DIR")
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "data"  # under the lmc cache directory
    monkeypatch.delenv("LMC_CACHE_DIR")
    assert default_data_dir() == pathlib.Path.home() / ".cache" / "lmc" / "data"


def test_batch_indices_are_deterministic_and_key_dependent():
    key, other = jax.random.key(0), jax.random.key(1)
    a = batch_indices(key, 3, 100, 10)
    assert a.dtype == jnp.int32 and a.shape == (10,)
    np.testing.assert_array_equal(a, batch_indices(key, 3, 100, 10))
    assert not np.array_equal(a, batch_indices(other, 3, 100, 10))


@pytest.mark.parametrize("num_examples", [100, 103])
def test_every_example_once_per_epoch(num_examples):
    key = jax.random.key(7)
    spe = steps_per_epoch(num_examples, 10)
    assert spe == 10
    epochs = [
        np.concatenate([batch_indices(key, e * spe + s, num_examples, 10) for s in range(spe)])
        for e in range(2)
    ]
    for seen in epochs:
        assert len(set(seen.tolist())) == 100 and seen.min() >= 0 and seen.max() < num_examples
    assert not np.array_equal(epochs[0], epochs[1])  # a new order each epoch


@pytest.mark.parametrize("n", [1, 2, 3, 10, 17, 4096, 5000])
def test_one_batch_of_the_whole_set_is_a_permutation(n):
    order = batch_indices(jax.random.key(n), 0, n, n)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_order_is_uniform_over_keys():
    # Each example lands at each position with probability 1/n: 4000 orders of 10 examples
    # put every example at every position 400 +- 20 times; bounds at 5 sigma.
    keys = jax.random.split(jax.random.key(0), 4000)
    orders = np.asarray(jax.vmap(lambda k: batch_indices(k, 0, 10, 10))(keys))
    counts = np.stack([(orders == j).sum(0) for j in range(10)])
    assert counts.min() > 300 and counts.max() < 500
    # Neighbours are not correlated either: ordered pairs at positions 0, 1 are uniform.
    pairs = np.bincount(orders[:, 0] * 10 + orders[:, 1], minlength=100).reshape(10, 10)
    assert (np.diag(pairs) == 0).all()
    off_diagonal = pairs[~np.eye(10, dtype=bool)]  # 4000 / 90 = 44 +- 7 each
    assert off_diagonal.min() > 10 and off_diagonal.max() < 80


def test_resumed_batches_match_an_uninterrupted_run():
    key = jax.random.key(3)

    @jax.jit
    def run_from_zero(key):
        return jax.lax.scan(lambda s, _: (s + 1, batch_indices(key, s, 50, 8)), 0, length=20)[1]

    from_zero = run_from_zero(key)
    for step in (0, 5, 6, 13, 19):
        np.testing.assert_array_equal(from_zero[step], batch_indices(key, step, 50, 8))
        np.testing.assert_array_equal(from_zero[step], batch_indices(key, jnp.int32(step), 50, 8))


def test_get_batch_gathers_matching_examples_and_labels():
    n = 64
    x = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[:, None, None, None], (n, 8, 8, 3))
    y = jnp.arange(n, dtype=jnp.int32)
    key = jax.random.key(0)
    xb, yb = get_batch(x, y, key, key, 11, 16, "none")
    np.testing.assert_array_equal(yb, batch_indices(key, 11, n, 16))
    np.testing.assert_array_equal(xb[:, 0, 0, 0], yb)
    xa, ya = get_batch(x, y, key, key, 11, 16, "crop_flip")
    assert xa.shape == (16, 8, 8, 3)
    np.testing.assert_array_equal(ya, yb)


def _transform_of(out: np.ndarray, image: np.ndarray) -> list[tuple[int, int, bool]]:
    """Every (dy, dx, flipped) such that `out` is that crop of `image` padded by 4 zeros."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    found = []
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy : dy + h, dx : dx + w]
            found += [
                (dy, dx, flip)
                for flip in (False, True)
                if np.array_equal(out, crop[:, ::-1] if flip else crop)
            ]
    return found


@pytest.mark.parametrize("augmentation", ["crop", "crop_flip"])
def test_augment_crops_and_flips(augmentation):
    x = jax.random.normal(jax.random.key(0), (32, 12, 10, 3))
    key = jax.random.key(5)
    out = augment(key, 4, x, augmentation)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, augment(key, 4, x, augmentation))
    assert not np.array_equal(out, augment(key, 5, x, augmentation))
    assert not np.array_equal(out, augment(jax.random.key(6), 4, x, augmentation))
    transforms = [_transform_of(o, i) for o, i in zip(np.asarray(out), np.asarray(x), strict=True)]
    assert all(len(t) == 1 for t in transforms)
    offsets = {t[0][:2] for t in transforms}
    flips = {t[0][2] for t in transforms}
    assert len(offsets) > 10
    assert flips == ({False, True} if augmentation == "crop_flip" else {False})


def test_augment_none_is_identity_and_names_are_checked():
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    np.testing.assert_array_equal(augment(jax.random.key(1), 0, x, "none"), x)
    with pytest.raises(ConfigError, match="crop_flip"):
        augment(jax.random.key(1), 0, x, "rotate")
    with pytest.raises(ConfigError, match="NHWC"):
        augment(jax.random.key(1), 0, jnp.zeros((4, 40, 1)), "crop")


def test_batch_larger_than_data_set_is_a_config_error():
    with pytest.raises(ConfigError, match="larger than the data set"):
        steps_per_epoch(100, 101)
    with pytest.raises(ConfigError, match="larger than the data set"):
        get_batch(
            jnp.zeros((10, 3)),
            jnp.zeros(10, jnp.int32),
            jax.random.key(0),
            jax.random.key(0),
            0,
            11,
            "none",
        )
    assert steps_per_epoch(100, 100) == 1


def test_unknown_data_set_lists_valid_names(tmp_path):
    with pytest.raises(ConfigError, match="valid data sets: .*cifar10.*mnist1d"):
        load_dataset("imagenet", tmp_path)
    assert {"mnist1d", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped"} <= set(
        DATASETS
    )


@pytest.mark.parametrize(
    "name, shape, augmentation",
    [("cifar10", (32, 32, 3), "crop_flip"), ("mnist", (28, 28, 1), "none")],
)
def test_tfds_set_through_mock_data(tmp_path, tfds_metadata, name, shape, augmentation):
    # mock_data replaces every builder's data_dir by its own; with USE_FILES the metadata
    # written there makes the set count as prepared, and the records are random.
    variant_dir = tfds_metadata(tmp_path / "tfds", name, 50000, 10000, "array_record")
    policy = tfds.testing.MockPolicy.USE_FILES
    with tfds.testing.mock_data(num_examples=20, policy=policy, data_dir=str(tmp_path / "tfds")):
        ds = load_dataset(name, tmp_path / "ignored", download=False)
    assert ds.x_train.shape == (20, *shape) and ds.x_test.shape == (20, *shape)
    assert ds.x_train.dtype == jnp.float32 and ds.y_train.dtype == jnp.int32
    assert ds.num_classes == 10 and ds.augmentation == augmentation
    assert 0 <= int(ds.y_train.min()) and int(ds.y_train.max()) < 10
    axes = (0, 1, 2)
    np.testing.assert_allclose(ds.x_train.mean(axes), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axes), 1, atol=1e-4)
    assert (variant_dir / "lmc_arrays.npz").exists()  # decoded once, cached beside tfds' files
    again = load_dataset(name, variant_dir.parent.parent)  # the cache, without mock_data
    np.testing.assert_array_equal(again.x_train, ds.x_train)


def test_tfrecord_prepared_set_is_a_data_error(tmp_path, tfds_metadata):
    tfds_metadata(tmp_path, "mnist", 10, 10, "tfrecord")
    with pytest.raises(DataError, match="stored as tfrecord"):
        load_dataset("mnist", tmp_path, download=False)


def test_not_prepared_without_download_fails_at_once(tmp_path):
    start = time.monotonic()
    with pytest.raises(
        DataError, match=f"cifar10 is not prepared in {re.escape(str(tmp_path))} and download"
    ):
        load_dataset("cifar10", tmp_path, download=False)
    assert time.monotonic() - start < 5


def test_not_prepared_offline_fails_quickly(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(data, "_tensorflow_installed", lambda: True)
    start = time.monotonic()
    with pytest.raises(DataError, match=r"no network \(www.cs.toronto.edu is unreachable\)"):
        load_dataset("cifar10", tmp_path)
    assert time.monotonic() - start < 5
    monkeypatch.setattr(data, "_tensorflow_installed", lambda: False)
    with pytest.raises(
        DataError, match=f"{re.escape(str(tmp_path))} .*TensorFlow .* is not installed"
    ):
        load_dataset("cifar10", tmp_path)
