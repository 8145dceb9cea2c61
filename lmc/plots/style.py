"""The look shared by every figure: rc style, colour-blind-safe palette and axis helpers.

Colours are the Okabe-Ito palette and viridis, both colour-blind safe. The style is
applied per figure with `matplotlib.rc_context(STYLE)`, never globally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import NullFormatter

from lmc.errors import LmcError

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


def title(model: Any, data: Any) -> str:
    """ "conv1d on mnist1d" from a model (a name or a dict with "name") and a data set."""
    name = model.get("name") if isinstance(model, Mapping) else model
    return " on ".join(str(x) for x in (name, data) if x) or "unnamed result"


def ordered_splits(curves: Mapping) -> list[str]:
    """Splits present, test first, then train, then any other."""
    return sorted(curves, key=lambda s: ({"test": 0, "train": 1}.get(s, 2), s))


def per_alpha(values: Any, alphas: np.ndarray, what: str) -> np.ndarray:
    """`values` as floats, one per α; an error naming the curve if the lengths differ."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != alphas.shape:
        raise LmcError(f"{what} must hold one number per alpha ({len(alphas)}), "
                       f"got shape {array.shape}")
    return array


def alpha_axis(axis: Axes) -> None:
    """α from 0 to 1 with the endpoints named after the networks: "A (0)" and "B (1)"."""
    axis.set_xticks([0, 0.25, 0.5, 0.75, 1], ["A (0)", "0.25", "0.5", "0.75", "B (1)"])
    axis.set_xlim(-0.04, 1.04)
    axis.set_xlabel("interpolation coefficient α")


def step_axis(axis: Axes, steps: Sequence[int]) -> None:
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
    axis.set_xticks(labelled, [count(k) for k in labelled])
    axis.set_xticks(sorted(set(steps)), minor=True)
    axis.xaxis.set_minor_formatter(NullFormatter())


def count(k: int) -> str:
    """A compact step count: 800, 1.5k, 20k."""
    return f"{k / 1000:g}k" if k >= 1000 else str(k)


def step_label(steps: Sequence[int]) -> str:
    """The x label of `step_axis`, naming its scale honestly: symlog (linear below the
    smallest positive k) when k = 0 is drawn, log when every k is positive."""
    positive = [k for k in steps if k > 0]
    if not positive:
        return "spawn step k (iterations)"
    if 0 in steps:
        return f"spawn step k (iterations, symlog: linear below {count(min(positive))})"
    return "spawn step k (iterations, log scale)"


def percent(value: float) -> str:
    """A percentage with at most three significant digits and no exponent: 100, 51.2,
    6.87 -> "6.87", 0.05 -> "0.05"."""
    text = f"{value:.3g}"
    if "e" in text:  # tiny or huge: plain positional notation instead of 5e-05
        text = np.format_float_positional(value, precision=3, unique=False, fractional=False,
                                          trim="-")
    return text


def _round_ticks(low: float, high: float, mantissas: Sequence[float]) -> list[float]:
    """Round numbers m·10^e (m in `mantissas`) in [low, high], largest first."""
    out = []
    for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1):
        for m in mantissas:
            t = float(f"{m * 10.0 ** e:.12g}")
            if low * (1 - 1e-9) <= t <= high * (1 + 1e-9):
                out.append(t)
    return sorted(set(out), reverse=True)


def density_axis(axis: Axes, densities: Sequence[float]) -> None:
    """Weights remaining (%) on a log scale, decreasing to the right: sparsity grows.

    Major ticks at round percentages (100, 50, 20, 10, 5, 2, 1, ...; 1-1.5-2-3-5-7 steps,
    then every 20%-pruning level, when the range is too narrow for three of those; the
    sparsest density too, when it lies far past the last of them), labelled with at most
    three significant digits, never as powers of ten; minor ticks, unlabelled, at the
    densities drawn."""
    fractions = [float(d) for d in densities if d is not None and float(d) > 0]
    low = min(fractions) if fractions else 1.0
    high = 100.0
    axis.set_xscale("log")
    ticks = _round_ticks(100 * low, high, (1, 2, 5))
    if len(ticks) < 3:
        ticks = _round_ticks(100 * low, high, (1, 1.5, 2, 3, 5, 7))
    if len(ticks) < 3:  # a narrow range: the densities of 20%-per-level pruning (0.8^n)
        levels = max(1, math.floor(math.log(low) / math.log(0.8) + 1e-9))
        ticks = [100 * 0.8 ** n for n in range(levels + 1)]
    if ticks[-1] > 1.5 * 100 * low:  # the sparsest level far past the last round tick
        ticks.append(100 * low)
    axis.set_xticks(ticks, [percent(t) for t in ticks])
    axis.set_xticks(sorted({100 * d for d in fractions} - set(ticks)), minor=True)
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlim(105, 0.8 * low * 100)
    axis.set_xlabel("weights remaining (%, log scale)")
