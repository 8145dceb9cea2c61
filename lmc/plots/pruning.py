"""Figures of pruning records: IMP and its baselines against density, the barrier between
successive IMP levels (Paul et al. 2023), both also over seeds (mean, 95% band and every
seed), and the safe one-step pruning ratio of a
checkpoint by estimators A, B and C (Paul et al. 2023; Zhang et al. 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy

from lmc.constants import STABILITY_THRESHOLD
from lmc.core.prune_ratio import ESTIMATORS
from lmc.plots.style import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    STYLE,
    VERMILLION,
    density_axis,
    title,
)
from lmc.workflows.records import ImpRecord, ImpReplicatesRecord, PruneRatioRecord
from lmc.workflows.replicates import bounds

# One colour and marker per pruning method, IMP first and strongest.
METHOD_STYLE = {"imp": (BLUE, "o", "IMP"), "random": (GREY, "s", "random pruning"),
                "invert": (ORANGE, "v", "inverted scores"),
                "shuffle": (GREEN, "D", "shuffled mask"),
                "reinit": (VERMILLION, "^", "reinitialised")}
CRITERION_STYLE = {"magnitude": (BLUE, "-"), "random": (GREY, "--")}
ESTIMATOR_LABEL = dict(zip(ESTIMATORS, ("C: Gaussian width", "B: quadratic model",
                                        "A: λ_max bound", "D: compensated (OBS)"),
                           strict=True))


def _imp_title(record: ImpRecord) -> str:
    return title(record.config.get("model"), record.config.get("dataset"))


def _densities(record: ImpRecord) -> list[float]:
    return [float(lv["density"]) for levels in record.methods.values() for lv in levels]


# barrier key -> (label, colour, line style, sideways shift of its bars in points): the
# definitions drawn side by side, in every barrier figure
BARRIER_STYLE = {"error_chord": ("chord definition (Entezari et al.)", ORANGE, "-", -5.0),
                 "error": ("mean definition (Frankle et al.)", BLUE, "-", 0.0),
                 "floor": ("floor of the mean definition, ½|E(0) − E(1)|", BLUE, ":", 5.0)}


def imp_accuracy_figure(record: ImpRecord) -> Figure:
    """Test accuracy against density, one line per method, with the dense accuracy and
    its matching band."""
    dense = 100 * float(record.dense_test_accuracy)
    tolerance = 100 * float(record.tolerance)
    rewind = record.rewind_step
    details = ", ".join(x for x in (
        f"rewind to step {rewind}" if rewind is not None else "",
        f"{record.criterion} criterion" if record.criterion else "") if x)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7.4, 3.9), layout="constrained")
        axis = fig.add_subplot()
        # a level is matching when its accuracy is at least dense − tolerance: the band
        # is that tolerance, under the dense line
        axis.axhspan(dense - tolerance, dense, color=GREEN, alpha=0.3, lw=0, zorder=0.5,
                     label=f"matching band: ≥ dense − {tolerance:g} pts")
        axis.axhline(dense, color=GREY, ls="--", lw=1.2, label=f"dense {dense:.1f}%")
        for name, levels in record.methods.items():
            colour, marker, label = METHOD_STYLE.get(name, (GREY, ".", name))
            x = [100 * lv["density"] for lv in levels]
            y = [100 * lv["test_accuracy"] for lv in levels]
            axis.plot(x, y, color=colour, marker=marker, label=label,
                      lw=2.2 if name == "imp" else 1.4, zorder=3 if name == "imp" else 2)
        density_axis(axis, _densities(record))
        axis.set_ylabel("test accuracy (%)")
        # right of the axes, never over the lines
        axis.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle("\n".join([f"Pruning: {_imp_title(record)}", details]).strip())
    return fig


def _successive(record: ImpRecord) -> list[dict]:
    return [lv for lv in record.methods.get("imp", []) if lv.get("successive_barrier")]


def has_successive_barriers(record: ImpRecord) -> bool:
    """Whether the error barrier between successive IMP levels was measured."""
    return bool(_successive(record))


def imp_barriers_figure(record: ImpRecord) -> Figure:
    """The test error barrier between successive IMP levels against density (Paul et al.
    2023), each level marked by whether it is matching: the chord definition (Entezari et
    al. 2022), and the mean definition with its floor ½|E(0) − E(1)|, which the mean
    barrier reaches by definition whenever accuracy drops (records written before the
    chord was measured: the mean only)."""
    imp = _successive(record)
    threshold = 100 * STABILITY_THRESHOLD
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 4.0), layout="constrained")
        axis = fig.add_subplot()
        x = [100 * lv["density"] for lv in imp]
        matching = [bool(lv.get("matching")) for lv in imp]
        # the definitions of `BARRIER_STYLE` the record has (before the chord was
        # measured: the mean only), each as the replicates figures draw it
        for key, (label, colour, ls, _) in BARRIER_STYLE.items():
            if not all(key in lv["successive_barrier"] for lv in imp):
                continue
            y = [100 * lv["successive_barrier"][key] for lv in imp]
            if key == "floor":
                axis.plot(x, y, color=colour, ls=ls, lw=1.2, marker="d", ms=4, zorder=2,
                          label=label)
                continue
            axis.plot(x, y, color=colour, ls=ls, lw=1.4, zorder=2, label=label)
            # filled: the level is matching; hollow: it is not
            axis.scatter(x, y, s=30, zorder=3, color=colour,
                         facecolors=[colour if m else "white" for m in matching])
        axis.axhline(threshold, color=GREY, ls="--", lw=1.2,
                     label=f"stability threshold {threshold:g} pts")
        axis.scatter([], [], color=GREY, label="filled: level matching")
        axis.scatter([], [], color=GREY, facecolors="white", label="hollow: not matching")
        density_axis(axis, _densities(record))
        axis.set_ylabel("test error barrier to the\nprevious level (pts)")
        axis.set_ylim(bottom=0)
        fig.legend(*axis.get_legend_handles_labels(), loc="outside lower center", ncol=2,
                   fontsize="small")
        fig.suptitle(f"Successive IMP levels: {_imp_title(record)}")
    return fig


def draw_replicates(axis: Axes, x: Sequence[float], estimates: Sequence[dict], colour: str,
                    label: str, *, marker: str = "o", ls: str = "-", lw: float = 1.8,
                    filled: Sequence[bool] | None = None, zorder: float = 2,
                    bars: bool = False, dodge: float = 0.0) -> float:
    """Estimates over seeds (`lmc.workflows.replicates.estimate`) against `x`, in
    percentage points: the seed mean as a line, its interval as a shaded band (or, with
    `bars`, as vertical bars shifted `dodge` points sideways, so that several series at
    the same x stay apart), every seed's value as a small dot. `filled` (per x): a hollow
    mean marker where False. Returns the lowest point drawn."""
    mean = np.asarray([100 * e["mean"] for e in estimates])
    low, high = (100 * np.asarray(b) for b in zip(*map(bounds, estimates), strict=True))
    shifted = offset_copy(axis.transData, fig=axis.figure, x=dodge, units="points")
    if bars:  # none where there is no interval (a single value, or too few to say)
        some = [i for i, e in enumerate(estimates) if e.get("interval") is not None]
        if some:
            axis.vlines(np.asarray(x, float)[some], low[some], high[some], color=colour,
                        lw=1.4, alpha=0.75, zorder=zorder - 0.5, transform=shifted)
    else:
        axis.fill_between(x, low, high, color=colour, alpha=0.18, lw=0, zorder=zorder - 0.5)
    axis.plot(x, mean, color=colour, ls=ls, lw=lw, zorder=zorder, label=label,
              transform=shifted)
    faces = colour if filled is None else [colour if f else "white" for f in filled]
    axis.scatter(x, mean, s=28, color=colour, facecolors=faces, marker=marker,
                 zorder=zorder + 0.5, transform=shifted)
    seeds = [(xi, 100 * v) for xi, e in zip(x, estimates, strict=True)
             for v in e.get("values") or []]
    if seeds:
        axis.scatter(*zip(*seeds, strict=True), s=9, color=colour, alpha=0.55,
                     marker=marker, lw=0, zorder=zorder + 0.2, transform=shifted)
    # artists drawn through a shifted transform are left out of autoscaling
    axis.update_datalim([*seeds, *zip(x, low, strict=True), *zip(x, high, strict=True)])
    axis.autoscale_view()
    return float(min([low.min(), *(v for _, v in seeds)]))


def _replicates_details(record: ImpReplicatesRecord) -> str:
    n = len(record.seeds)
    return (f"{n} seeds, mean with {100 * record.confidence:g}% t-interval; "
            f"rewind to step {record.rewind_step}, {record.criterion} criterion")


def _tolerance_label(record: ImpReplicatesRecord) -> str:
    tol = record.tolerance
    how = (f"{tol['factor']:g} × seed std {100 * tol['dense_std']:.2f}, n = {tol['n']}"
           if tol["source"] == "measured" else "given")
    return f"matching band: dense ± {100 * tol['value']:.2f} pts ({how})"


def replicates_legend(fig: Figure, axis: Axes, bars: bool = False, each: str = "seed",
                      interval: str | None = None) -> None:
    """The legend under the axes, where it never covers data; the intervals (shaded or
    bars; `interval`: their label, "" for none drawn) and the dots of each `each`
    ("seed", "pair") explained once, in grey."""
    if interval == "":
        pass
    elif bars:
        axis.vlines([], [], [], color=GREY, lw=1.4, label=interval or "bars: 95% t-interval")
    else:
        axis.fill_between([], [], color=GREY, alpha=0.18, lw=0,
                          label=interval or "shaded: 95% t-interval")
    axis.scatter([], [], s=9, color=GREY, alpha=0.55, lw=0, label=f"dots: each {each}")
    fig.legend(*axis.get_legend_handles_labels(), loc="outside lower center", ncol=2,
               fontsize="small")


def imp_replicates_accuracy_figure(record: ImpReplicatesRecord) -> Figure:
    """Test accuracy against density over seeds: per method the seed mean, its 95%
    Student-t band and every seed's points, with the mean dense accuracy and the matching
    band (mean dense ± the tolerance, measured from the seeds' spread unless given)."""
    dense = 100 * float(record.dense_test_accuracy["mean"])
    tolerance = 100 * float(record.tolerance["value"])
    densities = [float(lv["density"]) for levels in record.methods.values() for lv in levels]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.0, 4.6), layout="constrained")
        axis = fig.add_subplot()
        # hatched: apart from the methods' shaded intervals
        axis.axhspan(dense - tolerance, dense + tolerance, facecolor="none", edgecolor=GREY,
                     hatch="////", lw=0, alpha=0.45, label=_tolerance_label(record))
        axis.axhline(dense, color=GREY, ls="--", lw=1.2, label=f"dense mean {dense:.1f}%")
        for name, levels in record.methods.items():
            colour, marker, label = METHOD_STYLE.get(name, (GREY, ".", name))
            draw_replicates(axis, [100 * lv["density"] for lv in levels],
                            [lv["test_accuracy"] for lv in levels], colour, label,
                            marker=marker, lw=2.2 if name == "imp" else 1.4,
                            filled=[lv["matching"] for lv in levels],
                            zorder=3 if name == "imp" else 2)
        density_axis(axis, densities)
        axis.set_ylabel("test accuracy (%)")
        axis.scatter([], [], color=GREY, facecolors="white", label="hollow: mean not matching")
        replicates_legend(fig, axis)
        fig.suptitle(f"Pruning: {_imp_title(record)}\n{_replicates_details(record)}")
    return fig


def _replicate_successive(record: ImpReplicatesRecord) -> list[dict]:
    return [lv for lv in record.methods.get("imp", []) if lv.get("successive_barrier")]


def has_replicate_barriers(record: ImpReplicatesRecord) -> bool:
    """Whether the seeds measured the error barrier between successive IMP levels."""
    return bool(_replicate_successive(record))


def draw_barriers(axis: Axes, x: Sequence[float], barriers: Sequence[dict],
                  filled: Sequence[bool] | None = None) -> float:
    """The chord and mean error barriers and the floor (estimates over seeds) against
    `x`; returns the lowest point drawn."""
    lowest = 0.0
    for key, (label, colour, ls, dodge) in BARRIER_STYLE.items():
        if all(key in b for b in barriers):
            lowest = min(lowest, draw_replicates(
                axis, x, [b[key] for b in barriers], colour, label, ls=ls,
                lw=1.2 if key == "floor" else 1.6, filled=None if key == "floor" else filled,
                marker="d" if key == "floor" else "o", bars=True, dodge=dodge))
    return lowest


def imp_replicates_barriers_figure(record: ImpReplicatesRecord) -> Figure:
    """The test error barrier between successive IMP levels against density over seeds:
    chord and mean definitions and the mean definition's floor, each with its seed mean,
    95% band and every seed's value; hollow where the level's seed mean is not
    matching."""
    imp = _replicate_successive(record)
    threshold = 100 * STABILITY_THRESHOLD
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 4.6), layout="constrained")
        axis = fig.add_subplot()
        lowest = draw_barriers(axis, [100 * lv["density"] for lv in imp],
                               [lv["successive_barrier"] for lv in imp],
                               [lv["matching"] for lv in imp])
        axis.axhline(threshold, color=GREY, ls="--", lw=1.2,
                     label=f"stability threshold {threshold:g} pts")
        axis.scatter([], [], color=GREY, facecolors="white", label="hollow: mean not matching")
        density_axis(axis, [lv["density"] for lv in record.methods["imp"]])
        axis.set_ylabel("test error barrier to the\nprevious level (pts)")
        if lowest >= 0:
            axis.set_ylim(bottom=0)
        replicates_legend(fig, axis, bars=True)
        fig.suptitle(f"Successive IMP levels: {_imp_title(record)}\n"
                     f"{_replicates_details(record)}")
    return fig


def _floats(values: list) -> np.ndarray:
    """A JSON list of numbers (null for NaN) as floats."""
    return np.asarray(values, dtype=np.float64)


# `lmc.core.prune_ratio.SafeRatio` statuses that make the ratio a bound, not a value
_BOUND = {"above_grid": "≥", "below_grid": "<"}


def _ratio_text(safe: dict, grid: np.ndarray) -> str:
    """A safe ratio in percent; a bound where no crossing lies on the grid: "≥ 99.0%"
    (safe on the whole grid), "< 1.0%" (unsafe from its first point)."""
    status = safe.get("status")
    if status == "above_grid":
        return f"≥ {100 * float(grid[-1]):.1f}%"
    if status == "below_grid":
        return f"< {100 * float(grid[0]):.1f}%"
    return f"{100 * safe['interpolated']:.1f}%"


def _bound_marker(axis: Axes, status: str, grid: np.ndarray, colour: str) -> None:
    """A bound on the safe ratio at the edge of the grid, with an arrow pointing the way
    the true ratio lies: right from the last point (safe on the whole grid), left from
    the first (unsafe from it)."""
    at = float(grid[-1] if status == "above_grid" else grid[0])
    direction = 1 if status == "above_grid" else -1
    axis.annotate("", xy=(at + 0.06 * direction, 0.08), xytext=(at, 0.08),
                  arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.4},
                  annotation_clip=False)
    axis.plot([at], [0.08], marker="|", ms=10, mew=1.6, color=colour)
    axis.annotate(f"{_BOUND[status]} {100 * at:.0f}%", xy=(at, 0.08), xytext=(0, 6),
                  textcoords="offset points", ha="right" if direction > 0 else "left",
                  color=colour, fontsize=8)


def prune_ratio_figure(record: PruneRatioRecord) -> Figure:
    """The safe pruning ratio of one checkpoint (Paul et al. 2023; Zhang et al. 2024),
    three panels over the ratio p: the Gaussian-width prediction p_theory(R(p)) against p
    (estimator C: safe left of the crossing); the loss increase of the quadratic model and
    of the λ_max bound against ε (B and A); the Rayleigh quotient of the pruning
    displacement (how steep the removed direction is). One line per criterion (magnitude
    vs random)."""
    grid = _floats(record.grid)
    criteria = record.criteria
    epsilon = float(record.epsilon)
    lam = max(float(record.lambda_max), 0.0)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(12, 3.9), layout="constrained")
        width, quad, rayleigh = fig.subplots(1, 3)
        width.plot(grid, grid, color="black", lw=1, label="p = p_theory")
        for name, c in criteria.items():
            colour, style = CRITERION_STYLE.get(name, (GREEN, ":"))
            radius = _floats(c["radius"])
            width.plot(grid, _floats(c["p_theory"]), color=colour, ls=style,
                       label=f"{name}: p_theory(R(p))")
            safe = c["safe"]["gaussian_width"]
            if safe["status"] == "crossing":
                width.axvline(safe["interpolated"], color=colour, ls=style, lw=1, alpha=0.7)
                width.plot([safe["interpolated"]], [safe["interpolated"]], "o", color=colour)
            elif safe["status"] in _BOUND:  # no crossing on the grid: a bound, drawn so
                _bound_marker(width, safe["status"], grid, colour)
            quad.plot(grid, _floats(c["quadratic"]), color=colour, ls=style,
                      label=f"{name}: gᵀΔ + ½ΔᵀHΔ")
            quad.plot(grid, 0.5 * lam * radius ** 2, color=colour, ls=style, lw=1, alpha=0.5,
                      label=f"{name}: ½λ_max R²")
            rayleigh.plot(grid, _floats(c["rayleigh"]), color=colour, ls=style, label=name)
        width.set_xlabel("pruning ratio p")
        width.set_ylabel("p_theory(R(p))")
        width.set_xlim(0, 1)
        width.set_ylim(0, 1.02)
        width.set_title("C: safe while p ≤ p_theory (crossing marked)")
        width.legend(loc="lower left")
        quad.axhline(epsilon, color=VERMILLION, lw=1.2, label=f"ε = {epsilon:.3g}")
        # symlog: the quadratic model is negative where the gradient term dominates
        quad.set_yscale("symlog", linthresh=1e-3 * epsilon)
        lowest = min(np.nanmin(_floats(c["quadratic"])) for c in criteria.values())
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
        ratios = "; ".join(f"{ESTIMATOR_LABEL[k]} {_ratio_text(v, grid)}"
                           for k, v in safe.items() if k in ESTIMATOR_LABEL)
        fig.suptitle(f"Safe pruning ratio: {title(record.model, record.data)}, {first} pruning"
                     f" — {ratios}")
    return fig
