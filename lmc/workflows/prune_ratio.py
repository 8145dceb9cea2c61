"""The safe pruning ratio of a checkpoint (estimators A, B and C of `lmc.core.prune_ratio`)
for a criterion beside random pruning, and the adaptive IMP schedule built on it."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmc.constants import DEFAULT_SAFETY, PROBE_TOLERANCE_GAP
from lmc.core import masks
from lmc.core import prune as pruning
from lmc.core.evaluate import Evaluator
from lmc.core.prune_ratio import (
    BASES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EXAMPLES,
    DEFAULT_GRID,
    EIGENVALUES,
    EPSILONS,
    ESTIMATORS,
    PrunePrediction,
    batch_losses,
    check_eigenvalues,
    check_epsilon,
    check_grid,
    check_scores,
    curvature_masses,
    epsilon_of,
    hessian_spectrum,
    largest_passing_ratio,
    mean_gradient,
    one_shot_curve,
    predict_prune_ratio,
    ratio_grid,
)
from lmc.errors import ConfigError, check_name
from lmc.training.data import Dataset
from lmc.workflows.opened import open_checkpoint
from lmc.workflows.records import PruneRatioRecord
from lmc.workflows.retraining import (
    PROBE_CRITERIA,
    PROBE_SEARCHES,
    Solution,
    probe_safe_ratio,
)


def _finite(values: Any) -> list:
    """A JSON list with NaN/inf as null."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float64)]


def prediction_record(pred: PrunePrediction) -> dict[str, Any]:
    """One criterion's curves and safe ratios, JSON-ready."""
    return {
        "num_prunable": pred.num_prunable, "removed": pred.removed.tolist(),
        "radius": _finite(pred.radius), "linear": _finite(pred.linear),
        "curvature": _finite(pred.curvature), "quadratic": _finite(pred.quadratic),
        "rayleigh": _finite(pred.rayleigh), "p_theory": _finite(pred.p_theory),
        "safe": {name: s._asdict() for name, s in pred.safe._asdict().items()},
        "curve_matvecs": pred.diagnostics.curve_matvecs,
        "curve_seconds": pred.diagnostics.curve_seconds,
    }


def prune_ratio_record(
    path: str | os.PathLike, *, criterion: str = "magnitude", scores: Any = None, grid: Any = None,
    epsilon: float | str | None = EPSILONS[0], basis: str = BASES[0],
    eigenvalues: str = EIGENVALUES[0], split: str = "train",
    examples: int | None = DEFAULT_EXAMPLES, batch_size: int = DEFAULT_BATCH_SIZE,
    keep_dense: Sequence[str] = (), lanczos_steps: int = 100, slq_probes: int = 4,
    slq_steps: int = 90, seed: int = 0, chunk: int | None = None, with_random: bool = True,
    dataset: Any = None, data_dir: str | None = None, model: str | None = None,
    model_options: dict[str, Any] | None = None, data: str | os.PathLike | None = None,
) -> PruneRatioRecord:
    """The safe pruning ratio of a checkpoint by estimators A, B and C, for `criterion`
    beside random pruning (unless not `with_random`).

    The Hessian, gradient and ε are those of the training loss on a fixed subset of
    `examples` examples of `split` in batches of `batch_size`, restricted to the
    checkpoint's live weights, and with `basis` "prunable" to the live prunable weights
    outside `keep_dense` ("all": every live parameter). `epsilon`: a positive number or
    one of `EPSILONS` ("minibatch_std" is the spread over those batches);
    `eigenvalues`: C's treatment of negative curvature (`EIGENVALUES`); see
    `lmc.core.prune_ratio`. `scores` (a params-shaped tree, higher = more important)
    plugs in another criterion, named `criterion`; without it, criterion is "magnitude" or
    "random" (seeded by `seed`). `model`, `model_options` and `data` open a checkpoint of
    your own network.
    """
    keep_dense = (keep_dense,) if isinstance(keep_dense, str) else tuple(keep_dense)
    if scores is None:
        check_name("pruning criterion", criterion, pruning.CRITERIA, "pruning criteria")
        if criterion == "magnitude_layerwise":
            raise ConfigError("the prediction removes weights in one global order; "
                              "magnitude_layerwise prunes each layer separately: use magnitude")
    check_name("basis", basis, BASES, "bases")
    check_eigenvalues(eigenvalues)
    grid = check_grid(DEFAULT_GRID if grid is None else grid)
    if isinstance(epsilon, str):
        check_name("epsilon", epsilon, EPSILONS, "epsilons (or a positive number)")
    elif epsilon is not None:
        check_epsilon(epsilon)
    opened = open_checkpoint(path, dataset=dataset, data_dir=data_dir, model=model,
                             model_options=model_options, data=data)
    ckpt = opened.checkpoint
    masks.density(masks.dense_mask(ckpt.params), keep_dense)  # fails early: no prunable
    op = opened.hessian(split, examples, batch_size, prunable_only=basis == "prunable",
                        keep_dense=keep_dense if basis == "prunable" else ())
    loss_fn = op.loss_fn
    start = time.perf_counter()
    loss = float(batch_losses(loss_fn, op.params, op.batches).mean())  # equal batches
    epsilon, source, detail = epsilon_of(epsilon, loss_fn, op.params, op.batches)

    all_scores = {}
    if with_random or criterion == "random":
        all_scores["random"] = pruning.scores("random", ckpt.params, key=jax.random.key(seed))
    if scores is not None:
        check_scores(scores, ckpt.params)
        all_scores[criterion] = scores
    elif criterion != "random":
        inputs = opened.criterion_inputs(criterion, examples=examples or 1000,
                                         key=jax.random.key(seed))
        all_scores[criterion] = pruning.scores(criterion, ckpt.params, ckpt.mask, **inputs)
    grad = op.from_tree(mean_gradient(loss_fn, op.params, op.batches, op.policy))
    spectrum = hessian_spectrum(op, lanczos_steps=lanczos_steps, slq_probes=slq_probes,
                                slq_steps=slq_steps, seed=seed)
    masses = curvature_masses(spectrum.nodes, spectrum.weights, spectrum.lambda_max)
    names = [criterion] + [n for n in all_scores if n != criterion]
    preds = {n: predict_prune_ratio(op, loss_fn, all_scores[n], criterion=n, grid=grid,
                                    epsilon=epsilon, eigenvalues=eigenvalues,
                                    keep_dense=keep_dense, grad=grad, spectrum=spectrum,
                                    chunk=chunk)
             for n in names}
    first = preds[criterion]
    return PruneRatioRecord(
        checkpoint=str(path), model=ckpt.meta["model"], data=ckpt.meta["data"]["name"],
        split=split, examples=op.num_examples, dim=op.dim, num_prunable=first.num_prunable,
        masked=ckpt.mask is not None, keep_dense=list(keep_dense), seed=seed,
        criterion=criterion, loss=loss,
        gradient_norm=float(jnp.linalg.norm(grad)), epsilon=epsilon, epsilon_source=source,
        lambda_max=spectrum.lambda_max, trace=spectrum.trace,
        spectrum={"nodes": spectrum.nodes.tolist(), "weights": spectrum.weights.tolist()},
        grid=grid.tolist(),
        criteria={n: prediction_record(p) for n, p in preds.items()},
        diagnostics={
            "lanczos_residual": spectrum.lanczos_residual,
            "lanczos_converged": spectrum.lanczos_converged,
            "lanczos_steps": spectrum.lanczos_steps, "slq_probes": slq_probes,
            "slq_steps": int(spectrum.nodes.shape[1]),
            "spectrum_matvecs": spectrum.num_matvecs, "spectrum_seconds": spectrum.seconds,
            "num_matvecs": spectrum.num_matvecs + sum(p.diagnostics.curve_matvecs
                                                      for p in preds.values())},
        seconds=time.perf_counter() - start,
        basis=basis, eigenvalues=eigenvalues, batch_size=int(op.batches[0].shape[1]),
        epsilon_detail=detail, zero_curvature_mass=masses.zero, negative_mass=masses.negative)


ONE_SHOT_GRID = np.arange(1, 1000) / 1000  # Zhang et al. 2024's 1/1000 grid


def one_shot_safe_ratio(checkpoint: str | os.PathLike, tolerance: float, *,
                        grid: Any = ONE_SHOT_GRID, split: str = "test",
                        keep_dense: Sequence[str] = (), dataset: Dataset | None = None,
                        data_dir: str | None = None) -> dict[str, Any]:
    """The measured one-shot safe ratio of a checkpoint (Zhang et al. 2024, the quantity
    their Gaussian-width threshold predicts): the largest p such that the network pruned
    by global magnitude at p, and at every smaller p of `grid`, without fine-tuning, keeps
    `split` accuracy ≥ the unpruned one − `tolerance`. Returns the curve
    (`lmc.core.prune_ratio.one_shot_curve`) with "safe_ratio", "tolerance" and "split"."""
    opened = open_checkpoint(checkpoint, dataset=dataset, data_dir=data_dir)
    x, y = opened.split(split)
    curve = one_shot_curve(opened.eval_apply, opened.params, opened.state, x, y, grid,
                           mask=opened.mask, keep_dense=keep_dense)
    # 1e-9: accuracies are counts over the split; equal counts must compare equal
    passes = np.asarray(curve["accuracy"]) >= curve["dense_accuracy"] - tolerance - 1e-9
    curve.update(tolerance=float(tolerance), split=split,
                 safe_ratio=largest_passing_ratio(curve["grid"], passes))
    return curve


PROBE = "probe"  # estimator E, `lmc.workflows.retraining.probe_safe_ratio`
PROBE_STEPS = 100  # fine-tuning steps of each candidate of the probe
# What an adaptive IMP schedule can prune by: the Hessian estimators and the probe.
ADAPTIVE_ESTIMATORS = (*ESTIMATORS, PROBE)


class AdaptiveFraction:
    """The pruning fraction of each level from the landscape: the predicted safe
    ratio of the previous level's solution under `estimator`, times `safety`, at least
    `min_fraction` and at most `cap`; None (stop: the valley has become too steep) once
    the prediction falls below `floor`.

    The default is the estimator that validated (experiments/probe_criteria_mnist1d.md,
    adaptive_imp_mnist1d.md): the fine-tuning probe judged by training accuracy against
    the dense network's, within the dense network's generalisation gap, candidates
    searched by bisection; it predicts the retrained safe ratio to 0.05-0.09 on the
    MNIST-1D MLP and convnet, where C misses by 0.30 and 0.17, and over-predicts (0.15-0.25)
    where sparse networks keep 100% training accuracy on a small training set while their
    test accuracy falls (experiments/gap_rule_mnist1d.md). That ratio keeps one step
    within about 2 points of the dense accuracy; pruned in full at every level it costs
    about a point against 20%-IMP at equal density, so the default `safety` is
    `DEFAULT_SAFETY` (0.75: as accurate as 20%-IMP at every density, with 0.61x its
    training steps, probe included, on the MLP, 6 seeds; 0.92x on the convnet).

    ε is fixed along the schedule at the first level's (`epsilon`: a number, or one of
    `EPSILONS` measured on the first network; None: the default): the measured ε of each
    level grows 60-160x as sparse networks underfit, which would make deeper levels look
    safer (experiments/predict_mnist1d.md). `basis` and `eigenvalues` are C's choices (see
    `lmc.core.prune_ratio`). With the probe, `probe_criterion` is how a candidate passes
    (`lmc.workflows.retraining.PROBE_CRITERIA`); with "train_accuracy" the accuracy to
    keep is the first network's (the dense one) minus `probe_tolerance`, a number or
    "gap" (the dense network's train − test accuracy), fixed along the schedule like ε.
    `run_imp` also stops an adaptive schedule when successive levels stop being linearly
    connected."""

    def __init__(self, estimator: str = PROBE, *, safety: float = DEFAULT_SAFETY,
                 floor: float = 0.05, cap: float = 0.9, min_fraction: float = 0.0,
                 examples: int = 1000,
                 grid_step: float = 0.01, keep_dense: Sequence[str] = (),
                 epsilon: float | str | None = None, basis: str = BASES[0],
                 eigenvalues: str = EIGENVALUES[0], probe_steps: int = PROBE_STEPS,
                 probe_criterion: str = "train_accuracy",
                 probe_tolerance: float | str = PROBE_TOLERANCE_GAP,
                 probe_search: str = "bisection",
                 dataset: Dataset | None = None):
        check_name("estimator", estimator, ADAPTIVE_ESTIMATORS)
        check_name("probe criterion", probe_criterion, PROBE_CRITERIA, "probe criteria")
        check_name("probe search", probe_search, PROBE_SEARCHES)
        if probe_tolerance != PROBE_TOLERANCE_GAP and not (
                isinstance(probe_tolerance, (int, float)) and 0 <= probe_tolerance < 1):
            raise ConfigError(f"the probe tolerance is a number in [0, 1) or "
                              f"{PROBE_TOLERANCE_GAP!r}, got {probe_tolerance!r}")
        self.probe_criterion, self.probe_tolerance = probe_criterion, probe_tolerance
        self.probe_tolerance_rule = probe_tolerance  # "gap" stays "gap" here
        self.probe_search = probe_search
        self.reference_accuracy: float | None = None
        if probe_steps < 1:
            raise ConfigError(f"the probe needs at least 1 step, got {probe_steps}")
        self.probe_steps = int(probe_steps)
        check_name("basis", basis, BASES, "bases")
        check_eigenvalues(eigenvalues)
        if not 0 < safety <= 1 or not 0 < floor < cap < 1:
            raise ConfigError("need 0 < safety <= 1 and 0 < floor < cap < 1")
        if not 0 <= min_fraction < cap:
            raise ConfigError(f"need 0 <= min_fraction < cap, got {min_fraction}")
        self.estimator, self.safety, self.floor, self.cap = estimator, safety, floor, cap
        self.min_fraction = float(min_fraction)
        self.examples, self.keep_dense, self.dataset = examples, tuple(keep_dense), dataset
        self.basis, self.eigenvalues = basis, eigenvalues
        self.grid = ratio_grid(grid_step)
        self.epsilon = epsilon
        self.predictions: list[dict[str, Any]] = []

    def __call__(self, level: int, checkpoint: str) -> float | None:
        if self.estimator == PROBE:
            return self._probe(level, checkpoint)
        record = prune_ratio_record(checkpoint, grid=self.grid, examples=self.examples,
                                    keep_dense=self.keep_dense, with_random=False,
                                    epsilon=self.epsilon, basis=self.basis,
                                    eigenvalues=self.eigenvalues, dataset=self.dataset)
        self.epsilon = record.epsilon  # a number from now on: fixed for the later levels
        safe = record.criteria["magnitude"]["safe"][self.estimator]["interpolated"]
        fraction = self._fraction(safe)
        self.predictions.append({
            "level": level, "checkpoint": checkpoint, "safe_ratio": safe,
            "fraction": fraction, "lambda_max": record.lambda_max,
            "trace": record.trace, "epsilon": record.epsilon,
            "seconds": record.seconds})
        return None if self.safety * safe < self.floor else fraction

    def _probe(self, level: int, checkpoint: str) -> float | None:
        """Estimator E: fine-tune the candidates for `probe_steps` (their training steps
        are part of the schedule's compute, recorded as `probe_steps`)."""
        start = time.perf_counter()
        solution = Solution.open(checkpoint, dataset=self.dataset)
        o = solution.opened
        if self.probe_criterion == "train_accuracy":
            if self.reference_accuracy is None:  # the first (dense) network's
                evaluate = Evaluator(o.eval_apply)
                self.reference_accuracy = float(
                    evaluate(o.params, o.state, *solution.train_split())["accuracy"])
                if self.probe_tolerance == PROBE_TOLERANCE_GAP:  # its train − test gap
                    test = float(evaluate(o.params, o.state, *o.split("test"))["accuracy"])
                    self.probe_tolerance = max(0.0, self.reference_accuracy - test)
        elif not isinstance(self.epsilon, float):
            # measured on the examples the recipe trains on, as the probe's losses are
            self.epsilon = epsilon_of(self.epsilon, o.loss_fn(), o.params,
                                      solution.train_batches(self.examples,
                                                             DEFAULT_BATCH_SIZE))[0]
        probe = probe_safe_ratio(
            solution, self.epsilon if self.probe_criterion == "train_loss" else None,
            steps=self.probe_steps, keep_dense=self.keep_dense, criterion=self.probe_criterion,
            reference_accuracy=self.reference_accuracy, accuracy_tolerance=self.probe_tolerance,
            search=self.probe_search)
        fraction = self._fraction(probe.interpolated)
        self.predictions.append({
            "level": level, "checkpoint": checkpoint, "safe_ratio": probe.interpolated,
            "fraction": fraction, "criterion": self.probe_criterion,
            "epsilon": probe.epsilon, "reference_accuracy": probe.reference_accuracy,
            "accuracy_tolerance": probe.accuracy_tolerance,
            "probe_steps": self.probe_steps * len(probe.grid),
            "seconds": time.perf_counter() - start})
        return None if self.safety * probe.interpolated < self.floor else fraction

    def settings(self) -> dict[str, Any]:
        """What chooses the fractions, for the record: ε and the probe's accuracy
        tolerance as they are used (numbers once the first network has set them)."""
        return {"estimator": self.estimator, "safety": self.safety, "floor": self.floor,
                "cap": self.cap, "min_fraction": self.min_fraction, "epsilon": self.epsilon,
                "basis": self.basis, "eigenvalues": self.eigenvalues,
                "examples": self.examples, "keep_dense": list(self.keep_dense),
                "probe_steps": self.probe_steps, "probe_criterion": self.probe_criterion,
                "probe_tolerance": self.probe_tolerance,
                "probe_tolerance_rule": self.probe_tolerance_rule,
                "probe_search": self.probe_search}

    def _fraction(self, safe: float) -> float:
        """safety × the predicted ratio, at least `min_fraction` (e.g. 0.2: never slower
        than 20%-IMP while the prediction stays above the floor) and at most `cap`."""
        return min(max(self.safety * safe, self.min_fraction), self.cap)
