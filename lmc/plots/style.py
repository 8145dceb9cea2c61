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


def density_axis(axis: Axes, densities: Sequence[float]) -> None:
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
