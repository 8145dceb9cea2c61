"""The run store: hashing, reuse, lineage, and resuming to bit-identical results."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import lmc.training.runs
from lmc.errors import CheckpointError
from lmc.training.checkpoint import load_checkpoint
from lmc.training.config import TrainConfig
from lmc.training.runs import Run, RunSpec, train_run, train_runs

from ..conftest import SAVE_AT, TINY_MLP

CONFIG = TINY_MLP
END = 200  # the last step of CONFIG


def _final_arrays(run: Run) -> dict:
    with np.load(run.checkpoint_path(END)) as npz:
        return {k: npz[k] for k in npz.files if k != "__meta__"}


def _assert_same_run(a: Run, b: Run) -> None:
    fa, fb = _final_arrays(a), _final_arrays(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    assert a.result()["history"] == b.result()["history"]


@pytest.fixture(scope="module")
def reference(trained_run):
    """The session's shared run of CONFIG (checkpoints at SAVE_AT, evaluations every 100)."""
    return trained_run


def test_final_checkpoint_is_the_last_step(reference):
    assert reference.final_checkpoint() == reference.checkpoint_path(END)
    assert reference.load().step == END


def test_run_id_hashes_result_changing_settings():
    assert RunSpec(CONFIG).run_id == RunSpec(TrainConfig.from_dict(CONFIG.to_dict())).run_id
    assert RunSpec(CONFIG).run_id.startswith("mlp-mnist1d-")
    others = [RunSpec(CONFIG.replace(lr=0.1)), RunSpec(CONFIG.replace(data_seed=1)),
              RunSpec(CONFIG, sibling=0), RunSpec(CONFIG, parent="x", start_step=50)]
    assert len({RunSpec(CONFIG).run_id, *(s.run_id for s in others)}) == 5


def test_finished_run_is_reused(reference, mnist1d, monkeypatch):
    assert reference.finished
    assert {0, 40, 50, END} <= set(reference.saved_steps())
    assert len(reference.saved_steps()) <= 6  # 0, 40, 50, 200 and two rolling ones

    def fail(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(lmc.training.runs, "Trainer", fail)
    again = train_run(CONFIG, reference.root, dataset=mnist1d, progress=False)
    assert again.dir == reference.dir


def test_a_run_is_never_reused_with_other_data_of_the_same_name(mnist1d, tmp_path):
    """A finished run records its data's fingerprint; asked for again with other arrays
    under the same name (an edited file, another test split) it is one readable error,
    not the old results."""
    import dataclasses

    from lmc.errors import DataError
    from lmc.training.runs import DATA_FILE

    config = CONFIG.replace(duration="20it")
    run = train_run(config, tmp_path, dataset=mnist1d, progress=False)
    assert (run.dir / DATA_FILE).is_file()
    assert train_run(config, tmp_path, dataset=mnist1d, progress=False).dir == run.dir
    from lmc.training.data import same_data

    other = dataclasses.replace(mnist1d, x_test=mnist1d.x_test[::-1])  # reordered inputs
    assert not same_data(other.signature, mnist1d.signature)
    # last-bit differences (the same data standardised on another device) still match
    nudged = dataclasses.replace(mnist1d, x_train=mnist1d.x_train * (1 + 1e-7))
    assert same_data(nudged.signature, mnist1d.signature)
    with pytest.raises(DataError, match="trained on other data than the data set 'mnist1d'"):
        train_run(config, tmp_path, dataset=other, progress=False)
    (run.dir / DATA_FILE).unlink()  # a run from before lmc recorded its data: not checked
    assert train_run(config, tmp_path, dataset=other, progress=False).dir == run.dir


def test_checkpoint_describes_its_network(reference):
    c = reference.load(END)
    assert c.step == END
    assert c.meta["model"] == {"name": "mlp", "options": {"widths": [32, 32]}, "num_classes": 10,
                               "input_shape": [40, 1]}
    assert c.meta["data"]["name"] == "mnist1d"
    assert c.meta["seeds"] == {"init": 0, "data": 0, "augment": 0, "dropout": 0}
    assert c.meta["spec"]["config"]["lr"] == 0.05
    assert c.meta["history"][-1]["step"] == END


def test_interrupted_run_resumes_bit_identical(reference, mnist1d, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_save = lmc.training.runs.save_checkpoint

    def save_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(lmc.training.runs, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_run(CONFIG, tmp_path, dataset=mnist1d, save_at=list(SAVE_AT), eval_every="100it",
                  progress=False)
    monkeypatch.setattr(lmc.training.runs, "save_checkpoint", real_save)
    run = Run(tmp_path, RunSpec(CONFIG))
    assert not run.finished and max(run.saved_steps()) < END
    resumed = train_run(CONFIG, tmp_path, dataset=mnist1d, save_at=list(SAVE_AT),
                        eval_every="100it", progress=False)
    _assert_same_run(resumed, reference)


def test_killed_process_resumes_bit_identical(reference, mnist1d, tmp_path, data_dir):
    """SIGKILL the `lmc train` process mid-run, then finish the run and compare."""
    cmd = [sys.executable, "-m", "lmc.cli", "train", "--model", "mlp", "--model-option",
           "widths=32,32", "--lr", "0.05", "--batch-size", "64", "--duration", f"{END}it",
           "--save-at", "50it", "--eval-every", "20it", "--runs", str(tmp_path),
           "--data-dir", str(data_dir), "--no-progress"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = Run(tmp_path, RunSpec(CONFIG))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(0 < s < END for s in run.saved_steps()):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not run.finished, "the process finished before it could be killed"
    resumed = train_runs([RunSpec(CONFIG)], tmp_path, dataset=mnist1d, save_at=list(SAVE_AT),
                         eval_every="20it", progress=False)[0]
    fa, fb = _final_arrays(resumed), _final_arrays(reference)
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def test_child_run_records_parent_and_starts_from_its_checkpoint(reference, mnist1d, tmp_path):
    spec = RunSpec(CONFIG, parent=reference.spec.run_id, start_step=50, sibling=1)
    child = train_run(spec, reference.root, dataset=mnist1d, eval_every="100it", progress=False)
    result = child.result()
    assert result["spec"]["parent"] == reference.spec.run_id
    assert result["spec"]["start_step"] == 50 and result["spec"]["sibling"] == 1
    assert result["history"][0]["step"] == 100  # first evaluation after the start
    start = child.load(50)
    parent50 = reference.load(50)
    jax.tree.map(np.testing.assert_array_equal, start.params, parent50.params)
    assert child.load(END).meta["spec"]["parent"] == reference.spec.run_id


def test_missing_parent_checkpoint_is_named(reference, mnist1d):
    spec = RunSpec(CONFIG, parent=reference.spec.run_id, start_step=70)
    message = "has no checkpoint at step 70; saved steps: 0, 40, 50"
    with pytest.raises(CheckpointError, match=message):
        train_run(spec, reference.root, dataset=mnist1d, progress=False)


def test_load_checkpoint_directly(reference):
    c = load_checkpoint(reference.checkpoint_path(END))
    assert c.opt_state is None and c.params["output"]["kernel"].shape == (32, 10)
