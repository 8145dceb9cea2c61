"""Per-example data scores early in training, averaged over independent runs (Paul, Ganguli
& Dziugaite, NeurIPS 2021, "Deep Learning on a Data Diet").

`data_scores(config, npz)` trains `runs` independent runs of a config (seeds seed, seed+1,
...: different initialisations and data orders; the run store reuses them, and they are the
parents `instability_analysis` trains with `replicates`), takes each at the early step
`step`, scores every training example with EL2N and GraNd (`lmc.core.scores`) and averages
over the runs. Given checkpoint files instead of a config, it scores those. It returns a
`ScoresRecord` (summaries, histograms, what was scored) and writes the per-example arrays,
atomically, to an ``.npz``:

    el2n, grand            float32 (num_train,)  mean over runs, in the data set's
                                                 training order (`Dataset.x_train`)
    el2n_std, grand_std    float32 (num_train,)  standard deviation over runs (ddof 0)
    labels                 int32   (num_train,)  the training labels, same order
    dataset                str     ()            the data set's name
    num_train              int64   ()            the number of training examples

Nothing in it needs pickle: read it with `load_scores` (or ``np.load(path,
allow_pickle=False)``). High scores mark hard or atypical examples; Paul et al. keep the
highest-scoring fraction and train on it (data pruning).

The runs are trained to the end of the config's duration, not stopped at `step`: a score at
step k belongs to the run with the full run's learning-rate schedule, as in the paper.
Independent runs differ in their config (the seed), so they train one after another; the
sibling axis of `train_runs` only batches runs of one config. Forgetting events (Toneva et
al. 2019) need every example's prediction at every step of training and are not computed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lmc.core.scores import CHUNK_SIZE, SCORES, example_scores
from lmc.errors import ConfigError, LmcError
from lmc.files import atomic_write
from lmc.training import subsets
from lmc.training.config import Duration, TrainConfig
from lmc.training.data import Dataset, load_dataset, steps_per_epoch
from lmc.training.rng import STREAMS
from lmc.training.runs import RunSpec, ensure_checkpoint, train_run
from lmc.workflows.opened import OpenedCheckpoint, check_same_network, open_checkpoint
from lmc.workflows.records import ScoresRecord

# The keys of a scores .npz (see the module docstring), in the order they are written.
ARRAYS = (*SCORES, *(f"{s}_std" for s in SCORES), "labels", "dataset", "num_train")
BINS = 50  # histogram bins per score in the record


def independent_config(config: TrainConfig, replicate: int) -> TrainConfig:
    """The config of the `replicate`-th independent run: `seed` and every seed given
    explicitly (init_seed, data_seed, ...) shifted by `replicate`, so that no stream is
    shared with another replicate."""
    changes = {f"{s}_seed": getattr(config, f"{s}_seed") + replicate for s in STREAMS
               if getattr(config, f"{s}_seed") is not None}
    return config.replace(seed=config.seed + replicate, **changes)


def save_scores(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """Write the arrays of a scores file (keys `ARRAYS`) as an uncompressed .npz,
    atomically."""
    if set(arrays) != set(ARRAYS):
        raise ConfigError(f"a scores file holds exactly {', '.join(ARRAYS)}; got "
                          f"{', '.join(sorted(arrays))}")
    ordered = {key: np.asarray(arrays[key]) for key in ARRAYS}
    return atomic_write(path, lambda f: np.savez(f, **ordered))


def load_scores(path: str | os.PathLike) -> dict[str, Any]:
    """The arrays of a scores file written by `data_scores`, read without pickle; the
    scalars "dataset" (str) and "num_train" (int) as Python values."""
    arrays = subsets.load_scores(path)
    missing = [key for key in ARRAYS if key not in arrays]
    if missing:
        raise LmcError(f"scores file {path} lacks {', '.join(missing)}")
    return arrays


def _summary(mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
    q10, median, q90 = np.quantile(mean, [0.1, 0.5, 0.9])
    return {"mean": float(mean.mean()), "std": float(mean.std()), "min": float(mean.min()),
            "max": float(mean.max()), "median": float(median), "q10": float(q10),
            "q90": float(q90), "run_std": float(std.mean())}


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ: the correlation of the ranks (ties broken by position)."""
    if a.size < 2:
        return float("nan")
    ranks = [np.argsort(np.argsort(v, kind="stable"), kind="stable") for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def _trained_checkpoints(config: TrainConfig, runs: int, step: str | int | Duration,
                         root: str | Path | None, dataset: Dataset, data_dir: str | None,
                         progress: bool) -> tuple[list[str], list[Path]]:
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"data scores need at least one run, got {runs!r}")
    spe = steps_per_epoch(config.examples_per_epoch(dataset.num_train), config.batch_size)
    k, total = Duration.parse(step).steps(spe), config.total_steps(spe)
    if k > total:
        raise ConfigError(f"score step {Duration.parse(step)} ({k} steps) is past the end of "
                          f"training ({total} steps)")
    ids, paths = [], []
    for r in range(runs):
        run = train_run(RunSpec(independent_config(config, r)), root, dataset=dataset,
                        save_at=[k], progress=progress, data_dir=data_dir)
        ids.append(run.spec.run_id)
        paths.append(ensure_checkpoint(run, k, dataset=dataset, data_dir=data_dir,
                                       progress=progress))
    return ids, paths


def _open_all(paths: Sequence[str | os.PathLike], dataset: Dataset | None,
              data_dir: str | None) -> list[OpenedCheckpoint]:
    if not paths:
        raise ConfigError("give a training config or at least one checkpoint to score")
    first = open_checkpoint(paths[0], dataset=dataset, data_dir=data_dir)
    opened = [first] + [open_checkpoint(p, dataset=first.dataset) for p in paths[1:]]
    for other in opened[1:]:
        check_same_network(first, other)
    return opened


def data_scores(
    source: TrainConfig | str | os.PathLike | Sequence[str | os.PathLike],
    npz: str | os.PathLike,
    *,
    runs: int = 4,
    step: str | int | Duration = "2ep",
    chunk_size: int = CHUNK_SIZE,
    root: str | Path | None = None,
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    progress: bool = True,
) -> ScoresRecord:
    """EL2N and GraNd of every training example, averaged over runs, written to `npz`.

    Args:
      source: a training config (trains or reuses `runs` independent runs in the run store
        `root` and scores each at `step`), or checkpoint files of one network (scored as
        they are; `runs` and `step` are then unused).
      npz: where the per-example arrays go (format: the module docstring).
      runs: independent runs (seeds seed, seed+1, ...).
      step: the early training step to score at, e.g. "2ep" or "500it".
      chunk_size: examples per per-example-gradient program (`lmc.core.scores`).

    Returns:
      A `ScoresRecord`; GraNd of a pruned checkpoint counts its live weights only.

    References:
      Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data Diet", NeurIPS.
    """
    start = time.perf_counter()
    config, ids = None, []
    if isinstance(source, TrainConfig):
        config = source
        dataset = dataset or load_dataset(config.dataset, data_dir)
        ids, paths = _trained_checkpoints(config, runs, step, root, dataset, data_dir,
                                          progress)
    else:
        paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    opened = _open_all(paths, dataset, data_dir)
    ds = opened[0].dataset
    per_run: dict[str, list[np.ndarray]] = {s: [] for s in SCORES}
    for o in tqdm(opened, desc="data scores", disable=not progress, leave=False):
        scores = example_scores(o.eval_apply, o.params, o.state, ds.x_train, ds.y_train,
                                mask=o.mask, chunk_size=chunk_size)
        for name in SCORES:
            per_run[name].append(np.asarray(scores[name], np.float32))
    arrays: dict[str, Any] = {}
    for name in SCORES:
        stacked = np.stack(per_run[name])
        arrays[name], arrays[f"{name}_std"] = stacked.mean(0), stacked.std(0)
    name = opened[0].meta["data"]["name"]
    arrays.update(labels=np.asarray(ds.y_train, np.int32), dataset=np.array(name),
                  num_train=np.array(ds.num_train, np.int64))
    save_scores(npz, arrays)
    steps = {int(o.checkpoint.step) for o in opened}
    histograms = {}
    for s in SCORES:
        counts, edges = np.histogram(arrays[s], bins=BINS)
        histograms[s] = {"edges": edges.tolist(), "counts": counts.tolist()}
    return ScoresRecord(
        model=opened[0].meta["model"], data=name, num_train=ds.num_train,
        step=steps.pop() if len(steps) == 1 else None, runs=ids,
        checkpoints=[str(p) for p in paths], masked=any(o.mask is not None for o in opened),
        chunk_size=chunk_size, arrays=str(npz),
        summary={s: _summary(arrays[s], arrays[f"{s}_std"]) for s in SCORES},
        histograms=histograms, rank_correlation=rank_correlation(arrays["el2n"],
                                                                 arrays["grand"]),
        config=None if config is None else config.to_dict(),
        seconds=time.perf_counter() - start)
