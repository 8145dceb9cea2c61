"""Per-example barriers between two checkpoints: the workflow's record, the command's line,
JSON and .npz, and interpolation files written before per-example barriers existed."""

import json
from pathlib import Path

import numpy as np
import pytest

from lmc.cli import main
from lmc.constants import EXAMPLE_LOSS_THRESHOLD
from lmc.workflows.interpolation import interpolate_checkpoints, save_per_example_arrays
from lmc.workflows.records import InterpolationRecord, load_record

OLD = Path(__file__).resolve().parents[2] / "figures" / "interpolation_mnist1d_two_seeds.json"


def test_per_example_record_and_its_arrays(trained_run, mnist1d, tmp_path):
    a, b = trained_run.checkpoint_path(50), trained_run.checkpoint_path(200)
    record = interpolate_checkpoints(a, b, alphas=3, max_examples=40, dataset=mnist1d,
                                     per_example=True)
    assert set(record.per_example) == {"train", "test"}
    for split, fractions in record.per_example.items():
        arrays = record.per_example_arrays[split]
        assert fractions["examples"] == 40 and fractions["loss_threshold"] == EXAMPLE_LOSS_THRESHOLD
        assert fractions["error_connected"] == pytest.approx(np.mean(arrays["error_barrier"] == 0))
        assert fractions["loss_connected"] == pytest.approx(
            np.mean(arrays["loss_barrier"] < EXAMPLE_LOSS_THRESHOLD))
        # one evaluation: the examples average to the record's curves
        np.testing.assert_allclose(arrays["example_loss"].mean(1), record.curves[split]["loss"],
                                   rtol=1e-5)
    # the summary is in the JSON, the arrays are not; a file without them reads as before
    again = load_record(record.save(tmp_path / "r.json"))
    assert again.per_example == record.per_example and again.per_example_arrays is None
    assert "per_example_arrays" not in json.loads((tmp_path / "r.json").read_text())
    with np.load(save_per_example_arrays(record, tmp_path / "r.npz"), allow_pickle=False) as z:
        np.testing.assert_array_equal(z["test/example_correct"],
                                      record.per_example_arrays["test"]["example_correct"])
        assert z["alphas"].tolist() == record.alphas
    old = load_record(OLD)
    assert isinstance(old, InterpolationRecord) and old.per_example is None
    assert "per_example" not in old.to_json()


def test_command_prints_and_writes_the_fractions(trained_run, tmp_path, capsys):
    a, b = trained_run.checkpoint_path(50), trained_run.checkpoint_path(200)
    out = tmp_path / "pe.json"
    assert main(["interpolate", str(a), str(b), "--alphas", "3", "--max-examples", "40",
                 "--splits", "train", "--per-example-threshold", "0.5", "--per-example-arrays",
                 "--no-figure", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    line = [t for t in printed.splitlines() if t.startswith("per-example: ")]
    assert len(line) == 1 and "train" in line[0] and "(barrier < 0.5)" in line[0]
    saved = json.loads(out.read_text())["per_example"]["train"]
    assert saved["loss_threshold"] == 0.5 and saved["examples"] == 40
    assert f"{100 * saved['error_connected']:.1f}% in error" in line[0]
    with np.load(tmp_path / "pe.per_example.npz", allow_pickle=False) as z:
        assert z["train/example_loss"].shape == (3, 40)
        assert z["train/loss_barrier"].shape == (40,)
