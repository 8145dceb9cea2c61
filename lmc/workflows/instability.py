"""Sibling runs and instability analysis (Frankle, Dziugaite, Roy & Carbin, ICML 2020).

Children spawned from a parent's checkpoint at step k share everything (weights,
optimizer state, schedule position) but SGD noise: the data order and augmentation.
Instability is the test error barrier between them after training; a network is
stable at k when it is below 2 percentage points. With `align`, every pair is also
interpolated after permuting one child to match the other (weight or activation
matching, Ainsworth et al. 2022): instability modulo permutation symmetry.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lmc.constants import STABILITY_THRESHOLD
from lmc.core.interpolate import METRICS
from lmc.core.masks import density
from lmc.core.policy import ExecutionPolicy
from lmc.errors import ConfigError, check_name
from lmc.training.config import Duration, TrainConfig
from lmc.training.data import Dataset, load_dataset, steps_per_epoch
from lmc.training.runs import Run, RunSpec, ensure_checkpoint, mask_id, train_run, train_runs
from lmc.workflows.alignment import METHODS as ALIGN_METHODS
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.records import InstabilityRecord, InterpolationRecord


def spawn(
    parent: Run,
    step: int,
    children: int = 2,
    *,
    mask: Any = None,
    dataset: Dataset | None = None,
    policy: ExecutionPolicy | None = None,
    progress: bool = True,
    data_dir: str | None = None,
) -> list[Run]:
    """Train `children` siblings from `parent`'s checkpoint at `step` (together, on the
    sibling axis). They inherit the parent's mask unless `mask` prunes the parent's
    weights for them (the sparse analysis)."""
    if children < 1:
        raise ConfigError(f"spawn needs at least one child, got {children}")
    ensure_checkpoint(parent, step, dataset=dataset, data_dir=data_dir, progress=progress)
    if mask is None:
        mask = parent.load(step).mask
    specs = [RunSpec(parent.spec.config, parent=parent.spec.run_id, start_step=step, sibling=i,
                     mask=None if mask is None else mask_id(mask)) for i in range(children)]
    return train_runs(specs, parent.root, dataset=dataset, mask=mask, policy=policy,
                      progress=progress, data_dir=data_dir)


def pairwise_interpolations(runs: Sequence[Run], *, align: str | None = None,
                            **kwargs) -> list[InterpolationRecord]:
    """Interpolation records between the final checkpoints of every pair of runs; with
    `align` ("weight" or "activation") each record also holds the pair with the second
    run permuted to match the first (its `aligned` field)."""
    if align is not None:
        check_name("alignment method", align, ALIGN_METHODS)
    return [interpolate_checkpoints(a.final_checkpoint(), b.final_checkpoint(), align=align,
                                    **kwargs)
            for a, b in itertools.combinations(runs, 2)]


def _summary(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size)}


def instability_analysis(
    config: TrainConfig,
    spawn_steps: Sequence[str | int],
    *,
    children: int = 2,
    replicates: int = 1,
    root: str | Path | None = None,
    alphas: int = 25,
    splits: tuple[str, ...] = ("test", "train"),
    threshold: float = STABILITY_THRESHOLD,
    mask: Any = None,
    dataset: Dataset | None = None,
    progress: bool = True,
    data_dir: str | None = None,
    align: str | None = None,
) -> InstabilityRecord:
    """Instability (test error barrier between children) against the spawn step k.

    Trains (or reuses) `replicates` parents (seeds `config.seed + r`), spawns `children`
    at every k and interpolates between every pair; reports the mean and spread over
    parents and pairs. With `mask`, the children train the pruned network `m ⊙ w_k`.
    With `align` ("weight" or "activation", `lmc.workflows.alignment.METHODS`), every pair
    is also interpolated after permuting the second child to match the first (Ainsworth et
    al. 2022); each pair then has an `aligned` field and each point an
    `aligned_error_barrier` summary beside `error_barrier`.
    """
    if align is not None:
        check_name("alignment method", align, ALIGN_METHODS)
    if "test" not in splits:
        raise ConfigError("instability is measured on the test split; include 'test' in splits")
    if children < 2:
        raise ConfigError(f"instability needs at least 2 children, got {children}")
    dataset = dataset or load_dataset(config.dataset, data_dir)
    spe = steps_per_epoch(config.examples_per_epoch(dataset.num_train), config.batch_size)
    steps = sorted({Duration.parse(s).steps(spe) for s in spawn_steps})
    if not steps:
        raise ConfigError("give at least one spawn step")
    if steps[-1] >= config.total_steps(spe):
        raise ConfigError(f"spawn step {steps[-1]} is not before the end of training "
                          f"({config.total_steps(spe)} steps)")
    parents = [train_run(RunSpec(config.replace(seed=config.seed + r)), root, dataset=dataset,
                         save_at=steps, progress=progress) for r in range(replicates)]
    points = []
    for k in tqdm(steps, desc="spawn steps", disable=not progress, leave=False):
        pairs, accuracies = [], []
        for parent in parents:
            kids = spawn(parent, k, children, mask=mask, dataset=dataset, progress=progress)
            accuracies += [kid.result()["final"]["test_accuracy"] for kid in kids]
            for record in pairwise_interpolations(kids, alphas=alphas, splits=splits,
                                                  dataset=dataset, align=align):
                pair = record.to_json()
                del pair["kind"], pair["schema_version"]
                pair["parent"] = parent.spec.run_id
                pairs.append(pair)
        point = {
            "step": k,
            "error_barrier": _summary([p["barriers"]["test"]["error"]["mean"] for p in pairs]),
        }
        if align is not None:
            point["aligned_error_barrier"] = _summary(
                [p["aligned"]["barriers"]["test"]["error"]["mean"] for p in pairs])
        point.update({
            "child_test_accuracy": _summary(accuracies),
            "mean_curves": {s: {m: np.mean([p["curves"][s][m] for p in pairs], 0).tolist()
                                for m in METRICS} for s in splits},
            "pairs": pairs,
        })
        points.append(point)
    return InstabilityRecord(
        config=config.to_dict(), parents=[p.spec.run_id for p in parents], children=children,
        replicates=replicates, sparse=mask is not None,
        density=None if mask is None else density(mask), threshold=threshold,
        alphas=points[0]["pairs"][0]["alphas"],
        dense_test_accuracy=float(np.mean([p.result()["final"]["test_accuracy"]
                                           for p in parents])),
        points=points, align=align)

