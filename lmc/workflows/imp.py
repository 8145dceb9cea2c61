"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020),
its baselines, and the error barrier between successive levels (Paul et al. 2023).

    trunk: train the dense network from its initialisation; w_k is its checkpoint at k
    level L >= 1: m_L = prune(w_T^{L-1}, m_{L-1}, fraction); train m_L ⊙ w_k from step k

Level 0 is the trunk itself. Every level is a child run of the trunk in the run store
(parent = trunk, start step = k, mask = m_L), so a level that exists is reused, an
interrupted level resumes where it stopped, and a longer IMP run reuses a shorter one's
levels: masks are a deterministic function of the previous level's weights and of seeds.

Methods are registered strategies (`METHODS`, one small class each, as open_lth's
branches): IMP itself, and the baselines random pruning, inverted scores (both pruned
level by level on their own line), and IMP's masks shuffled within each layer or with
re-initialised survivors (both derived from IMP's mask of each level).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import jax
from tqdm.auto import tqdm

from lmc.constants import MATCHING_TOLERANCE, STABILITY_THRESHOLD
from lmc.core import masks
from lmc.core import prune as pruning
from lmc.errors import ConfigError, check_name
from lmc.training.config import Duration, TrainConfig
from lmc.training.data import Dataset, load_dataset, steps_per_epoch
from lmc.training.runs import Run, RunSpec, ensure_checkpoint, mask_id, train_run, train_runs
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.opened import OpenedCheckpoint, open_checkpoint
from lmc.workflows.records import ImpRecord

MAX_LEVELS = 100  # of a schedule that runs until a target density


def levels_for(fraction: float, target_density: float) -> int:
    """Levels of pruning `fraction` of the live weights needed to reach `target_density`
    (each level keeps ceil-rounded counts, so the density reached is at most the target)."""
    if not 0 < target_density < 1:
        raise ConfigError(f"target density must be in (0, 1), got {target_density}")
    return math.ceil(math.log(target_density) / math.log(1 - fraction) - 1e-9)


# ----------------------------------------------------------------------------- methods


@dataclasses.dataclass(frozen=True)
class LevelContext:
    """What a method sees when it makes the mask of one level."""

    config: TrainConfig
    criterion: str
    keep_dense: tuple[str, ...]
    examples: int  # training examples the data-dependent criteria score on

    def key(self, method: Method, level: int) -> jax.Array:
        """The key of a method's randomness at a level: reproducible, distinct per method."""
        key = jax.random.fold_in(jax.random.key(self.config.seed), method.stream)
        return jax.random.fold_in(key, level)


class Method:
    """A pruning method: one line of the IMP figures.

    A method either prunes its own previous level (`from_imp` False: `next_mask`) or
    derives each level from IMP's mask of that level (`from_imp` True: `derive`). `stream`
    is folded into the seed of its randomness and must be unique among the methods.
    """

    name: ClassVar[str]
    stream: ClassVar[int]
    from_imp: ClassVar[bool] = False

    def next_mask(self, ctx: LevelContext, previous: OpenedCheckpoint, fraction: float,
                  level: int) -> Any:
        raise NotImplementedError

    def derive(self, ctx: LevelContext, imp_mask: Any, level: int) -> tuple[Any, int | None]:
        """(mask, seed of a fresh initialisation or None) of a level from IMP's mask."""
        raise NotImplementedError


def _prune(ctx: LevelContext, method: Method, previous: OpenedCheckpoint, fraction: float,
           level: int, criterion: str, invert: bool = False) -> Any:
    inputs = previous.criterion_inputs(criterion, examples=ctx.examples,
                                       key=ctx.key(method, level))
    return pruning.prune(previous.params, previous.mask, fraction, criterion,
                         keep_dense=ctx.keep_dense, invert=invert, **inputs)


class Imp(Method):
    """Prune the lowest-scoring live weights by the criterion (magnitude by default)."""

    name, stream = "imp", 1

    def next_mask(self, ctx, previous, fraction, level):
        return _prune(ctx, self, previous, fraction, level, ctx.criterion)


class RandomPruning(Method):
    """Prune live weights uniformly at random, level by level (the same densities)."""

    name, stream = "random", 2

    def next_mask(self, ctx, previous, fraction, level):
        return _prune(ctx, self, previous, fraction, level, "random")


class InvertedScores(Method):
    """IMP with inverted scores: prune the largest weights."""

    name, stream = "invert", 3

    def next_mask(self, ctx, previous, fraction, level):
        return _prune(ctx, self, previous, fraction, level, ctx.criterion, invert=True)


class ShuffledMask(Method):
    """IMP's mask of each level shuffled within each layer (the same per-layer density)."""

    name, stream, from_imp = "shuffle", 4, True

    def derive(self, ctx, imp_mask, level):
        return masks.shuffle_mask(imp_mask, ctx.key(self, level), ctx.keep_dense), None


class Reinitialised(Method):
    """IMP's mask of each level with the survivors drawn afresh from the initialisation."""

    name, stream, from_imp = "reinit", 5, True

    def derive(self, ctx, imp_mask, level):
        return imp_mask, int(jax.random.randint(ctx.key(self, level), (), 0, 2**31 - 1))


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a pruning method (a baseline) under its name."""
    if method.name in METHODS or any(m.stream == method.stream for m in METHODS.values()):
        raise ConfigError(f"a method named {method.name!r} or with stream {method.stream} "
                          "is registered already")
    METHODS[method.name] = method
    return method


for _method in (Imp(), RandomPruning(), InvertedScores(), ShuffledMask(), Reinitialised()):
    register(_method)


def baselines() -> tuple[str, ...]:
    """The registered baselines (every method but IMP)."""
    return tuple(name for name in METHODS if name != "imp")


# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class ImpSettings:
    """How IMP runs, apart from the training config.

    levels or target_density: the length (an adaptive schedule may stop earlier).
    fraction: of the live weights pruned per level, or a function (level, checkpoint
        path of the level before) -> fraction or None to stop, e.g. `AdaptiveFraction`;
        baselines then prune by IMP's fractions.
    rewind: the rewind step k (`0it` is the original lottery ticket).
    criterion: IMP's pruning criterion (`lmc.core.prune.CRITERIA`).
    keep_dense: layers (path prefixes) never pruned, e.g. "output".
    baselines: registered methods run on IMP's schedule.
    successive_barriers: measure the error barrier between successive IMP levels.
    tolerance: a level is matching when its test accuracy is at least the dense one minus
        this.
    alphas: interpolation points of the successive-level barriers.
    examples: training examples the data-dependent criteria (SNIP, GraSP) score on.
    """

    levels: int | None = None
    target_density: float | None = None
    fraction: float | Callable[[int, str], float | None] = 0.2
    rewind: str | int = 0
    criterion: str = "magnitude"
    keep_dense: tuple[str, ...] = ()
    baselines: tuple[str, ...] = ()
    successive_barriers: bool = True
    tolerance: float = MATCHING_TOLERANCE
    alphas: int = 11
    examples: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_dense", masks.keep_dense_names(self.keep_dense))
        object.__setattr__(self, "baselines", tuple(self.baselines))
        check_name("pruning criterion", self.criterion, pruning.CRITERIA, "pruning criteria")
        for b in self.baselines:
            check_name("baseline", b, baselines())
        if (self.levels is None) == (self.target_density is None):
            raise ConfigError("give either the number of levels or a target density")
        if not self.adaptive and not 0 < self.fraction < 1:
            raise ConfigError(f"pruning fraction must be in (0, 1), got {self.fraction}")
        if self.levels is not None and self.levels < 1:
            raise ConfigError(f"IMP needs at least one level, got {self.levels}")

    @property
    def adaptive(self) -> bool:
        return callable(self.fraction)

    def expected_levels(self) -> int | None:
        """Levels the schedule will run, when known in advance (for the progress bar)."""
        if self.levels is not None:
            return self.levels
        return None if self.adaptive else levels_for(self.fraction, self.target_density)


# ----------------------------------------------------------------------------- IMP


def _level_record(run: Run, level: int, mask: Any, seconds: float | None) -> dict[str, Any]:
    final = run.result()["final"]
    return {
        "level": level, "run_id": run.spec.run_id, "mask_id": run.spec.mask,
        "density": masks.density(mask), "test_accuracy": final["test_accuracy"],
        "train_accuracy": final["train_accuracy"], "test_loss": final["test_loss"],
        "train_loss": final["train_loss"], "checkpoint": str(run.final_checkpoint()),
        "train_seconds": seconds,
    }


def _barrier(a: str, b: str, alphas: int, dataset: Dataset) -> dict[str, float]:
    """Barriers between two levels' solutions: test error by the mean (Frankle et al. 2020;
    "error") and chord (Entezari et al. 2022; "error_chord") definitions, the mean
    definition's floor ½|E(0) − E(1)| (it is never below it: when accuracy drops, the
    mean barrier rises by definition), and the test and train loss barriers (chord)."""
    record = interpolate_checkpoints(a, b, alphas=alphas, splits=("test", "train"),
                                     dataset=dataset)
    test, train = record.barriers["test"], record.barriers["train"]
    ends = record.curves["test"]["error"]
    return {"error": test["error"]["mean"], "error_chord": test["error"]["chord"],
            "floor": 0.5 * abs(ends[0] - ends[-1]), "loss": test["loss"]["mean"],
            "train_loss": train["loss"]["chord"]}


def connection_barrier(barrier: dict[str, float]) -> float:
    """The barrier that decides whether two levels are linearly connected: the chord test
    error barrier (free of the mean definition's floor), the mean one in records written
    before it was measured."""
    return barrier.get("error_chord", barrier["error"])


def run_imp(
    config: TrainConfig,
    settings: ImpSettings | None = None,
    *,
    root: str | Path | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    data_dir: str | None = None,
    rewind_from: Run | None = None,
    **fields: Any,
) -> ImpRecord:
    """IMP with rewinding and the baselines of `settings` (or of `ImpSettings(**fields)`)
    on the same schedule; every level a run in the store under `root`.

    `rewind_from`: the run whose checkpoint at the rewind step k every level starts from,
    instead of the dense run of `config` itself; the dense level then trains from it too.
    Lottery tickets on a data diet (Paul, Larsen et al. 2022) rewind to a network
    pre-trained for k steps on a subset (a run whose config has a `subset`), and train
    every level on the full data (`config`)."""
    if settings is None:
        settings = ImpSettings(**fields)
    elif fields:
        settings = dataclasses.replace(settings, **fields)
    s = settings
    levels = MAX_LEVELS if s.levels is None else s.levels
    dataset = dataset or load_dataset(config.dataset, data_dir)
    spe = steps_per_epoch(config.examples_per_epoch(dataset.num_train), config.batch_size)
    k = Duration.parse(s.rewind).steps(spe)
    if k >= config.total_steps(spe):
        raise ConfigError(f"rewind step {k} is not before the end of training")
    start = time.perf_counter()
    if rewind_from is None:
        source = trunk = train_run(RunSpec(config), root, dataset=dataset, save_at=[k],
                                   progress=progress)
    else:
        source = rewind_from
    # A source finished earlier without a checkpoint at k (another rewind step) gets one;
    # one never trained is trained.
    ensure_checkpoint(source, k, dataset=dataset, progress=progress)
    if rewind_from is not None:
        trunk = train_run(RunSpec(config, parent=source.spec.run_id, start_step=k),
                          source.root, dataset=dataset, progress=progress)
    trunk_ckpt = open_checkpoint(trunk.final_checkpoint(), dataset=dataset)
    dense_mask = masks.dense_mask(trunk_ckpt.params)
    masks.density(dense_mask, s.keep_dense)  # fails on no prunable weights
    ctx = LevelContext(config, s.criterion, s.keep_dense, s.examples)
    dense = _level_record(trunk, 0, dense_mask, time.perf_counter() - start)

    def train_level(mask: Any, reinit: int | None = None) -> tuple[Run, float | None]:
        spec = RunSpec(config, parent=source.spec.run_id, start_step=k, mask=mask_id(mask),
                       reinit=reinit)
        run = Run(trunk.root, spec)
        if run.finished:
            return run, None
        t = time.perf_counter()
        train_runs([spec], trunk.root, dataset=dataset, mask=mask, progress=progress)
        return run, time.perf_counter() - t

    own = [METHODS["imp"], *(METHODS[b] for b in s.baselines if not METHODS[b].from_imp)]
    lines: dict[str, list[dict[str, Any]]] = {
        m: [dense] for m in (*(m.name for m in own), *s.baselines)}
    imp_masks, imp_fractions = [], []
    bar = tqdm(total=s.expected_levels(), desc="IMP levels", disable=not progress)
    for method in own:
        is_imp = method.name == "imp"
        previous, density, path = trunk_ckpt, 1.0, dense["checkpoint"]
        for level in range(1, levels + 1):
            if s.target_density is not None and density <= s.target_density:
                break
            if not s.adaptive:
                f = s.fraction
            elif is_imp:
                f = s.fraction(level, path)
            else:  # baselines follow IMP's schedule
                f = imp_fractions[level - 1] if level <= len(imp_fractions) else None
            if f is None:
                break
            mask = method.next_mask(ctx, previous, f, level)
            run, seconds = train_level(mask)
            record = _level_record(run, level, mask, seconds)
            record["fraction"] = f
            if is_imp:
                imp_masks.append(mask)
                imp_fractions.append(f)
                if s.successive_barriers or s.adaptive:
                    record["successive_barrier"] = _barrier(
                        lines["imp"][-1]["checkpoint"], record["checkpoint"], s.alphas, dataset)
            lines[method.name].append(record)
            if is_imp and s.adaptive and (
                    connection_barrier(record["successive_barrier"]) > STABILITY_THRESHOLD):
                break  # the levels are no longer linearly connected: the valley is left
            path, density = record["checkpoint"], record["density"]
            previous = open_checkpoint(path, dataset=dataset)
            if is_imp:
                bar.update()
                bar.set_postfix(density=f"{density:.3f}", acc=f"{record['test_accuracy']:.3f}")
    bar.close()
    for method in (METHODS[b] for b in s.baselines if METHODS[b].from_imp):
        for level, imp_mask in enumerate(imp_masks, start=1):
            mask, reinit = method.derive(ctx, imp_mask, level)
            run, seconds = train_level(mask, reinit)
            lines[method.name].append(_level_record(run, level, mask, seconds))

    dense_accuracy = dense["test_accuracy"]
    summary = {}
    for method, recs in lines.items():
        for r in recs:
            r["matching"] = r["test_accuracy"] >= dense_accuracy - s.tolerance
        # The sparsest matching level, and the sparsest before the first that is not
        # (a single noisy level can fall out of the band and come back).
        unbroken = next((i for i, r in enumerate(recs) if not r["matching"]), len(recs))
        summary[method] = {
            "min_matching_density": min(r["density"] for r in recs if r["matching"]),
            "min_density_matching_throughout": recs[unbroken - 1]["density"],
            "levels": len(recs) - 1}
    adaptive = getattr(s.fraction, "predictions", None)
    predicted = None
    if adaptive:  # 1 − Π(1 − p_used) over the levels that stayed connected
        connected = [lv for lv in lines["imp"][1:]
                     if connection_barrier(lv["successive_barrier"]) <= STABILITY_THRESHOLD]
        predicted = 1 - (connected[-1]["density"] if connected else 1.0)
    return ImpRecord(
        config=config.to_dict(), trunk=trunk.spec.run_id, rewind_step=k,
        criterion=s.criterion, keep_dense=list(s.keep_dense),
        fraction=None if s.adaptive else s.fraction, adaptive=s.adaptive,
        tolerance=s.tolerance, dense_test_accuracy=dense_accuracy, methods=lines,
        summary=summary, adaptive_predictions=adaptive,
        adaptive_settings=s.fraction.settings() if hasattr(s.fraction, "settings") else None,
        predicted_max_sparsity=predicted,
        seconds=time.perf_counter() - start,
        extra={} if rewind_from is None else {"rewind_from": rewind_from.spec.run_id})


__all__ = ["METHODS", "ImpSettings", "LevelContext", "Method", "baselines",
           "connection_barrier", "levels_for", "register", "run_imp"]
