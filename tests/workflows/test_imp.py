"""IMP with rewinding: rewinding, lineage in the run store, resume, baselines, CLI."""

import json
import math

import jax
import numpy as np
import optax
import pytest

from lmc.errors import ConfigError
from lmc.training.checkpoint import load_checkpoint
from lmc.training.runs import Run, RunSpec
from lmc.training.trainer import make_optimizer
from lmc.workflows.imp import METHODS, ImpSettings, levels_for, run_imp
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.records import ImpRecord

from ..conftest import TINY_MLP

# IMP's own trunk (its tests delete level checkpoints, so not the session's shared run).
CONFIG = TINY_MLP.replace(duration="150it")
REWIND = 20


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def two_levels(root, mnist1d):
    return run_imp(CONFIG, levels=2, rewind=REWIND, keep_dense=("output",), root=root,
               dataset=mnist1d, alphas=5, progress=False)


def test_levels_for_target_density():
    assert levels_for(0.2, 0.8 ** 5) == 5
    assert levels_for(0.2, 0.5) == math.ceil(math.log(0.5) / math.log(0.8))
    with pytest.raises(ConfigError, match="target density"):
        levels_for(0.2, 1.5)


def test_levels_rewind_to_the_trunk_weights_at_k(two_levels, root):
    assert isinstance(two_levels, ImpRecord)
    trunk = Run.open(root / two_levels.trunk)
    w_k = trunk.load(REWIND)
    tx = make_optimizer(CONFIG, 4000 // 64)
    previous = None
    for level in two_levels.methods["imp"][1:]:
        run = Run.open(root / level["run_id"])
        assert run.spec.parent == trunk.spec.run_id and run.spec.start_step == REWIND
        start = run.load(REWIND, tx.init(w_k.params))
        for w, w0, m in zip(jax.tree.leaves(start.params), jax.tree.leaves(w_k.params),
                            jax.tree.leaves(start.mask), strict=True):
            np.testing.assert_array_equal(np.asarray(w), np.where(m, w0, 0))
        # pruned weights carry no momentum over from the trunk
        momentum = optax.tree_map_params(tx, lambda s, m: np.where(m, 0, s), start.opt_state,
                                         start.mask)
        for leaf in jax.tree.leaves(momentum):
            if np.issubdtype(np.asarray(leaf).dtype, np.floating):
                assert not np.any(np.asarray(leaf))
        # the output layer stays dense; the live set only shrinks, by the set fraction
        assert np.all(start.mask["output"]["kernel"])
        alive = sum(int(np.sum(m)) for k, v in start.mask.items() if k != "output"
                    for m in [v["kernel"]])
        if previous is not None:
            prev_alive, prev_mask = previous
            assert alive == prev_alive - math.ceil(0.2 * prev_alive)
            for m, pm in zip(jax.tree.leaves(start.mask), jax.tree.leaves(prev_mask), strict=True):
                assert not np.any(np.asarray(m) & ~np.asarray(pm))
        previous = (alive, start.mask)


def test_successive_barriers_are_the_interpolation_between_levels(two_levels, mnist1d):
    """The stored barrier between levels L−1 and L is the mean test error barrier of an
    independent interpolation between their checkpoints, whose ends are the two levels'
    own test errors."""
    levels = two_levels.methods["imp"]
    assert "successive_barrier" not in levels[0]  # the trunk has no level before it
    for before, level in zip(levels, levels[1:], strict=False):
        record = interpolate_checkpoints(before["checkpoint"], level["checkpoint"], alphas=5,
                                         splits=("test",), dataset=mnist1d)
        error = np.asarray(record.curves["test"]["error"])
        assert error[0] == pytest.approx(1 - before["test_accuracy"], abs=1e-6)
        assert error[-1] == pytest.approx(1 - level["test_accuracy"], abs=1e-6)
        barrier = level["successive_barrier"]
        assert barrier["error"] == pytest.approx(record.barriers["test"]["error"]["mean"],
                                                 abs=1e-9)
        assert barrier["loss"] == pytest.approx(record.barriers["test"]["loss"]["mean"],
                                                rel=1e-6)
        assert barrier["error"] == pytest.approx(error.max() - 0.5 * (error[0] + error[-1]),
                                                 abs=1e-6)
        assert barrier["error"] >= 0.5 * abs(error[0] - error[-1]) - 1e-9


def test_longer_run_reuses_levels_and_resume_gives_the_same_masks(two_levels, root, mnist1d):
    # Interrupt level 2: drop its result and its final checkpoint.
    level2 = Run.open(root / two_levels.methods["imp"][2]["run_id"])
    (level2.dir / "result.json").unlink()
    level2.checkpoint_path(150).unlink()
    longer = run_imp(CONFIG, levels=3, rewind=REWIND, keep_dense=("output",), root=root,
                 dataset=mnist1d, alphas=5, progress=False)
    old, new = two_levels.methods["imp"], longer.methods["imp"]
    assert [lv["mask_id"] for lv in new[:3]] == [lv["mask_id"] for lv in old]
    assert new[1]["train_seconds"] is None  # reused
    assert new[2]["train_seconds"] is not None  # resumed
    assert new[2]["test_accuracy"] == old[2]["test_accuracy"]
    assert new[3]["density"] < old[2]["density"]


def test_baselines_share_the_schedule(root, mnist1d):
    # one level: its IMP run is reused from the other tests, the baselines train once each
    record = run_imp(CONFIG, levels=1, rewind=REWIND, root=root, dataset=mnist1d,
                     progress=False, keep_dense=("output",),
                     baselines=("random", "shuffle", "reinit", "invert"),
                     successive_barriers=False)
    imp_levels = record.methods["imp"]
    for method in ("random", "shuffle", "reinit", "invert"):
        levels = record.methods[method]
        assert [lv["level"] for lv in levels] == [0, 1]
        for a, b in zip(levels, imp_levels, strict=True):
            assert a["density"] == pytest.approx(b["density"], abs=1e-9)
    # shuffle keeps each layer's density; reinit keeps IMP's mask with other weights
    level = 1
    imp_ckpt = load_checkpoint(imp_levels[level]["checkpoint"])
    shuffled = load_checkpoint(record.methods["shuffle"][level]["checkpoint"])
    for a, b in zip(jax.tree.leaves(imp_ckpt.mask), jax.tree.leaves(shuffled.mask),
                    strict=True):
        assert np.sum(a) == np.sum(b)
    reinit = Run.open(root / record.methods["reinit"][level]["run_id"])
    assert reinit.spec.reinit is not None
    assert reinit.spec.mask == imp_levels[level]["mask_id"]
    start = reinit.load(REWIND)
    trunk = Run.open(root / record.trunk).load(REWIND)
    kernel = np.asarray(start.params["dense0"]["kernel"])
    live = np.asarray(start.mask["dense0"]["kernel"])
    assert not np.allclose(kernel[live], np.asarray(trunk.params["dense0"]["kernel"])[live])
    assert not np.any(kernel[~live])


def test_errors(root, mnist1d):
    with pytest.raises(ConfigError, match="either"):
        run_imp(CONFIG, root=root, dataset=mnist1d)
    with pytest.raises(ConfigError, match="fraction"):
        run_imp(CONFIG, levels=1, fraction=1.2, root=root, dataset=mnist1d)
    with pytest.raises(ConfigError, match="valid"):
        run_imp(CONFIG, levels=1, baselines=("lottery",), root=root, dataset=mnist1d)
    with pytest.raises(ConfigError, match="rewind"):
        run_imp(CONFIG, levels=1, rewind="150it", root=root, dataset=mnist1d)
    assert RunSpec(CONFIG).to_dict().get("reinit", "absent") == "absent"
    with pytest.raises(ConfigError, match="valid pruning criteria"):
        ImpSettings(levels=1, criterion="lottery")


def test_methods_are_registered_strategies():
    assert set(METHODS) == {"imp", "random", "invert", "shuffle", "reinit"}
    assert len({m.stream for m in METHODS.values()}) == len(METHODS)  # distinct randomness
    assert {name for name, m in METHODS.items() if m.from_imp} == {"shuffle", "reinit"}


def test_settings_object_equals_keyword_fields(two_levels, root, mnist1d):
    """`run_imp(config, ImpSettings(...))` is `run_imp(config, **fields)`: the same levels."""
    settings = ImpSettings(levels=2, rewind=REWIND, keep_dense=("output",), alphas=5)
    again = run_imp(CONFIG, settings, root=root, dataset=mnist1d, progress=False)
    assert [lv["mask_id"] for lv in again.methods["imp"]] == [
        lv["mask_id"] for lv in two_levels.methods["imp"]]


def test_cli_imp_writes_json_and_figures(tmp_path, capsys):
    from lmc.cli import main

    out = tmp_path / "imp.json"  # the data set: LMC_DATA_DIR, a temporary directory
    code = main(["imp", "--model", "mlp", "--model-option", "widths=16", "--batch-size", "64",
                 "--duration", "100it", "--levels", "2", "--rewind", "10it",
                 "--baselines", "random", "--alphas", "5", "--runs", str(tmp_path / "runs"),
                 "--out", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "smallest matching density" in text
    record = json.loads(out.read_text())
    assert record["kind"] == "imp" and set(record["methods"]) == {"imp", "random"}
    for name in ("imp.png", "imp.pdf", "imp_barriers.png"):
        assert (tmp_path / name).is_file()
    assert main(["imp", "--levels", "2", "--criterion", "lottery", "--no-progress",
                 "--runs", str(tmp_path / "runs")]) == 1
    assert "valid" in capsys.readouterr().err


def test_adaptive_schedule_stops_and_baselines_follow_it(root, mnist1d):
    calls = []

    def fraction(level, checkpoint):
        calls.append((level, checkpoint))
        return {1: 0.5, 2: 0.3}.get(level)  # None at level 3: the valley is too steep

    record = run_imp(CONFIG, levels=5, fraction=fraction, rewind=REWIND, root=root,
                     dataset=mnist1d, baselines=("random",), alphas=5, progress=False)
    assert [c[0] for c in calls] == [1, 2, 3]  # asked for IMP only, with its own solutions
    assert calls[0][1] == record.methods["imp"][0]["checkpoint"]
    for method in ("imp", "random"):
        levels = record.methods[method]
        assert [lv["fraction"] for lv in levels[1:]] == [0.5, 0.3]
        assert levels[2]["density"] == pytest.approx(0.5 * 0.7, abs=0.01)
    assert record.adaptive and record.fraction is None
    assert record.adaptive_settings is None  # a bare function has none to report


def test_adaptive_fraction_predicts_from_the_checkpoint(two_levels, mnist1d):
    from lmc.workflows.prune_ratio import AdaptiveFraction

    adaptive = AdaptiveFraction("gaussian_width", examples=500, grid_step=0.05, floor=0.05,
                                dataset=mnist1d)
    f = adaptive(1, two_levels.methods["imp"][0]["checkpoint"])
    (prediction,) = adaptive.predictions
    assert prediction["lambda_max"] > 0 and prediction["epsilon"] > 0
    # the dense trunk is far from too steep: the schedule prunes, by the predicted ratio
    assert f is not None and 0 < f < 1
    assert 0.05 <= f <= 0.9
    assert f == pytest.approx(min(adaptive.safety * prediction["safe_ratio"], 0.9))
    assert prediction["fraction"] == f and prediction["level"] == 1
    assert adaptive.epsilon == prediction["epsilon"]  # ε is fixed for the later levels
    with pytest.raises(ConfigError, match="valid estimators"):
        AdaptiveFraction("curvature")


def test_adaptive_fraction_by_the_probe(two_levels, mnist1d):
    """Estimator E in an adaptive schedule: fine-tuning steps are counted as compute."""
    from lmc.workflows.prune_ratio import AdaptiveFraction

    adaptive = AdaptiveFraction("probe", probe_steps=10, examples=500, dataset=mnist1d,
                                probe_criterion="train_loss", probe_search="grid")
    f = adaptive(1, two_levels.methods["imp"][0]["checkpoint"])
    (prediction,) = adaptive.predictions
    assert prediction["probe_steps"] == 10 * 19  # 19 candidates 0.05 ... 0.95
    assert f is None or f == pytest.approx(min(adaptive.safety * prediction["safe_ratio"], 0.9))
    first = adaptive.epsilon
    assert isinstance(first, float) and first > 0
    adaptive(2, two_levels.methods["imp"][1]["checkpoint"])
    assert adaptive.epsilon == first  # fixed at the first level's
    with pytest.raises(ConfigError, match="at least 1 step"):
        AdaptiveFraction("probe", probe_steps=0)
    # the default: judged by training accuracy against the first (dense) network, by
    # bisection over the candidates (at most ⌈log2(20)⌉ = 5 fine-tunings)
    default = AdaptiveFraction(probe_steps=10, dataset=mnist1d)
    default(1, two_levels.methods["imp"][0]["checkpoint"])
    (prediction,) = default.predictions
    assert prediction["criterion"] == "train_accuracy" and prediction["probe_steps"] <= 50
    assert prediction["reference_accuracy"] == default.reference_accuracy > 0
    # the tolerance: the dense network's train − test accuracy, measured once
    assert 0 <= prediction["accuracy_tolerance"] == default.probe_tolerance < 1
    with pytest.raises(ConfigError, match="probe tolerance"):
        AdaptiveFraction(probe_tolerance="wide")


def test_an_adaptive_record_says_what_chose_its_fractions(root, mnist1d):
    from lmc.workflows.prune_ratio import AdaptiveFraction

    fraction = AdaptiveFraction(probe_steps=5, dataset=mnist1d, safety=0.6, cap=0.5)
    record = run_imp(CONFIG, levels=1, fraction=fraction, rewind=REWIND, root=root,
                     dataset=mnist1d, alphas=3, progress=False)
    settings = record.adaptive_settings
    assert settings["safety"] == 0.6 and settings["cap"] == 0.5
    assert settings["estimator"] == "probe" and settings["probe_tolerance_rule"] == "gap"
    # the tolerance the gap rule set, as used
    assert settings["probe_tolerance"] == record.adaptive_predictions[0]["accuracy_tolerance"]
    level = record.methods["imp"][1]  # the dense trunk is far from too steep
    assert level["fraction"] == pytest.approx(
        min(0.6 * record.adaptive_predictions[0]["safe_ratio"], 0.5))
    assert json.loads(json.dumps(record.to_json()))["adaptive_settings"] == settings


def test_levels_rewind_to_another_run_pretrained_on_a_subset(two_levels, root, mnist1d):
    """Lottery tickets on a data diet: w_k from a run pre-trained on a random subset; the
    dense level and every pruned level start from it and train on all the data."""
    from lmc.training.subsets import Subset

    pre = Run(root, RunSpec(CONFIG.replace(subset=Subset("random", 0.25, "random"))))
    record = run_imp(CONFIG, levels=1, rewind=REWIND, keep_dense=("output",), root=root,
                     dataset=mnist1d, successive_barriers=False, progress=False,
                     rewind_from=pre)
    assert record.extra["rewind_from"] == pre.spec.run_id
    w_k = pre.load(REWIND)  # trained, with a checkpoint at k, by run_imp
    for level in record.methods["imp"]:
        run = Run.open(root / level["run_id"])
        assert run.spec.parent == pre.spec.run_id and run.spec.start_step == REWIND
        assert run.spec.config.subset is None
        start = run.load(REWIND)
        mask = start.mask if start.mask is not None else jax.tree.map(lambda _: True, w_k.params)
        for w, w0, m in zip(jax.tree.leaves(start.params), jax.tree.leaves(w_k.params),
                            jax.tree.leaves(mask), strict=True):
            np.testing.assert_array_equal(np.asarray(w), np.where(m, w0, 0))
    # a different rewind point, so different solutions than IMP from the dense trunk
    assert record.methods["imp"][0]["run_id"] != two_levels.methods["imp"][0]["run_id"]


def test_adaptive_fraction_bounds_the_predicted_ratio():
    from lmc.workflows.prune_ratio import AdaptiveFraction

    tail = AdaptiveFraction("gaussian_width", safety=0.5, min_fraction=0.2)
    assert tail._fraction(0.3) == 0.2  # never less than 20%-IMP while above the floor
    assert tail._fraction(0.9) == pytest.approx(0.45)
    assert AdaptiveFraction(safety=1.0, min_fraction=0.2)._fraction(0.99) == 0.9  # the cap
    assert AdaptiveFraction()._fraction(0.8) == pytest.approx(0.6)  # default safety 0.75
    with pytest.raises(ConfigError, match="min_fraction"):
        AdaptiveFraction(min_fraction=0.95)
    assert AdaptiveFraction(cap=0.5)._fraction(0.8) == 0.5  # --max-ratio


def test_cli_max_ratio_reaches_the_schedule(tmp_path, capsys):
    """--max-ratio is the schedule's cap: one below the floor is one readable error."""
    from lmc.cli import main

    args = ["imp", "--model", "mlp", "--runs", str(tmp_path), "--no-progress",
            "--ratio", "auto", "--max-ratio", "0.01"]
    assert main(args) == 1
    assert "floor < cap" in capsys.readouterr().err
