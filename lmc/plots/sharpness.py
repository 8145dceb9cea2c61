"""Figures of sharpness records: the Hessian spectrum of one checkpoint, and λ_max and
the trace of the Hessian along the path between two checkpoints."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from lmc.errors import LmcError
from lmc.plots.style import (
    BLUE,
    GREEN,
    METRIC_LABEL,
    OTHER_SPLIT_STYLE,
    SPLIT_STYLE,
    STYLE,
    VERMILLION,
    alpha_axis,
    per_alpha,
    title,
)
from lmc.workflows.records import SharpnessPathRecord, SharpnessRecord


def has_density(record: SharpnessRecord) -> bool:
    """Whether the record holds a spectral density to draw."""
    return isinstance(record.density, dict)


def spectrum_figure(record: SharpnessRecord) -> Figure:
    """The smoothed Hessian spectral density (stochastic Lanczos quadrature, log scale)
    with the top eigenvalues marked."""
    if not has_density(record):
        raise LmcError("sharpness record has no spectral density")
    grid = np.asarray(record.density["grid"], float)
    values = np.asarray(record.density["density"], float)
    if grid.shape != values.shape or grid.size < 2:
        raise LmcError("density.grid and density.density must be equal-length lists")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.4, 3.6), layout="constrained")
        axis = fig.add_subplot()
        floor = max(values.max() * 1e-12, 1e-300)
        axis.semilogy(grid, np.maximum(values, floor), color=BLUE)
        tops = (record.top_eigenvalues or {}).get("eigenvalues", [])
        for i, lam in enumerate(tops):
            axis.axvline(lam, color=VERMILLION, ls="--", lw=1,
                         label="top eigenvalues (Lanczos)" if i == 0 else None)
        axis.set_xlabel("eigenvalue λ")
        # the density underflows to 0 far from the spectrum: such values are drawn at
        # the floor, the bottom edge of the axis, and the label says so
        axis.set_ylim(bottom=floor)
        axis.set_ylabel("density (smoothed; below\n10⁻¹² × peak: at the bottom edge)")
        if tops:
            axis.legend(loc="best")
        scope = ", live weights" if record.masked else ""
        fig.suptitle(f"Hessian spectrum: {title(record.model, record.data)}\n"
                     f"{record.split} loss, {record.examples} examples{scope}")
    return fig


def sharpness_path_figure(record: SharpnessPathRecord) -> Figure:
    """Error, λ_max and trace along the interpolation path, side by side."""
    alphas = np.asarray(record.alphas, float)
    lam = per_alpha(record.lambda_max, alphas, "lambda_max")
    trace = per_alpha(record.trace, alphas, "trace")
    se = np.asarray(record.trace_standard_error, float)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10.5, 3.4), layout="constrained")
        error_axis, lam_axis, trace_axis = fig.subplots(1, 3)
        for split, curves in (record.curves or {}).items():
            if "error" in curves:
                colour, style, _ = SPLIT_STYLE.get(split, OTHER_SPLIT_STYLE)
                error_axis.plot(alphas, 100 * per_alpha(curves["error"], alphas,
                                                        f"curves.{split}.error"),
                                color=colour, ls=style, label=split)
        error_axis.set_ylabel(METRIC_LABEL["error"])
        error_axis.legend(loc="best")
        lam_axis.plot(alphas, lam, color=BLUE, marker="o")
        lam_axis.set_ylabel("λ_max of the Hessian")
        trace_axis.errorbar(alphas, trace, yerr=np.nan_to_num(se), color=GREEN, marker="o",
                            capsize=3)
        trace_axis.set_ylabel("trace of the Hessian")
        for axis in (error_axis, lam_axis, trace_axis):
            alpha_axis(axis)
        fig.suptitle(f"Sharpness along the path: {title(record.model, record.data)}")
    return fig
