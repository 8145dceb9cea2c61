"""The safe pruning ratio of a checkpoint (Paul et al. 2023, §3.3; Zhang et al. 2024): the
record, its JSON, and the command."""

import json

import numpy as np
import pytest

from lmc.errors import ConfigError
from lmc.workflows.prune_ratio import prune_ratio_record
from lmc.workflows.records import PruneRatioRecord, load_record


def test_prune_ratio_record_of_a_checkpoint(narrow_run, mnist1d, tmp_path):
    path = narrow_run.checkpoint_path(100)
    grid = np.arange(1, 100) / 100
    typed = prune_ratio_record(path, grid=grid, examples=256, batch_size=128,
                               lanczos_steps=20, slq_probes=2, slq_steps=20, dataset=mnist1d)
    assert isinstance(typed, PruneRatioRecord)
    assert typed.criterion == "magnitude" and typed.examples == 256 and typed.epsilon > 0
    record = json.loads(json.dumps(typed.to_json(), allow_nan=False))
    assert record["kind"] == "prune_ratio" and record["criterion"] == "magnitude"
    assert record["examples"] == 256 and record["epsilon"] > 0
    assert record["epsilon_source"] == "std of the per-example loss on the Hessian's 256 examples"
    assert set(record["criteria"]) == {"magnitude", "random"}
    mag, rand = record["criteria"]["magnitude"], record["criteria"]["random"]
    assert len(mag["radius"]) == len(record["grid"]) == 99
    assert np.all(np.isfinite(mag["rayleigh"])) and record["lambda_max"] > 0
    for crit in (mag, rand):
        assert set(crit["safe"]) == {"lambda_max", "quadratic", "gaussian_width"}
        for safe in crit["safe"].values():
            assert 0 < safe["interpolated"] < 1 and 0 <= safe["ratio"] < 1
    # magnitude pruning removes less weight than random pruning at every ratio
    assert np.all(np.array(mag["radius"]) <= np.array(rand["radius"]))
    diagnostics = record["diagnostics"]
    assert diagnostics["num_matvecs"] == diagnostics["spectrum_matvecs"] + 2 * 99
    assert mag["curve_matvecs"] == 99
    assert load_record(typed.save(tmp_path / "ratio.json")).to_json() == typed.to_json()
    with pytest.raises(ConfigError, match="unknown pruning criterion 'lottery'"):
        prune_ratio_record(path, criterion="lottery", dataset=mnist1d)
    with pytest.raises(ConfigError, match="one global order"):
        prune_ratio_record(path, criterion="magnitude_layerwise", dataset=mnist1d)
    with pytest.raises(ConfigError, match="unknown"):
        prune_ratio_record(path, keep_dense=("nope",), dataset=mnist1d)


def test_cli_prune_ratio_writes_json_and_figure(narrow_run, tmp_path, capsys):
    from lmc.cli import main

    path = narrow_run.checkpoint_path(100)  # its data set: LMC_DATA_DIR, a temporary dir
    out = tmp_path / "ratio.json"
    code = main(["prune-ratio", str(path), "--examples", "300", "--grid-step", "0.05",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "C  p ≤ p_theory(R)" in text and "magnitude" in text and "random" in text
    record = json.loads(out.read_text())
    assert record["kind"] == "prune_ratio" and len(record["grid"]) == 19
    assert (tmp_path / "ratio.png").is_file() and (tmp_path / "ratio.pdf").is_file()
    assert main(["prune-ratio", str(path), "--grid-step", "2"]) == 1
    assert "grid step" in capsys.readouterr().err
