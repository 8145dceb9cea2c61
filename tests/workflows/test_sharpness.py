"""Hessian sharpness of a checkpoint and along a path, against the exact Hessian of the
same loss on the same examples (`jax.hessian`, float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from lmc.core.batching import fixed_subset
from lmc.core.evaluate import cross_entropy
from lmc.training.checkpoint import load_checkpoint
from lmc.training.models import eval_apply, model_from_description
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.records import SharpnessPathRecord, SharpnessRecord, load_record
from lmc.workflows.sharpness import path_sharpness_record, sharpness_record

EXAMPLES = 200


def exact_hessian(path, dataset, examples=EXAMPLES):
    """The float64 Hessian of the checkpoint's mean training loss on the fixed subset of
    `examples` training examples the workflows use (seed 0)."""
    ckpt = load_checkpoint(path)
    apply_fn = eval_apply(model_from_description(ckpt.meta["model"]))
    idx = fixed_subset(dataset.num_train, examples)
    with jax.enable_x64(True):
        x = jnp.asarray(dataset.x_train[idx], jnp.float64)
        y = dataset.y_train[idx]
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), ckpt.params)
        flat, unravel = ravel_pytree(params)

        def loss(w):
            return cross_entropy(apply_fn(unravel(w), ckpt.state, x), y)

        return np.asarray(jax.jit(jax.hessian(loss))(flat))


def test_sharpness_record_of_a_checkpoint(narrow_run, mnist1d, tmp_path):
    path = narrow_run.checkpoint_path(100)
    record = sharpness_record(path, top_k=2, steps=80, trace_probes=60, examples=EXAMPLES,
                              batch_size=100, density=True, density_probes=2,
                              density_steps=20, dataset=mnist1d)
    assert isinstance(record, SharpnessRecord)
    exact = exact_hessian(path, mnist1d)
    spectrum = np.linalg.eigvalsh(exact)
    assert record.dim == exact.shape[0] == 826 and record.examples == EXAMPLES
    assert not record.masked and record.block is None
    np.testing.assert_allclose(record.top_eigenvalues["eigenvalues"], spectrum[::-1][:2],
                               rtol=1e-3)
    hutchinson = record.trace["hutchinson"]
    assert hutchinson["num_matvecs"] == 60
    assert abs(hutchinson["trace"] - np.trace(exact)) < 4 * hutchinson["standard_error"]
    assert record.density["trace"] == pytest.approx(np.trace(exact), rel=0.5)
    again = load_record(record.save(tmp_path / "sharpness.json"))
    assert isinstance(again, SharpnessRecord) and again.to_json() == record.to_json()


def test_path_sharpness_record(narrow_run, mnist1d):
    a, b = narrow_run.checkpoint_path(0), narrow_run.checkpoint_path(100)
    record = path_sharpness_record(a, b, alphas=3, steps=60, trace_probes=10,
                                   examples=EXAMPLES, batch_size=100, dataset=mnist1d)
    assert isinstance(record, SharpnessPathRecord)
    assert len(record.lambda_max) == len(record.trace) == len(record.alphas) == 3
    # the ends are the two checkpoints' own λ_max
    for end, path in ((0, a), (-1, b)):
        top = np.linalg.eigvalsh(exact_hessian(path, mnist1d))[-1]
        assert record.lambda_max[end] == pytest.approx(top, rel=1e-2)
    # beside the curves of the plain interpolation
    path = interpolate_checkpoints(a, b, alphas=3, dataset=mnist1d)
    assert record.curves == path.curves and record.barriers == path.barriers
    assert record.to_json()["kind"] == "sharpness_path"
