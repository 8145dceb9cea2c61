"""Publication figures drawn from result JSON files, so they can be redrawn without recomputing.

Every figure is written as PNG (200 dpi) and PDF, atomically. Matplotlib is used through
`matplotlib.figure.Figure` (no pyplot, no global backend state); the style is applied per
figure with `matplotlib.rc_context`. Colours are the Okabe-Ito palette and viridis, both
colour-blind safe.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from lmc.errors import ConfigError, LmcError
from lmc.files import atomic_write

PLOT_KINDS = ("interpolation", "instability", "instability_comparison", "sharpness",
              "sharpness_path", "imp", "prune_ratio")

STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embedded TrueType: editable text, accepted by journals
    "ps.fonttype": 42,
}
# Okabe & Ito colour-blind-safe palette.
BLUE, VERMILLION, ORANGE, GREEN, GREY = "#0072B2", "#D55E00", "#E69F00", "#009E73", "#555555"
# split -> (colour, line style, endpoint marker fill)
SPLIT_STYLE = {"test": (BLUE, "-", "full"), "train": (VERMILLION, "--", "none")}
OTHER_SPLIT_STYLE = (GREEN, ":", "full")
METRIC_LABEL = {"error": "error (%)", "loss": "loss (cross-entropy)"}
DPI = 200


def plot_result(json_path: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Draw the figures of a result JSON and return the written paths.

    `out` (default: the JSON path without its suffix) is the stem of the `.png` and `.pdf`
    files; extra figures of a kind append a suffix to it (`_layerwise`, `_curves`).
    """
    json_path = Path(json_path)
    try:
        record = json.loads(json_path.read_text())
    except OSError as e:
        raise LmcError(f"cannot read result file {json_path}: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmcError(f"result file {json_path} is not valid JSON: {e}") from e
    if not isinstance(record, dict):
        raise LmcError(f"result file {json_path} does not hold a JSON object")
    kind = record.get("kind")
    if kind not in PLOT_KINDS:
        raise ConfigError(f"result file {json_path} has unknown kind {kind!r}; "
                          f"valid kinds: {', '.join(PLOT_KINDS)}")
    plot = {"interpolation": plot_interpolation, "instability": plot_instability,
            "instability_comparison": plot_instability_comparison,
            "sharpness": plot_sharpness, "sharpness_path": plot_sharpness_path,
            "imp": plot_imp, "prune_ratio": plot_prune_ratio}[kind]
    try:
        return plot(record, json_path.with_suffix("") if out is None else out)
    except LmcError as e:
        raise type(e)(f"{json_path}: {e}") from e


def plot_interpolation(record: dict, out: str | os.PathLike) -> list[Path]:
    """Error and loss along the path between two networks, mean barriers marked (`<out>`);
    if the record has layer-wise barriers, also their bar chart (`<out>_layerwise`)."""
    alphas = _alphas(record)
    curves = _mapping(_need(record, "curves", "interpolation record"), "curves")
    splits = _ordered(curves)
    for split in splits:
        _mapping(curves[split], f"curves.{split}")
    metrics = [m for m in METRIC_LABEL if any(m in curves[s] for s in splits)]
    if not metrics:
        raise LmcError("interpolation record has no error or loss curves")
    title = _title(record.get("model"), record.get("data"))
    if record.get("bn", "none") != "none":
        title += f", BatchNorm {record['bn']}"
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(3.7 * len(metrics) + 0.3, 3.4), layout="constrained")
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for axis, metric in zip(axes, metrics, strict=True):
            shown = [s for s in splits if metric in curves[s]]
            for i, split in enumerate(shown):
                values = _curve(curves[split][metric], alphas, f"curves.{split}.{metric}")
                side = 0 if len(shown) == 1 else 1 - 2 * (i % 2)
                _draw_path(axis, alphas, values, split, metric, side)
            _alpha_axis(axis)
            axis.set_ylabel(METRIC_LABEL[metric])
            axis.set_ylim(bottom=0)
            axis.legend(loc="best")
        fig.suptitle(f"Linear interpolation: {title}")
        written = _save(fig, out)
    if "layerwise" in record:
        written += plot_layerwise(record, f"{_stem(out)}_layerwise")
    return written


def plot_layerwise(record: dict, out: str | os.PathLike) -> list[Path]:
    """Grouped bars, one group per block: the test error barrier (train if there is no test)
    when only that block moves and when all but that block move (Vlaar & Frankle 2022)."""
    rows = record.get("layerwise")
    if not isinstance(rows, list) or not rows:
        raise LmcError("'layerwise' must be a non-empty list of blocks")
    modes = (("only", "only this block moves", BLUE),
             ("all_but", "all but this block move", ORANGE))
    for row in rows:
        for mode, _, _ in modes:
            _mapping(_need(row, mode, "layerwise entry"), f"layerwise {mode}")
    split = "test" if all("test" in row[m] for row in rows for m, _, _ in modes) else "train"
    blocks = [str(_need(row, "block", "layerwise entry")) for row in rows]
    y = np.arange(len(rows))
    whole = record.get("barriers", {}).get(split, {}).get("error", {}).get("mean")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.0, 1.6 + 0.5 * len(rows)), layout="constrained")
        axis = fig.add_subplot()
        for j, (mode, label, colour) in enumerate(modes):
            values = [100 * _error_barrier(row[mode], split, f"layerwise {mode}") for row in rows]
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
        fig.suptitle(f"Layer-wise interpolation: {_title(record.get('model'), record.get('data'))}")
        return _save(fig, out)


def plot_instability(record: dict, out: str | os.PathLike) -> list[Path]:
    """Instability (test error barrier between children) against the spawn step k (`<out>`),
    and the mean test-error paths of every k overlaid (`<out>_curves`).

    Frankle, Dziugaite, Roy & Carbin 2020: a network is stable at k when the barrier is
    below the threshold (2 percentage points).
    """
    points, steps, means, stds = _barrier_series(record)
    threshold = 100 * _number(record.get("threshold", 0.02), "threshold")
    config = record.get("config") or {}
    title = _title(config.get("model"), config.get("dataset"))
    details = [f"{record['children']} children per step"] if "children" in record else []
    if record.get("dense_test_accuracy") is not None:
        accuracy = _number(record["dense_test_accuracy"], "dense_test_accuracy")
        details.append(f"dense test accuracy {100 * accuracy:.1f}%")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.2, 3.6), layout="constrained")
        axis = fig.add_subplot()
        axis.plot(steps, means, color=BLUE, marker="o", label="mean over pairs")
        bars = [(k, m, s) for k, m, s in zip(steps, means, stds, strict=True) if s is not None]
        if bars:
            k, m, s = zip(*bars, strict=True)
            axis.errorbar(k, m, yerr=s, fmt="none", ecolor=BLUE, elinewidth=1.2, capsize=3,
                          label="± std")
        axis.axhline(threshold, color=GREY, ls="--", lw=1.2,
                     label=f"stable below {threshold:g} pts")
        _step_axis(axis, steps)
        top = max([threshold] + [m + (s or 0) for m, s in zip(means, stds, strict=True)])
        axis.set_ylim(0, 1.15 * top if top > 0 else 1)
        axis.set_xlabel("spawn step k (iterations, log scale)")
        axis.set_ylabel("instability: test error\nbarrier (percentage points)")
        axis.legend(loc="best")
        fig.suptitle("\n".join([f"Instability analysis: {title}", ", ".join(details)]).strip())
        written = _save(fig, out)
    written += _plot_spawn_curves(record, points, title, f"{_stem(out)}_curves")
    return written


def _barrier_series(record: dict) -> tuple[list[dict], list[int], list[float], list]:
    """Points sorted by step, and the mean and std (None where n <= 1) of the test error
    barrier in percentage points."""
    points = _need(record, "points", "instability record")
    if not isinstance(points, list) or not points:
        raise LmcError("instability record has no points")
    points = sorted(points, key=lambda p: _number(_need(p, "step", "point"), "step"))
    means, stds = [], []
    for p in points:
        barrier = _mapping(_need(p, "error_barrier", f"point at step {p['step']}"),
                           "error_barrier")
        means.append(100 * _number(_need(barrier, "mean", "error_barrier"), "error_barrier"))
        n = _number(barrier.get("n", 1), "error_barrier n")
        std = barrier.get("std")
        std = None if std is None or n <= 1 else _number(std, "error_barrier std")
        stds.append(100 * std if std is not None and math.isfinite(std) else None)
    return points, [int(p["step"]) for p in points], means, stds


def plot_instability_comparison(record: dict, out: str | os.PathLike) -> list[Path]:
    """Several instability analyses on one axis: `record["series"]` maps a label to an
    instability record (e.g. with and without warmup)."""
    series = _mapping(_need(record, "series", "instability comparison"), "series")
    if not series:
        raise LmcError("instability comparison has no series")
    colours = [VERMILLION, BLUE, GREEN, ORANGE, GREY]
    markers = ["o", "s", "^", "D", "v"]
    all_steps, top = [], 0.0
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.6, 3.7), layout="constrained")
        axis = fig.add_subplot()
        for i, (label, r) in enumerate(series.items()):
            _, steps, means, stds = _barrier_series(_mapping(r, f"series {label}"))
            colour, marker = colours[i % len(colours)], markers[i % len(markers)]
            accuracy = r.get("dense_test_accuracy")
            if accuracy is not None:
                label = f"{label} (dense {100 * _number(accuracy, 'dense_test_accuracy'):.1f}%)"
            axis.errorbar(steps, means, yerr=[s or 0 for s in stds], color=colour,
                          marker=marker, capsize=3, elinewidth=1.0, label=label)
            all_steps += steps
            top = max([top] + [m + (s or 0) for m, s in zip(means, stds, strict=True)])
        threshold = 100 * _number(record.get("threshold", 0.02), "threshold")
        axis.axhline(threshold, color=GREY, ls="--", lw=1.2,
                     label=f"stable below {threshold:g} pts")
        _step_axis(axis, sorted(set(all_steps)))
        axis.set_ylim(0, 1.15 * max(top, threshold))
        axis.set_xlabel("spawn step k (iterations, log scale)")
        axis.set_ylabel("instability: test error\nbarrier (percentage points)")
        axis.legend(loc="best")
        fig.suptitle(str(record.get("title", "Instability analysis")))
        return _save(fig, out)


def _plot_spawn_curves(record: dict, points: list[dict], title: str, out: str) -> list[Path]:
    """The mean test-error path (train if no test) of every spawn step, one colour per k."""
    have = [p for p in points if isinstance(p.get("mean_curves"), Mapping)]
    split = "test" if any("error" in p["mean_curves"].get("test", {}) for p in have) else "train"
    have = [p for p in have if "error" in p["mean_curves"].get(split, {})]
    if not have:
        return []
    alphas = _alphas(record)
    colours = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(have)))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.0, 3.6), layout="constrained")
        axis = fig.add_subplot()
        for p, colour in zip(have, colours, strict=True):
            values = 100 * _curve(p["mean_curves"][split]["error"], alphas,
                                  f"mean_curves.{split}.error at step {p['step']}")
            axis.plot(alphas, values, color=colour, label=f"k = {int(p['step'])}")
            axis.plot(alphas[[0, -1]], values[[0, -1]], ls="none", marker="o", color=colour)
        _alpha_axis(axis)
        axis.set_ylim(bottom=0)
        axis.set_ylabel(f"{split} error (%), mean over pairs")
        axis.legend(title="spawn step", loc="center left", bbox_to_anchor=(1.01, 0.5),
                    ncol=1 if len(have) <= 12 else 2)
        fig.suptitle(f"Paths between children: {title}")
        return _save(fig, out)


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


def _alpha_axis(axis: Axes) -> None:
    """α from 0 to 1 with the endpoints named after the networks: "A (0)" and "B (1)"."""
    axis.set_xticks([0, 0.25, 0.5, 0.75, 1], ["A (0)", "0.25", "0.5", "0.75", "B (1)"])
    axis.set_xlim(-0.04, 1.04)
    axis.set_xlabel("interpolation coefficient α")


def _step_axis(axis: Axes, steps: Sequence[int]) -> None:
    """A log-scaled step axis that still shows k = 0: symlog, linear below the smallest
    positive k. Every k gets a tick; labels are thinned so that they never overlap."""
    positive = sorted({k for k in steps if k > 0})
    if not positive:
        axis.set_xticks([0], ["0"])
        axis.set_xlim(-1, 1)
        return
    low, high = positive[0], positive[-1]
    axis.set_xscale("symlog", linthresh=low, linscale=0.7)
    axis.set_xlim(-0.25 * low if 0 in steps else 0.7 * low, 1.4 * high)
    gap = max(0.3, math.log10(high / low) / 7)
    labelled = [0] if 0 in steps else []
    for k in positive:
        if not labelled or labelled[-1] == 0 or math.log10(k / labelled[-1]) >= gap - 1e-9:
            labelled.append(k)
    axis.set_xticks(labelled, [_count(k) for k in labelled])
    axis.set_xticks(sorted(set(steps)), minor=True)
    axis.xaxis.set_minor_formatter(NullFormatter())


def _count(k: int) -> str:
    """A compact step count: 800, 1.5k, 20k."""
    return f"{k / 1000:g}k" if k >= 1000 else str(k)


def _save(fig: Figure, out: str | os.PathLike) -> list[Path]:
    """Write `fig` as `<out>.png` (200 dpi) and `<out>.pdf`, each atomically."""
    stem = _stem(out)
    paths = []
    for fmt, metadata in (("png", None), ("pdf", {"CreationDate": None})):
        path = Path(f"{stem}.{fmt}")
        atomic_write(path, lambda f, fmt=fmt, m=metadata: fig.savefig(f, format=fmt, dpi=DPI,
                                                                         metadata=m))
        paths.append(path)
    return paths


def _stem(out: str | os.PathLike) -> str:
    """`out` without a .png/.pdf suffix (other dots, as in "lr=0.1", are kept)."""
    out = Path(out)
    return str(out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out)


def _title(model: Any, data: Any) -> str:
    """ "conv1d on mnist1d" from a model (a name or a dict with "name") and a data set."""
    name = model.get("name") if isinstance(model, Mapping) else model
    return " on ".join(str(x) for x in (name, data) if x) or "unnamed result"


def _ordered(curves: Mapping) -> list[str]:
    """Splits present, test first, then train, then any other."""
    return sorted(curves, key=lambda s: ({"test": 0, "train": 1}.get(s, 2), s))


def _alphas(record: Mapping) -> np.ndarray:
    alphas = _curve(_need(record, "alphas", "record"), None, "alphas")
    if len(alphas) < 2 or np.any(np.diff(alphas) <= 0):
        raise LmcError("'alphas' must be an increasing list of at least two values")
    return alphas


def _curve(values: Any, alphas: np.ndarray | None, what: str) -> np.ndarray:
    """`values` as a 1-D float array, one value per α."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise LmcError(f"{what} must be a list of numbers") from e
    if array.ndim != 1 or (alphas is not None and len(array) != len(alphas)):
        n = "" if alphas is None else f" of {len(alphas)} (one per alpha)"
        raise LmcError(f"{what} must be a list{n} of numbers, got shape {array.shape}")
    return array


def _error_barrier(by_split: Mapping, split: str, what: str) -> float:
    return _number(_need(_need(by_split, split, what), "error", f"{what} {split}"),
                   f"{what} {split} error")


def _need(mapping: Any, key: str, what: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise LmcError(f"{what} has no {key!r}")
    return mapping[key]


def _mapping(value: Any, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise LmcError(f"{what} must be a JSON object")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LmcError(f"{what} must be a number, got {value!r}")
    return float(value)


def plot_sharpness(record: dict, out: str | os.PathLike) -> list[Path]:
    """The smoothed Hessian spectral density (stochastic Lanczos quadrature, log scale)
    with the top eigenvalues marked; nothing when the record holds no density."""
    density = record.get("density")
    if not isinstance(density, Mapping):
        return []
    grid = np.asarray(_need(density, "grid", "density"), float)
    values = np.asarray(_need(density, "density", "density"), float)
    if grid.shape != values.shape or grid.size < 2:
        raise LmcError("density.grid and density.density must be equal-length lists")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.4, 3.6), layout="constrained")
        axis = fig.add_subplot()
        floor = max(values.max() * 1e-12, 1e-300)
        axis.semilogy(grid, np.maximum(values, floor), color=BLUE)
        tops = (record.get("top_eigenvalues") or {}).get("eigenvalues", [])
        for i, lam in enumerate(tops):
            axis.axvline(lam, color=VERMILLION, ls="--", lw=1,
                         label="top eigenvalues (Lanczos)" if i == 0 else None)
        axis.set_xlabel("eigenvalue λ")
        axis.set_ylabel("density (smoothed)")
        if tops:
            axis.legend(loc="best")
        scope = ", live weights" if record.get("masked") else ""
        fig.suptitle(f"Hessian spectrum: {_title(record.get('model'), record.get('data'))}\n"
                     f"{record.get('split', 'train')} loss, {record.get('examples')} examples"
                     f"{scope}")
        return _save(fig, out)


def plot_sharpness_path(record: dict, out: str | os.PathLike) -> list[Path]:
    """Error, λ_max and trace along the interpolation path, side by side."""
    alphas = _alphas(record)
    lam = _curve(_need(record, "lambda_max", "sharpness path"), alphas, "lambda_max")
    trace = _curve(_need(record, "trace", "sharpness path"), alphas, "trace")
    se = np.asarray(record.get("trace_standard_error", np.zeros_like(trace)), float)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10.5, 3.4), layout="constrained")
        error_axis, lam_axis, trace_axis = fig.subplots(1, 3)
        for split, curves in (record.get("curves") or {}).items():
            if "error" in curves:
                colour, style, _ = SPLIT_STYLE.get(split, OTHER_SPLIT_STYLE)
                error_axis.plot(alphas, 100 * _curve(curves["error"], alphas, "error"),
                                color=colour, ls=style, label=split)
        error_axis.set_ylabel(METRIC_LABEL["error"])
        error_axis.legend(loc="best")
        lam_axis.plot(alphas, lam, color=BLUE, marker="o")
        lam_axis.set_ylabel("λ_max of the Hessian")
        trace_axis.errorbar(alphas, trace, yerr=np.nan_to_num(se), color=GREEN, marker="o",
                            capsize=3)
        trace_axis.set_ylabel("trace of the Hessian")
        for axis in (error_axis, lam_axis, trace_axis):
            _alpha_axis(axis)
        fig.suptitle(f"Sharpness along the path: {_title(record.get('model'), record.get('data'))}")
        return _save(fig, out)


# One colour and marker per pruning method, IMP first and strongest.
METHOD_STYLE = {"imp": (BLUE, "o", "IMP"), "random": (GREY, "s", "random pruning"),
                "invert": (ORANGE, "v", "inverted scores"),
                "shuffle": (GREEN, "D", "shuffled mask"),
                "reinit": (VERMILLION, "^", "reinitialised")}


def _density_axis(axis: Axes, densities: Sequence[float]) -> None:
    """Weights remaining (%) on a log scale, decreasing to the right: sparsity grows."""
    low = min(densities)
    axis.set_xscale("log")
    # Ticks at the densities of 20%-per-level pruning (0.8^n), at most about eight.
    levels = max(1, math.floor(math.log(low) / math.log(0.8) + 1e-9))
    every = max(1, math.ceil(levels / 8))
    ticks = [100 * 0.8 ** n for n in range(0, levels + 1, every)]
    axis.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlim(105, 0.8 * low * 100)
    axis.set_xlabel("weights remaining (%, log scale)")


def plot_imp(record: dict, out: str | os.PathLike) -> list[Path]:
    """Test accuracy against density, one line per method, with the dense accuracy and
    its matching band (`<out>`); the error barrier between successive IMP levels against
    density (`<out>_barriers`, Paul et al. 2023), when it was measured."""
    methods = _mapping(_need(record, "methods", "methods"), "methods")
    dense = 100 * _number(_need(record, "dense_test_accuracy", "dense accuracy"), "dense accuracy")
    tolerance = 100 * _number(record.get("tolerance", 0.01), "tolerance")
    config = record.get("config") or {}
    title = _title(config.get("model"), config.get("dataset"))
    rewind = record.get("rewind_step")
    details = ", ".join(x for x in (
        f"rewind to step {rewind}" if rewind is not None else "",
        f"{record['criterion']} criterion" if record.get("criterion") else "") if x)
    densities = [_number(lv["density"], "density") for lvs in methods.values() for lv in lvs]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.6, 3.8), layout="constrained")
        axis = fig.add_subplot()
        axis.axhspan(dense - tolerance, dense, color=GREY, alpha=0.15, lw=0,
                     label=f"matching (within {tolerance:g} pts)")
        axis.axhline(dense, color=GREY, ls="--", lw=1.2, label=f"dense {dense:.1f}%")
        for name, levels in methods.items():
            colour, marker, label = METHOD_STYLE.get(name, (GREY, ".", name))
            x = [100 * lv["density"] for lv in levels]
            y = [100 * lv["test_accuracy"] for lv in levels]
            axis.plot(x, y, color=colour, marker=marker, label=label,
                      lw=2.2 if name == "imp" else 1.4, zorder=3 if name == "imp" else 2)
        _density_axis(axis, densities)
        axis.set_ylabel("test accuracy (%)")
        axis.legend(loc="lower left")
        fig.suptitle("\n".join([f"Pruning: {title}", details]).strip())
        written = _save(fig, out)
    imp = [lv for lv in methods.get("imp", []) if lv.get("successive_barrier")]
    if imp:
        with matplotlib.rc_context(STYLE):
            fig = Figure(figsize=(5.6, 3.4), layout="constrained")
            axis = fig.add_subplot()
            x = [100 * lv["density"] for lv in imp]
            y = [100 * lv["successive_barrier"]["error"] for lv in imp]
            colours = [BLUE if lv.get("matching") else VERMILLION for lv in imp]
            axis.plot(x, y, color=BLUE, lw=1.4, zorder=2)
            axis.scatter(x, y, c=colours, zorder=3, s=28)
            axis.axhline(2, color=GREY, ls="--", lw=1.2, label="2 pts")
            axis.scatter([], [], c=BLUE, label="level matching")
            axis.scatter([], [], c=VERMILLION, label="level not matching")
            _density_axis(axis, densities)
            axis.set_ylabel("test error barrier to the\nprevious level (pts)")
            axis.set_ylim(bottom=0)
            axis.legend(loc="best")
            fig.suptitle(f"Successive IMP levels: {title}")
            written += _save(fig, f"{_stem(out)}_barriers")
    return written


CRITERION_STYLE = {"magnitude": (BLUE, "-"), "random": (GREY, "--")}
ESTIMATOR_LABEL = {"lambda_max": "A: λ_max bound", "quadratic": "B: quadratic model",
                   "gaussian_width": "C: Gaussian width"}


def _values(values: Any, what: str) -> np.ndarray:
    """A JSON list of numbers (null for NaN) as floats."""
    return np.array([np.nan if v is None else _number(v, what) for v in values], float)


def plot_prune_ratio(record: dict, out: str | os.PathLike) -> list[Path]:
    """The safe pruning ratio of one checkpoint (SPEC §5), three panels over the ratio p:
    the Gaussian-width prediction p_theory(R(p)) against p (estimator C: safe left of the
    crossing); the loss increase of the quadratic model and of the λ_max bound against ε
    (B and A); the Rayleigh quotient of the pruning displacement (how steep the removed
    direction is). One line per criterion (magnitude vs random)."""
    grid = _values(_need(record, "grid", "grid"), "grid")
    criteria = _mapping(_need(record, "criteria", "criteria"), "criteria")
    epsilon = _number(_need(record, "epsilon", "epsilon"), "epsilon")
    lam = max(_number(_need(record, "lambda_max", "lambda_max"), "lambda_max"), 0.0)
    title = _title(record.get("model"), record.get("data"))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(12, 3.9), layout="constrained")
        width, quad, rayleigh = fig.subplots(1, 3)
        width.plot(grid, grid, color="black", lw=1, label="p = p_theory")
        for name, c in criteria.items():
            colour, style = CRITERION_STYLE.get(name, (GREEN, ":"))
            radius = _values(c["radius"], "radius")
            width.plot(grid, _values(c["p_theory"], "p_theory"), color=colour, ls=style,
                       label=f"{name}: p_theory(R(p))")
            safe = c["safe"]["gaussian_width"]
            if safe["status"] == "crossing":
                width.axvline(safe["interpolated"], color=colour, ls=style, lw=1, alpha=0.7)
                width.plot([safe["interpolated"]], [safe["interpolated"]], "o", color=colour)
            quad.plot(grid, _values(c["quadratic"], "quadratic"), color=colour, ls=style,
                      label=f"{name}: gᵀΔ + ½ΔᵀHΔ")
            quad.plot(grid, 0.5 * lam * radius ** 2, color=colour, ls=style, lw=1, alpha=0.5,
                      label=f"{name}: ½λ_max R²")
            rayleigh.plot(grid, _values(c["rayleigh"], "rayleigh"), color=colour, ls=style,
                          label=name)
        width.set_xlabel("pruning ratio p")
        width.set_ylabel("p_theory(R(p))")
        width.set_xlim(0, 1)
        width.set_ylim(0, 1.02)
        width.set_title("C: safe while p ≤ p_theory (crossing marked)")
        width.legend(loc="lower left")
        quad.axhline(epsilon, color=VERMILLION, lw=1.2, label=f"ε = {epsilon:.3g}")
        # symlog: the quadratic model is negative where the gradient term dominates
        quad.set_yscale("symlog", linthresh=1e-3 * epsilon)
        lowest = min(np.nanmin(_values(c["quadratic"], "quadratic")) for c in criteria.values())
        quad.set_ylim(bottom=min(1.5 * lowest, -1e-3 * epsilon))
        quad.set_xlabel("pruning ratio p")
        quad.set_ylabel("predicted loss increase")
        quad.set_title("B and A: safe while below ε")
        quad.legend(loc="lower right", fontsize=8)
        rayleigh.set_xlabel("pruning ratio p")
        rayleigh.set_ylabel("ΔᵀHΔ / ‖Δ‖²")
        rayleigh.set_title("curvature along the pruned direction")
        rayleigh.legend(loc="best")
        first = next(iter(criteria))
        safe = criteria[first]["safe"]
        ratios = "; ".join(f"{ESTIMATOR_LABEL[k]} {100 * v['interpolated']:.1f}%"
                           for k, v in safe.items() if k in ESTIMATOR_LABEL)
        fig.suptitle(f"Safe pruning ratio: {title}, {first} pruning — {ratios}")
        return _save(fig, out)
