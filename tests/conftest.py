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
