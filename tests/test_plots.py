"""Figures drawn from result JSON files: every kind, partial records, and clear errors."""

import json

import numpy as np
import pytest

from lmc.errors import ConfigError, LmcError
from lmc.interpolate import interpolation_record
from lmc.plots import PLOT_KINDS, plot_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALPHAS = np.linspace(0, 1, 25)


def bump(low: float, high: float, height: float) -> np.ndarray:
    """A curve from `low` to `high` with a bump of `height` in the middle."""
    return (1 - ALPHAS) * low + ALPHAS * high + height * np.sin(np.pi * ALPHAS)


def curves(splits=("train", "test")) -> dict:
    return {s: {"loss": bump(0.2, 0.25, 0.8 + 0.1 * i), "error": bump(0.05, 0.06, 0.3 + 0.1 * i)}
            for i, s in enumerate(splits)}


def interpolation(splits=("train", "test"), **extra) -> dict:
    return {"kind": "interpolation", "a": "runs/a.npz", "b": "runs/b.npz",
            "model": {"name": "conv1d", "widths": [32, 32]}, "data": "mnist1d", "bn": "none",
            "examples": {s: 1000 for s in splits},
            **interpolation_record(curves(splits), ALPHAS), **extra}


def layerwise(splits=("train", "test")) -> list:
    return [{"block": f"conv{i}",
             "only": {s: {"loss": 0.1 * i, "error": 0.02 * i} for s in splits},
             "all_but": {s: {"loss": 0.5 - 0.1 * i, "error": 0.2 - 0.02 * i} for s in splits}}
            for i in range(3)]


def instability(steps=(0, 25, 100, 400, 2000), n=3) -> dict:
    points = []
    for step in steps:
        height = 0.3 / (1 + step / 50)
        points.append({
            "step": step,
            "error_barrier": {"mean": height, "std": 0.2 * height if n > 1 else 0.0,
                              "min": 0.8 * height, "max": 1.2 * height, "n": n},
            "child_test_accuracy": {"mean": 0.9, "std": 0.003},
            "mean_curves": {"test": {"error": bump(0.1, 0.1, height).tolist(),
                                     "loss": bump(0.3, 0.3, 2 * height).tolist()}},
            "pairs": [],
        })
    return {"kind": "instability", "config": {"model": "conv1d", "dataset": "mnist1d"},
            "children": 2, "threshold": 0.02, "alphas": ALPHAS.tolist(),
            "dense_test_accuracy": 0.91, "points": points}


def write(tmp_path, record, name="result.json"):
    path = tmp_path / name
    path.write_text(json.dumps(record, default=lambda a: a.tolist()))
    return path


def check_figures(paths, *stems):
    expected = {f"{stem}.{ext}" for stem in stems for ext in ("png", "pdf")}
    assert sorted(p.name for p in paths) == sorted(expected)
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000, path
        assert data.startswith(PNG_MAGIC if path.suffix == ".png" else b"%PDF"), path
    assert not [p for p in paths[0].parent.iterdir() if p.name.endswith(".tmp")]


def test_interpolation_default_output_beside_json(tmp_path):
    paths = plot_result(write(tmp_path, interpolation()))
    check_figures(paths, "result")
    assert all(p.parent == tmp_path for p in paths)


def test_interpolation_with_layerwise_and_explicit_out(tmp_path):
    path = write(tmp_path, interpolation(layerwise=layerwise(), bn="reset"))
    paths = plot_result(path, tmp_path / "figs" / "pair")
    check_figures(paths, "pair", "pair_layerwise")


@pytest.mark.parametrize("splits", [("test",), ("train",)])
def test_interpolation_one_split_and_layerwise_fallback(tmp_path, splits):
    path = write(tmp_path, interpolation(splits, layerwise=layerwise(splits)))
    check_figures(plot_result(path), "result", "result_layerwise")


def test_interpolation_error_only(tmp_path):
    record = interpolation()
    for split in record["curves"].values():
        del split["loss"]
    check_figures(plot_result(write(tmp_path, record)), "result")


def test_out_with_figure_suffix_is_a_stem(tmp_path):
    paths = plot_result(write(tmp_path, interpolation()), tmp_path / "lr=0.1.png")
    check_figures(paths, "lr=0.1")


def test_instability(tmp_path):
    paths = plot_result(write(tmp_path, instability()), tmp_path / "inst")
    check_figures(paths, "inst", "inst_curves")


@pytest.mark.parametrize("steps", [(0,), (100,), (0, 10, 100, 1000, 10000, 100000)])
def test_instability_single_run_per_point(tmp_path, steps):
    check_figures(plot_result(write(tmp_path, instability(steps, n=1))), "result", "result_curves")


def test_instability_without_mean_curves_draws_one_figure(tmp_path):
    record = instability()
    for point in record["points"]:
        del point["mean_curves"]
    check_figures(plot_result(write(tmp_path, record)), "result")


def test_instability_without_points_is_an_error(tmp_path):
    record = instability()
    record["points"] = []
    with pytest.raises(LmcError, match="no points"):
        plot_result(write(tmp_path, record))


def test_unknown_kind_lists_valid_kinds(tmp_path):
    with pytest.raises(ConfigError) as info:
        plot_result(write(tmp_path, {"kind": "spectrum"}))
    assert "spectrum" in str(info.value)
    assert all(kind in str(info.value) for kind in PLOT_KINDS)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(LmcError, match="nothere.json"):
        plot_result(tmp_path / "nothere.json")


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"kind": "interpolation", ')
    with pytest.raises(LmcError, match="broken.json"):
        plot_result(path)


def test_curve_of_wrong_length_names_file_and_curve(tmp_path):
    record = interpolation()
    record["curves"]["test"]["error"] = record["curves"]["test"]["error"][:-1]
    with pytest.raises(LmcError, match=r"result.json.*curves\.test\.error"):
        plot_result(write(tmp_path, record))


def test_instability_comparison(tmp_path):
    from lmc.plots import plot_result

    def series(values):
        return {"dense_test_accuracy": 0.9, "points": [
            {"step": k, "error_barrier": {"mean": v, "std": 0.01, "n": 2}}
            for k, v in zip([0, 10, 100], values, strict=True)]}

    path = tmp_path / "cmp.json"
    path.write_text(json.dumps({"kind": "instability_comparison", "title": "t", "threshold": 0.02,
                                "series": {"a": series([0.06, 0.01, 0.0]),
                                           "b": series([0.01, 0.01, 0.0])}}))
    written = plot_result(path)
    assert [p.name for p in written] == ["cmp.png", "cmp.pdf"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
