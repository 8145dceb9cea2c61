"""Your own network through the checkpoint commands: linen and NNX modules of
tests/workflows/user_models.py saved with orbax, flax msgpack, .npz and safetensors go
through `lmc interpolate` and `lmc sharpness` and give what the core gives on the same
params."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx, serialization

from lmc.cli import main
from lmc.core.batching import batches_of
from lmc.core.curvature import top_eigenpairs
from lmc.core.evaluate import cross_entropy
from lmc.core.interpolate import PathEvaluator, alpha_grid, interpolation_record
from lmc.core.operators import HessianOperator
from lmc.core.policy import ExecutionPolicy
from lmc.errors import CheckpointError, ConfigError, DataError
from lmc.training.formats import load_data_npz
from lmc.workflows.opened import open_checkpoint
from tests.workflows import user_models

FACTORY = "tests.workflows.user_models:"
EXAMPLES = 128
ALPHAS = 5


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, mnist1d):
    """A small MNIST-1D data set as an .npz (`--data FILE.npz`)."""
    path = tmp_path_factory.mktemp("interop") / "data.npz"
    np.savez(path, **{f"{k}_{s}": np.asarray(getattr(mnist1d, f"{k}_{s}")[:EXAMPLES])
                      for k in ("x", "y") for s in ("train", "test")})
    return path


@pytest.fixture(scope="module")
def data(data_file):
    return load_data_npz(data_file)


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        out.update(_flat(v, name + "/") if isinstance(v, dict) else {name: np.asarray(v)})
    return out


def save(tree, path, fmt):
    """`tree` (a pytree of arrays) as an orbax directory, msgpack, .npz or safetensors."""
    if fmt == "orbax":
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(os.path.abspath(path), tree)
    elif fmt == "msgpack":
        path.write_bytes(serialization.msgpack_serialize(jax.tree.map(np.asarray, tree)))
    elif fmt == "npz":
        np.savez(path, **_flat(tree))
    else:
        safetensors = pytest.importorskip("safetensors.numpy")
        safetensors.save_file(_flat(tree), str(path))
    return path


SUFFIX = {"orbax": "", "msgpack": ".msgpack", "npz": ".npz", "safetensors": ".safetensors"}


def linen_pair(data):
    net = user_models.linen_mlp()
    return net, [net.init(jax.random.key(seed), data.x_test[:1])["params"] for seed in (0, 1)]


def nnx_pair():
    models = [user_models.nnx_mlp(seed=seed) for seed in (0, 1)]
    graphdef = nnx.split(models[0], nnx.Param)[0]
    return graphdef, [nnx.state(m, nnx.Param) for m in models]


def core_barriers(apply, params_a, params_b, data):
    """What the core alone gives on the same params (NNX: on the nnx.State itself)."""
    splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
    curves = PathEvaluator(apply).curves(params_a, params_b, splits, alphas=ALPHAS)
    return interpolation_record(curves, alpha_grid(ALPHAS))["barriers"]


def interpolate_cli(a, b, factory, data_file, out, *extra):
    assert main(["interpolate", str(a), str(b), "--model", FACTORY + factory, "--data",
                 str(data_file), "--alphas", str(ALPHAS), "--out", str(out), "--no-figure",
                 *extra]) == 0
    return json.loads(out.read_text())


def assert_same_barriers(record, expected):
    for split in ("train", "test"):
        for metric in ("loss", "error"):
            for kind in ("mean", "chord", "midpoint"):
                np.testing.assert_allclose(record["barriers"][split][metric][kind],
                                           expected[split][metric][kind], rtol=1e-4,
                                           atol=1e-6)


@pytest.mark.parametrize("fmt", ["orbax", "msgpack", "npz"])
def test_linen_model_interpolates_as_the_core(fmt, data, data_file, tmp_path):
    net, (pa, pb) = linen_pair(data)
    # linen variables in one file, the bare params tree in the other: both are accepted
    a = save({"params": pa}, tmp_path / f"a{SUFFIX[fmt]}", fmt)
    b = save(pb, tmp_path / f"b{SUFFIX[fmt]}", fmt)
    record = interpolate_cli(a, b, "linen_mlp", data_file, tmp_path / "r.json")
    expected = core_barriers(lambda p, s, x: net.apply({"params": p}, x), pa, pb, data)
    assert_same_barriers(record, expected)
    assert record["model"]["name"] == FACTORY + "linen_mlp"
    assert record["model"]["kind"] == "linen" and record["bn"] == "none"
    assert record["data"] == str(data_file)


@pytest.mark.parametrize("fmt", ["orbax", "msgpack", "safetensors"])
def test_nnx_model_interpolates_as_the_core(fmt, data, data_file, tmp_path):
    graphdef, (pa, pb) = nnx_pair()
    # orbax keeps the nnx.State as it is; msgpack and safetensors hold its pure dict
    trees = (pa, pb) if fmt == "orbax" else (pa.to_pure_dict(), pb.to_pure_dict())
    a, b = (save(t, tmp_path / f"{n}{SUFFIX[fmt]}", fmt) for t, n in zip(trees, "ab", strict=True))
    record = interpolate_cli(a, b, "nnx_mlp", data_file, tmp_path / "r.json",
                             "--model-option", "width=16")
    expected = core_barriers(lambda p, s, x: nnx.merge(graphdef, p)(x), pa, pb, data)
    assert_same_barriers(record, expected)
    assert record["model"]["kind"] == "nnx"
    assert record["model"]["options"] == {"width": 16}


def core_lambda_max(loss, params, data):
    batches = batches_of(data.x_train, data.y_train, EXAMPLES)
    return float(top_eigenpairs(HessianOperator(loss, params, batches), 1, steps=30)
                 .eigenvalues[0])


def sharpness_cli(path, factory, data_file, out):
    assert main(["sharpness", str(path), "--model", FACTORY + factory, "--data",
                 str(data_file), "--steps", "30", "--probes", "4", "--out", str(out),
                 "--no-figure"]) == 0
    return json.loads(out.read_text())


def test_linen_and_nnx_sharpness_as_the_core(data, data_file, tmp_path):
    net, (pa, _) = linen_pair(data)
    record = sharpness_cli(save(pa, tmp_path / "linen.msgpack", "msgpack"), "linen_mlp",
                           data_file, tmp_path / "l.json")
    expected = core_lambda_max(lambda p, x, y: cross_entropy(net.apply({"params": p}, x), y),
                               pa, data)
    np.testing.assert_allclose(record["top_eigenvalues"]["eigenvalues"][0], expected,
                               rtol=1e-4)

    graphdef, (qa, _) = nnx_pair()
    record = sharpness_cli(save(qa, tmp_path / "nnx", "orbax"), "nnx_mlp", data_file,
                           tmp_path / "n.json")
    expected = core_lambda_max(lambda p, x, y: cross_entropy(nnx.merge(graphdef, p)(x), y),
                               qa, data)  # on the nnx.State: ravel_pytree works on it
    np.testing.assert_allclose(record["top_eigenvalues"]["eigenvalues"][0], expected,
                               rtol=1e-4)
    assert record["dim"] == sum(np.size(x) for x in jax.tree.leaves(qa))


def test_nnx_batchnorm_model_resets_statistics(data, data_file, tmp_path):
    models = [user_models.nnx_bn_mlp(seed=seed) for seed in (0, 1)]
    paths = [save(nnx.state(m), tmp_path / f"bn{i}", "orbax") for i, m in enumerate(models)]
    opened = open_checkpoint(paths[0], model=FACTORY + "nnx_bn_mlp", data=data_file)
    assert set(opened.params["norm"]) == {"bias", "scale"}
    assert set(opened.state["norm"]) == {"mean", "var"} and opened.has_state
    assert opened.mask is None and opened.policy == ExecutionPolicy.for_model(True)
    new = opened.train_apply(opened.params, opened.state, data.x_train[:64])
    assert not np.allclose(new["norm"]["mean"], opened.state["norm"]["mean"])
    models[0].eval()  # running averages, as eval_apply
    np.testing.assert_allclose(opened.eval_apply(opened.params, opened.state, data.x_test[:8]),
                               models[0](data.x_test[:8]), rtol=1e-5, atol=1e-6)
    record = interpolate_cli(*paths, "nnx_bn_mlp", data_file, tmp_path / "r.json",
                             "--bn", "reset")
    assert record["bn"] == "reset"
    assert np.isfinite(record["barriers"]["test"]["loss"]["mean"])


def test_registered_data_set_by_name(data, tmp_path):
    net, (pa, pb) = linen_pair(data)
    a, b = save(pa, tmp_path / "a.npz", "npz"), save(pb, tmp_path / "b.npz", "npz")
    assert main(["interpolate", str(a), str(b), "--model", FACTORY + "linen_mlp", "--data",
                 "mnist1d", "--alphas", "3", "--max-examples", "64",
                 "--out", str(tmp_path / "r.json"), "--no-figure"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["data"] == "mnist1d"


def test_a_tree_that_does_not_fit_names_the_leaves(data, data_file, tmp_path, capsys):
    _, (pa, _) = linen_pair(data)
    path = save(pa, tmp_path / "a.msgpack", "msgpack")
    with pytest.raises(CheckpointError, match=r"\['Dense_0'\]\['kernel'\] shape \(40, 16\) "
                       r"vs \(40, 8\)"):
        open_checkpoint(path, model=FACTORY + "linen_mlp", model_options={"width": 8},
                        data=data_file)
    del pa["output"]
    save(pa, path, "msgpack")
    assert main(["sharpness", str(path), "--model", FACTORY + "linen_mlp", "--data",
                 str(data_file), "--no-figure"]) == 1
    assert "['output']['kernel'] only in B" in capsys.readouterr().err


def test_data_file_without_y_test_is_a_clear_error(data, tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.asarray(data.x_train), y_train=np.asarray(data.y_train),
             x_test=np.asarray(data.x_test))
    with pytest.raises(DataError, match="lacks y_test"):
        load_data_npz(path)
    assert main(["sharpness", str(path), "--model", FACTORY + "linen_mlp", "--data",
                 str(path)]) == 1
    assert "lacks y_test" in capsys.readouterr().err


def test_bad_factories_and_missing_flags(data_file, tmp_path):
    ckpt = save({"w": np.zeros(3, np.float32)}, tmp_path / "w.npz", "npz")
    for spec, message in [("no_colon", "package.module:factory"),
                          ("tests.workflows.nowhere:f", "cannot import"),
                          (FACTORY + "missing", "has no 'missing'"),
                          (FACTORY + "not_a_module", "not a flax linen or NNX module")]:
        with pytest.raises(ConfigError, match=message):
            open_checkpoint(ckpt, model=spec, data=data_file)
    with pytest.raises(ConfigError, match="needs a data set"):
        open_checkpoint(ckpt, model=FACTORY + "linen_mlp")
    with pytest.raises(CheckpointError, match="--model package.module:factory"):
        open_checkpoint(ckpt)
