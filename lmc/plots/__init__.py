"""Publication figures drawn from result records, so they can be redrawn without recomputing.

Each figure function takes a typed record (`lmc.workflows.records`) and returns a
`matplotlib.figure.Figure`; `FIGURES` says which figures a record kind has, under which
file suffix, and when each applies. `plot_result` loads a result JSON, draws every figure
that applies and writes each as PNG (200 dpi) and PDF, atomically (`save_figure`).
Matplotlib is used through `Figure` only (no pyplot, no global backend state); the style
is applied per figure with `matplotlib.rc_context`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
from matplotlib.figure import Figure

from lmc.errors import LmcError
from lmc.files import atomic_write
from lmc.plots.data import scores_figure
from lmc.plots.interpolation import (
    has_spawn_curves,
    instability_comparison_figure,
    instability_figure,
    instability_replicates_figure,
    interpolation_figure,
    layerwise_figure,
    spawn_curves_figure,
)
from lmc.plots.pruning import (
    has_replicate_barriers,
    has_successive_barriers,
    imp_accuracy_figure,
    imp_barriers_figure,
    imp_replicates_accuracy_figure,
    imp_replicates_barriers_figure,
    prune_ratio_figure,
)
from lmc.plots.sharpness import has_density, sharpness_path_figure, spectrum_figure
from lmc.plots.style import DPI, STYLE
from lmc.workflows.records import Record, load_record

__all__ = [
    "FIGURES", "FigureSpec", "figures", "imp_accuracy_figure", "imp_barriers_figure",
    "imp_replicates_accuracy_figure", "imp_replicates_barriers_figure",
    "instability_comparison_figure", "instability_figure", "instability_replicates_figure",
    "interpolation_figure", "layerwise_figure", "plot_result", "prune_ratio_figure",
    "save_figure", "scores_figure",
    "sharpness_path_figure", "spawn_curves_figure", "spectrum_figure",
]


def _always(record: Any) -> bool:
    return True


class FigureSpec(NamedTuple):
    """One figure of a record kind: written to `<out><suffix>.png/.pdf` by `draw(record)`
    when `applies(record)`."""

    suffix: str
    draw: Callable[[Any], Figure]
    applies: Callable[[Any], bool] = _always


# The one list of figure kinds: record kind -> its figures, the main one first.
FIGURES: dict[str, tuple[FigureSpec, ...]] = {
    "interpolation": (FigureSpec("", interpolation_figure),
                      FigureSpec("_layerwise", layerwise_figure, lambda r: bool(r.layerwise))),
    "instability": (FigureSpec("", instability_figure),
                    FigureSpec("_curves", spawn_curves_figure, has_spawn_curves)),
    "instability_comparison": (FigureSpec("", instability_comparison_figure),),
    "sharpness": (FigureSpec("", spectrum_figure, has_density),),
    "sharpness_path": (FigureSpec("", sharpness_path_figure),),
    "imp": (FigureSpec("", imp_accuracy_figure),
            FigureSpec("_barriers", imp_barriers_figure, has_successive_barriers)),
    "prune_ratio": (FigureSpec("", prune_ratio_figure),),
    "imp_replicates": (FigureSpec("", imp_replicates_accuracy_figure),
                       FigureSpec("_barriers", imp_replicates_barriers_figure,
                                  has_replicate_barriers)),
    "instability_replicates": (FigureSpec("", instability_replicates_figure),),
    "scores": (FigureSpec("", scores_figure),),
}


def figures(record: Record) -> dict[str, Figure]:
    """Every figure that applies to `record`, by file suffix ("" for the main one)."""
    if record.kind not in FIGURES:
        raise LmcError(f"no figures for {record.kind!r} results; figures exist for: "
                       f"{', '.join(FIGURES)}")
    return {spec.suffix: spec.draw(record) for spec in FIGURES[record.kind]
            if spec.applies(record)}


def save_figure(fig: Figure, out: str | os.PathLike) -> list[Path]:
    """Write `fig` as `<out>.png` (200 dpi) and `<out>.pdf`, each atomically; a .png or
    .pdf suffix of `out` is dropped. The PDF has no creation date, so redrawing the same
    record gives the same file."""
    stem = _stem(out)
    paths = []
    with matplotlib.rc_context(STYLE):  # some settings (pdf.fonttype) are read when saving
        for fmt, metadata in (("png", None), ("pdf", {"CreationDate": None})):
            path = Path(f"{stem}.{fmt}")
            atomic_write(path, lambda f, fmt=fmt, m=metadata: fig.savefig(
                f, format=fmt, dpi=DPI, metadata=m))
            paths.append(path)
    return paths


def _stem(out: str | os.PathLike) -> str:
    """`out` without a .png/.pdf suffix (other dots, as in "lr=0.1", are kept)."""
    out = Path(out)
    return str(out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out)


def plot_result(json_path: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Draw the figures of a result JSON and return the written paths.

    `out` (default: the JSON path without its suffix) is the stem of the `.png` and `.pdf`
    files; extra figures of a kind append a suffix to it (`_layerwise`, `_curves`,
    `_barriers`).
    """
    json_path = Path(json_path)
    record = load_record(json_path)
    stem = _stem(json_path.with_suffix("") if out is None else out)
    try:
        drawn = figures(record)
    except LmcError as e:
        raise type(e)(f"{json_path}: {e}") from e
    except (KeyError, IndexError, TypeError, ValueError) as e:
        # nested values of a record are plain JSON: a malformed file fails here
        raise LmcError(f"{json_path}: malformed {record.kind} result "
                       f"({type(e).__name__}: {e})") from e
    written = []
    for suffix, fig in drawn.items():
        written += save_figure(fig, f"{stem}{suffix}")
    return written
