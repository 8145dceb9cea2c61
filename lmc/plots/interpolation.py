"""Figures of interpolation and instability records: paths between two networks, their
layer-wise barriers, and instability against the spawn step (Frankle et al. 2020)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lmc.errors import LmcError
from lmc.plots.pruning import BARRIER_STYLE, draw_barriers, draw_replicates, replicates_legend
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
    step_label,
    title,
)
from lmc.workflows.records import (
    InstabilityComparison,
    InstabilityRecord,
    InstabilityReplicatesRecord,
    InterpolationRecord,
)
from lmc.workflows.replicates import estimate, t_quantile_975


def interpolation_figure(record: InterpolationRecord) -> Figure:
    """Error and loss along the path between two networks: each split's curve, an arrow
    from the endpoint mean up to the maximum (the mean barrier), and in the legend, below
    the axes, the mean (Frankle et al.) and chord (Entezari et al.) barriers and the mean
    definition's floor ½|f(0) − f(1)|; with the aligned pair's curves (`record.aligned`)
    on the same axes, labelled "<split> (aligned)"."""
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
        # one legend row per curve, below each panel
        rows = len(splits) * (1 + bool(aligned) + bool(repaired))
        fig = Figure(figsize=(4.1 * len(metrics) + 0.3, 3.2 + 0.2 * rows + 0.3 * bool(aligned)),
                     layout="constrained")
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for axis, metric in zip(axes, metrics, strict=True):
            shown = [s for s in splits if metric in curves[s]]
            for i, split in enumerate(shown):
                values = per_alpha(curves[split][metric], alphas, f"curves.{split}.{metric}")
                side = 0 if len(shown) == 1 else 1 - 2 * (i % 2)
                _draw_path(axis, alphas, values, split, metric, side,
                           record.barriers.get(split, {}).get(metric, {}))
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
            # below the axes, never over the curves: the labels carry the barriers
            axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8)
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
        fig = Figure(figsize=(6.0, 2.2 + 0.5 * len(rows)), layout="constrained")
        axis = fig.add_subplot()
        values = {mode: [100 * float(row[mode][split]["error"]) for row in rows]
                  for mode, _, _ in modes}
        right = max([v for vs in values.values() for v in vs] + [100 * (whole or 0.0), 1e-9])
        for j, (mode, label, colour) in enumerate(modes):
            bars = axis.barh(y + (j - 0.5) * 0.4, values[mode], height=0.38, color=colour,
                             label=label)
            for bar, value in zip(bars, values[mode], strict=True):
                _bar_value(axis, bar, value, None if whole is None else 100 * whole, right)
        if whole is not None:
            axis.axvline(100 * whole, color=GREY, ls="--", lw=1.2,
                         label=f"whole network ({100 * whole:.2f})")
        axis.set_yticks(y, blocks)
        axis.invert_yaxis()
        axis.grid(axis="y", visible=False)
        axis.set_xlim(0, 1.16 * right)
        axis.set_xlabel(f"{split} error barrier (percentage points)")
        # below the axes: three long entries do not fit above them
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                    handlelength=1.5, columnspacing=1.0)
        fig.suptitle(f"Layer-wise interpolation: {title(record.model, record.data)}")
    return fig


def _bar_value(axis: Axes, bar, value: float, whole: float | None, right: float) -> None:
    """The value of one horizontal bar at its end: outside, unless the whole-network line
    lies where the label would be; then inside the bar (white), or past the line when
    the bar is too short to hold it."""
    width = 0.11 * right  # about five characters of 9 pt text on a 6 in wide figure
    x, ha, colour, pad = value, "left", "black", 2
    if whole is not None and value - 0.01 * right <= whole <= value + width:
        if value >= 1.3 * width:
            ha, colour, pad = "right", "white", -2
        else:
            x = whole
    axis.annotate(f"{value:.2f}", xy=(x, bar.get_y() + 0.5 * bar.get_height()),
                  xytext=(pad, 0), textcoords="offset points", ha=ha, va="center",
                  color=colour, fontsize=9)


def _draw_path(axis: Axes, alphas: np.ndarray, values: np.ndarray, split: str, metric: str,
               side: int, barriers: dict | None = None) -> None:
    """One split's curve, its endpoints, and an arrow from the endpoint mean to the maximum
    (the mean barrier; Frankle et al. 2020; Ainsworth et al. 2022). The numbers go into
    the legend label, not over the curves: the mean and chord barriers (the record's
    `barriers`, else computed from the curve) and the mean definition's floor
    ½|f(0) − f(1)|, which the mean barrier reaches whenever the endpoints differ.

    `side` (-1, 0 or 1) nudges the arrow, so that the arrows of several splits with the
    same maximum stay apart.
    """
    colour, style, fill = SPLIT_STYLE.get(split, OTHER_SPLIT_STYLE)
    scale = 100 if metric == "error" else 1
    values = scale * values
    i = int(np.argmax(values))
    at, top, base = alphas[i] + 0.012 * side, values[i], 0.5 * (values[0] + values[-1])
    barriers = barriers or {}
    mean = scale * barriers["mean"] if "mean" in barriers else top - base
    chord = (scale * barriers["chord"] if "chord" in barriers
             else float(np.max(values - ((1 - alphas) * values[0] + alphas * values[-1]))))
    floor = 0.5 * abs(values[0] - values[-1])
    number = "{:.1f}".format if metric == "error" else _loss_number
    unit = " pts" if metric == "error" else ""
    label = (f"{split}: barrier {number(mean)}{unit} (mean), {number(chord)} (chord); "
             f"floor {number(floor)}")
    axis.plot(alphas, values, color=colour, ls=style, label=label)
    axis.plot(alphas[[0, -1]], values[[0, -1]], ls="none", marker="o", markersize=6,
              color=colour, fillstyle=fill, markeredgewidth=1.5)
    axis.plot([at - 0.05, at + 0.05], [base, base], color=colour, lw=1.2)
    if top > base:
        axis.annotate("", xy=(at, top), xytext=(at, base),
                      arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.3,
                                  "shrinkA": 0, "shrinkB": 0})


def _loss_number(value: float) -> str:
    """A loss difference with three significant digits; "<0.001" below that."""
    return f"{value:.3g}" if value == 0 or abs(value) >= 1e-3 else "<0.001"


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


def _pair_estimates(point: dict, key: str = "error_barrier") -> dict[str, dict]:
    """The test error barriers of one spawn step as estimates over its pairs
    (`lmc.workflows.replicates.estimate`): "error" (mean definition), "error_chord" and
    "floor" (½|E(0) − E(1)|) from each pair (`key` "aligned_error_barrier": the mean
    definition after alignment); a 95% t-interval only for n >= 3 pairs. Without pairs
    (records that kept only the summary) the mean definition from `point[key]`: its
    values are its min and max for two pairs (exactly the two), none for more."""
    pairs = [p for p in point.get("pairs") or [] if isinstance(p, dict)]
    if key == "aligned_error_barrier":
        pairs = [p["aligned"] for p in pairs if isinstance(p.get("aligned"), dict)]
    found: dict[str, list[float]] = {"error": [], "error_chord": [], "floor": []}
    for pair in pairs:
        barrier = pair.get("barriers", {}).get("test", {}).get("error", {})
        ends = pair.get("curves", {}).get("test", {}).get("error")
        if "mean" in barrier:
            found["error"].append(float(barrier["mean"]))
        if "chord" in barrier:
            found["error_chord"].append(float(barrier["chord"]))
        if ends:
            found["floor"].append(0.5 * abs(float(ends[0]) - float(ends[-1])))
    out = {}
    if found["error"] and len(found["error"]) == len(pairs):
        for name, values in found.items():
            if len(values) == len(pairs):
                out[name] = _few(estimate(values))
        return out
    summary = point[key]
    n, mean = int(summary.get("n", 1)), float(summary["mean"])
    std = summary.get("std")
    interval = None
    if n >= 3 and std is not None and math.isfinite(float(std)):
        # the summary's std is the population one (ddof 0)
        half = t_quantile_975(n - 1) * float(std) / math.sqrt(n - 1)
        interval = [mean - half, mean + half]
    values = ([float(summary["min"]), float(summary["max"])]
              if n == 2 and "min" in summary and "max" in summary else [])
    out["error"] = {"mean": mean, "interval": interval, "values": values, "n": n}
    return out


def _few(est: dict) -> dict:
    """An estimate without its interval below three values: the 95% t-interval of two
    is wider than their range says anything about."""
    return est if est["n"] >= 3 else {**est, "interval": None}


def instability_figure(record: InstabilityRecord) -> Figure:
    """Instability (test error barrier between children) against the spawn step k: for
    the chord definition (Entezari et al.), the mean definition (Frankle et al.) and its
    floor ½|E(0) − E(1)|, the mean over pairs as the line and every pair's value as a
    dot, with a 95% t-interval only where there are at least three pairs (records that
    kept only the summary: the mean definition alone).

    Frankle, Dziugaite, Roy & Carbin 2020: a network is stable at k when the barrier is
    below the record's threshold (`lmc.constants.STABILITY_THRESHOLD`, 2 percentage points).
    """
    if not record.points:
        raise LmcError("instability record has no points")
    points = sorted(record.points, key=lambda p: p["step"])
    steps = [int(p["step"]) for p in points]
    estimates = [_pair_estimates(p) for p in points]
    threshold = 100 * float(record.threshold)
    details = [f"{record.children} children per step"]
    if record.dense_test_accuracy is not None:
        details.append(f"dense test accuracy {100 * record.dense_test_accuracy:.1f}%")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.0, 4.6), layout="constrained")
        axis = fig.add_subplot()
        bars = False
        for key, (label, colour, ls, dodge) in BARRIER_STYLE.items():
            if all(key in e for e in estimates):
                chosen = [e[key] for e in estimates]
                bars |= any(c.get("interval") is not None for c in chosen)
                draw_replicates(axis, steps, chosen, colour, label,
                                ls=ls, lw=1.2 if key == "floor" else 1.8,
                                marker="d" if key == "floor" else "o", bars=True,
                                dodge=dodge)
        if all("aligned_error_barrier" in p for p in points):
            aligned = [_pair_estimates(p, "aligned_error_barrier")["error"] for p in points]
            bars |= any(a.get("interval") is not None for a in aligned)
            draw_replicates(axis, steps, aligned, VERMILLION,
                            f"mean definition after {record.align or 'permutation'} matching",
                            marker="s", ls="--", lw=1.4, bars=True, dodge=10.0)
        axis.axhline(threshold, color=GREY, ls="--", lw=1.2,
                     label=f"stable below {threshold:g} pts")
        step_axis(axis, steps)
        axis.set_xlabel(step_label(steps))
        axis.set_ylabel("instability: test error\nbarrier (percentage points)")
        axis.set_ylim(bottom=0)
        replicates_legend(fig, axis, bars=True, each="pair (lines: their mean)",
                          interval="bars: 95% t-interval (n ≥ 3 pairs)" if bars else "")
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


def _with_accuracy(label: str, accuracy: float | None) -> str:
    """ "label (dense 90.4%)", or "label (control; dense 90.4%)" when the label already
    ends in parentheses: never two in a row."""
    if accuracy is None:
        return label
    dense = f"dense {100 * accuracy:.1f}%"
    return f"{label[:-1]}; {dense})" if label.endswith(")") else f"{label} ({dense})"


def instability_comparison_figure(record: InstabilityComparison) -> Figure:
    """Several instability analyses on one axis: `record.series` maps a label to the
    points (and dense accuracy) of an instability record, e.g. with and without warmup.
    Per series the mean test error barrier (mean definition) over pairs as the line,
    every pair's value as a dot (for two pairs: the summary's min and max) and a 95%
    t-interval only where there are at least three pairs."""
    if not record.series:
        raise LmcError("instability comparison has no series")
    colours = [VERMILLION, BLUE, GREEN, ORANGE, GREY]
    markers = ["o", "s", "^", "D", "v"]
    all_steps, bars = [], False
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.8, 4.4), layout="constrained")
        axis = fig.add_subplot()
        count_series = len(record.series)
        for i, (label, series) in enumerate(record.series.items()):
            if not series["points"]:
                raise LmcError("instability record has no points")
            points = sorted(series["points"], key=lambda p: p["step"])
            steps = [int(p["step"]) for p in points]
            chosen = [_pair_estimates(p)["error"] for p in points]
            bars |= any(c.get("interval") is not None for c in chosen)
            colour, marker = colours[i % len(colours)], markers[i % len(markers)]
            draw_replicates(axis, steps, chosen, colour,
                            _with_accuracy(label, series.get("dense_test_accuracy")),
                            marker=marker, bars=True,
                            dodge=4.0 * (i - 0.5 * (count_series - 1)))
            all_steps += steps
        threshold = 100 * float(record.threshold)
        axis.axhline(threshold, color=GREY, ls="--", lw=1.2,
                     label=f"stable below {threshold:g} pts")
        steps = sorted(set(all_steps))
        step_axis(axis, steps)
        axis.set_ylim(bottom=0)
        axis.set_xlabel(step_label(steps))
        axis.set_ylabel("instability: test error\nbarrier (percentage points)")
        replicates_legend(fig, axis, bars=True, each="pair (lines: their mean)",
                          interval="bars: 95% t-interval (n ≥ 3 pairs)" if bars else "")
        fig.suptitle(str(record.title))
    return fig
