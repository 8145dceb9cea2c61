"""Figures of interpolation and instability records: paths between two networks, their
layer-wise barriers, and instability against the spawn step (Frankle et al. 2020)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lmc.errors import LmcError
from lmc.plots.pruning import draw_barriers, draw_replicates, replicates_legend
from lmc.plots.style import (
    BLUE,
    GREEN,
    GREY,
    METRIC_LABEL,
    ORANGE,
    OTHER_SPLIT_STYLE,
    SPLIT_STYLE,
    STYLE,
    VERMILLION,
    alpha_axis,
    count,
    ordered_splits,
    per_alpha,
    step_axis,
    title,
)
from lmc.workflows.records import (
    InstabilityComparison,
    InstabilityRecord,
    InstabilityReplicatesRecord,
    InterpolationRecord,
)


def interpolation_figure(record: InterpolationRecord) -> Figure:
    """Error and loss along the path between two networks, mean barriers marked; with the
    aligned pair's curves (`record.aligned`) on the same axes, labelled "<split> (aligned)"."""
    alphas = np.asarray(record.alphas, float)
    curves = record.curves
    splits = ordered_splits(curves)
    metrics = [m for m in METRIC_LABEL if any(m in curves[s] for s in splits)]
    if not metrics:
        raise LmcError("interpolation record has no error or loss curves")
    name = title(record.model, record.data)
    if record.bn != "none":
        name += f", BatchNorm {record.bn}"
    aligned, repaired = {}, {}
    if record.aligned is not None and "repaired" in record.aligned:
        repaired = record.aligned["repaired"]["curves"]
    if record.aligned is not None:
        aligned = {s: record.aligned["curves"][s] for s in ordered_splits(record.aligned["curves"])}
        name += (f"\nsolid/dashed: as trained · dash-dot/dotted: B {record.aligned['method']}"
                 "-aligned" + (" · diamonds: + REPAIR" if repaired else ""))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=((4.3 if aligned else 3.7) * len(metrics) + 0.3,
                            3.4 + 1.3 * bool(aligned)),
                     layout="constrained")
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for axis, metric in zip(axes, metrics, strict=True):
            shown = [s for s in splits if metric in curves[s]]
            for i, split in enumerate(shown):
                values = per_alpha(curves[split][metric], alphas, f"curves.{split}.{metric}")
                side = 0 if len(shown) == 1 else 1 - 2 * (i % 2)
                _draw_path(axis, alphas, values, split, metric, side)
            for split in aligned:
                if metric in aligned[split]:
                    values = per_alpha(aligned[split][metric], alphas,
                                       f"aligned.curves.{split}.{metric}")
                    barrier = record.aligned["barriers"][split][metric]["mean"]
                    _draw_aligned(axis, alphas, values, split, metric, barrier)
            for split in repaired:
                if metric in repaired[split]:
                    values = per_alpha(repaired[split][metric], alphas,
                                       f"aligned.repaired.curves.{split}.{metric}")
                    barrier = record.aligned["repaired"]["barriers"][split][metric]["mean"]
                    _draw_aligned(axis, alphas, values, split, metric, barrier, repaired=True)
            alpha_axis(axis)
            axis.set_ylabel(METRIC_LABEL[metric])
            axis.set_ylim(bottom=0)
            if aligned:  # six or more series: the legend goes below the axes
                axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2,
                            fontsize=8)
            else:
                axis.legend(loc="best")
        fig.suptitle(f"Linear interpolation: {name}")
    return fig


# the aligned pair's curves (`InterpolationRecord.aligned`): the split's colour, another line
ALIGNED_STYLE = {"test": "-.", "train": ":"}


def _draw_aligned(axis: Axes, alphas: np.ndarray, values: np.ndarray, split: str,
                  metric: str, barrier: float, repaired: bool = False) -> None:
    """One split's curve between A and B aligned to A (and REPAIRed), its mean barrier in
    the legend."""
    colour, _, fill = SPLIT_STYLE.get(split, OTHER_SPLIT_STYLE)
    if metric == "error":
        values = 100 * values
    text = f"{100 * barrier:.1f} pts" if metric == "error" else f"{barrier:.3g}"
    what = "aligned + REPAIR" if repaired else "aligned"
    axis.plot(alphas, values, color=colour, ls=ALIGNED_STYLE.get(split, "-."),
              lw=1.0 if repaired else 1.6, marker="d" if repaired else None, markersize=3,
              label=f"{split} ({what}): {text}")
    axis.plot(alphas[[0, -1]], values[[0, -1]], ls="none", marker="s", markersize=5,
              color=colour, fillstyle=fill, markeredgewidth=1.2)


def layerwise_figure(record: InterpolationRecord) -> Figure:
    """Grouped bars, one group per block: the test error barrier (train if there is no test)
    when only that block moves and when all but that block move (Vlaar & Frankle 2022)."""
    rows = record.layerwise
    if not rows:
        raise LmcError("interpolation record has no layer-wise barriers")
    modes = (("only", "only this block moves", BLUE),
             ("all_but", "all but this block move", ORANGE))
    split = "test" if all("test" in row[m] for row in rows for m, _, _ in modes) else "train"
    blocks = [str(row["block"]) for row in rows]
    y = np.arange(len(rows))
    whole = record.barriers.get(split, {}).get("error", {}).get("mean")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.0, 1.6 + 0.5 * len(rows)), layout="constrained")
        axis = fig.add_subplot()
        for j, (mode, label, colour) in enumerate(modes):
            values = [100 * float(row[mode][split]["error"]) for row in rows]
            bars = axis.barh(y + (j - 0.5) * 0.4, values, height=0.38, color=colour, label=label)
            axis.bar_label(bars, fmt="%.2f", padding=2, fontsize=9)
        if whole is not None:
            axis.axvline(100 * whole, color=GREY, ls="--", lw=1.2,
                         label=f"whole network ({100 * whole:.2f})")
        axis.set_yticks(y, blocks)
        axis.invert_yaxis()
        axis.grid(axis="y", visible=False)
        axis.margins(x=0.12)
        axis.set_xlim(left=0)
        axis.set_xlabel(f"{split} error barrier (percentage points)")
        axis.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, handlelength=1.5,
                    columnspacing=1.0, borderaxespad=0.2)
        fig.suptitle(f"Layer-wise interpolation: {title(record.model, record.data)}")
    return fig


def _draw_path(axis: Axes, alphas: np.ndarray, values: np.ndarray, split: str, metric: str,
               side: int) -> None:
    """One split's curve, its endpoints, and an arrow from the endpoint mean to the maximum
    labelled with the mean barrier (Frankle et al. 2020; Ainsworth et al. 2022).

    `side` (-1, 0 or 1) nudges the arrow and puts its label left or right of it, so that
    the arrows of several splits with the same maximum stay apart.
    """
    colour, style, fill = SPLIT_STYLE.get(split, OTHER_SPLIT_STYLE)
    if metric == "error":
        values = 100 * values
    axis.plot(alphas, values, color=colour, ls=style, label=split)
    axis.plot(alphas[[0, -1]], values[[0, -1]], ls="none", marker="o", markersize=6,
              color=colour, fillstyle=fill, markeredgewidth=1.5)
    i = int(np.argmax(values))
    at, top, base = alphas[i] + 0.012 * side, values[i], 0.5 * (values[0] + values[-1])
    axis.plot([at - 0.05, at + 0.05], [base, base], color=colour, lw=1.2)
    if top > base:
        axis.annotate("", xy=(at, top), xytext=(at, base),
                      arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.3,
                                  "shrinkA": 0, "shrinkB": 0})
    right = at < 0.2 or (side >= 0 and at <= 0.8)
    text = f"{top - base:.1f} pts" if metric == "error" else f"{top - base:.3g}"
    axis.annotate(f"barrier {text}", xy=(at, 0.5 * (top + base)), xytext=(5 if right else -5, 0),
                  textcoords="offset points", ha="left" if right else "right", va="center",
                  color=colour, fontsize=9,
                  bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})


def _barrier_series(points: list[dict], key: str = "error_barrier"
                    ) -> tuple[list[dict], list[int], list[float], list]:
    """Points sorted by step, and the mean and std (None where n <= 1) of the test error
    barrier (`key`: "error_barrier", or "aligned_error_barrier" after alignment) in
    percentage points."""
    if not points:
        raise LmcError("instability record has no points")
    points = sorted(points, key=lambda p: p["step"])
    means, stds = [], []
    for p in points:
        barrier = p[key]
        means.append(100 * float(barrier["mean"]))
        std = barrier.get("std")
        std = None if std is None or barrier.get("n", 1) <= 1 else float(std)
        stds.append(100 * std if std is not None and math.isfinite(std) else None)
    return points, [int(p["step"]) for p in points], means, stds


def _instability_title(record: InstabilityRecord) -> str:
    return title(record.config.get("model"), record.config.get("dataset"))


def instability_figure(record: InstabilityRecord) -> Figure:
    """Instability (test error barrier between children) against the spawn step k.

    Frankle, Dziugaite, Roy & Carbin 2020: a network is stable at k when the barrier is
    below the record's threshold (`lmc.constants.STABILITY_THRESHOLD`, 2 percentage points).
    """
    _, steps, means, stds = _barrier_series(record.points)
    threshold = 100 * float(record.threshold)
    details = [f"{record.children} children per step"]
    if record.dense_test_accuracy is not None:
        details.append(f"dense test accuracy {100 * record.dense_test_accuracy:.1f}%")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.2, 3.6), layout="constrained")
        axis = fig.add_subplot()
        aligned = [p for p in record.points if "aligned_error_barrier" in p]
        # hollow and wide, so that an aligned line drawn over it (often identical) shows it
        naive = {"ms": 8, "mfc": "none", "mew": 1.5, "lw": 2.6} if aligned else {}
        axis.plot(steps, means, color=BLUE, marker="o", **naive,
                  label="naive, mean over pairs" if aligned else "mean over pairs")
        bars = [(k, m, s) for k, m, s in zip(steps, means, stds, strict=True) if s is not None]
        if bars:
            k, m, s = zip(*bars, strict=True)
            axis.errorbar(k, m, yerr=s, fmt="none", ecolor=BLUE, elinewidth=1.2, capsize=3,
                          label="± std")
        top = max([threshold] + [m + (s or 0) for m, s in zip(means, stds, strict=True)])
        if aligned:  # the barrier after permutation alignment of every pair
            _, a_steps, a_means, a_stds = _barrier_series(aligned, "aligned_error_barrier")
            axis.errorbar(a_steps, a_means, yerr=[s or 0 for s in a_stds], color=VERMILLION,
                          marker="s", ms=4, capsize=3, elinewidth=1.0, ls="--",
                          label=f"after {record.align or 'permutation'} matching ± std")
            top = max([top] + [m + (s or 0) for m, s in zip(a_means, a_stds, strict=True)])
        axis.axhline(threshold, color=GREY, ls="--", lw=1.2,
                     label=f"stable below {threshold:g} pts")
        step_axis(axis, steps)
        axis.set_ylim(0, 1.15 * top if top > 0 else 1)
        axis.set_xlabel("spawn step k (iterations, log scale)")
        axis.set_ylabel("instability: test error\nbarrier (percentage points)")
        if aligned:  # four entries: below the axes, never over the data
            fig.legend(*axis.get_legend_handles_labels(), loc="outside lower center", ncol=2)
        else:
            axis.legend(loc="best")
        fig.suptitle("\n".join([f"Instability analysis: {_instability_title(record)}",
                                ", ".join(details)]).strip())
    return fig


def instability_replicates_figure(record: InstabilityReplicatesRecord) -> Figure:
    """Instability against the spawn step over seeds (one parent each): the chord and mean
    test error barriers between children and the mean definition's floor, each with its
    seed mean, 95% Student-t band and every seed's value; with `align`, the mean barrier
    after alignment too."""
    if not record.points:
        raise LmcError("instability record has no points")
    points = sorted(record.points, key=lambda p: p["step"])
    steps = [int(p["step"]) for p in points]
    threshold = 100 * float(record.threshold)
    dense = record.dense_test_accuracy
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.0, 4.6), layout="constrained")
        axis = fig.add_subplot()
        lowest = draw_barriers(axis, steps, [p["barrier"] for p in points])
        if all("aligned_barrier" in p for p in points):
            lowest = min(lowest, draw_replicates(
                axis, steps, [p["aligned_barrier"]["error"] for p in points], VERMILLION,
                f"mean definition after {record.align or 'permutation'} matching",
                marker="s", ls="--", lw=1.4, bars=True, dodge=10.0))
        axis.axhline(threshold, color=GREY, ls="--", lw=1.2,
                     label=f"stable below {threshold:g} pts")
        step_axis(axis, steps)
        positive = [k for k in steps if k > 0]
        axis.set_xlabel("spawn step k (iterations" + (
            f", symlog scale: linear below {count(min(positive))})" if positive else ")"))
        axis.set_ylabel("instability: test error\nbarrier (percentage points)")
        if lowest >= 0:
            axis.set_ylim(bottom=0)
        replicates_legend(fig, axis, bars=True)
        fig.suptitle(f"Instability analysis: {_instability_title(record)}\n"
                     f"{len(record.seeds)} seeds × {record.children} children, mean with "
                     f"{100 * record.confidence:g}% t-interval; dense test accuracy "
                     f"{100 * dense['mean']:.1f}%")
    return fig


def _spawn_curves(record: InstabilityRecord) -> tuple[str, list[dict]]:
    """The split drawn by the spawn-curves figure (test, else train) and the points, sorted
    by step, that have its mean error path."""
    have = [p for p in record.points if isinstance(p.get("mean_curves"), dict)]
    split = "test" if any("error" in p["mean_curves"].get("test", {}) for p in have) else "train"
    have = [p for p in have if "error" in p["mean_curves"].get(split, {})]
    return split, sorted(have, key=lambda p: p["step"])


def has_spawn_curves(record: InstabilityRecord) -> bool:
    """Whether any point holds the mean error path between its children."""
    return bool(_spawn_curves(record)[1])


def spawn_curves_figure(record: InstabilityRecord) -> Figure:
    """The mean test-error path (train if no test) of every spawn step, one colour per k."""
    split, have = _spawn_curves(record)
    if not have:
        raise LmcError("instability record has no mean paths between children")
    alphas = np.asarray(record.alphas, float)
    colours = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(have)))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.0, 3.6), layout="constrained")
        axis = fig.add_subplot()
        for p, colour in zip(have, colours, strict=True):
            values = 100 * per_alpha(p["mean_curves"][split]["error"], alphas,
                                     f"mean_curves.{split}.error at step {p['step']}")
            axis.plot(alphas, values, color=colour, label=f"k = {int(p['step'])}")
            axis.plot(alphas[[0, -1]], values[[0, -1]], ls="none", marker="o", color=colour)
        alpha_axis(axis)
        axis.set_ylim(bottom=0)
        axis.set_ylabel(f"{split} error (%), mean over pairs")
        axis.legend(title="spawn step", loc="center left", bbox_to_anchor=(1.01, 0.5),
                    ncol=1 if len(have) <= 12 else 2)
        fig.suptitle(f"Paths between children: {_instability_title(record)}")
    return fig


def instability_comparison_figure(record: InstabilityComparison) -> Figure:
    """Several instability analyses on one axis: `record.series` maps a label to the
    points (and dense accuracy) of an instability record, e.g. with and without warmup."""
    if not record.series:
        raise LmcError("instability comparison has no series")
    colours = [VERMILLION, BLUE, GREEN, ORANGE, GREY]
    markers = ["o", "s", "^", "D", "v"]
    all_steps, top = [], 0.0
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.6, 3.7), layout="constrained")
        axis = fig.add_subplot()
        for i, (label, series) in enumerate(record.series.items()):
            _, steps, means, stds = _barrier_series(series["points"])
            colour, marker = colours[i % len(colours)], markers[i % len(markers)]
            accuracy = series.get("dense_test_accuracy")
            if accuracy is not None:
                label = f"{label} (dense {100 * accuracy:.1f}%)"
            axis.errorbar(steps, means, yerr=[s or 0 for s in stds], color=colour,
                          marker=marker, capsize=3, elinewidth=1.0, label=label)
            all_steps += steps
            top = max([top] + [m + (s or 0) for m, s in zip(means, stds, strict=True)])
        threshold = 100 * float(record.threshold)
        axis.axhline(threshold, color=GREY, ls="--", lw=1.2,
                     label=f"stable below {threshold:g} pts")
        step_axis(axis, sorted(set(all_steps)))
        axis.set_ylim(0, 1.15 * max(top, threshold))
        axis.set_xlabel("spawn step k (iterations, log scale)")
        axis.set_ylabel("instability: test error\nbarrier (percentage points)")
        axis.legend(loc="best")
        fig.suptitle(str(record.title))
    return fig
