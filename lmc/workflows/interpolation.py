"""Interpolation between two checkpoints: curves and barriers on their data set, and
optionally which examples the path connects."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lmc.constants import EXAMPLE_LOSS_THRESHOLD
from lmc.core.batching import fixed_subset
from lmc.core.evaluate import Evaluator
from lmc.core.interpolate import (
    EXAMPLE_KEYS,
    METRICS,
    PathEvaluator,
    alpha_grid,
    barriers,
    connected_fractions,
    example_barriers,
    interpolation_record,
    lerp,
)
from lmc.errors import ConfigError, check_name
from lmc.files import atomic_write
from lmc.training.activations import preactivation_stats, repair_model
from lmc.training.data import Dataset
from lmc.workflows.alignment import METHODS, align_opened
from lmc.workflows.opened import (
    SPLITS,
    OpenedCheckpoint,
    check_same_network,
    open_checkpoint,
)
from lmc.workflows.records import InterpolationRecord


def bn_batches(opened: OpenedCheckpoint, examples: int = 5000, batch_size: int = 500):
    """Training inputs (num_batches, batch, ...) on which BatchNorm statistics of
    interpolated networks are re-estimated: a fixed subset, seed 1."""
    ds = opened.dataset
    idx = fixed_subset(ds.num_train, examples, seed=1)
    n = len(idx) // batch_size * batch_size or len(idx)
    x = ds.x_train[idx[:n]]
    return x.reshape(-1, min(batch_size, n), *x.shape[1:])


def interpolate_checkpoints(
    path_a: str | os.PathLike,
    path_b: str | os.PathLike,
    *,
    alphas: int | Any = 25,
    splits: tuple[str, ...] = ("train", "test"),
    bn: str | None = None,
    max_examples: int | None = None,
    bn_examples: int = 5000,
    bn_batch_size: int = 500,
    layerwise: bool = False,
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    model: str | None = None,
    model_options: dict[str, Any] | None = None,
    data: str | os.PathLike | None = None,
    align: str | None = None,
    align_seed: int = 0,
    repair: bool = False,
    repair_examples: int = 1000,
    per_example: bool = False,
    example_loss_threshold: float = EXAMPLE_LOSS_THRESHOLD,
) -> InterpolationRecord:
    """Interpolate between two lmc checkpoints of one architecture.

    Networks with BatchNorm default to `bn="reset"`, re-estimated on a fixed subset of
    `bn_examples` training examples. `max_examples` evaluates each split on a fixed random
    subset. `layerwise` adds, for every top-level layer/block, the barriers when only that
    block moves and when all but that block move (Vlaar & Frankle 2022). `model`,
    `model_options` and `data` open checkpoints of your own network (`open_checkpoint`).
    `align` ("weight") also interpolates between A and B permuted to match A
    (`lmc.workflows.alignment.align_opened`, sweep order from `align_seed`): the record's
    `aligned` field holds those curves and barriers, the method and the matching objective.
    `repair` adds, under `aligned["repaired"]`, the curves of the aligned path with every
    interpolated network REPAIRed (Jordan et al. 2023: each hidden unit's pre-activation
    mean and std set to the interpolation of the endpoints', on a fixed subset of
    `repair_examples` training examples); for BatchNorm networks REPAIR is the BN reset
    that `bn="reset"` already does.
    `per_example` keeps, from the same evaluation, every example's loss and correctness
    along the path (Paul, Larsen et al. 2022): the record's `per_example` holds, per split,
    the fractions of examples whose chord loss barrier is below `example_loss_threshold`
    (nats) and whose 0-1 error barrier is 0 (`lmc.core.interpolate.connected_fractions`),
    and its `per_example_arrays` the arrays behind them, which `save_per_example_arrays`
    writes to an .npz.
    """
    a = open_checkpoint(path_a, dataset=dataset, data_dir=data_dir, model=model,
                        model_options=model_options, data=data)
    b = open_checkpoint(path_b, dataset=a.dataset if model else None, model=model,
                        model_options=model_options)
    check_same_network(a, b)
    for split in splits:
        check_name("split", split, SPLITS)
    if align is not None:
        check_name("alignment method", align, METHODS)
    if repair and (align is None or a.has_state):
        raise ConfigError("REPAIR needs --align, and applies to networks without BatchNorm "
                          "(for BatchNorm networks it is the BN reset, --bn reset)")
    bn = bn or ("reset" if a.has_state else "interpolate")
    data = {split: a.split(split, max_examples) for split in splits}
    reset = a.has_state and bn == "reset"
    batches = bn_batches(a, bn_examples, bn_batch_size) if reset else None
    grid = alpha_grid(alphas) if isinstance(alphas, int) else np.asarray(alphas, float)

    def curves(moving=None, params_b=b.params, state_b=b.state, per_example=False):
        evaluator = PathEvaluator(a.eval_apply, train_apply=a.train_apply, bn=bn,
                                  moving=moving, policy=a.policy)
        return evaluator.curves(a.params, params_b, data, state_a=a.state, state_b=state_b,
                                alphas=grid, bn_batches=batches, per_example=per_example)

    path = curves(per_example=per_example)
    record = InterpolationRecord(
        a=str(path_a), b=str(path_b), model=a.meta["model"], data=a.meta["data"]["name"],
        bn=bn if a.has_state else "none",
        examples={split: int(len(data[split][1])) for split in splits},
        **interpolation_record(path, grid))
    if per_example:
        record.per_example, record.per_example_arrays = {}, {}
        for split, c in path.items():
            each = example_barriers(c["example_loss"], c["example_correct"], grid)
            record.per_example[split] = connected_fractions(each, example_loss_threshold)
            record.per_example_arrays[split] = {
                **{k: c[k] for k in EXAMPLE_KEYS},
                **{f"{metric}_barrier": each[metric] for metric in METRICS}}
    if layerwise:
        record.layerwise = []
        for block in a.params:
            row = {"block": block}
            for mode, moving in (("only", True), ("all_but", False)):
                tree = {k: (k == block) == moving for k in a.params}
                c = curves(tree)
                row[mode] = {s: {k: barriers(c[s][k], grid)["mean"] for k in METRICS}
                             for s in c}
                row[f"{mode}_curves"] = {s: {k: [float(v) for v in c[s][k]] for k in METRICS}
                                         for s in c}
            record.layerwise.append(row)
    if align is not None:
        params_b, state_b, _, info = align_opened(a, b, align, align_seed)
        aligned = interpolation_record(curves(params_b=params_b, state_b=state_b), grid)
        record.aligned = {"method": align, "objective_before": info["objective_before"],
                          "objective_after": info["objective_after"],
                          "curves": aligned["curves"], "barriers": aligned["barriers"]}
        if repair:
            x_repair = a.split("train", repair_examples, seed=2)[0]
            repaired = interpolation_record(
                _repaired_curves(a, params_b, data, grid, x_repair), grid)
            record.aligned["repaired"] = {"examples": int(len(x_repair)),
                                          "curves": repaired["curves"],
                                          "barriers": repaired["barriers"]}
    return record


def save_per_example_arrays(record: InterpolationRecord, path: str | os.PathLike) -> Path:
    """Write the record's per-example arrays to an .npz, atomically and without pickles:
    "alphas" and "<split>/<name>" for every name of `InterpolationRecord.per_example_arrays`
    (read back with `np.load(path, allow_pickle=False)`)."""
    if record.per_example_arrays is None:
        raise ConfigError("the record has no per-example arrays: interpolate with "
                          "per_example=True")
    arrays = {"alphas": np.asarray(record.alphas, float)}
    arrays.update({f"{split}/{name}": np.asarray(values)
                   for split, named in record.per_example_arrays.items()
                   for name, values in named.items()})
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _repaired_curves(a: OpenedCheckpoint, params_b: Any, data: dict, grid: np.ndarray,
                     x_repair: Any) -> dict[str, dict[str, np.ndarray]]:
    """Loss and error of every REPAIRed network on the path from A to `params_b`, α by α
    (each interpolated network gets its own correction)."""
    evaluator = Evaluator(a.eval_apply)
    ends = tuple(preactivation_stats(a.module, p, a.state, x_repair) for p in (a.params, params_b))
    out = {split: {"loss": [], "error": []} for split in data}
    for alpha in grid:
        params = repair_model(a.module, lerp(a.params, params_b, float(alpha)), a.params,
                              params_b, x_repair, float(alpha), state=a.state,
                              endpoint_stats=ends)
        for split, (x, y) in data.items():
            metrics = evaluator(params, a.state, x, y)
            out[split]["loss"].append(metrics["loss"])
            out[split]["error"].append(metrics["error"])
    return {split: {k: np.asarray(v) for k, v in c.items()} for split, c in out.items()}
