"""Training on a subset chosen by per-example scores (Paul et al. 2021): selection, the
run id, checks of the scores file, training on the kept examples only, and resuming."""

import dataclasses
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lmc.training.runs
from lmc.cli import main
from lmc.errors import ConfigError, DataError
from lmc.training.config import TrainConfig
from lmc.training.rng import stream_key
from lmc.training.runs import Run, RunSpec, train_run
from lmc.training.subsets import Subset, ranked, scores_digest, select_examples
from lmc.training.trainer import Trainer

from ..conftest import TINY_MLP

N = 4000  # MNIST-1D's training examples
CONFIG = TrainConfig(model="mlp", model_options={"widths": (16,)}, lr=0.05, batch_size=50,
                     duration="40it")


def _write_scores(path, el2n, labels, dataset="mnist1d", **extra):
    arrays = {"el2n": el2n, "grand": -el2n, "el2n_std": np.zeros_like(el2n),
              "grand_std": np.zeros_like(el2n), "labels": labels,
              "dataset": np.array(dataset), "num_train": len(el2n), **extra}
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def el2n():
    """Scores with many ties: 40 distinct values, 100 examples each, shuffled."""
    return np.random.default_rng(0).permutation(np.repeat(np.arange(40.0), 100))


@pytest.fixture(scope="module")
def scores_file(tmp_path_factory, el2n, mnist1d):
    return _write_scores(tmp_path_factory.mktemp("scores") / "scores.npz", el2n,
                         np.asarray(mnist1d.y_train))


def test_ranking_keeps_the_right_end_and_breaks_ties_by_index():
    values = np.array([3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(ranked(values, 2, "hardest"), [0, 3])  # 3.0 at 0, 3, 6
    np.testing.assert_array_equal(ranked(values, 3, "hardest"), [0, 3, 6])
    np.testing.assert_array_equal(ranked(values, 4, "hardest"), [0, 2, 3, 6])
    np.testing.assert_array_equal(ranked(values, 3, "easiest"), [1, 2, 4])
    assert ranked(values, 3, "easiest").dtype == np.int32
    # Independent of the order the ties come in: a brute-force ranking agrees.
    rng = np.random.default_rng(1)
    many = rng.integers(0, 5, 300).astype(float)
    for end, sign in (("hardest", -1), ("easiest", 1)):
        expected = sorted(sorted(range(300), key=lambda i: (sign * many[i], i))[:77])
        np.testing.assert_array_equal(ranked(many, 77, end), expected)


def test_hardest_easiest_and_random_pick_the_right_examples(scores_file, el2n, mnist1d):
    labels = np.asarray(mnist1d.y_train)
    key = stream_key(CONFIG, "data")
    hard = select_examples(Subset.from_file(scores_file, "el2n", 0.25, "hardest"), "mnist1d",
                           labels, key)
    assert hard.size == 1000 and np.all(np.diff(hard) > 0)
    np.testing.assert_array_equal(hard, np.flatnonzero(el2n >= 30))  # the 10 highest values
    easy = select_examples(Subset.from_file(scores_file, "el2n", 0.0125, "easiest"), "mnist1d",
                           labels, key)
    np.testing.assert_array_equal(easy, np.flatnonzero(el2n == 0)[:50])  # ties: lowest index
    grand = select_examples(Subset.from_file(scores_file, "grand", 0.25, "easiest"), "mnist1d",
                            labels, key)
    np.testing.assert_array_equal(grand, hard)  # grand = -el2n in this file

    random = Subset("random", 0.3, "random")
    a = select_examples(random, "mnist1d", labels, key)
    assert a.size == 1200 and len(set(a)) == 1200 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, select_examples(random, "mnist1d", labels, key))
    other = select_examples(random, "mnist1d", labels,
                            stream_key(CONFIG.replace(data_seed=1), "data"))
    assert not np.array_equal(a, other)


def test_subset_is_part_of_the_run_id(scores_file, el2n, mnist1d, tmp_path):
    def run_id(subset):
        return RunSpec(CONFIG.replace(subset=subset)).run_id

    base = Subset.from_file(scores_file, "el2n", 0.5, "hardest")
    copy = Subset.from_file(shutil.copy(scores_file, tmp_path / "copy.npz"), "el2n", 0.5,
                            "hardest")
    assert copy.path != base.path and copy == base and run_id(copy) == run_id(base)
    changed = el2n.copy()
    changed[0] += 1
    other_scores = _write_scores(tmp_path / "changed.npz", changed, np.asarray(mnist1d.y_train))
    ids = {run_id(None), run_id(base), run_id(Subset.from_file(scores_file, "el2n", 0.4,
                                                              "hardest")),
           run_id(Subset.from_file(scores_file, "el2n", 0.5, "easiest")),
           run_id(Subset.from_file(scores_file, "grand", 0.5, "hardest")),
           run_id(Subset.from_file(other_scores, "el2n", 0.5, "hardest")),
           run_id(Subset("random", 0.5, "random"))}
    assert len(ids) == 7
    assert base.sha256 == scores_digest(el2n.astype(np.float32))  # by value, not by dtype
    # The config round-trips through spec.json without reading the file again.
    config = CONFIG.replace(subset=base)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["subset"]["path"] == base.path
    assert "path" not in config.identity()["subset"]
    assert TrainConfig.from_dict({"subset": f"hardest:0.5:el2n:{scores_file}"}).subset == base
    assert TrainConfig.from_dict({"subset": {"score": "el2n", "keep": 0.5, "end": "hardest",
                                             "path": str(scores_file)}}).subset == base


def test_no_subset_leaves_run_ids_unchanged():
    # Ids computed before the subset field existed: they must not change.
    assert RunSpec(TrainConfig()).run_id == "conv1d-mnist1d-35c1679f6137"
    assert RunSpec(TINY_MLP).run_id == "mlp-mnist1d-215842646f66"
    assert RunSpec(TINY_MLP, parent="x", start_step=5, sibling=1).run_id == \
        "mlp-mnist1d-f1306fd7e444"
    assert "subset" not in TrainConfig().to_dict()
    assert TrainConfig.from_dict({}).subset is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("hardest", "cannot read subset 'hardest': write END:KEEP:SCORE:FILE"),
        ("hardest:half:el2n:x.npz", "cannot read subset"),
        ("hardest:0.5", "a hardest subset needs a score and a scores file"),
        ("hardest:0:el2n:x.npz", "must be in (0, 1], got 0.0"),
        ("middle:0.5:el2n:x.npz", "unknown subset end 'middle'; valid ends of a ranking: easiest"),
        ("random:0.5:el2n:x.npz", "a random subset takes no score or file: write random:0.5"),
        ("hardest:0.5:random:x.npz", "unknown subset score 'random'; valid scores of a file"),
        ("hardest:0.5:el2n:missing.npz", "scores file missing.npz does not exist"),
        ("random:1.5", "must be in (0, 1], got 1.5"),
    ],
)
def test_bad_subset_specs_raise_readable_errors(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Subset.parse(text)


def test_bad_subset_fields_raise_readable_errors():
    with pytest.raises(ConfigError, match="unknown subset field\\(s\\) fraction; valid"):
        Subset.from_dict({"score": "random", "fraction": 0.5, "end": "random"})
    with pytest.raises(ConfigError, match="a subset needs the field\\(s\\) keep"):
        TrainConfig.from_dict({"subset": {"score": "random", "end": "random"}})
    with pytest.raises(ConfigError, match="a hardest subset needs the sha256 digest"):
        Subset("el2n", 0.5, "hardest")
    with pytest.raises(ConfigError, match="subset must be a Subset or None"):
        TrainConfig(subset="random:0.5")


def test_scores_files_that_do_not_fit_are_named(scores_file, el2n, mnist1d, tmp_path):
    labels = np.asarray(mnist1d.y_train)
    key = stream_key(CONFIG, "data")

    def select(path, score="el2n", dataset="mnist1d"):
        return select_examples(Subset.from_file(path, score, 0.5, "hardest"), dataset, labels,
                               key)

    with pytest.raises(ConfigError, match=f"{scores_file} scores the data set 'mnist1d', not "
                                          "'cifar10'"):
        select(scores_file, dataset="cifar10")
    short = _write_scores(tmp_path / "short.npz", el2n[:100], labels[:100])
    with pytest.raises(ConfigError, match="holds 100 el2n scores, but mnist1d has 4000"):
        select(short)
    shuffled = _write_scores(tmp_path / "shuffled.npz", el2n, labels[::-1])
    with pytest.raises(ConfigError, match="scores are of another training order"):
        select(shuffled)
    np.savez(tmp_path / "no_grand.npz", el2n=el2n, dataset=np.array("mnist1d"))
    with pytest.raises(DataError, match="no_grand.npz has no 'grand' array \\(it holds "
                                        "dataset, el2n\\)"):
        select(tmp_path / "no_grand.npz", "grand")
    (tmp_path / "corrupt.npz").write_bytes(scores_file.read_bytes()[:300])
    with pytest.raises(DataError, match="cannot read scores file .*corrupt.npz"):
        select(tmp_path / "corrupt.npz")
    nan = el2n.copy()
    nan[7] = np.nan
    with pytest.raises(DataError, match="not finite at 1 example\\(s\\), the first at index 7"):
        select(_write_scores(tmp_path / "nan.npz", nan, labels))
    # A file changed after the run was configured: the run id would no longer name its scores.
    subset = Subset.from_file(tmp_path / "shuffled.npz", "el2n", 0.5, "hardest")
    _write_scores(tmp_path / "shuffled.npz", el2n + 1, labels)
    with pytest.raises(ConfigError, match="not the ones the run was configured with"):
        select_examples(subset, "mnist1d", labels, key)


@pytest.fixture(scope="module")
def subset_config(scores_file):
    return CONFIG.replace(subset=Subset.from_file(scores_file, "el2n", 0.25, "hardest"))


@pytest.fixture(scope="module")
def poisoned(mnist1d, el2n):
    """MNIST-1D whose examples outside the hardest quarter are NaN: one of them in a batch
    (or in the training metrics) makes the loss NaN."""
    dropped = jnp.asarray(el2n < 30)
    x = jnp.where(dropped[:, None, None], jnp.nan, mnist1d.x_train)
    return dataclasses.replace(mnist1d, x_train=x)


@pytest.fixture(scope="module")
def subset_run(subset_config, poisoned, tmp_path_factory):
    return train_run(subset_config, tmp_path_factory.mktemp("subset_runs"), dataset=poisoned,
                     eval_every="20it", progress=False)


def test_subset_run_trains_on_the_kept_examples_only(subset_run, subset_config, poisoned, el2n):
    trainer = Trainer(subset_config, poisoned)
    np.testing.assert_array_equal(trainer.examples, np.flatnonzero(el2n >= 30))
    assert trainer.steps_per_epoch == 1000 // 50 and trainer.x_train.shape[0] == 1000
    assert np.all(np.isfinite(trainer.x_train)) and not np.all(np.isfinite(poisoned.x_train))
    history = subset_run.result()["history"]
    assert [h["step"] for h in history] == [0, 20, 40]
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["test_loss"]) for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert subset_run.load().meta["spec"]["config"]["subset"]["keep"] == 0.25


def test_interrupted_subset_run_resumes_bit_identical(subset_run, subset_config, poisoned,
                                                      tmp_path, monkeypatch):
    calls = {"n": 0}
    real_save = lmc.training.runs.save_checkpoint

    def save_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(lmc.training.runs, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_run(subset_config, tmp_path, dataset=poisoned, eval_every="20it", progress=False)
    monkeypatch.setattr(lmc.training.runs, "save_checkpoint", real_save)
    run = Run(tmp_path, RunSpec(subset_config))
    assert run.dir.name == subset_run.dir.name
    assert not run.finished and 0 < max(run.saved_steps()) < 40
    resumed = train_run(Run.open(run.dir).spec, tmp_path, dataset=poisoned, eval_every="20it",
                        progress=False)
    assert resumed.result()["history"] == subset_run.result()["history"]
    a, b = resumed.load(40), subset_run.load(40)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("hardest:0.5", "a hardest subset needs a score and a scores file"),
        ("{file}", "cannot read subset"),
        ("hardest:0.5:el2n:{file}", "scores the data set 'mnist1d', not 'fashion_mnist'"),
    ],
)
def test_bad_subset_flag_gives_one_readable_line(spec, message, scores_file, capsys, tmp_path,
                                                  data_dir, monkeypatch):
    # The data set is checked only after it is loaded: a stand-in spares preparing one.
    monkeypatch.setattr(lmc.training.runs, "load_dataset",
                        lambda name, data_dir=None: _renamed(name, data_dir))
    code = main(["train", "--model", "mlp", "--dataset", "fashion_mnist", "--subset",
                 spec.format(file=scores_file), "--runs", str(tmp_path), "--data-dir",
                 str(data_dir), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("lmc train: error: ") and message in err


def _renamed(name, data_dir):
    from lmc.training.data import load_dataset

    return dataclasses.replace(load_dataset("mnist1d", data_dir), name=name)
