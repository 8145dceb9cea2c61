"""Safe pruning ratios measured by retraining: the ground truth the predictions are judged
against, and the short-retraining probe (estimator E).

Both start from a solution w_L (an lmc checkpoint, e.g. an IMP level) and prune it by a
ratio p: global magnitude pruning of the live prunable weights (`lmc.core.prune.prune`).

Ground truth, `measured_safe_ratio` (fixed before any prediction was compared with it):
p passes when the pruned network, retrained, is

- matching: test accuracy >= the dense accuracy minus `tolerance`, and
- in w_L's valley: the chord test-error barrier (Entezari et al. 2022) between w_L and
  the retrained network is below `threshold`; the mean barrier, the train-loss barrier and
  the ½|E(0) − E(1)| floor are reported beside it;

and the measured ratio is the largest passing p by bisection over (0, 1). Two variants:
"rewind" (rewound to the level's rewind point w_k and retrained with its recipe: what IMP
does; a run in the store under its own data order, sibling index 1, so that it is never
IMP's own next level) and "local" (trained from the projection m ⊙ w_L at a small constant
learning rate for `steps`: what the Gaussian-width theory of Larsen et al. 2022 describes).

Probe E, `probe_safe_ratio`: the local variant made short and cheap. Each candidate ratio
of a grid is fine-tuned from its projection for a few steps; p passes while the training
loss comes back to within ε of L(w_L). The predicted ratio is the largest candidate before
the first failure.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from lmc.constants import PROBE_ACCURACY_TOLERANCE, STABILITY_THRESHOLD
from lmc.core import masks
from lmc.core import prune as pruning
from lmc.core.batching import Batches, batches_of, fixed_subset
from lmc.core.compensation import bisect_largest
from lmc.core.evaluate import Evaluator
from lmc.core.interpolate import PathEvaluator, alpha_grid, interpolation_record
from lmc.core.prune_ratio import largest_safe_ratio
from lmc.errors import ConfigError, check_name
from lmc.training.config import TrainConfig
from lmc.training.data import Dataset, steps_per_epoch
from lmc.training.rng import noise_keys
from lmc.training.runs import Run, RunSpec, ensure_checkpoint, mask_id, train_runs
from lmc.training.trainer import Trainer, TrainState, training_examples
from lmc.workflows.opened import OpenedCheckpoint, open_checkpoint

VARIANTS = ("rewind", "local")
# The data order of ground-truth retrainings: not IMP's (sibling None), so that the
# measurement at p = IMP's fraction is a new run, not the level IMP trained itself.
GROUND_TRUTH_SIBLING = 1
# Fine-tuning from the projection: a fraction of the recipe's peak learning rate, constant.
# At the peak the step leaves the valley it is meant to probe; the recipe's cosine ends at 0.
LOCAL_LR_FACTOR = 0.1


@dataclasses.dataclass(frozen=True)
class Solution:
    """A solution w_L with what retraining it needs: its run's config, the trunk it was
    spawned from and the rewind step (for an IMP level: its parent and start step; for a
    dense trunk: itself and `rewind`)."""

    opened: OpenedCheckpoint
    config: TrainConfig
    trunk: Run
    rewind_step: int | None  # None: a trunk opened without one (no rewinding possible)

    def check_rewind(self) -> int:
        if self.rewind_step is None:
            raise ConfigError(f"{self.opened.path} is a trunk: give the rewind step "
                              "(Solution.open(..., rewind=k))")
        return self.rewind_step

    @classmethod
    def open(cls, checkpoint: str | os.PathLike, *, rewind: int | None = None,
             dataset: Dataset | None = None) -> Solution:
        opened = open_checkpoint(checkpoint, dataset=dataset)
        spec = opened.meta.get("spec")
        if spec is None:
            raise ConfigError(f"{checkpoint} was not trained by lmc (no run spec in its "
                              "metadata): retraining needs the recipe")
        run_dir = Path(checkpoint).resolve().parent.parent
        spec = RunSpec.from_dict(spec)
        if spec.parent is None:  # a dense trunk: rewind within itself, to `rewind`
            return cls(opened, spec.config, Run(run_dir.parent, spec),
                       None if rewind is None else int(rewind))
        trunk = Run.open(run_dir.parent / spec.parent)
        return cls(opened, spec.config, trunk, spec.start_step)

    def train_split(self) -> tuple[Any, Any]:
        """Inputs and labels of the examples this solution's recipe trains on (a subset's
        kept ones, else the whole training split): the set the Trainer's training metrics,
        and so the probe's fine-tuned accuracies, are measured on."""
        x, y = self.opened.split("train")
        kept = training_examples(self.config, self.opened.dataset)
        return (x, y) if kept is None else (x[kept], y[kept])

    def train_batches(self, examples: int | None = None, batch_size: int = 500) -> Batches:
        """A fixed subset of `train_split()` in equal batches: for a recipe without a subset
        the batches `opened.batches("train", examples, batch_size)` gives."""
        x, y = self.train_split()
        idx = fixed_subset(len(y), examples)
        return batches_of(x[idx], y[idx], min(batch_size, len(idx)))

    def pruned_mask(self, ratio: float, keep_dense: Sequence[str] = ()) -> Any:
        """The mask of w_L pruned by `ratio` of its live prunable weights (global magnitude)."""
        o = self.opened
        return pruning.prune(o.params, o.mask, ratio, "magnitude", keep_dense=keep_dense)


@dataclasses.dataclass
class Outcome:
    """One retraining of w_L pruned by `ratio`."""

    ratio: float
    density: float
    test_accuracy: float
    train_loss: float
    barrier_chord: float  # test error, chord definition
    barrier_mean: float  # test error, mean definition
    floor: float  # ½|E(0) − E(1)| of the test error
    train_loss_barrier: float  # chord definition
    passed: bool
    run_id: str | None = None  # the retrained run (variant "rewind"; "local" keeps no run)


@dataclasses.dataclass
class MeasuredRatio:
    """The ground truth of one solution: every retraining and the largest passing ratio."""

    checkpoint: str
    variant: str
    ratio: float
    status: str
    dense_test_accuracy: float
    tolerance: float
    threshold: float
    steps: int
    outcomes: list[Outcome]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _barriers(solution: Solution, params: Any, state: Any, alphas: int) -> dict[str, float]:
    """Test-error barriers (chord, mean, the mean definition's floor) on the whole test
    split and the chord train-loss barrier between w_L and `params` on the examples the
    recipe trains on (`Solution.train_split`)."""
    o = solution.opened
    grid = alpha_grid(alphas)
    data = {"train": solution.train_split(), "test": o.split("test")}
    evaluator = PathEvaluator(o.eval_apply, train_apply=o.train_apply, policy=o.policy)
    record = interpolation_record(
        evaluator.curves(o.params, params, data, state_a=o.state, state_b=state, alphas=grid),
        grid)
    test, ends = record["barriers"]["test"]["error"], record["curves"]["test"]["error"]
    return {"chord": test["chord"], "mean": test["mean"], "floor": 0.5 * abs(ends[0] - ends[-1]),
            "train_loss": record["barriers"]["train"]["loss"]["chord"]}


def rewind_retrain(solution: Solution, mask: Any, *, progress: bool = False) -> Run:
    """The network `mask` ⊙ w_k retrained with the level's recipe (a run in the store)."""
    # a trunk finished without a checkpoint at the rewind step gets one
    ensure_checkpoint(solution.trunk, solution.check_rewind(), dataset=solution.opened.dataset,
                      progress=progress)
    spec = RunSpec(solution.config, parent=solution.trunk.spec.run_id,
                   start_step=solution.rewind_step, mask=mask_id(mask),
                   sibling=GROUND_TRUTH_SIBLING)
    return train_runs([spec], solution.trunk.root, dataset=solution.opened.dataset,
                      mask=mask, progress=progress)[0]


def local_config(config: TrainConfig, steps: int, lr: float | None = None) -> TrainConfig:
    """The recipe of fine-tuning from a projection: constant learning rate, `steps` steps."""
    return config.replace(schedule="constant", warmup="0it", duration=f"{steps}it",
                          lr=lr if lr is not None else LOCAL_LR_FACTOR * config.lr)


def finetune(solution: Solution, mask_list: Sequence[Any], steps: int, *,
             lr: float | None = None, sibling: int = GROUND_TRUTH_SIBLING
             ) -> list[tuple[dict[str, float], dict[str, float], TrainState]]:
    """Each mask ⊙ w_L fine-tuned for `steps` (fresh optimizer state, its own data order):
    (metrics right after pruning, metrics after fine-tuning, final state) per mask.
    Masks are arguments of the compiled step, so every mask reuses one program."""
    o = solution.opened
    config = local_config(solution.config, steps, lr)
    out = []
    for mask in mask_list:
        trainer = Trainer(config, o.dataset, mask=mask)
        params = masks.apply_mask(o.params, mask)
        start = TrainState(params, o.state, trainer.tx.init(params), jnp.zeros((), jnp.int32))
        result = trainer.run([start], [noise_keys(config, sibling)], progress=False)
        out.append((result.history[0][0], result.history[0][-1], result.states[0]))
    return out


def rewind_steps(solution: Solution) -> int:
    """Steps a rewound level trains: the recipe's total minus the rewind step."""
    config = solution.config
    spe = steps_per_epoch(config.examples_per_epoch(solution.opened.dataset.num_train),
                          config.batch_size)
    return config.total_steps(spe) - solution.check_rewind()


def measured_safe_ratio(
    solution: Solution, *, dense_test_accuracy: float, tolerance: float,
    threshold: float = STABILITY_THRESHOLD, variant: str = "rewind",
    local_steps: int | None = None, bisection_tol: float = 1 / 64, alphas: int = 11,
    keep_dense: Sequence[str] = (), progress: bool = False,
) -> MeasuredRatio:
    """The largest ratio p by which w_L can be pruned and retrained to a network that is
    matching and in w_L's valley (see the module docstring), by bisection over (0, 1); a
    tolerance of 1/64 takes 6 retrainings. `local_steps` (variant "local"): default the
    steps the rewind variant trains."""
    check_name("ground-truth variant", variant, VARIANTS)
    o = solution.opened
    steps = local_steps or rewind_steps(solution)
    outcomes: list[Outcome] = []

    def passes(p: float) -> bool:
        mask = solution.pruned_mask(p, keep_dense)
        if variant == "rewind":
            run = rewind_retrain(solution, mask, progress=progress)
            final, run_id = run.result()["final"], run.spec.run_id
            retrained = open_checkpoint(run.final_checkpoint(), dataset=o.dataset)
            params, state = retrained.params, retrained.state
        else:
            _, final, ts = finetune(solution, [mask], steps)[0]
            params, state, run_id = ts.params, ts.state, None
        b = _barriers(solution, params, state, alphas)
        matching = final["test_accuracy"] >= dense_test_accuracy - tolerance
        outcomes.append(Outcome(
            float(p), masks.density(mask), final["test_accuracy"], final["train_loss"],
            b["chord"], b["mean"], b["floor"], b["train_loss"],
            bool(matching and b["chord"] < threshold), run_id))
        return outcomes[-1].passed

    # exact on the grid k·tol (p = 1 removes everything: never probed)
    n = round(1 / bisection_tol)
    found = bisect_largest(passes, 0.0, 1.0, grid=np.arange(1, n) / n)
    return MeasuredRatio(str(o.path), variant, float(found.ratio), found.status,
                         float(dense_test_accuracy), float(tolerance), float(threshold),
                         int(steps), outcomes)


@dataclasses.dataclass
class ProbeResult:
    """Estimator E at one solution: the candidates' losses and the predicted ratio."""

    checkpoint: str
    steps: int
    lr: float
    epsilon: float | None  # None with the "train_accuracy" criterion
    reference_loss: float  # L(w_L) on the examples its recipe trains on
    grid: list[float]
    pruned_loss: list[float]  # right after pruning (the one-shot loss)
    finetuned_loss: list[float]
    finetuned_test_accuracy: list[float]
    ratio: float
    interpolated: float
    status: str
    criterion: str = "train_loss"  # `PROBE_CRITERIA`
    finetuned_train_accuracy: list[float] | None = None
    reference_accuracy: float | None = None  # with "train_accuracy": the accuracy to keep
    accuracy_tolerance: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PROBE_CRITERIA = ("train_loss", "train_accuracy")
PROBE_SEARCHES = ("grid", "bisection")


def accuracy_safe_ratio(grid: Any, accuracy: Any, reference: float, tolerance: float,
                        accuracy_at_zero: float):
    """The probe's "train_accuracy" rule: the largest candidate of `grid` before the first
    whose fine-tuned `accuracy` falls below `reference` − `tolerance` (`SafeRatio`;
    `accuracy_at_zero`, the unpruned network's, interpolates below the first candidate)."""
    floor = reference - tolerance
    return largest_safe_ratio(np.asarray(grid, float), np.asarray(accuracy, float) - floor,
                              accuracy_at_zero - floor)


def probe_safe_ratio(solution: Solution, epsilon: float | None, *,
                     grid: Sequence[float] | None = None, steps: int = 100,
                     lr: float | None = None, keep_dense: Sequence[str] = (),
                     criterion: str = "train_loss", reference_accuracy: float | None = None,
                     accuracy_tolerance: float = PROBE_ACCURACY_TOLERANCE,
                     search: str = "grid") -> ProbeResult:
    """Estimator E: every candidate ratio of `grid` (default 0.05, 0.10, ..., 0.95) pruned
    from w_L and fine-tuned from its projection for `steps`; the ratio is the largest
    candidate before the first failure (`largest_safe_ratio`). A candidate passes

    - "train_loss": while its training loss returns to within `epsilon` of L(w_L);
    - "train_accuracy": while its training accuracy is at least `reference_accuracy` (the
      dense network's in an IMP schedule; default w_L's own) minus `accuracy_tolerance`.
      No test data is used. On the MNIST-1D MLP this criterion predicts the retrained safe
      ratio to 0.03-0.09 where the loss criterion misses by 0.4
      (experiments/probe_criteria_mnist1d.md): a network that fits its training set
      recovers its accuracy long before its loss.

    `search`: "grid" fine-tunes every candidate; "bisection" only those a bisection for
    the first failure visits (⌈log2(n + 1)⌉ of n, assuming the candidates pass, then
    fail), and the result lists those.
    """
    check_name("probe criterion", criterion, PROBE_CRITERIA, "probe criteria")
    check_name("probe search", search, PROBE_SEARCHES)
    grid = np.arange(1, 20) / 20 if grid is None else np.asarray(grid, float)
    if criterion == "train_loss" and not (epsilon is not None and epsilon > 0):
        raise ConfigError(f"the loss tolerance epsilon must be positive, got {epsilon}")
    if criterion == "train_accuracy" and not 0 <= accuracy_tolerance < 1:
        raise ConfigError(f"the accuracy tolerance must be in [0, 1), got {accuracy_tolerance}")
    o = solution.opened
    before = Evaluator(o.eval_apply)(o.params, o.state, *solution.train_split())
    reference = float(before["loss"])
    if reference_accuracy is None:
        reference_accuracy = float(before["accuracy"])

    def tuned(p: float):
        return finetune(solution, [solution.pruned_mask(float(p), keep_dense)], steps,
                        lr=lr)[0]

    def passes(after: dict[str, float]) -> bool:
        if criterion == "train_loss":
            return after["train_loss"] <= reference + epsilon
        return after["train_accuracy"] >= reference_accuracy - accuracy_tolerance

    if search == "grid":
        rows = [tuned(p) for p in grid]
    else:
        visited: dict[float, Any] = {}

        def holds(p: float) -> bool:
            visited[p] = tuned(p)
            return passes(visited[p][1])

        bisect_largest(holds, 0.0, 1.0, grid=grid)
        grid = np.array(sorted(visited))
        rows = [visited[p] for p in grid]
    finetuned = np.array([after["train_loss"] for _, after, _ in rows])
    accuracy = np.array([after["train_accuracy"] for _, after, _ in rows])
    if criterion == "train_loss":
        safe = largest_safe_ratio(grid, reference + epsilon - finetuned, epsilon)
    else:
        safe = accuracy_safe_ratio(grid, accuracy, reference_accuracy, accuracy_tolerance,
                                   float(before["accuracy"]))
    return ProbeResult(
        str(solution.opened.path), int(steps),
        float(local_config(solution.config, steps, lr).lr),
        None if epsilon is None else float(epsilon), float(reference),
        grid.tolist(), [before_["train_loss"] for before_, _, _ in rows], finetuned.tolist(),
        [after["test_accuracy"] for _, after, _ in rows], safe.ratio, safe.interpolated,
        safe.status, criterion, accuracy.tolist(),
        None if criterion == "train_loss" else float(reference_accuracy),
        None if criterion == "train_loss" else float(accuracy_tolerance))


__all__ = ["GROUND_TRUTH_SIBLING", "MeasuredRatio", "Outcome", "PROBE_CRITERIA", "PROBE_SEARCHES",
           "ProbeResult", "Solution", "VARIANTS", "accuracy_safe_ratio", "finetune",
           "local_config", "measured_safe_ratio", "probe_safe_ratio", "rewind_retrain",
           "rewind_steps"]
