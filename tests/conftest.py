"""Shared fixtures: tiny configs, the cached MNIST-1D data set in a temporary directory, a
mocked CIFAR-10, and trained tiny runs in a temporary run store (trained once a session).

Every test runs with `LMC_DATA_DIR` and `LMC_RUNS` pointing into temporary directories,
so nothing is written to ~/.cache or to the working directory.
"""

from __future__ import annotations

import os

import pytest

# Tests run on the CPU, even where a GPU is visible.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from lmc.training.config import TrainConfig  # noqa: E402

# The tiny MLP most tests train: 40 -> 32 -> 32 -> 10 on MNIST-1D, 200 steps.
TINY_MLP = TrainConfig(model="mlp", model_options={"widths": (32, 32)}, lr=0.05,
                       batch_size=64, duration="200it")
# A one-hidden-layer MLP for the Hessian-based predictions (826 parameters: fast HVPs).
NARROW_MLP = TrainConfig(model="mlp", model_options={"widths": (16,)}, lr=0.05, batch_size=64,
                         duration="100it")
# The MNIST-1D convnet with few channels: the convolutional execution policy.
TINY_CONV1D = TrainConfig(model="conv1d", model_options={"channels": 8}, lr=0.05,
                          batch_size=64, duration="100it")
# The steps at which the shared run keeps checkpoints (spawn and interpolation points).
SAVE_AT = ("40it", "50it")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(autouse=True)
def _temporary_stores(data_dir, tmp_path_factory, monkeypatch):
    """Default data and run directories inside the session's temporary directory."""
    monkeypatch.setenv("LMC_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LMC_RUNS", str(tmp_path_factory.getbasetemp() / "default_runs"))
    monkeypatch.setenv("LMC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "lmc_cache"))


@pytest.fixture(scope="session")
def mnist1d(data_dir):
    from lmc.training.data import load_dataset

    return load_dataset("mnist1d", data_dir)


@pytest.fixture(scope="session")
def tiny_mlp_config() -> TrainConfig:
    return TINY_MLP


@pytest.fixture(scope="session")
def narrow_mlp_config() -> TrainConfig:
    return NARROW_MLP


@pytest.fixture(scope="session")
def tiny_conv1d_config() -> TrainConfig:
    return TINY_CONV1D


@pytest.fixture(scope="session")
def run_store(tmp_path_factory):
    """The session's run store, shared by the tests that reuse trained runs."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def trained_run(run_store, mnist1d):
    """`TINY_MLP` trained once, with checkpoints at 0, 40, 50 and 200 and evaluations every
    100 steps."""
    from lmc.training.runs import train_run

    return train_run(TINY_MLP, run_store, dataset=mnist1d, save_at=list(SAVE_AT),
                     eval_every="100it", progress=False)


@pytest.fixture(scope="session")
def narrow_run(run_store, mnist1d):
    """`NARROW_MLP` trained once (checkpoints at 0 and 100)."""
    from lmc.training.runs import train_run

    return train_run(NARROW_MLP, run_store, dataset=mnist1d, eval_every="100it",
                     progress=False)


def _write_tfds_metadata(data_dir, name: str, num_train: int, num_test: int, file_format: str):
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


# Kept importable under its old name for the test files that import it from here.
write_tfds_metadata = _write_tfds_metadata


@pytest.fixture(scope="session")
def tfds_metadata():
    """`tfds_metadata(data_dir, name, num_train, num_test, file_format) -> variant dir`."""
    return _write_tfds_metadata


@pytest.fixture(scope="session")
def mock_cifar10(tmp_path_factory):
    """CIFAR-10 loaded through the real tfds code path, with tfds's random mock records."""
    import tensorflow_datasets as tfds

    from lmc.training.data import load_dataset

    root = tmp_path_factory.mktemp("tfds")
    _write_tfds_metadata(root, "cifar10", 50000, 10000, "array_record")
    policy = tfds.testing.MockPolicy.USE_FILES
    with tfds.testing.mock_data(num_examples=64, policy=policy, data_dir=str(root)):
        return load_dataset("cifar10", root / "unused", download=False)
