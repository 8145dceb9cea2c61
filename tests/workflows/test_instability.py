"""Spawning siblings and the instability analysis."""

import jax
import numpy as np
import pytest

from lmc.errors import ConfigError
from lmc.training.runs import Run, RunSpec, ensure_checkpoint
from lmc.workflows.instability import instability_analysis, spawn
from lmc.workflows.records import InstabilityRecord

from ..conftest import TINY_MLP

CONFIG = TINY_MLP


@pytest.fixture(scope="module")
def parent(trained_run):
    """The session's shared run of CONFIG, with a checkpoint at step 40."""
    return trained_run


def test_children_differ_only_in_data_order_and_augmentation(parent, mnist1d):
    kids = spawn(parent, 40, 2, dataset=mnist1d, progress=False)
    specs = [kid.spec for kid in kids]
    assert [s.sibling for s in specs] == [0, 1]
    assert all(s.config == CONFIG and s.parent == parent.spec.run_id and s.start_step == 40
               for s in specs)
    # they start from the parent's weights and optimizer state at step 40 ...
    start = parent.load(40).meta
    for kid in kids:
        c = kid.load(40)
        assert c.meta["spec"]["sibling"] == kid.spec.sibling
        with np.load(kid.checkpoint_path(40)) as child, np.load(parent.checkpoint_path(40)) as p:
            for name in p.files:
                if name != "__meta__":
                    np.testing.assert_array_equal(child[name], p[name], err_msg=name)
    assert start["step"] == 40
    # ... and end apart, because their SGD noise differs
    a, b = (kid.load(200).params for kid in kids)
    assert not np.allclose(a["output"]["kernel"], b["output"]["kernel"])


def test_sparse_children_keep_the_mask(parent, mnist1d):
    params = parent.load(40).params
    rng = np.random.default_rng(0)
    mask = jax.tree.map(lambda p: rng.random(np.shape(p)) < 0.3, params)
    kids = spawn(parent, 40, 2, mask=mask, dataset=mnist1d, progress=False)
    for kid in kids:
        final = kid.load(200)
        for p, m in zip(jax.tree.leaves(final.params), jax.tree.leaves(mask), strict=True):
            assert np.all(np.asarray(p)[~m] == 0)
        assert kid.spec.mask is not None


def test_ensure_checkpoint_recreates_a_missing_step_exactly(parent, mnist1d):
    path = ensure_checkpoint(parent, 40, dataset=mnist1d, progress=False)
    assert path == parent.checkpoint_path(40)
    saved = np.load(path)
    expected = {k: saved[k] for k in saved.files if k != "__meta__"}
    path.unlink()
    again = ensure_checkpoint(parent, 40, dataset=mnist1d, progress=False)
    with np.load(again) as npz:
        for k, v in expected.items():
            np.testing.assert_array_equal(npz[k], v, err_msg=k)
    fresh = Run(parent.root, RunSpec(CONFIG.replace(seed=5)))
    assert ensure_checkpoint(fresh, 30, dataset=mnist1d, progress=False).is_file()


def test_instability_analysis_record(tmp_path, mnist1d):
    record = instability_analysis(CONFIG, ["0it", "40it"], children=3, root=tmp_path,
                                  alphas=5, dataset=mnist1d, progress=False)
    assert isinstance(record, InstabilityRecord)
    assert record.to_json()["kind"] == "instability" and record.children == 3
    assert [p["step"] for p in record.points] == [0, 40]
    for point in record.points:
        assert point["error_barrier"]["n"] == 3  # pairs of 3 children
        values = [p["barriers"]["test"]["error"]["mean"] for p in point["pairs"]]
        assert point["error_barrier"]["mean"] == pytest.approx(np.mean(values))
        assert len(point["mean_curves"]["test"]["error"]) == 5
    with pytest.raises(ConfigError, match="not before the end of training"):
        instability_analysis(CONFIG, ["200it"], root=tmp_path, dataset=mnist1d, progress=False)
    with pytest.raises(ConfigError, match="at least 2 children"):
        instability_analysis(CONFIG, ["0it"], children=1, root=tmp_path, dataset=mnist1d)


def test_instability_modulo_permutation(parent, mnist1d):
    """align="weight": every pair is also interpolated with one child permuted to match
    the other; the permutation leaves each child's function (the path's endpoints) alone."""
    record = instability_analysis(CONFIG, ["40it"], children=2, root=parent.root, alphas=5,
                                  dataset=mnist1d, progress=False, align="weight")
    assert record.align == "weight" and record.to_json()["align"] == "weight"
    (point,) = record.points
    for pair in point["pairs"]:
        aligned = pair["aligned"]
        assert aligned["method"] == "weight"
        assert aligned["objective_after"] >= aligned["objective_before"] - 1e-6
        for split in ("test", "train"):
            assert set(aligned["barriers"][split]["error"]) >= {"mean", "chord"}
            for metric in ("loss", "error"):
                naive, perm = pair["curves"][split][metric], aligned["curves"][split][metric]
                assert perm[0] == pytest.approx(naive[0], rel=1e-5, abs=1e-6)
                assert perm[-1] == pytest.approx(naive[-1], rel=1e-5, abs=1e-6)
    summary = point["aligned_error_barrier"]
    values = [p["aligned"]["barriers"]["test"]["error"]["mean"] for p in point["pairs"]]
    assert summary["n"] == 1 and summary["mean"] == pytest.approx(np.mean(values))
    # files written before `align` existed still load (as naive-only records)
    data = record.to_json()
    del data["align"]
    old = InstabilityRecord.from_json(data)
    assert old.align is None and "align" not in old.to_json() and not old.extra
    with pytest.raises(ConfigError, match="valid alignment methods: activation, weight"):
        instability_analysis(CONFIG, ["40it"], root=parent.root, dataset=mnist1d,
                             progress=False, align="sinkhorn")


def test_naive_record_has_no_aligned_fields(parent, mnist1d):
    record = instability_analysis(CONFIG, ["40it"], children=2, root=parent.root, alphas=5,
                                  dataset=mnist1d, progress=False)
    assert record.align is None and "align" not in record.to_json()
    assert "aligned_error_barrier" not in record.points[0]
    assert "aligned" not in record.points[0]["pairs"][0]
