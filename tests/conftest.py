"""Shared fixtures: a temporary run store and the cached MNIST-1D data set."""

from __future__ import annotations

import os

import pytest

# Tests run on the CPU, even where a GPU is visible.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def mnist1d(data_dir):
    from lmc.data import load_dataset

    return load_dataset("mnist1d", data_dir)


def write_tfds_metadata(data_dir, name: str, num_train: int, num_test: int, file_format: str):
    """The metadata files a prepared tfds set has (no records: mock_data supplies them)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir, file_format=file_format)
    splits = [("train", num_train), ("test", num_test)]
    builder.info.set_splits(
        tfds.core.SplitDict(
            [tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in splits]
        )
    )
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    return builder.data_path


@pytest.fixture(scope="session")
def mock_cifar10(tmp_path_factory):
    """CIFAR-10 loaded through the real tfds code path, with tfds's random mock records."""
    import tensorflow_datasets as tfds

    from lmc.data import load_dataset

    root = tmp_path_factory.mktemp("tfds")
    write_tfds_metadata(root, "cifar10", 50000, 10000, "array_record")
    policy = tfds.testing.MockPolicy.USE_FILES
    with tfds.testing.mock_data(num_examples=64, policy=policy, data_dir=str(root)):
        return load_dataset("cifar10", root / "unused", download=False)
