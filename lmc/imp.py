"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020),
its baselines, and the error barrier between successive levels (Paul et al. 2023).

    trunk: train the dense network from its initialisation; w_k is its checkpoint at k
    level L >= 1: m_L = prune(w_T^{L-1}, m_{L-1}, fraction); train m_L ⊙ w_k from step k

Level 0 is the trunk itself. Every level is a child run of the trunk in the run store
(parent = trunk, start step = k, mask = m_L), so a level that exists is reused, an
interrupted level resumes where it stopped, and a longer IMP run reuses a shorter one's
levels: masks are a deterministic function of the previous level's weights and of seeds.

Methods (one line each in the figures):
  imp       prune the lowest-scoring live weights by `criterion` (magnitude by default)
  random    prune live weights uniformly at random, level by level (same densities)
  invert    IMP with inverted scores: prune the largest weights
  shuffle   IMP's mask of each level shuffled within each layer (same per-layer density)
  reinit    IMP's mask of each level with the survivors drawn afresh from the initialisation
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
from tqdm.auto import tqdm

from lmc import prune
from lmc.checkpoint import Checkpoint, load_checkpoint
from lmc.config import Duration, TrainConfig
from lmc.data import Dataset, load_dataset, steps_per_epoch
from lmc.errors import ConfigError, check_name
from lmc.instability import final_checkpoint
from lmc.interpolate import interpolate_checkpoints
from lmc.runs import Run, RunSpec, mask_id, train_run, train_runs

MAX_LEVELS = 100  # of a schedule that runs until a target density
METHODS = ("imp", "random", "invert", "shuffle", "reinit")
# Derived from IMP's own masks, level by level, rather than pruned iteratively.
FROM_IMP = ("shuffle", "reinit")


def levels_for(fraction: float, target_density: float) -> int:
    """Levels of pruning `fraction` of the live weights needed to reach `target_density`
    (each level keeps ceil-rounded counts, so the density reached is at most the target)."""
    if not 0 < target_density < 1:
        raise ConfigError(f"target density must be in (0, 1), got {target_density}")
    return math.ceil(math.log(target_density) / math.log(1 - fraction) - 1e-9)


def _method_key(config: TrainConfig, method: str, level: int) -> jax.Array:
    """The key of a method's randomness at a level: reproducible, distinct per method."""
    key = jax.random.fold_in(jax.random.key(config.seed), 1 + METHODS.index(method))
    return jax.random.fold_in(key, level)


class _Pruner:
    """Computes the next mask from a level's final checkpoint."""

    def __init__(self, config: TrainConfig, dataset: Dataset, criterion: str,
                 keep_dense: Sequence[str], examples: int):
        self.config, self.dataset, self.criterion = config, dataset, criterion
        self.keep_dense, self.examples = tuple(keep_dense), examples

    def next_mask(self, ckpt: Checkpoint, fraction: float, method: str, level: int) -> Any:
        criterion = "random" if method == "random" else self.criterion
        inputs = prune.checkpoint_inputs(
            ckpt, self.dataset if criterion in ("snip", "grasp") else None,
            examples=self.examples, key=_method_key(self.config, method, level))
        return prune.prune(ckpt.params, ckpt.mask, fraction, criterion,
                           keep_dense=self.keep_dense, invert=method == "invert", **inputs)


STABILITY_THRESHOLD = 0.02  # error barrier that ends an adaptive schedule (SPEC §5)
ESTIMATORS = ("gaussian_width", "quadratic", "lambda_max")


class AdaptiveFraction:
    """The pruning fraction of each level from the landscape (SPEC §5): the predicted safe
    ratio of the previous level's solution under `estimator`, times `safety`, at most
    `cap`; None (stop: the valley has become too steep) once it falls below `floor`.

    ε is fixed along the schedule at the first level's default (the spread of the dense
    network's per-example loss) unless given: the default ε of each level grows 60-160x
    as sparse networks underfit, which would make deeper levels look safer
    (experiments/predict_mnist1d.md). `run_imp` also stops an adaptive schedule when
    successive levels stop being linearly connected."""

    def __init__(self, estimator: str = "gaussian_width", *, safety: float = 1.0,
                 floor: float = 0.05, cap: float = 0.9, examples: int = 1000,
                 grid_step: float = 0.01, keep_dense: Sequence[str] = (),
                 epsilon: float | None = None, dataset: Dataset | None = None):
        check_name("estimator", estimator, ESTIMATORS)
        if not 0 < safety <= 1 or not 0 < floor < cap < 1:
            raise ConfigError("need 0 < safety <= 1 and 0 < floor < cap < 1")
        self.estimator, self.safety, self.floor, self.cap = estimator, safety, floor, cap
        self.examples, self.keep_dense, self.dataset = examples, tuple(keep_dense), dataset
        from lmc.predict import ratio_grid

        self.grid = ratio_grid(grid_step)
        self.epsilon = epsilon
        self.predictions: list[dict[str, Any]] = []

    def __call__(self, level: int, checkpoint: str) -> float | None:
        from lmc.predict import prune_ratio_record

        record = prune_ratio_record(checkpoint, grid=self.grid, examples=self.examples,
                                    keep_dense=self.keep_dense, with_random=False,
                                    epsilon=self.epsilon, dataset=self.dataset)
        self.epsilon = record["epsilon"]
        safe = record["criteria"]["magnitude"]["safe"][self.estimator]["interpolated"]
        fraction = min(self.safety * safe, self.cap)
        self.predictions.append({
            "level": level, "checkpoint": checkpoint, "safe_ratio": safe,
            "fraction": fraction, "lambda_max": record["lambda_max"],
            "trace": record["trace"], "epsilon": record["epsilon"],
            "seconds": record["seconds"]})
        return None if fraction < self.floor else fraction


def _level_record(run: Run, level: int, mask: Any, seconds: float | None) -> dict[str, Any]:
    final = run.result()["final"]
    return {
        "level": level, "run_id": run.spec.run_id, "mask_id": run.spec.mask,
        "density": prune.density(mask), "test_accuracy": final["test_accuracy"],
        "train_accuracy": final["train_accuracy"], "test_loss": final["test_loss"],
        "train_loss": final["train_loss"], "checkpoint": str(final_checkpoint(run)),
        "train_seconds": seconds,
    }


def run_imp(
    config: TrainConfig,
    *,
    levels: int | None = None,
    target_density: float | None = None,
    fraction: float | Callable[[int, str], float | None] = 0.2,
    rewind: str | int = 0,
    criterion: str = "magnitude",
    keep_dense: Sequence[str] = (),
    baselines: Sequence[str] = (),
    successive_barriers: bool = True,
    tolerance: float = 0.01,
    alphas: int = 11,
    examples: int = 1000,
    root: str | Path | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """IMP with rewinding to step `rewind`, and the `baselines` on the same schedule.

    `fraction`: of the live weights pruned per level, or a function (level, checkpoint path
    of the level before) -> fraction or None to stop, e.g. `AdaptiveFraction`; baselines
    then prune by IMP's fractions. `levels` or `target_density` sets the length (an
    adaptive schedule may stop earlier). `keep_dense`: top-level parameter names never
    pruned (e.g. "output").
    `examples`: training examples the data-dependent criteria (SNIP, GraSP) score on.
    A level is matching when its test accuracy is at least the dense one minus `tolerance`.
    Returns a JSON-ready record (kind "imp").
    """
    check_name("pruning criterion", criterion, prune.CRITERIA, "pruning criteria")
    for b in baselines:
        check_name("baseline", b, METHODS[1:])
    if (levels is None) == (target_density is None):
        raise ConfigError("give either the number of levels or a target density")
    if not callable(fraction) and not 0 < fraction < 1:
        raise ConfigError(f"pruning fraction must be in (0, 1), got {fraction}")
    # With a target, levels run until the density (over all prunable weights, so layers
    # kept dense slow it down) reaches it.
    expected = levels if levels is not None else (
        None if callable(fraction) else levels_for(fraction, target_density))
    levels = MAX_LEVELS if levels is None else levels
    if levels < 1:
        raise ConfigError(f"IMP needs at least one level, got {levels}")

    dataset = dataset or load_dataset(config.dataset, data_dir)
    k = Duration.parse(rewind).steps(steps_per_epoch(dataset.num_train, config.batch_size))
    if k >= config.total_steps(steps_per_epoch(dataset.num_train, config.batch_size)):
        raise ConfigError(f"rewind step {k} is not before the end of training")
    start = time.perf_counter()
    trunk = train_run(RunSpec(config), root, dataset=dataset, save_at=[k], progress=progress)
    trunk_ckpt = load_checkpoint(final_checkpoint(trunk))
    prune.density(prune.dense_mask(trunk_ckpt.params), keep_dense)  # fails on no prunable
    pruner = _Pruner(config, dataset, criterion, keep_dense, examples)
    dense = _level_record(trunk, 0, prune.dense_mask(trunk_ckpt.params),
                          time.perf_counter() - start)

    def train_level(mask: Any, reinit: int | None = None) -> tuple[Run, float | None]:
        spec = RunSpec(config, parent=trunk.spec.run_id, start_step=k, mask=mask_id(mask),
                       reinit=reinit)
        run = Run(trunk.root, spec)
        if run.finished:
            return run, None
        t = time.perf_counter()
        train_runs([spec], trunk.root, dataset=dataset, mask=mask, progress=progress)
        return run, time.perf_counter() - t

    methods = ["imp", *[b for b in baselines if b not in FROM_IMP]]
    lines: dict[str, list[dict[str, Any]]] = {m: [dense] for m in (*methods, *baselines)}
    imp_masks, imp_fractions = [], []
    bar = tqdm(total=expected, desc="IMP levels", disable=not progress)
    for method in methods:
        ckpt, density, path = trunk_ckpt, 1.0, dense["checkpoint"]
        for level in range(1, levels + 1):
            if target_density is not None and density <= target_density:
                break
            if not callable(fraction):
                f = fraction
            elif method == "imp":
                f = fraction(level, path)
            else:  # baselines follow IMP's schedule
                f = imp_fractions[level - 1] if level <= len(imp_fractions) else None
            if f is None:
                break
            mask = pruner.next_mask(ckpt, f, method, level)
            run, seconds = train_level(mask)
            record = _level_record(run, level, mask, seconds)
            record["fraction"] = f
            if method == "imp":
                imp_masks.append(mask)
                imp_fractions.append(f)
                if successive_barriers or callable(fraction):
                    record["successive_barrier"] = _barrier(lines[method][-1]["checkpoint"],
                                                            record["checkpoint"], alphas, dataset)
            lines[method].append(record)
            if method == "imp" and callable(fraction) and (
                    record["successive_barrier"]["error"] > STABILITY_THRESHOLD):
                break  # the levels are no longer linearly connected: the valley is left
            path, density = record["checkpoint"], record["density"]
            ckpt = load_checkpoint(path)
            if method == "imp":
                bar.update()
                bar.set_postfix(density=f"{density:.3f}", acc=f"{record['test_accuracy']:.3f}")
    bar.close()
    for method in (b for b in baselines if b in FROM_IMP):
        for level, imp_mask in enumerate(imp_masks, start=1):
            key = _method_key(config, method, level)
            if method == "shuffle":
                mask = prune.shuffle_mask(imp_mask, key, keep_dense=keep_dense)
                run, seconds = train_level(mask)
            else:
                mask = imp_mask
                run, seconds = train_level(mask, reinit=int(jax.random.randint(
                    key, (), 0, 2**31 - 1)))
            lines[method].append(_level_record(run, level, mask, seconds))

    dense_accuracy = dense["test_accuracy"]
    summary = {}
    for method, recs in lines.items():
        for r in recs:
            r["matching"] = r["test_accuracy"] >= dense_accuracy - tolerance
        # The sparsest matching level, and the sparsest before the first that is not
        # (a single noisy level can fall out of the band and come back).
        unbroken = next((i for i, r in enumerate(recs) if not r["matching"]), len(recs))
        summary[method] = {
            "min_matching_density": min(r["density"] for r in recs if r["matching"]),
            "min_density_matching_throughout": recs[unbroken - 1]["density"],
            "levels": len(recs) - 1}
    adaptive = getattr(fraction, "predictions", None)
    predicted = None
    if adaptive:  # SPEC §5: 1 − Π(1 − p_used) over the levels that stayed connected
        connected = [lv for lv in lines["imp"][1:]
                     if lv["successive_barrier"]["error"] <= STABILITY_THRESHOLD]
        predicted = 1 - (connected[-1]["density"] if connected else 1.0)
    return {
        "kind": "imp", "config": config.to_dict(), "trunk": trunk.spec.run_id,
        "rewind_step": k, "criterion": criterion, "keep_dense": list(keep_dense),
        "fraction": None if callable(fraction) else fraction,
        "adaptive": callable(fraction), "tolerance": tolerance,
        "dense_test_accuracy": dense_accuracy, "methods": lines, "summary": summary,
        "adaptive_predictions": adaptive, "predicted_max_sparsity": predicted,
        "seconds": time.perf_counter() - start,
    }


def _barrier(a: str, b: str, alphas: int, dataset: Dataset) -> dict[str, float]:
    """Test error barrier (mean definition) between two levels' solutions, and the loss."""
    record = interpolate_checkpoints(a, b, alphas=alphas, splits=("test",), dataset=dataset)
    barriers = record["barriers"]["test"]
    return {"error": barriers["error"]["mean"], "loss": barriers["loss"]["mean"]}
