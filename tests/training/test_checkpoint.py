"""Checkpoint files: round trip, and readable errors for anything else."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmc.errors import CheckpointError
from lmc.training.checkpoint import load_checkpoint, save_checkpoint


def _tree():
    params = {"Dense_0": {"kernel": np.arange(6.0).reshape(2, 3), "bias": np.zeros(3)},
              "output": {"kernel": np.ones((3, 2), np.float32)}}
    state = {"batch_stats": {"bn": {"mean": np.full(3, 0.5)}}}
    return params, state


def test_round_trip_restores_everything(tmp_path):
    params, state = _tree()
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = tx.init(jax.tree.map(jnp.asarray, params))
    mask = jax.tree.map(lambda p: np.asarray(p) > 0, params)
    path = save_checkpoint(tmp_path / "c.npz", params=params, state=state, step=50,
                           meta={"note": "hello"}, opt_state=opt_state, mask=mask)
    c = load_checkpoint(path, opt_state_template=opt_state)
    assert c.step == 50 and c.meta["note"] == "hello"
    jax.tree.map(np.testing.assert_array_equal, c.params, params)
    jax.tree.map(np.testing.assert_array_equal, c.state, state)
    jax.tree.map(np.testing.assert_array_equal, c.mask, mask)
    jax.tree.map(np.testing.assert_array_equal, c.opt_state, opt_state)
    assert c.params["output"]["kernel"].dtype == np.float32
    assert not list(tmp_path.glob("*.tmp")), "no temporary file may remain"


def test_missing_truncated_and_foreign_files_are_named(tmp_path):
    params, state = _tree()
    path = save_checkpoint(tmp_path / "c.npz", params=params, state=state, step=1, meta={})
    with pytest.raises(CheckpointError, match="nope.npz does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.npz is not a readable lmc checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    with pytest.raises(CheckpointError, match="foreign.npz is not an lmc checkpoint"):
        load_checkpoint(foreign)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="text.npz is not an lmc checkpoint"):
        load_checkpoint(text)


def test_pickled_content_is_refused(tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, __meta__=np.array([{"format": "lmc-checkpoint"}], dtype=object))
    with pytest.raises(CheckpointError, match="evil.npz is not an lmc checkpoint") as e:
        load_checkpoint(evil)
    assert "pickle" not in str(e.value).replace(str(evil), "").lower()


def _foreign_files(tmp_path):
    """Files that are not lmc checkpoints, each as numpy would be asked to read it."""
    params, state = _tree()
    good = save_checkpoint(tmp_path / "good.npz", params=params, state=state, step=1, meta={})
    files = {
        "random.npz": np.random.default_rng(0).bytes(4096),
        "random.ckpt": b"\x80\x04" + np.random.default_rng(1).bytes(300),  # a pickle's opening
        "empty.npz": b"",
        "truncated.npz": good.read_bytes()[:len(good.read_bytes()) // 2],
        "headonly.npz": good.read_bytes()[:4],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    np.savez(tmp_path / "plain.npz", weights=np.ones(3), bias=np.zeros(2))
    np.save(tmp_path / "array.npy", np.ones(3))
    return [tmp_path / n for n in (*files, "plain.npz", "array.npy")]


def test_files_that_are_not_checkpoints_never_suggest_unsafe_loading(tmp_path):
    for path in _foreign_files(tmp_path):
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        message = str(e.value)
        assert str(path) in message, message
        assert "pickle" not in message.replace(str(path), "").lower(), message
        assert "accepted formats: an lmc checkpoint (.npz written by lmc)" in message, message
        assert " lmc checkpoint (" in message.split(";")[0], message  # says what it is not


def test_each_kind_of_foreign_file_is_described(tmp_path):
    _foreign_files(tmp_path)
    expected = {
        "random.npz": "is not an lmc checkpoint (it is not an .npz file)",
        "random.ckpt": "is not an lmc checkpoint (it is not an .npz file)",
        "empty.npz": "is not an lmc checkpoint (the file is empty)",
        "truncated.npz": "is not a readable lmc checkpoint (truncated or corrupt",
        "headonly.npz": "is not a readable lmc checkpoint (truncated or corrupt",
        "plain.npz": "is not an lmc checkpoint (it has no lmc metadata)",
        "array.npy": "is not an lmc checkpoint (it is not an .npz file)",
    }
    for name, text in expected.items():
        with pytest.raises(CheckpointError, match=re.escape(f"{name} {text}")):
            load_checkpoint(tmp_path / name)


def test_accepted_formats_is_the_one_list_the_errors_name(tmp_path, monkeypatch):
    import lmc.training.checkpoint as checkpoint

    assert checkpoint.ACCEPTED_FORMATS[0] == "an lmc checkpoint (.npz written by lmc)"
    monkeypatch.setattr(checkpoint, "ACCEPTED_FORMATS",
                        (*checkpoint.ACCEPTED_FORMATS, "another format"))
    (tmp_path / "x.bin").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="; another format$"):
        load_checkpoint(tmp_path / "x.bin")


def test_optimizer_mismatch_names_the_leaves(tmp_path):
    params, state = _tree()
    params = jax.tree.map(jnp.asarray, params)
    saved = optax.sgd(0.1, momentum=0.9).init(params)
    path = save_checkpoint(tmp_path / "c.npz", params=params, state=state, step=1, meta={},
                           opt_state=saved)
    with pytest.raises(CheckpointError, match="differing leaves"):
        load_checkpoint(path, opt_state_template=optax.adam(0.1).init(params))
