"""Permutation alignment of checkpoints: `align_checkpoints`, `write_aligned`, `lmc align`
and `lmc interpolate --align`, on tiny MLPs (exact facts only: permutation invariance, the
inverse of a known permutation, a non-decreasing matching objective)."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from lmc.cli import main
from lmc.core.alignment import apply_permutation, random_permutation
from lmc.errors import ConfigError
from lmc.plots import interpolation_figure
from lmc.training.checkpoint import load_checkpoint, save_checkpoint
from lmc.training.config import TrainConfig
from lmc.training.runs import train_run
from lmc.workflows.alignment import (
    align_checkpoints,
    align_opened,
    permutation_spec,
    spec_kind,
    write_aligned,
)
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.opened import open_checkpoint
from lmc.workflows.records import InterpolationRecord, load_record

FORMAT_KEYS = ("format", "format_version", "step", "has_mask", "opt_state_paths")


@pytest.fixture(scope="module")
def other_run(run_store, mnist1d, tiny_mlp_config):
    """The tiny MLP trained from another seed."""
    return train_run(dataclasses.replace(tiny_mlp_config, seed=1), run_store, dataset=mnist1d,
                     progress=False)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _same(tree_a, tree_b):
    return jax.tree.structure(tree_a) == jax.tree.structure(tree_b) and all(
        np.array_equal(x, y) for x, y in zip(_leaves(tree_a), _leaves(tree_b), strict=True))


def _write_copy(path, source, params, state, mask=None):
    meta = {k: v for k, v in source.meta.items() if k not in FORMAT_KEYS}
    return save_checkpoint(path, params=jax.tree.map(np.asarray, params),
                           state=jax.tree.map(np.asarray, state), step=source.checkpoint.step,
                           meta=meta, mask=mask)


def test_spec_kind_follows_the_model():
    assert spec_kind({"name": "resnet20"}) == "resnet"
    assert spec_kind({"name": "resnet56"}) == "resnet"
    for name in ("mlp", "conv1d", "vgg11", "lenet_300_100", "pkg.mod:factory"):
        assert spec_kind({"name": name}) == "sequential"


def test_a_permuted_copy_aligns_back_exactly(trained_run, mnist1d, tmp_path):
    path_a = trained_run.final_checkpoint()
    a = open_checkpoint(path_a, dataset=mnist1d)
    spec = permutation_spec(a)
    pi = random_permutation(spec, a.params, jax.random.key(3), a.state)
    assert any(not np.array_equal(p, np.arange(len(p))) for p in pi.values())
    params, state = apply_permutation(spec, pi, a.params, a.state)
    copy = _write_copy(tmp_path / "permuted.npz", a, params, state)

    opened, aligned, aligned_state, perms, info = align_checkpoints(path_a, copy,
                                                                    dataset=mnist1d)
    assert opened.path == path_a
    for name in pi:
        np.testing.assert_array_equal(perms[name], np.argsort(pi[name]))
    assert _same(aligned, a.params)
    assert info["objective_after"] > info["objective_before"]

    record = interpolate_checkpoints(path_a, copy, alphas=5, dataset=mnist1d, align="weight")
    assert record.aligned["method"] == "weight"
    for split in ("train", "test"):
        # (1 − α)·w + α·w is w up to rounding: no barrier between a network and itself
        assert abs(record.aligned["barriers"][split]["loss"]["mean"]) < 1e-5
        assert record.aligned["barriers"][split]["error"]["mean"] <= 2 / record.examples[split]
        assert (record.barriers[split]["loss"]["mean"]
                > record.aligned["barriers"][split]["loss"]["mean"] + 1e-3)
        np.testing.assert_allclose(record.aligned["curves"][split]["loss"][0],
                                   record.curves[split]["loss"][0], rtol=1e-6)
    # the field round-trips through the record's JSON file
    again = load_record(record.save(tmp_path / "interpolation.json"))
    assert isinstance(again, InterpolationRecord) and again.aligned == record.aligned


def test_aligned_checkpoint_computes_what_b_computes(trained_run, other_run, mnist1d, tmp_path):
    path_a, path_b = trained_run.final_checkpoint(), other_run.final_checkpoint()
    b = open_checkpoint(path_b, dataset=mnist1d)
    # a mask, to check that it is permuted with the weights
    mask = jax.tree.map(lambda w: np.asarray(w) > 0, b.params)
    masked = _write_copy(tmp_path / "b_masked.npz", b, b.params, b.state, mask=mask)

    _, params, state, perms, info = align_checkpoints(path_a, masked, seed=1, dataset=mnist1d)
    history = info["history"]
    assert info["objective_after"] >= info["objective_before"]
    assert all(y >= x for x, y in zip(history, history[1:], strict=False))
    assert not _same(params, b.params)  # two seeds: some unit moves

    out = write_aligned(masked, params, state, tmp_path / "b_aligned.npz", perms=perms,
                        info=info)
    ckpt = load_checkpoint(out)
    assert ckpt.meta["aligned_to"]["checkpoint"] == str(path_a)
    assert ckpt.meta["aligned_to"]["method"] == "weight"
    assert ckpt.meta["model"] == b.meta["model"] and ckpt.step == b.checkpoint.step
    assert ckpt.meta["opt_state_paths"] is None
    assert _same(ckpt.params, params)
    # the mask moved with the weights: still "weight > 0" entry by entry
    assert _same(ckpt.mask, jax.tree.map(lambda w: np.asarray(w) > 0, ckpt.params))

    x, _ = b.split("test")
    aligned = open_checkpoint(out, dataset=mnist1d)
    np.testing.assert_allclose(aligned.eval_apply(aligned.params, aligned.state, x),
                               b.eval_apply(b.params, b.state, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="needs the permutations"):
        write_aligned(masked, params, state, tmp_path / "no.npz", info=info)


def test_align_rejects_an_unknown_method_and_other_networks(trained_run, narrow_run,
                                                              mnist1d):
    a = open_checkpoint(trained_run.final_checkpoint(), dataset=mnist1d)
    with pytest.raises(ConfigError, match="unknown alignment method 'greedy'"):
        align_opened(a, a, "greedy")
    with pytest.raises(ConfigError, match="different model specs"):
        align_opened(a, open_checkpoint(narrow_run.final_checkpoint(), dataset=mnist1d))


def test_cli_align_and_interpolate_align(trained_run, other_run, data_dir, tmp_path, capsys):
    path_a, path_b = trained_run.final_checkpoint(), other_run.final_checkpoint()
    out = tmp_path / "b_aligned.npz"
    assert main(["align", str(path_a), str(path_b), "--method", "weight", "--out", str(out),
                 "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "objective  before" in printed and f"aligned    {out}" in printed
    assert load_checkpoint(out).meta["aligned_to"]["checkpoint"] == str(path_a)

    result = tmp_path / "interpolation.json"
    assert main(["interpolate", str(path_a), str(path_b), "--align", "weight", "--alphas", "3",
                 "--out", str(result), "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "before alignment" in printed and "after weight alignment" in printed
    data = json.loads(result.read_text())
    for split in ("train", "test"):
        assert set(data["barriers"][split]) == set(data["aligned"]["barriers"][split])
        assert len(data["aligned"]["curves"][split]["error"]) == 3
    assert result.with_suffix(".png").stat().st_size > 0
    fig = interpolation_figure(load_record(result))
    labels = {t.get_text().split(":")[0] for ax in fig.axes
              for t in ax.get_legend().get_texts()}
    assert {"test", "train", "test (aligned)", "train (aligned)"} <= labels
    # the legend gives each aligned curve's mean barrier, as the record has it
    error = 100 * data["aligned"]["barriers"]["test"]["error"]["mean"]
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"test (aligned): {error:.1f} pts" in texts

    # without --align the record and its figure are as before
    plain = tmp_path / "plain.json"
    assert main(["interpolate", str(path_a), str(path_b), "--alphas", "3", "--out", str(plain),
                 "--no-figure", "--data-dir", str(data_dir)]) == 0
    assert "aligned" not in json.loads(plain.read_text())
    labels = {t.get_text() for ax in interpolation_figure(load_record(plain)).axes
              for t in ax.get_legend().get_texts()}
    assert not any("aligned" in label for label in labels)


def test_activation_matching_keeps_the_function(trained_run, other_run, mnist1d, tmp_path,
                                                capsys, data_dir):
    path_a, path_b = trained_run.final_checkpoint(), other_run.final_checkpoint()
    _, params, state, perms, info = align_checkpoints(path_a, path_b, method="activation",
                                                      dataset=mnist1d)
    assert info["method"] == "activation" and info["examples"] == 1000
    assert set(perms) == {"dense0", "dense1"}
    b = open_checkpoint(path_b, dataset=mnist1d)
    x, _ = b.split("test")
    np.testing.assert_allclose(b.eval_apply(params, state, x), b.eval_apply(b.params, b.state, x),
                               rtol=1e-5, atol=1e-5)
    out = tmp_path / "b_act.npz"
    assert main(["align", str(path_a), str(path_b), "--method", "activation", "--out",
                 str(out), "--data-dir", str(data_dir)]) == 0
    assert load_checkpoint(out).meta["aligned_to"]["method"] == "activation"
    assert _same(load_checkpoint(out).params, params)


def test_interpolate_with_repair(trained_run, other_run, mnist1d, data_dir, tmp_path, capsys):
    """REPAIR's curves: at the ends they are the endpoints' own (REPAIR at α = 0 and 1 is
    the identity), and every repaired point is evaluated on the aligned path."""
    a, b = trained_run.final_checkpoint(), other_run.final_checkpoint()
    record = interpolate_checkpoints(a, b, alphas=5, align="weight", repair=True,
                                     repair_examples=500, dataset=mnist1d)
    aligned, repaired = record.aligned, record.aligned["repaired"]
    assert repaired["examples"] == 500
    for split in ("train", "test"):
        for metric in ("loss", "error"):
            ends = np.asarray(aligned["curves"][split][metric])[[0, -1]]
            np.testing.assert_allclose(np.asarray(repaired["curves"][split][metric])[[0, -1]],
                                       ends, rtol=1e-4, atol=1e-6)
    again = load_record(record.save(tmp_path / "r.json"))
    assert again.aligned["repaired"]["barriers"] == repaired["barriers"]
    labels = [t.get_text() for t in interpolation_figure(again).axes[0].get_legend().get_texts()]
    error = 100 * repaired["barriers"]["test"]["error"]["mean"]
    assert f"test (aligned + REPAIR): {error:.1f} pts" in labels
    with pytest.raises(ConfigError, match="REPAIR needs --align"):
        interpolate_checkpoints(a, b, alphas=3, repair=True, dataset=mnist1d)
    assert main(["interpolate", str(a), str(b), "--alphas", "3", "--align", "weight",
                 "--repair", "--out", str(tmp_path / "c.json"), "--no-figure",
                 "--data-dir", str(data_dir)]) == 0
    assert "after alignment and REPAIR" in capsys.readouterr().out


# 15 s (a ResNet-20 trained one step on CPU); the core tests of `resnet_activations` check
# the same recovery on the network itself, so CI leaves this one to `pytest -m slow`.
@pytest.mark.slow
def test_activation_matching_of_resnet_checkpoints(tmp_path, mock_cifar10):
    """ResNet-20 on tfds mock CIFAR-10 (one step): a permuted copy aligns back exactly, and
    B aligned to another checkpoint computes what B computes (BatchNorm state permuted)."""
    config = TrainConfig(model="resnet20", dataset="cifar10", batch_size=16, duration="1it")
    run = train_run(config, tmp_path, dataset=mock_cifar10, progress=False)
    a = open_checkpoint(run.final_checkpoint(), dataset=mock_cifar10)
    spec = permutation_spec(a)
    pi = random_permutation(spec, a.params, jax.random.key(3), a.state)
    params, state = apply_permutation(spec, pi, a.params, a.state)
    copy = open_checkpoint(_write_copy(tmp_path / "permuted.npz", a, params, state),
                           dataset=mock_cifar10)
    aligned, aligned_state, perms, info = align_opened(a, copy, "activation", examples=32)
    assert info["method"] == "activation" and info["kind"] == "resnet"
    assert info["examples"] == 32 and set(perms) == set(spec.groups)
    for name in pi:
        np.testing.assert_array_equal(perms[name], np.argsort(pi[name]), err_msg=name)
    assert _same(aligned, a.params) and _same(aligned_state, a.state)
    assert info["objective_after"] > info["objective_before"]

    # another network: A's weights shuffled within each leaf (cheaper than another init;
    # a network one step from A's initialisation would match A unit for unit)
    rng = np.random.default_rng(0)
    other = jax.tree.map(lambda w: rng.permutation(np.asarray(w).ravel()).reshape(w.shape),
                         a.params)
    b = open_checkpoint(_write_copy(tmp_path / "other.npz", a, other, a.state),
                        dataset=mock_cifar10)
    params, state, perms, _ = align_opened(a, b, "activation", examples=32)
    assert any(not np.array_equal(p, np.arange(len(p))) for p in perms.values())
    x, _ = b.split("test", 16)
    logits = b.eval_apply(b.params, b.state, x)
    np.testing.assert_allclose(b.eval_apply(params, state, x), logits, rtol=1e-4,
                               atol=1e-4 * float(np.abs(logits).max()))
