"""Interpolation between two checkpoints: the record, its checks, and BatchNorm reset."""

import numpy as np
import pytest

from lmc.errors import CheckpointError, ConfigError
from lmc.training.config import TrainConfig
from lmc.training.runs import train_run
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.records import InterpolationRecord, load_record


def test_interpolate_checkpoints_end_to_end(trained_run, mnist1d, tmp_path):
    run = trained_run
    a, b = run.checkpoint_path(50), run.checkpoint_path(200)
    record = interpolate_checkpoints(a, b, alphas=5, dataset=mnist1d, layerwise=True)
    assert isinstance(record, InterpolationRecord)
    assert record.bn == "none" and len(record.alphas) == 5
    assert record.examples == {"train": 4000, "test": 1000}
    history = {h["step"]: h for h in run.result()["history"]}
    assert record.curves["test"]["loss"][-1] == pytest.approx(history[200]["test_loss"],
                                                              rel=1e-5)
    assert [row["block"] for row in record.layerwise] == ["dense0", "dense1", "output"]
    # the record round-trips through its JSON file
    again = load_record(record.save(tmp_path / "interpolation.json"))
    assert isinstance(again, InterpolationRecord) and again.to_json() == record.to_json()
    assert record.to_json()["kind"] == "interpolation"
    with pytest.raises(CheckpointError, match="missing.npz does not exist"):
        interpolate_checkpoints(a, tmp_path / "missing.npz", dataset=mnist1d)
    with pytest.raises(ConfigError, match="valid splits: test, train"):
        interpolate_checkpoints(a, b, splits=("validation",), dataset=mnist1d)


def test_batchnorm_network_defaults_to_reset(tmp_path, mock_cifar10):
    """ResNet-20 on tfds mock CIFAR-10: BN statistics are re-estimated at every α."""
    config = TrainConfig(model="resnet20", dataset="cifar10", batch_size=16, duration="2it")
    run = train_run(config, tmp_path, dataset=mock_cifar10, save_at=["1it"], progress=False)
    record = interpolate_checkpoints(run.checkpoint_path(1), run.checkpoint_path(2), alphas=3,
                                     splits=("test",), dataset=mock_cifar10, bn_batch_size=32)
    assert record.bn == "reset"
    assert np.all(np.isfinite(record.curves["test"]["loss"]))
    interpolated = interpolate_checkpoints(run.checkpoint_path(1), run.checkpoint_path(2),
                                           alphas=3, splits=("test",), bn="interpolate",
                                           dataset=mock_cifar10)
    assert interpolated.bn == "interpolate"
    assert interpolated.curves["test"]["loss"] != record.curves["test"]["loss"]
