"""The safe pruning ratio of a checkpoint (Paul et al. 2023, §3.3; Zhang et al. 2024): the
record, its JSON, and the command."""

import json

import jax
import numpy as np
import pytest

from lmc.core.prune_ratio import ESTIMATORS
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
    # Zhang et al.'s choices by default: ε the spread of the 2 batch losses, the spectrum
    # of the prunable weights only, |λ|
    assert record["epsilon_source"] == "minibatch_std" and record["batch_size"] == 128
    assert record["epsilon_detail"] == ("std over the Hessian's 2 batches of 128 examples of "
                                        "the batch-mean loss")
    assert record["basis"] == "prunable" and record["eigenvalues"] == "abs"
    assert record["dim"] == record["num_prunable"]
    assert 0 <= record["zero_curvature_mass"] < 1 and 0 <= record["negative_mass"] < 1
    assert set(record["criteria"]) == {"magnitude", "random"}
    mag, rand = record["criteria"]["magnitude"], record["criteria"]["random"]
    assert len(mag["radius"]) == len(record["grid"]) == 99
    assert np.all(np.isfinite(mag["rayleigh"])) and record["lambda_max"] > 0
    for crit in (mag, rand):
        assert set(crit["safe"]) == set(ESTIMATORS)
        for safe in crit["safe"].values():
            assert 0 < safe["interpolated"] < 1 and 0 <= safe["ratio"] < 1
        # compensation never raises the quadratic model's increase: D allows at least B's ratio
        assert crit["safe"]["compensated"]["ratio"] >= crit["safe"]["quadratic"]["ratio"] - 1e-3
    # magnitude pruning removes less weight than random pruning at every ratio
    assert np.all(np.array(mag["radius"]) <= np.array(rand["radius"]))
    diagnostics = record["diagnostics"]
    assert diagnostics["num_matvecs"] == diagnostics["spectrum_matvecs"] + 2 * 99
    assert mag["curve_matvecs"] == 99
    assert load_record(typed.save(tmp_path / "ratio.json")).to_json() == typed.to_json()
    # a file written before C's choices existed: every live parameter, clipped eigenvalues
    old = {k: v for k, v in typed.to_json().items()
           if k not in ("basis", "eigenvalues", "batch_size", "epsilon_detail",
                        "zero_curvature_mass", "negative_mass")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = load_record(tmp_path / "old.json")
    assert (loaded.basis, loaded.eigenvalues, loaded.zero_curvature_mass) == ("all", "clip", None)

    with pytest.raises(ConfigError, match="unknown pruning criterion 'lottery'"):
        prune_ratio_record(path, criterion="lottery", dataset=mnist1d)
    with pytest.raises(ConfigError, match="one global order"):
        prune_ratio_record(path, criterion="magnitude_layerwise", dataset=mnist1d)
    with pytest.raises(ConfigError, match="unknown"):
        prune_ratio_record(path, keep_dense=("nope",), dataset=mnist1d)
    with pytest.raises(ConfigError, match="valid bases: all, prunable"):
        prune_ratio_record(path, basis="kernels", dataset=mnist1d)
    with pytest.raises(ConfigError, match="valid epsilons"):
        prune_ratio_record(path, epsilon="std", dataset=mnist1d)
    with pytest.raises(ConfigError, match="needs at least 2 batches"):
        prune_ratio_record(path, examples=100, dataset=mnist1d)


def test_prunable_hessian_of_a_checkpoint_has_the_prunable_dimension(narrow_run, mnist1d):
    from lmc.core import masks
    from lmc.workflows.opened import open_checkpoint

    opened = open_checkpoint(narrow_run.checkpoint_path(100), dataset=mnist1d)
    params = opened.params
    everything = opened.hessian(examples=100, batch_size=100)
    kernels = opened.hessian(examples=100, batch_size=100, prunable_only=True)
    trunk = opened.hessian(examples=100, batch_size=100, prunable_only=True,
                           keep_dense=("output",))
    mask = masks.check_mask(opened.mask, params)
    assert everything.dim == sum(p.size for p in jax.tree.leaves(params))
    assert kernels.dim == masks.count_alive(mask) < everything.dim
    assert trunk.dim == masks.count_alive(mask, ("output",)) < kernels.dim
    # one pure HVP per network, whatever the selection or the opening: the compiled
    # curvature programs are shared between checkpoints (the state is an operand)
    again = open_checkpoint(narrow_run.checkpoint_path(100), dataset=mnist1d)
    assert again.loss_fn().fn is opened.loss_fn().fn
    assert (everything.function is kernels.function is trunk.function
            is again.hessian(examples=100, batch_size=100, prunable_only=True).function)
    assert everything.size == kernels.size == trunk.size == everything.dim
    with pytest.raises(ConfigError, match="only with prunable_only"):
        opened.hessian(examples=100, keep_dense=("output",))


def test_cli_prune_ratio_writes_json_and_figure(narrow_run, tmp_path, capsys):
    from lmc.cli import main

    path = narrow_run.checkpoint_path(100)  # its data set: LMC_DATA_DIR, a temporary dir
    out = tmp_path / "ratio.json"
    # the choices before Zhang et al.'s (the defaults: test above): every live parameter,
    # negative eigenvalues clipped, ε the spread of the per-example loss
    code = main(["prune-ratio", str(path), "--examples", "300", "--grid-step", "0.05",
                 "--basis", "all", "--eigenvalues", "clip", "--epsilon", "example_std",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "C  p ≤ p_theory(R)" in text and "magnitude" in text and "random" in text
    assert "std of the per-example loss on the Hessian's 300 examples" in text
    assert "C: spectrum of all" in text and "eigenvalues clip" in text
    record = json.loads(out.read_text())
    assert record["kind"] == "prune_ratio" and len(record["grid"]) == 19
    assert record["basis"] == "all" and record["dim"] > record["num_prunable"]
    assert record["eigenvalues"] == "clip" and record["epsilon_source"] == "example_std"
    assert (tmp_path / "ratio.png").is_file() and (tmp_path / "ratio.pdf").is_file()
    assert main(["prune-ratio", str(path), "--grid-step", "2"]) == 1
    assert "grid step" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune-ratio", str(path), "--epsilon", "batch_std"])
    assert "a positive number or one of minibatch_std, example_std" in capsys.readouterr().err
    assert main(["prune-ratio", str(path), "--epsilon", "-1"]) == 1
    assert "epsilon must be positive" in capsys.readouterr().err


def test_positive_control_pipeline_on_a_tiny_network(narrow_run, mnist1d):
    """Zhang et al. 2024's comparison end to end: the measured one-shot safe ratio of a
    checkpoint (no fine-tuning) beside estimator C's prediction for it."""
    from lmc.workflows.prune_ratio import one_shot_safe_ratio

    path, grid, tolerance = narrow_run.checkpoint_path(100), np.arange(1, 100) / 100, 0.02
    measured = one_shot_safe_ratio(path, tolerance, grid=grid, dataset=mnist1d)
    accuracy, dense = np.array(measured["accuracy"]), measured["dense_accuracy"]
    passes = accuracy >= dense - tolerance - 1e-9
    i = int(np.argmin(passes)) if not passes.all() else len(grid)  # the first failure
    assert measured["safe_ratio"] == (grid[i - 1] if i > 0 else 0.0)
    assert passes[:i].all() and measured["split"] == "test" and len(accuracy) == 99
    # pruning more removes more: the last ratio leaves 1% of the weights
    assert measured["removed"][-1] == int(np.ceil(0.99 * measured["num_live"]))
    record = prune_ratio_record(path, grid=grid, examples=256, batch_size=128,
                                lanczos_steps=20, slq_probes=2, slq_steps=20, dataset=mnist1d)
    predicted = record.criteria["magnitude"]["safe"]["gaussian_width"]["interpolated"]
    assert 0 < predicted < 1 and record.num_prunable == measured["num_live"]
