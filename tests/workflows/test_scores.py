"""Data scores over runs: the run store's runs scored and averaged, the .npz format read
without pickle, checkpoints given as files, and `lmc scores`."""

import json

import numpy as np
import pytest

from lmc.cli import main
from lmc.core.scores import SCORES, example_scores
from lmc.errors import ConfigError
from lmc.training import runs as run_store_module
from lmc.workflows.opened import open_checkpoint
from lmc.workflows.records import ScoresRecord, load_record
from lmc.workflows.scores import ARRAYS, data_scores, independent_config, load_scores
from tests.conftest import SAVE_AT

STEP = 40  # a step the session's trained run keeps (SAVE_AT): its run is reused


@pytest.fixture(scope="module")
def scored(tiny_mlp_config, trained_run, run_store, mnist1d, tmp_path_factory):
    """Scores of one run of the tiny MLP config at step 40: the session's trained run,
    reused (training further runs costs more time than the tests have)."""
    assert f"{STEP}it" in SAVE_AT
    npz = tmp_path_factory.mktemp("scores") / "scores.npz"
    record = data_scores(tiny_mlp_config, npz, runs=1, step=f"{STEP}it", root=run_store,
                         dataset=mnist1d, progress=False)
    return record, npz


def ranks(v):
    return np.searchsorted(np.sort(v), v)  # distinct values: their positions when sorted


def test_a_config_run_is_scored_at_the_step(scored, trained_run, mnist1d, tmp_path):
    record, npz = scored
    assert isinstance(record, ScoresRecord) and record.step == STEP
    assert record.runs == [trained_run.spec.run_id]
    assert record.checkpoints == [str(trained_run.checkpoint_path(STEP))]
    assert record.arrays == str(npz) and record.num_train == mnist1d.num_train
    assert record.config == trained_run.spec.config.to_dict() and not record.masked
    arrays = load_scores(npz)
    for name in SCORES:
        assert record.summary[name]["mean"] == pytest.approx(float(arrays[name].mean()))
        assert record.summary[name]["run_std"] == 0.0  # one run
        assert sum(record.histograms[name]["counts"]) == mnist1d.num_train
    e, g = arrays["el2n"], arrays["grand"]
    assert record.rank_correlation == pytest.approx(np.corrcoef(ranks(e), ranks(g))[0, 1],
                                                    rel=1e-3)  # float32 ties
    record.save(tmp_path / "scores.json")
    loaded = load_record(tmp_path / "scores.json")
    assert isinstance(loaded, ScoresRecord) and loaded.to_json() == json.loads(
        json.dumps(record.to_json()))  # the same record, its tuples read back as lists


def test_checkpoints_are_averaged(trained_run, mnist1d, tmp_path):
    paths = [trained_run.checkpoint_path(step) for step in (40, 50)]
    record = data_scores(paths, tmp_path / "two.npz", dataset=mnist1d, progress=False)
    assert record.runs == [] and record.config is None and record.step is None  # mixed
    per_run = {s: [] for s in SCORES}
    for path in paths:  # each checkpoint scored on its own
        o = open_checkpoint(path, dataset=mnist1d)
        for name, values in example_scores(o.eval_apply, o.params, o.state, mnist1d.x_train,
                                           mnist1d.y_train).items():
            per_run[name].append(np.asarray(values))
    arrays = load_scores(tmp_path / "two.npz")
    for name in SCORES:
        np.testing.assert_allclose(arrays[name], np.mean(per_run[name], 0), rtol=1e-6)
        np.testing.assert_allclose(arrays[f"{name}_std"], np.std(per_run[name], 0),
                                   rtol=1e-4, atol=1e-7)
        assert record.summary[name]["run_std"] > 0


def test_the_npz_reads_without_pickle(scored, mnist1d):
    _, npz = scored
    with np.load(npz, allow_pickle=False) as f:
        assert set(f.files) == set(ARRAYS)
        for key in (*SCORES, *(f"{s}_std" for s in SCORES)):
            assert f[key].dtype == np.float32 and f[key].shape == (mnist1d.num_train,)
        np.testing.assert_array_equal(f["labels"], np.asarray(mnist1d.y_train))
        assert str(f["dataset"]) == "mnist1d" and int(f["num_train"]) == mnist1d.num_train


def test_files_score_like_their_runs_and_reruns_train_nothing(scored, tiny_mlp_config,
                                                              run_store, mnist1d, tmp_path,
                                                              monkeypatch):
    record, npz = scored
    again = data_scores(record.checkpoints, tmp_path / "files.npz", dataset=mnist1d,
                        progress=False)
    assert again.runs == [] and again.step == STEP
    for key in ARRAYS:
        np.testing.assert_array_equal(load_scores(tmp_path / "files.npz")[key],
                                      load_scores(npz)[key])

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(run_store_module, "_train", no_training)
    rerun = data_scores(tiny_mlp_config, tmp_path / "rerun.npz", runs=1, step=f"{STEP}it",
                        root=run_store, dataset=mnist1d, progress=False)
    assert rerun.runs == record.runs


def test_independent_runs_share_no_seed(tiny_mlp_config):
    config = tiny_mlp_config.replace(init_seed=7)
    second = independent_config(config, 1)
    assert (second.seed, second.init_seed) == (config.seed + 1, 8)
    assert independent_config(config, 0) == config


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"step": "300it"}, r"score step 300it \(300 steps\) is past the end of training \(200"),
    ({"runs": 0}, "data scores need at least one run, got 0"),
])
def test_bad_settings(tiny_mlp_config, mnist1d, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        data_scores(tiny_mlp_config, tmp_path / "s.npz", dataset=mnist1d, progress=False,
                    **kwargs)


def test_cli_writes_record_arrays_and_figure(scored, tmp_path, data_dir, capsys):
    record, _ = scored
    out = tmp_path / "s.json"
    assert main(["scores", *record.checkpoints, "--out", str(out), "--no-progress",
                 "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "Spearman" in printed and "el2n" in printed and "grand" in printed
    for suffix in (".json", ".npz", ".png", ".pdf"):
        assert out.with_suffix(suffix).is_file()
    assert load_record(out).arrays == str(out.with_suffix(".npz"))
    assert main(["plot", str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again.png").is_file()


@pytest.mark.parametrize(("argv", "message"), [
    (["--lr", "0.1"], "give checkpoints or training-config flags, not both"),
    (["--chunk-size", "0"], "chunk size must be a positive integer, got 0"),
])
def test_cli_bad_input_gives_one_line(scored, argv, message, tmp_path, data_dir, capsys):
    record, _ = scored
    code = main(["scores", record.checkpoints[0], *argv, "--out", str(tmp_path / "s.json"),
                 "--no-progress", "--data-dir", str(data_dir)])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("lmc scores: error: ") and message in err
