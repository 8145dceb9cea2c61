"""Safe ratios measured by retraining (the ground truth) and the fine-tuning probe E."""

import numpy as np
import pytest

from lmc.core import masks
from lmc.core.evaluate import Evaluator
from lmc.core.prune_ratio import DEFAULT_BATCH_SIZE, epsilon_of
from lmc.errors import ConfigError
from lmc.training.runs import Run, RunSpec, train_run
from lmc.training.subsets import Subset
from lmc.training.trainer import Trainer
from lmc.workflows.imp import run_imp
from lmc.workflows.prune_ratio import AdaptiveFraction
from lmc.workflows.retraining import (
    GROUND_TRUTH_SIBLING,
    Solution,
    finetune,
    measured_safe_ratio,
    probe_safe_ratio,
    rewind_retrain,
)

from ..conftest import TINY_MLP

CONFIG = TINY_MLP.replace(duration="80it")
REWIND = 20


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("retraining_runs")


@pytest.fixture(scope="module")
def imp(root, mnist1d):
    return run_imp(CONFIG, levels=1, rewind=REWIND, root=root, dataset=mnist1d,
                   successive_barriers=False, progress=False)


@pytest.fixture(scope="module")
def level1(imp, mnist1d):
    return Solution.open(imp.methods["imp"][1]["checkpoint"], dataset=mnist1d)


def test_a_level_knows_its_trunk_and_rewind_step(imp, level1, mnist1d):
    assert level1.trunk.spec.run_id == imp.trunk and level1.rewind_step == REWIND
    trunk_ckpt = imp.methods["imp"][0]["checkpoint"]
    with pytest.raises(ConfigError, match="rewind step"):  # a trunk needs the rewind step
        rewind_retrain(Solution.open(trunk_ckpt, dataset=mnist1d), level1.opened.mask)
    trunk = Solution.open(trunk_ckpt, rewind=REWIND, dataset=mnist1d)
    assert trunk.trunk.spec.run_id == imp.trunk


def test_the_ground_truth_never_reuses_imps_own_next_level(imp, level1, root):
    """Pruning the trunk by IMP's fraction gives IMP's level-1 mask, but the retraining is
    a run of its own (another data order), not the level IMP trained."""
    trunk = Solution.open(imp.methods["imp"][0]["checkpoint"], rewind=REWIND,
                          dataset=level1.opened.dataset)
    mask = trunk.pruned_mask(0.2)
    np.testing.assert_array_equal(masks.flat_prunable(mask),
                                  masks.flat_prunable(level1.opened.mask))
    run = rewind_retrain(trunk, mask)
    assert run.spec.sibling == GROUND_TRUTH_SIBLING
    assert run.spec.run_id != imp.methods["imp"][1]["run_id"]
    assert Run.open(root / run.spec.run_id).finished


def test_measured_ratio_is_the_largest_passing_bisection_point(imp, level1):
    dense = imp.dense_test_accuracy
    measured = measured_safe_ratio(level1, dense_test_accuracy=dense, tolerance=0.05,
                                   threshold=0.05, bisection_tol=1 / 8, alphas=5)
    ratios = [o.ratio for o in measured.outcomes]
    assert len(ratios) == len(set(ratios)) >= 3  # ⌈log2(8)⌉ bisection steps
    passed = [o.ratio for o in measured.outcomes if o.passed]
    failed = [o.ratio for o in measured.outcomes if not o.passed]
    assert measured.ratio == (max(passed) if passed else 0.0)
    assert all(f > measured.ratio for f in failed)  # bisection brackets the crossing
    for o in measured.outcomes:  # the pass rule, as documented
        assert o.passed == (o.test_accuracy >= dense - 0.05 and o.barrier_chord < 0.05)
        assert o.barrier_mean >= o.floor - 1e-9  # the mean definition's floor
        assert 0 < o.density < 1
    again = measured_safe_ratio(level1, dense_test_accuracy=dense, tolerance=0.05,
                                threshold=0.05, bisection_tol=1 / 8, alphas=5)
    assert again.to_json() == measured.to_json()  # the runs are reused: same numbers


def test_finetuning_starts_from_the_projection(level1):
    mask = level1.pruned_mask(0.5)
    before, after, state = finetune(level1, [mask], 30)[0]
    o = level1.opened
    projected = masks.apply_mask(o.params, mask)
    direct = Evaluator(o.eval_apply)(projected, o.state, *o.split("train"))
    np.testing.assert_allclose(before["train_loss"], float(direct["loss"]), rtol=1e-5)
    for w, m in zip(masks.flat_prunable(state.params), masks.flat_prunable(mask), strict=True):
        assert m or w == 0  # pruned weights stay pruned
    assert after["train_loss"] < before["train_loss"]


def test_probe_is_deterministic_and_uses_the_first_failure(level1):
    grid = [0.1, 0.3, 0.5, 0.7, 0.9]
    probe = probe_safe_ratio(level1, epsilon=0.05, grid=grid, steps=20)
    assert probe.to_json() == probe_safe_ratio(level1, epsilon=0.05, grid=grid,
                                               steps=20).to_json()
    margin = probe.reference_loss + 0.05 - np.asarray(probe.finetuned_loss)
    first_fail = next((i for i, m in enumerate(margin) if m < 0), None)
    expected = grid[-1] if first_fail is None else (grid[first_fail - 1] if first_fail else 0.0)
    assert probe.ratio == expected
    # one-shot losses grow with the ratio on a trained network
    assert probe.pruned_loss[-1] > probe.pruned_loss[0]
    with pytest.raises(ConfigError, match="epsilon"):
        probe_safe_ratio(level1, epsilon=0.0, grid=grid, steps=5)


def test_probe_judged_by_training_accuracy(level1):
    grid = [0.1, 0.5, 0.9]
    probe = probe_safe_ratio(level1, None, grid=grid, steps=20, criterion="train_accuracy",
                             reference_accuracy=0.9, accuracy_tolerance=0.3)
    assert probe.criterion == "train_accuracy" and probe.epsilon is None
    accuracy = np.asarray(probe.finetuned_train_accuracy)
    first_fail = next((i for i, a in enumerate(accuracy) if a < 0.9 - 0.3), None)
    expected = grid[-1] if first_fail is None else (grid[first_fail - 1] if first_fail else 0.0)
    assert probe.ratio == expected and (probe.reference_accuracy, probe.accuracy_tolerance) == (
        0.9, 0.3)
    # the same fine-tunings as the loss-judged probe: only the pass rule differs
    loss = probe_safe_ratio(level1, 0.05, grid=grid, steps=20)
    assert loss.finetuned_train_accuracy == probe.finetuned_train_accuracy
    # bisection visits ⌈log2(3 + 1)⌉ = 2 of the 3 candidates and finds the same first failure
    # (these candidates pass, then fail)
    passes = accuracy >= 0.9 - 0.3
    assert list(passes) == sorted(passes, reverse=True), accuracy  # pass, then fail
    half = probe_safe_ratio(level1, None, grid=grid, steps=20, criterion="train_accuracy",
                            reference_accuracy=0.9, accuracy_tolerance=0.3, search="bisection")
    assert half.ratio == probe.ratio and len(half.grid) == 2
    with pytest.raises(ConfigError, match="valid probe criteria"):
        probe_safe_ratio(level1, 0.05, grid=grid, steps=5, criterion="test_accuracy")


def test_a_subsets_probe_is_judged_on_the_examples_it_trains_on(root, mnist1d):
    """With a data subset the reference accuracy and loss are the kept examples', as the
    fine-tuned candidates' (the Trainer's training metrics) are: not the whole split."""
    config = CONFIG.replace(subset=Subset.parse("random:0.5"), duration="40it")
    run = train_run(RunSpec(config), root, dataset=mnist1d, progress=False)
    solution = Solution.open(run.final_checkpoint(), dataset=mnist1d, rewind=0)
    x, y = solution.train_split()
    trainer = Trainer(config, mnist1d)
    assert len(y) == len(trainer.y_train) < len(mnist1d.y_train)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(trainer.x_train))
    probe = probe_safe_ratio(solution, 0.05, grid=[0.5], steps=2)
    assert probe.reference_loss == pytest.approx(run.result()["final"]["train_loss"], rel=1e-4)
    # ε and the train-loss barrier are measured on the kept examples too
    xb, yb = solution.train_batches(examples=None, batch_size=DEFAULT_BATCH_SIZE)
    assert xb.shape[0] * xb.shape[1] == len(y)  # the kept examples, none of the others
    np.testing.assert_array_equal(np.sort(np.asarray(yb).ravel()), np.sort(np.asarray(y)))
    adaptive = AdaptiveFraction("probe", probe_criterion="train_loss", examples=len(y),
                                dataset=mnist1d, probe_steps=2)
    adaptive(1, run.final_checkpoint())
    o = solution.opened
    assert adaptive.epsilon == epsilon_of(None, o.loss_fn(), o.params, (xb, yb))[0]
    assert adaptive.epsilon != epsilon_of(None, o.loss_fn(), o.params,
                                          o.batches("train", len(y), DEFAULT_BATCH_SIZE))[0]


def test_the_local_variant_retrains_from_the_projection(imp, level1):
    measured = measured_safe_ratio(level1, dense_test_accuracy=imp.dense_test_accuracy,
                                   tolerance=0.05, threshold=0.05, variant="local",
                                   local_steps=10, bisection_tol=1 / 4, alphas=3)
    assert measured.variant == "local" and measured.steps == 10
    assert 1 <= len(measured.outcomes) <= 2 and all(o.run_id is None for o in measured.outcomes)
    with pytest.raises(ConfigError, match="valid ground-truth variants"):
        measured_safe_ratio(level1, dense_test_accuracy=0.5, tolerance=0.05, variant="x")
