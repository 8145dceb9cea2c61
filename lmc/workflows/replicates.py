"""Replicates: a workflow run once per seed, and the spread over seeds.

A claim about a loss landscape (a level is matching, a spawn step is stable) is a claim
about the training recipe, so it should hold over seeds. Every seed runs the existing
workflow (`run_imp`, `instability_analysis`) with `config.seed` replaced (streams given
their own seed stay fixed); the run store reuses finished runs, so adding a seed trains
only that seed. The seed is the independent unit: each contributes one number per level or
spawn step (for instability its mean over pairs), and every quantity is reported as an
`estimate`: the mean, the 95% Student-t interval mean ± t_{0.975, n−1} s/√n, the sample
standard deviation s (ddof 1), n and every seed's value.

IMP's matching tolerance is the measured seed-to-seed spread, 2 s of the dense test
accuracy, unless one is given: a level is matching when its seed-mean test accuracy is at
least the seed-mean dense accuracy minus the tolerance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmc.errors import ConfigError, LmcError
from lmc.training.config import TrainConfig
from lmc.training.data import Dataset, load_dataset
from lmc.workflows.imp import ImpSettings, run_imp
from lmc.workflows.instability import instability_analysis
from lmc.workflows.records import (
    ImpRecord,
    ImpReplicatesRecord,
    InstabilityRecord,
    InstabilityReplicatesRecord,
)

CONFIDENCE = 0.95
TOLERANCE_STDS = 2.0  # measured matching tolerance: this many seed stds of the dense accuracy
# The error barriers reported side by side: the mean definition (Frankle et al. 2020), the
# chord definition (Entezari et al. 2022) and the mean definition's floor ½|E(0) − E(1)|.
BARRIER_KEYS = ("error", "error_chord", "floor")

# t_{0.975, df}, the two-sided 95% critical values of Student's t for df = 1..30, to four
# decimals as in the standard tables (e.g. NIST/SEMATECH e-Handbook of Statistical Methods,
# §1.3.6.7.2, to three); the tests check every entry by integrating the t density.
T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
Z_975 = 1.959963984540054  # the standard normal's 0.975 quantile


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile with `df` degrees of freedom: the table for df <= 30, the
    Cornish-Fisher expansion in 1/df beyond (Abramowitz & Stegun 26.7.5; error < 1e-5
    there)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    g = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96,
         (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


def estimate(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "interval": [low, high], "std", "n", "values"} of independent replicates
    (one value per seed): the 95% Student-t interval of the mean and the sample standard
    deviation (ddof 1); both None for a single value."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"an estimate needs a non-empty list of numbers, got shape {v.shape}")
    mean, n = float(v.mean()), int(v.size)
    if n == 1:
        return {"mean": mean, "interval": None, "std": None, "n": n, "values": v.tolist()}
    std = float(v.std(ddof=1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return {"mean": mean, "interval": [mean - half, mean + half], "std": std, "n": n,
            "values": v.tolist()}


def bounds(est: dict[str, Any]) -> tuple[float, float]:
    """(low, high) of an estimate's interval; the mean twice for a single seed."""
    interval = est.get("interval")
    return (est["mean"], est["mean"]) if interval is None else tuple(interval)


def _seeds(seeds: Sequence[int]) -> list[int]:
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"replicates need at least two distinct seeds, got {seeds}")
    return seeds


def seed_range(config: TrainConfig, count: int) -> list[int]:
    """The seeds of `--seeds count`: config.seed, config.seed + 1, ..."""
    if count < 1:
        raise ConfigError(f"--seeds must be at least 1, got {count}")
    return list(range(config.seed, config.seed + count))


# ----------------------------------------------------------------------------- IMP


def matching_tolerance(dense_accuracies: Sequence[float],
                       given: float | None = None) -> dict[str, Any]:
    """{"value", "source", "factor", "dense_std", "n"}: `given` ("given"), else
    TOLERANCE_STDS × the sample std (ddof 1) of the dense test accuracy over seeds
    ("measured")."""
    spread = estimate(dense_accuracies)
    if given is None and spread["std"] is None:
        raise ConfigError("a tolerance measured from the seeds needs at least two seeds")
    value = TOLERANCE_STDS * spread["std"] if given is None else float(given)
    return {"value": value, "source": "measured" if given is None else "given",
            "factor": TOLERANCE_STDS, "dense_std": spread["std"], "n": spread["n"]}


def _sparsest(levels: Sequence[tuple[int, float, bool]]) -> dict[str, Any]:
    """The sparsest matching level of (level, density, matching) triples."""
    matching = [(d, lv) for lv, d, m in levels if m]
    density, level = min(matching) if matching else (None, None)
    return {"min_matching_density": density, "min_matching_level": level}


def aggregate_imp(records: Sequence[ImpRecord], seeds: Sequence[int],
                  tolerance: float | None = None) -> ImpReplicatesRecord:
    """The seed-to-seed summary of one IMP schedule run once per seed (levels matched by
    index: a fixed pruning ratio gives every seed the same densities)."""
    seeds = _seeds(seeds)
    if len(records) != len(seeds):
        raise ConfigError(f"{len(records)} records for {len(seeds)} seeds")
    dense = [float(r.dense_test_accuracy) for r in records]
    tol = matching_tolerance(dense, tolerance)
    dense_mean = float(np.mean(dense))
    methods, summary = {}, {}
    for name in records[0].methods:
        lines = [r.methods.get(name, []) for r in records]
        levels = []
        for i in range(min(len(line) for line in lines)):
            at = [line[i] for line in lines]
            densities = [float(lv["density"]) for lv in at]
            if max(densities) - min(densities) > 1e-9:
                raise LmcError(f"level {i} of {name} has densities {densities} over the seeds: "
                               "replicates need one fixed-ratio schedule")
            accuracy = estimate([lv["test_accuracy"] for lv in at])
            level = {"level": i, "density": densities[0], "test_accuracy": accuracy,
                     "train_accuracy": estimate([lv["train_accuracy"] for lv in at]),
                     "matching": accuracy["mean"] >= dense_mean - tol["value"]}
            barriers = [lv.get("successive_barrier") for lv in at]
            if all(barriers):
                level["successive_barrier"] = {
                    key: estimate([b[key] for b in barriers]) for key in BARRIER_KEYS
                    if all(key in b for b in barriers)}
            levels.append(level)
        methods[name] = levels
        per_seed = [{"seed": seed, **_sparsest(
            [(lv["level"], lv["density"],
              lv["test_accuracy"] >= r.dense_test_accuracy - tol["value"])
             for lv in line[:len(levels)]])} for seed, r, line in zip(seeds, records, lines,
                                                                     strict=True)]
        summary[name] = {**_sparsest([(lv["level"], lv["density"], lv["matching"])
                                      for lv in levels]),
                         "levels": len(levels) - 1, "per_seed": per_seed}
    first = records[0]
    return ImpReplicatesRecord(
        config=first.config, seeds=seeds, rewind_step=first.rewind_step,
        criterion=first.criterion, fraction=first.fraction, confidence=CONFIDENCE,
        tolerance=tol, dense_test_accuracy=estimate(dense), methods=methods, summary=summary,
        records=[r.to_json() for r in records])


def replicate_imp(
    config: TrainConfig,
    settings: ImpSettings | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    tolerance: float | None = None,
    root: str | Path | None = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    data_dir: str | None = None,
    **fields: Any,
) -> ImpReplicatesRecord:
    """`run_imp` once per seed (`config` with `seed` replaced) and the summary over seeds
    (`aggregate_imp`). `tolerance` None: matching is judged against the measured spread of
    the dense accuracy; given, it is every seed's tolerance too."""
    settings = ImpSettings(**fields) if settings is None else dataclasses.replace(settings,
                                                                                   **fields)
    if settings.adaptive:
        raise ConfigError("replicates need one fixed pruning ratio: an adaptive schedule "
                          "gives every seed other densities")
    if tolerance is not None:
        settings = dataclasses.replace(settings, tolerance=tolerance)
    seeds = _seeds(seeds)
    dataset = dataset or load_dataset(config.dataset, data_dir)
    records = [run_imp(config.replace(seed=s), settings, root=root, dataset=dataset,
                       progress=progress) for s in seeds]
    return aggregate_imp(records, seeds, tolerance)


# ----------------------------------------------------------------------------- instability


def _floor(pair: dict[str, Any]) -> float:
    ends = pair["curves"]["test"]["error"]
    return 0.5 * abs(ends[0] - ends[-1])


# barrier key -> its value on one pair (an interpolation JSON, or its "aligned" part)
PAIR_BARRIERS: dict[str, Callable[[dict[str, Any]], float]] = {
    "error": lambda p: p["barriers"]["test"]["error"]["mean"],
    "error_chord": lambda p: p["barriers"]["test"]["error"]["chord"],
    "floor": _floor,
}


def aggregate_instability(records: Sequence[InstabilityRecord],
                          seeds: Sequence[int]) -> InstabilityReplicatesRecord:
    """The seed-to-seed summary of one instability analysis run once per seed: per spawn
    step, each seed's mean over its pairs, then an estimate over seeds."""
    seeds = _seeds(seeds)
    if len(records) != len(seeds):
        raise ConfigError(f"{len(records)} records for {len(seeds)} seeds")
    steps = [[int(p["step"]) for p in r.points] for r in records]
    if any(s != steps[0] for s in steps):
        raise LmcError(f"the seeds' instability records have other spawn steps: {steps}")
    align = records[0].align
    points = []
    for i, step in enumerate(steps[0]):
        pairs = [r.points[i]["pairs"] for r in records]

        def over_seeds(value: Callable[[dict[str, Any]], float], pairs=pairs) -> dict:
            return estimate([np.mean([value(p) for p in ps]) for ps in pairs])

        point = {"step": step,
                 "barrier": {k: over_seeds(f) for k, f in PAIR_BARRIERS.items()},
                 "child_test_accuracy": estimate(
                     [r.points[i]["child_test_accuracy"]["mean"] for r in records])}
        if align is not None:
            point["aligned_barrier"] = {k: over_seeds(lambda p, f=f: f(p["aligned"]))
                                        for k, f in PAIR_BARRIERS.items()}
        points.append(point)
    first = records[0]
    return InstabilityReplicatesRecord(
        config=first.config, seeds=seeds, children=first.children, sparse=first.sparse,
        density=first.density, threshold=first.threshold, confidence=CONFIDENCE,
        dense_test_accuracy=estimate([r.dense_test_accuracy for r in records]),
        points=points, records=[r.to_json() for r in records], align=align)


def replicate_instability(
    config: TrainConfig,
    spawn_steps: Sequence[str | int],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    **kwargs: Any,
) -> InstabilityReplicatesRecord:
    """`instability_analysis` once per seed (one parent each, `config` with `seed`
    replaced) and the summary over seeds (`aggregate_instability`); `kwargs` are
    `instability_analysis`'s (children, root, alphas, splits, threshold, mask, align,
    progress)."""
    if kwargs.get("replicates", 1) != 1:
        raise ConfigError("replicates over seeds give each seed one parent: drop replicates "
                          "(--replicates), whose parents seed, seed+1, ... would overlap the "
                          "other seeds")
    kwargs.pop("replicates", None)
    seeds = _seeds(seeds)
    dataset = dataset or load_dataset(config.dataset, data_dir)
    records = [instability_analysis(config.replace(seed=s), spawn_steps, dataset=dataset,
                                    **kwargs) for s in seeds]
    return aggregate_instability(records, seeds)


__all__ = ["CONFIDENCE", "TOLERANCE_STDS", "aggregate_imp", "aggregate_instability",
           "bounds", "estimate", "matching_tolerance", "replicate_imp", "replicate_instability",
           "seed_range", "t_quantile_975"]
