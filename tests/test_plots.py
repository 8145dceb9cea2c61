"""Figures of result records: what each figure draws, which figures a record gets, the
files `plot_result` writes, and clear errors for bad input."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from lmc.constants import STABILITY_THRESHOLD
from lmc.core.interpolate import interpolation_record
from lmc.errors import LmcError
from lmc.plots import (
    FIGURES,
    figures,
    imp_accuracy_figure,
    imp_barriers_figure,
    instability_comparison_figure,
    instability_figure,
    interpolation_figure,
    layerwise_figure,
    plot_result,
    prune_ratio_figure,
    save_figure,
    sharpness_path_figure,
    spawn_curves_figure,
    spectrum_figure,
)
from lmc.workflows.records import (
    RECORDS,
    ImpRecord,
    InstabilityComparison,
    InstabilityRecord,
    InterpolationRecord,
    PruneRatioRecord,
    SharpnessPathRecord,
    SharpnessRecord,
    load_record,
)

ALPHAS = np.linspace(0, 1, 25)
FIGURE_JSONS = sorted(p for p in (Path(__file__).parents[1] / "figures").glob("*.json")
                      if json.loads(p.read_text()).get("kind") in RECORDS)


def bump(low: float, high: float, height: float) -> np.ndarray:
    """A curve from `low` to `high` with a bump of `height` in the middle."""
    return (1 - ALPHAS) * low + ALPHAS * high + height * np.sin(np.pi * ALPHAS)


# --- small records, built directly -------------------------------------------------------

def interpolation(splits=("train", "test"), metrics=("loss", "error"), **fields):
    curves = {s: {"loss": bump(0.2, 0.25, 0.8 + 0.1 * i), "error": bump(0.05, 0.06, 0.3 + 0.1 * i)}
              for i, s in enumerate(splits)}
    curves = {s: {m: c[m] for m in metrics} for s, c in curves.items()}
    computed = interpolation_record({s: {"loss": c.get("loss", c.get("error")),
                                         "error": c.get("error", c.get("loss"))}
                                     for s, c in curves.items()}, ALPHAS)
    computed["curves"] = {s: {m: np.asarray(v).tolist() for m, v in c.items()}
                          for s, c in curves.items()}
    return InterpolationRecord(a="runs/a.npz", b="runs/b.npz",
                               model={"name": "conv1d", "widths": [32, 32]}, data="mnist1d",
                               bn=fields.pop("bn", "none"), examples={s: 1000 for s in splits},
                               **computed, **fields)


def layerwise(splits=("train", "test")) -> list:
    return [{"block": f"conv{i}",
             "only": {s: {"loss": 0.1 * i, "error": 0.02 * i} for s in splits},
             "all_but": {s: {"loss": 0.5 - 0.1 * i, "error": 0.2 - 0.02 * i} for s in splits}}
            for i in range(3)]


def points(steps=(0, 25, 100, 400, 2000), n=3, curves=True) -> list:
    out = []
    for step in steps:
        height = 0.3 / (1 + step / 50)
        point = {"step": step,
                 "error_barrier": {"mean": height, "std": 0.2 * height if n > 1 else 0.0,
                                   "min": 0.8 * height, "max": 1.2 * height, "n": n},
                 "child_test_accuracy": {"mean": 0.9, "std": 0.003}, "pairs": []}
        if curves:
            point["mean_curves"] = {"test": {"error": bump(0.1, 0.1, height).tolist(),
                                             "loss": bump(0.3, 0.3, 2 * height).tolist()}}
        out.append(point)
    return out[::-1]  # out of order: the figures sort by step


def instability(steps=(0, 25, 100, 400, 2000), n=3, curves=True) -> InstabilityRecord:
    return InstabilityRecord(config={"model": "conv1d", "dataset": "mnist1d"},
                             parents=["p0"], children=2, replicates=1, sparse=False,
                             density=None, threshold=STABILITY_THRESHOLD,
                             alphas=ALPHAS.tolist(), dense_test_accuracy=0.91,
                             points=points(steps, n, curves))


def comparison() -> InstabilityComparison:
    def series(values, accuracy):
        return {"dense_test_accuracy": accuracy, "points": [
            {"step": k, "error_barrier": {"mean": v, "std": 0.01, "n": 2}}
            for k, v in zip([0, 10, 100], values, strict=True)]}

    return InstabilityComparison(series={"warmup": series([0.06, 0.01, 0.0], 0.9),
                                         "no warmup": series([0.01, 0.01, 0.0], None)},
                                 title="warmup or not")


def sharpness(density=True) -> SharpnessRecord:
    grid = np.linspace(-1, 20, 200)
    return SharpnessRecord(
        checkpoint="c.npz", model={"name": "mlp"}, data="mnist1d", split="train", examples=512,
        dim=1000, masked=True, block=None, seed=0,
        top_eigenvalues={"eigenvalues": [18.0, 12.5, 9.0]},
        trace={"hutchinson": {"trace": 50.0, "standard_error": 1.0, "num_matvecs": 10}},
        density={"grid": grid.tolist(), "density": np.exp(-grid ** 2).tolist()}
        if density else None)


def sharpness_path() -> SharpnessPathRecord:
    base = interpolation(("test",))
    return SharpnessPathRecord(
        a="a", b="b", model={"name": "mlp"}, data="mnist1d", bn="none", examples={"test": 100},
        alphas=base.alphas, curves=base.curves, barriers=base.barriers, split_hessian="train",
        examples_hessian=256, lanczos_steps=20,
        lambda_max=bump(5, 6, 10).tolist(), trace=bump(50, 40, 20).tolist(),
        trace_standard_error=[1.0] * (len(ALPHAS) - 1) + [None])


def imp(barriers=True, chord=False) -> ImpRecord:
    def levels(method, accuracy):
        out = []
        for level in range(5):
            entry = {"level": level, "density": 0.8 ** level,
                     "test_accuracy": accuracy - 0.02 * level, "matching": level < 3}
            if barriers and method == "imp" and level > 0:
                entry["successive_barrier"] = {"error": 0.005 * level, "loss": 0.01}
                if chord:  # as written since the chord barrier and floor are measured
                    entry["successive_barrier"] |= {"error_chord": 0.004 * level,
                                                    "floor": 0.01, "train_loss": 0.1}
            out.append(entry)
        return out

    return ImpRecord(config={"model": "mlp", "dataset": "mnist1d"}, trunk="t", rewind_step=50,
                     criterion="magnitude", keep_dense=[], fraction=0.2, adaptive=False,
                     tolerance=0.01, dense_test_accuracy=0.9,
                     methods={"imp": levels("imp", 0.9), "random": levels("random", 0.85)},
                     summary={})


def prune_ratio() -> PruneRatioRecord:
    grid = np.linspace(0.01, 0.99, 50)

    def criterion(scale, status):
        return {"radius": (scale * np.sqrt(grid)).tolist(),
                "p_theory": (0.9 - 0.5 * grid * scale).tolist(),
                "quadratic": (-0.01 * grid + scale * grid ** 2).tolist(),
                "rayleigh": (1 + scale * grid).tolist(),
                "safe": {"gaussian_width": {"ratio": 0.5, "interpolated": 0.55, "status": status},
                         "quadratic": {"ratio": 0.3, "interpolated": 0.31, "status": "crossing"},
                         "lambda_max": {"ratio": 0.1, "interpolated": 0.12,
                                        "status": "crossing"}}}

    return PruneRatioRecord(
        checkpoint="c", model={"name": "mlp"}, data="mnist1d", split="train", examples=512,
        dim=100, num_prunable=90, masked=False, keep_dense=[], seed=0, criterion="magnitude",
        loss=0.3, gradient_norm=0.1, epsilon=0.05, epsilon_source="std", lambda_max=10.0,
        trace=40.0, spectrum={"nodes": [], "weights": []}, grid=grid.tolist(),
        criteria={"magnitude": criterion(1.0, "crossing"), "random": criterion(3.0, "none")},
        diagnostics={})


# --- reading figures ---------------------------------------------------------------------

def lines(axis) -> dict:
    """The labelled lines of an axis, by label."""
    return {line.get_label(): line for line in axis.get_lines()
            if not line.get_label().startswith("_")}


def legend(axis) -> list[str]:
    return [t.get_text() for t in axis.get_legend().get_texts()]


def fig_legend(fig: Figure) -> list[str]:
    """The labels of the figure's legend (drawn below the axes)."""
    return [t.get_text() for t in fig.legends[0].get_texts()]


def title(fig: Figure) -> str:
    return fig.get_suptitle()


# --- interpolation -----------------------------------------------------------------------

def test_interpolation_draws_error_and_loss_of_each_split():
    record = interpolation(bn="reset")
    fig = interpolation_figure(record)
    error, loss = fig.axes
    assert error.get_ylabel() == "error (%)"
    assert loss.get_ylabel() == "loss (cross-entropy)"
    assert error.get_xlabel() == "interpolation coefficient α"
    assert [t.get_text() for t in error.get_xticklabels()][::4] == ["A (0)", "B (1)"]
    for axis, metric, scale in ((error, "error", 100), (loss, "loss", 1)):
        labels = legend(axis)
        assert [label.split(":")[0] for label in labels] == ["test", "train"]  # test first
        drawn = {label.split(":")[0]: line for label, line in lines(axis).items()}
        for split in ("test", "train"):
            np.testing.assert_allclose(drawn[split].get_xdata(), record.alphas)
            np.testing.assert_allclose(drawn[split].get_ydata(),
                                       scale * np.asarray(record.curves[split][metric]))
    assert title(fig) == "Linear interpolation: conv1d on mnist1d, BatchNorm reset"
    # no numbers over the curves: the legend, below the axes, gives the mean and chord
    # barriers of the record and the mean definition's floor, in points for the error
    assert not [t.get_text() for t in error.texts if t.get_text()]  # arrows only
    for split, label in zip(("test", "train"), legend(error), strict=True):
        values = 100 * np.asarray(record.curves[split]["error"])
        barrier = record.barriers[split]["error"]
        assert label == (f"{split}: barrier {100 * barrier['mean']:.1f} pts (mean), "
                         f"{100 * barrier['chord']:.1f} (chord); "
                         f"floor {0.5 * abs(values[0] - values[-1]):.1f}")
    assert error.get_legend().get_bbox_to_anchor().y0 < error.get_window_extent().y0


def test_interpolation_error_only_has_one_panel():
    fig = interpolation_figure(interpolation(metrics=("error",)))
    assert [a.get_ylabel() for a in fig.axes] == ["error (%)"]


def test_interpolation_without_curves_is_an_error():
    record = interpolation()
    record.curves = {"test": {}}
    with pytest.raises(LmcError, match="no error or loss curves"):
        interpolation_figure(record)


def test_layerwise_bars_are_the_block_barriers():
    record = interpolation(layerwise=layerwise())
    fig = layerwise_figure(record)
    (axis,) = fig.axes
    assert axis.get_xlabel() == "test error barrier (percentage points)"
    assert [t.get_text() for t in axis.get_yticklabels()] == ["conv0", "conv1", "conv2"]
    only, all_but = axis.containers
    np.testing.assert_allclose([b.get_width() for b in only],
                               [100 * row["only"]["test"]["error"] for row in record.layerwise])
    np.testing.assert_allclose([b.get_width() for b in all_but],
                               [100 * row["all_but"]["test"]["error"]
                                for row in record.layerwise])
    whole = 100 * record.barriers["test"]["error"]["mean"]
    assert legend(axis) == [f"whole network ({whole:.2f})", "only this block moves",
                            "all but this block move"]
    assert title(fig) == "Layer-wise interpolation: conv1d on mnist1d"


def test_layerwise_falls_back_to_train():
    fig = layerwise_figure(interpolation(("train",), layerwise=layerwise(("train",))))
    assert fig.axes[0].get_xlabel() == "train error barrier (percentage points)"


def test_interpolation_figures_by_suffix():
    assert list(figures(interpolation())) == [""]
    assert list(figures(interpolation(layerwise=layerwise()))) == ["", "_layerwise"]


# --- instability -------------------------------------------------------------------------

def test_instability_draws_mean_barrier_against_step_and_threshold():
    record = instability()
    fig = instability_figure(record)
    (axis,) = fig.axes
    # symlog, named as such: k = 0 is drawn
    assert axis.get_xlabel() == "spawn step k (iterations, symlog: linear below 25)"
    assert axis.get_ylabel() == "instability: test error\nbarrier (percentage points)"
    assert axis.get_xscale() == "symlog"
    # no pairs kept: the mean definition alone; three pairs: a t-interval
    assert fig_legend(fig) == ["mean definition (Frankle et al.)", "stable below 2 pts",
                               "bars: 95% t-interval (n ≥ 3 pairs)",
                               "dots: each pair (lines: their mean)"]
    ordered = sorted(record.points, key=lambda p: p["step"])
    mean = lines(axis)["mean definition (Frankle et al.)"]
    np.testing.assert_allclose(mean.get_xdata(), [p["step"] for p in ordered])
    np.testing.assert_allclose(mean.get_ydata(),
                               [100 * p["error_barrier"]["mean"] for p in ordered])
    np.testing.assert_allclose(lines(axis)["stable below 2 pts"].get_ydata(),
                               100 * STABILITY_THRESHOLD)
    assert title(fig) == ("Instability analysis: conv1d on mnist1d\n"
                          "2 children per step, dense test accuracy 91.0%")


@pytest.mark.parametrize("steps", [(0,), (100,), (0, 10, 100, 1000, 10000, 100000)])
@pytest.mark.parametrize("n", [1, 2])
def test_instability_few_pairs_per_point_have_no_error_bars(steps, n):
    fig = instability_figure(instability(steps, n=n))
    axis = fig.axes[0]
    assert not any("interval" in label for label in fig_legend(fig))
    assert len(lines(axis)["mean definition (Frankle et al.)"].get_xdata()) == len(steps)
    if 100 in steps and len(steps) == 1:
        assert axis.get_xlabel() == "spawn step k (iterations, log scale)"


def test_instability_draws_every_pair_and_the_three_definitions():
    """With the pairs kept: chord, mean and floor, each pair's value as a dot."""
    record = instability((0, 100), n=2)
    for p in record.points:
        p["pairs"] = [{"barriers": {"test": {"error": {"mean": m, "chord": m / 2}}},
                       "curves": {"test": {"error": [0.1, 0.1 + m / 4]}}}
                      for m in (0.02, 0.06)]
    fig = instability_figure(record)
    (axis,) = fig.axes
    drawn = lines(axis)
    np.testing.assert_allclose(drawn["mean definition (Frankle et al.)"].get_ydata(), [4, 4])
    np.testing.assert_allclose(drawn["chord definition (Entezari et al.)"].get_ydata(), [2, 2])
    np.testing.assert_allclose(
        drawn["floor of the mean definition, ½|E(0) − E(1)|"].get_ydata(), [0.5, 0.5])
    dots = sorted(float(y) for c in axis.collections for _, y in c.get_offsets()
                  if len(c.get_offsets()) == 4)
    np.testing.assert_allclose(dots, sorted([2, 6, 2, 6, 1, 3, 1, 3, 0.25, 0.75, 0.25, 0.75]))
    assert not any("interval" in label for label in fig_legend(fig))


def test_spawn_curves_are_the_mean_paths_of_each_step():
    record = instability()
    (axis,) = spawn_curves_figure(record).axes
    assert axis.get_ylabel() == "test error (%), mean over pairs"
    ordered = sorted(record.points, key=lambda p: p["step"])
    assert legend(axis) == [f"k = {p['step']}" for p in ordered]
    drawn = lines(axis)
    for p in ordered:
        np.testing.assert_allclose(drawn[f"k = {p['step']}"].get_ydata(),
                                   100 * np.asarray(p["mean_curves"]["test"]["error"]))


def test_instability_figures_by_suffix():
    assert list(figures(instability())) == ["", "_curves"]
    assert list(figures(instability(curves=False))) == [""]


def test_instability_without_points_is_an_error():
    record = instability()
    record.points = []
    with pytest.raises(LmcError, match="no points"):
        figures(record)


def test_instability_comparison_draws_each_series():
    record = comparison()
    record.series["warmup (control)"] = record.series.pop("warmup")
    fig = instability_comparison_figure(record)
    (axis,) = fig.axes
    # one pair of parentheses: "(control; dense 90.0%)", not "(control) (dense 90.0%)"
    assert fig_legend(fig) == ["no warmup", "warmup (control; dense 90.0%)",
                               "stable below 2 pts", "dots: each pair (lines: their mean)"]
    drawn = lines(axis)
    for label, series in (("no warmup", record.series["no warmup"]),
                          ("warmup (control; dense 90.0%)", record.series["warmup (control)"])):
        np.testing.assert_allclose(drawn[label].get_ydata(),
                                   [100 * p["error_barrier"]["mean"] for p in series["points"]])
    assert "symlog" in axis.get_xlabel()
    assert title(fig) == "warmup or not"


# --- sharpness ---------------------------------------------------------------------------

def test_spectrum_draws_the_density_and_top_eigenvalues():
    record = sharpness()
    fig = spectrum_figure(record)
    (axis,) = fig.axes
    assert axis.get_xlabel() == "eigenvalue λ"
    assert axis.get_ylabel().startswith("density (smoothed; below")
    assert axis.get_yscale() == "log"
    density = axis.get_lines()[0]
    np.testing.assert_allclose(density.get_xdata(), record.density["grid"])
    values = np.asarray(record.density["density"])
    np.testing.assert_allclose(density.get_ydata(), np.maximum(values, values.max() * 1e-12))
    marked = [line.get_xdata()[0] for line in axis.get_lines()[1:]]
    assert marked == record.top_eigenvalues["eigenvalues"]
    assert legend(axis) == ["top eigenvalues (Lanczos)"]
    assert title(fig) == "Hessian spectrum: mlp on mnist1d\ntrain loss, 512 examples, live weights"


def test_sharpness_without_density_has_no_figure(tmp_path):
    assert figures(sharpness(density=False)) == {}
    path = sharpness(density=False).save(tmp_path / "s.json")
    assert plot_result(path) == []


def test_sharpness_path_draws_error_lambda_and_trace():
    record = sharpness_path()
    fig = sharpness_path_figure(record)
    error, lam, trace = fig.axes
    assert [a.get_ylabel() for a in fig.axes] == ["error (%)", "λ_max of the Hessian",
                                                  "trace of the Hessian"]
    np.testing.assert_allclose(lines(error)["test"].get_ydata(),
                               100 * np.asarray(record.curves["test"]["error"]))
    np.testing.assert_allclose(lam.get_lines()[0].get_ydata(), record.lambda_max)
    np.testing.assert_allclose(np.asarray(trace.containers[0].lines[0].get_ydata(), float),
                               record.trace)
    assert title(fig) == "Sharpness along the path: mlp on mnist1d"


# --- pruning -----------------------------------------------------------------------------

def test_imp_accuracy_draws_each_method_against_density():
    record = imp()
    fig = imp_accuracy_figure(record)
    (axis,) = fig.axes
    assert axis.get_xlabel() == "weights remaining (%, log scale)"
    assert axis.get_ylabel() == "test accuracy (%)"
    assert legend(axis) == ["matching band: ≥ dense − 1 pts", "dense 90.0%", "IMP",
                            "random pruning"]
    # right of the axes, over no data
    assert axis.get_legend().get_bbox_to_anchor().x0 > axis.get_window_extent().x1
    # round percentages, never powers of ten
    assert [t.get_text() for t in axis.get_xticklabels()] == ["100", "70", "50"]
    drawn = lines(axis)
    for name, label in (("imp", "IMP"), ("random", "random pruning")):
        levels = record.methods[name]
        np.testing.assert_allclose(drawn[label].get_xdata(), [100 * lv["density"] for lv in levels])
        np.testing.assert_allclose(drawn[label].get_ydata(),
                                   [100 * lv["test_accuracy"] for lv in levels])
    assert title(fig) == "Pruning: mlp on mnist1d\nrewind to step 50, magnitude criterion"


@pytest.mark.parametrize("chord", [False, True])
def test_imp_barriers_draw_successive_barriers_and_threshold(chord):
    record = imp(chord=chord)
    fig = imp_barriers_figure(record)
    (axis,) = fig.axes
    measured = [lv for lv in record.methods["imp"] if "successive_barrier" in lv]
    drawn = lines(axis)
    keys = {"mean definition (Frankle et al.)": "error"}
    if chord:  # the chord barrier and the mean definition's floor beside the mean
        keys |= {"chord definition (Entezari et al.)": "error_chord",
                 "floor of the mean definition, ½|E(0) − E(1)|": "floor"}
    for label, key in keys.items():
        np.testing.assert_allclose(drawn[label].get_xdata(),
                                   [100 * lv["density"] for lv in measured])
        np.testing.assert_allclose(drawn[label].get_ydata(),
                                   [100 * lv["successive_barrier"][key] for lv in measured])
    threshold = "stability threshold 2 pts"
    np.testing.assert_allclose(drawn[threshold].get_ydata(), 100 * STABILITY_THRESHOLD)
    assert set(drawn) == {*keys, threshold}
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[-2:] == ["filled: level matching", "hollow: not matching"]
    assert title(fig) == "Successive IMP levels: mlp on mnist1d"


def test_imp_figures_by_suffix():
    assert list(figures(imp())) == ["", "_barriers"]
    assert list(figures(imp(barriers=False))) == [""]


def test_prune_ratio_draws_the_three_estimators():
    record = prune_ratio()
    fig = prune_ratio_figure(record)
    width, quad, rayleigh = fig.axes
    assert [a.get_title() for a in fig.axes] == [
        "C: safe while p ≤ p_theory (crossing marked)", "B and A: safe while below ε",
        "curvature along the pruned direction"]
    assert [a.get_xlabel() for a in fig.axes] == ["pruning ratio p"] * 3
    for name, c in record.criteria.items():
        np.testing.assert_allclose(lines(width)[f"{name}: p_theory(R(p))"].get_ydata(),
                                   c["p_theory"])
        np.testing.assert_allclose(lines(quad)[f"{name}: gᵀΔ + ½ΔᵀHΔ"].get_ydata(),
                                   c["quadratic"])
        np.testing.assert_allclose(lines(quad)[f"{name}: ½λ_max R²"].get_ydata(),
                                   0.5 * record.lambda_max * np.asarray(c["radius"]) ** 2)
        np.testing.assert_allclose(lines(rayleigh)[name].get_ydata(), c["rayleigh"])
    np.testing.assert_allclose(lines(quad)["ε = 0.05"].get_ydata(), record.epsilon)
    assert title(fig) == ("Safe pruning ratio: mlp on mnist1d, magnitude pruning — "
                          "C: Gaussian width 55.0%; B: quadratic model 31.0%; "
                          "A: λ_max bound 12.0%")


def test_every_record_kind_has_figures():
    assert set(FIGURES) == set(RECORDS)


# --- files -------------------------------------------------------------------------------

def check_files(paths, *stems):
    expected = {f"{stem}.{ext}" for stem in stems for ext in ("png", "pdf")}
    assert sorted(p.name for p in paths) == sorted(expected)
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF")
    assert not [p for p in paths[0].parent.iterdir() if p.name.endswith(".tmp")]


def test_plot_result_writes_png_and_pdf_beside_the_json(tmp_path):
    paths = plot_result(interpolation().save(tmp_path / "result.json"))
    check_files(paths, "result")
    assert all(p.parent == tmp_path for p in paths)


def test_plot_result_writes_every_figure_under_out(tmp_path):
    path = instability().save(tmp_path / "result.json")
    paths = plot_result(path, tmp_path / "figs" / "inst")
    check_files(paths, "inst", "inst_curves")
    assert paths[0].parent == tmp_path / "figs"


def test_out_with_figure_suffix_is_a_stem(tmp_path):
    path = interpolation(layerwise=layerwise()).save(tmp_path / "result.json")
    check_files(plot_result(path, tmp_path / "lr=0.1.png"), "lr=0.1", "lr=0.1_layerwise")


def test_save_figure_drops_figure_suffix_and_creation_date(tmp_path):
    fig = interpolation_figure(interpolation())
    png, pdf = save_figure(fig, tmp_path / "a")
    assert b"CreationDate" not in pdf.read_bytes()
    assert save_figure(fig, tmp_path / "a.pdf") == [png, pdf]


# --- bad input ---------------------------------------------------------------------------

def test_unknown_kind_lists_valid_kinds(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"kind": "spectrum"}))
    with pytest.raises(LmcError) as info:
        plot_result(path)
    assert "spectrum" in str(info.value) and "result.json" in str(info.value)
    assert all(kind in str(info.value) for kind in RECORDS)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(LmcError, match="nothere.json"):
        plot_result(tmp_path / "nothere.json")


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"kind": "interpolation", ')
    with pytest.raises(LmcError, match="broken.json.*not valid JSON"):
        plot_result(path)


def test_curve_of_wrong_length_names_file_and_curve(tmp_path):
    record = interpolation()
    record.curves["test"]["error"] = record.curves["test"]["error"][:-1]
    with pytest.raises(LmcError, match=r"result.json.*curves\.test\.error"):
        plot_result(record.save(tmp_path / "result.json"))


def test_malformed_nested_value_names_the_file(tmp_path):
    rows = layerwise()
    del rows[1]["only"]
    path = interpolation(layerwise=rows).save(tmp_path / "result.json")
    with pytest.raises(LmcError, match=r"result.json.*malformed interpolation.*'only'"):
        plot_result(path)


# --- the studies' files ------------------------------------------------------------------

@pytest.mark.parametrize("path", FIGURE_JSONS, ids=lambda p: p.name)
def test_study_json_loads_and_draws(path):
    drawn = figures(load_record(path))
    assert drawn and all(isinstance(fig, Figure) for fig in drawn.values())
    for fig in drawn.values():
        fig.savefig(io.BytesIO(), format="png", dpi=30)  # lays out and renders every artist
