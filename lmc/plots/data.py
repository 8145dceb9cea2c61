"""Figures of the data side: the distributions of per-example data scores."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from lmc.errors import LmcError
from lmc.plots.style import BLUE, GREY, STYLE, VERMILLION, title
from lmc.workflows.records import ScoresRecord

SCORE_LABEL = {"el2n": "EL2N  ‖softmax(f(x)) − onehot(y)‖₂",
               "grand": "GraNd  ‖∇_w ℓ(x, y)‖₂"}
SCORE_COLOUR = {"el2n": BLUE, "grand": VERMILLION}


def scores_figure(record: ScoresRecord) -> Figure:
    """Histograms of the run-averaged EL2N and GraNd scores of the training examples, side
    by side, with their median and 10%/90% quantiles marked (Paul et al. 2021)."""
    names = [s for s in SCORE_LABEL if s in (record.histograms or {})]
    if not names:
        raise LmcError("scores record has no histograms")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.2 * len(names), 3.4), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(names)))
        for axis, name in zip(axes, names, strict=True):
            edges = np.asarray(record.histograms[name]["edges"], float)
            counts = np.asarray(record.histograms[name]["counts"], float)
            if edges.shape != (counts.size + 1,) or counts.size < 1:
                raise LmcError(f"histograms.{name}: edges must have one more entry than counts")
            axis.stairs(counts, edges, fill=True, color=SCORE_COLOUR[name], alpha=0.75)
            summary = (record.summary or {}).get(name, {})
            for key, style in (("q10", ":"), ("median", "--"), ("q90", ":")):
                if key in summary:
                    axis.axvline(summary[key], color=GREY, ls=style, lw=1,
                                 label={"median": "median", "q90": "10% / 90%"}.get(key))
            axis.set_xlabel(SCORE_LABEL[name])
            axis.set_ylabel("training examples")
            axis.legend(loc="best")
        at = f"step {record.step}" if record.step is not None else "mixed steps"
        fig.suptitle(f"Data scores: {title(record.model, record.data)}, {at}, "
                     f"{scored(record)} (Spearman ρ = {record.rank_correlation:.2f})")
    return fig


def scored(record: ScoresRecord) -> str:
    """ "mean of 4 runs", "1 checkpoint": what the scores are averaged over."""
    n = len(record.checkpoints)
    what = ("run" if record.runs else "checkpoint") + ("s" if n > 1 else "")
    return f"mean of {n} {what}" if n > 1 else f"{n} {what}"
