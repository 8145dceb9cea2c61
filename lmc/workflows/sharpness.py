"""Hessian sharpness of a checkpoint, and along the line between two checkpoints."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from lmc.core.curvature import (
    hutchinson_trace,
    hutchpp_trace,
    lambda_max_along_path,
    spectral_density,
    top_eigenpairs,
)
from lmc.core.interpolate import alpha_grid, lerp
from lmc.training.data import Dataset
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.opened import open_checkpoint
from lmc.workflows.records import SharpnessPathRecord, SharpnessRecord


def sharpness_record(
    path: str | os.PathLike, *, top_k: int = 1, steps: int = 100, trace_probes: int = 100,
    density: bool = False, density_probes: int = 4, density_steps: int = 90,
    split: str = "train", examples: int | None = None, batch_size: int = 500,
    block: Sequence[str] | None = None, seed: int = 0, dataset: Dataset | None = None,
    data_dir: str | None = None, model: str | None = None,
    model_options: dict[str, Any] | None = None, data: str | os.PathLike | None = None,
) -> SharpnessRecord:
    """Top eigenvalues, trace (Hutchinson and Hutch++) and optionally the spectral density
    of a checkpoint's loss Hessian (evaluation mode, live weights of a pruned network).
    `model`, `model_options` and `data` open a checkpoint of your own network."""
    opened = open_checkpoint(path, dataset=dataset, data_dir=data_dir, model=model,
                             model_options=model_options, data=data)
    op = opened.hessian(split, examples, batch_size, block=block)
    start = time.perf_counter()
    top = top_eigenpairs(op, top_k, steps=steps, seed=seed)
    hutch = hutchinson_trace(op, trace_probes, seed=seed)
    hpp = hutchpp_trace(op, max(6, trace_probes), seed=seed)
    record = SharpnessRecord(
        checkpoint=str(path), model=opened.meta["model"], data=opened.meta["data"]["name"],
        split=split, examples=op.num_examples, dim=op.dim, masked=opened.mask is not None,
        block=list(block) if block else None, seed=seed,
        top_eigenvalues={
            "eigenvalues": top.eigenvalues.tolist(), "residuals": top.residuals.tolist(),
            "converged": top.converged.tolist(), "lanczos_steps": top.iterations,
            "num_matvecs": top.num_matvecs},
        trace={name: est._asdict() for name, est in (("hutchinson", hutch), ("hutchpp", hpp))})
    if density:
        sd = spectral_density(op, num_probes=density_probes, steps=density_steps, seed=seed)
        grid, values = sd.smoothed()
        record.density = {"grid": grid.tolist(), "density": values.tolist(),
                          "nodes": sd.nodes.tolist(), "weights": sd.weights.tolist(),
                          "trace": sd.trace()}
    record.seconds = time.perf_counter() - start
    return record


def path_sharpness_record(
    path_a: str | os.PathLike, path_b: str | os.PathLike, *, alphas: int = 11,
    steps: int = 50, trace_probes: int = 30, split: str = "train",
    examples: int | None = None, batch_size: int = 500, seed: int = 0,
    dataset: Dataset | None = None, data_dir: str | None = None, model: str | None = None,
    model_options: dict[str, Any] | None = None, data: str | os.PathLike | None = None,
) -> SharpnessPathRecord:
    """λ_max and trace of the loss Hessian along the straight path between two checkpoints,
    beside the path's loss and error curves. `model`, `model_options` and `data` open
    checkpoints of your own network."""
    network = {"model": model, "model_options": model_options}
    a = open_checkpoint(path_a, dataset=dataset, data_dir=data_dir, data=data, **network)
    b = open_checkpoint(path_b, dataset=a.dataset if model else None, **network)
    path = interpolate_checkpoints(path_a, path_b, alphas=alphas, dataset=a.dataset,
                                   **network)
    op = a.hessian(split, examples, batch_size)
    grid = alpha_grid(alphas)
    tops = lambda_max_along_path(op, b.params, grid, steps=steps, seed=seed)
    moved = op.at(b.params)
    traces = [hutchinson_trace(op.at(lerp(op.params, moved.params, float(al))), trace_probes,
                               seed=seed) for al in grid]
    fields = path.to_json()
    for key in ("kind", "schema_version", "layerwise"):
        fields.pop(key, None)
    return SharpnessPathRecord(
        **fields, split_hessian=split, examples_hessian=op.num_examples,
        lanczos_steps=min(steps, op.dim), lambda_max=tops.tolist(),
        trace=[t.trace for t in traces],
        trace_standard_error=[t.standard_error for t in traces])
