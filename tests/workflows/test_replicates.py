"""Replicates over seeds: the Student-t interval, the aggregation of per-seed records (no
training), the figures, and `lmc imp`/`lmc instability` with --seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lmc.errors import ConfigError, LmcError
from lmc.plots import figures
from lmc.workflows.records import (
    ImpRecord,
    ImpReplicatesRecord,
    InstabilityRecord,
    InstabilityReplicatesRecord,
    load_record,
)
from lmc.workflows.replicates import (
    T_975,
    aggregate_imp,
    aggregate_instability,
    estimate,
    matching_tolerance,
    t_quantile_975,
)


def t_density(x: np.ndarray, df: int) -> np.ndarray:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_c - (df + 1) / 2 * np.log1p(x**2 / df))


def quantile_error(t: float, df: int, points: int = 100_001) -> float:
    """t − t_{0.975, df}, to first order: (P(T <= t) − 0.975) / density(t), with P by
    Simpson's rule on the t density (an independent check of the table)."""
    x = np.linspace(0.0, t, points)
    pdf = t_density(x, df)
    h = x[1] - x[0]
    cdf = 0.5 + h / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum())
    return (cdf - 0.975) / pdf[-1]


def test_t_quantiles_are_the_known_values():
    assert t_quantile_975(2) == pytest.approx(4.303, abs=5e-4)  # n = 3
    assert t_quantile_975(1) == pytest.approx(12.706, abs=5e-4)
    assert t_quantile_975(10) == pytest.approx(2.228, abs=5e-4)
    for df in range(1, len(T_975) + 1):  # the table: rounded to four decimals
        assert abs(quantile_error(t_quantile_975(df), df)) < 5.1e-5, df
    for df in (31, 40, 60, 120, 1000):  # the expansion beyond it
        assert abs(quantile_error(t_quantile_975(df), df)) < 1e-5, df
    assert t_quantile_975(10**6) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile_975(0)


def test_estimate_is_mean_t_interval_and_sample_std():
    est = estimate([0.90, 0.92, 0.97])
    std = np.std([0.90, 0.92, 0.97], ddof=1)
    half = 4.3027 * std / math.sqrt(3)
    assert est["mean"] == pytest.approx(0.93) and est["std"] == pytest.approx(std)
    assert est["interval"] == pytest.approx([0.93 - half, 0.93 + half])
    assert est["n"] == 3 and est["values"] == [0.90, 0.92, 0.97]
    single = estimate([0.5])
    assert single["interval"] is None and single["std"] is None and single["n"] == 1


# --- synthetic per-seed records ------------------------------------------------------------

def imp_record(dense: float, accuracies: list[float], barriers: list[float]) -> ImpRecord:
    """An ImpRecord of one seed: IMP levels at 0.8^L with the given test accuracies and
    successive barriers (chord = 0.8 × mean, floor = 0.1 × mean), and a random baseline."""
    def level(i, acc, barrier=None):
        lv = {"level": i, "density": 0.8**i, "test_accuracy": acc, "train_accuracy": acc + 0.01}
        if barrier is not None:
            lv["successive_barrier"] = {"error": barrier, "error_chord": 0.8 * barrier,
                                        "floor": 0.1 * barrier, "loss": barrier}
        return lv
    imp = [level(0, dense)] + [level(i + 1, a, b) for i, (a, b) in
                               enumerate(zip(accuracies, barriers, strict=True))]
    random = [level(0, dense)] + [level(i + 1, a - 0.05) for i, a in enumerate(accuracies)]
    return ImpRecord(config={"model": "mlp", "dataset": "mnist1d"}, trunk="t", rewind_step=20,
                     criterion="magnitude", keep_dense=[], fraction=0.2, adaptive=False,
                     tolerance=0.01, dense_test_accuracy=dense,
                     methods={"imp": imp, "random": random}, summary={})


SEEDS = [0, 1, 2]
IMP_RECORDS = [imp_record(0.90, [0.91, 0.89, 0.80], [0.01, 0.02, 0.05]),
               imp_record(0.92, [0.92, 0.88, 0.84], [0.02, 0.02, 0.07]),
               imp_record(0.91, [0.90, 0.84, 0.82], [0.00, 0.05, 0.06])]


def test_imp_levels_are_estimates_over_seeds_with_the_measured_tolerance():
    record = aggregate_imp(IMP_RECORDS, SEEDS)
    tol = record.tolerance
    assert tol["source"] == "measured" and tol["n"] == 3
    assert tol["dense_std"] == pytest.approx(0.01)
    assert tol["value"] == pytest.approx(0.02)  # 2 × std(0.90, 0.92, 0.91)
    assert record.dense_test_accuracy["mean"] == pytest.approx(0.91)
    imp = record.methods["imp"]
    assert [lv["density"] for lv in imp] == pytest.approx([1, 0.8, 0.64, 0.512])
    assert imp[2]["test_accuracy"]["values"] == [0.89, 0.88, 0.84]
    assert imp[2]["test_accuracy"]["mean"] == pytest.approx(0.87)
    # matching: mean >= 0.91 − 0.02 = 0.89
    assert [lv["matching"] for lv in imp] == [True, True, False, False]
    barrier = imp[2]["successive_barrier"]
    assert set(barrier) == {"error", "error_chord", "floor"}
    assert barrier["error"]["values"] == [0.02, 0.02, 0.05]
    assert barrier["error_chord"]["mean"] == pytest.approx(0.8 * 0.03)
    assert barrier["floor"]["interval"] == pytest.approx(
        [0.1 * x for x in estimate([0.02, 0.02, 0.05])["interval"]])
    assert "successive_barrier" not in record.methods["random"][1]
    summary = record.summary["imp"]
    assert summary["min_matching_density"] == pytest.approx(0.8)
    assert summary["min_matching_level"] == 1 and summary["levels"] == 3
    # per seed, each against its own dense accuracy: 0.89 >= 0.88; 0.88 < 0.90; 0.84 < 0.89
    assert [(p["seed"], p["min_matching_level"]) for p in summary["per_seed"]] == [
        (0, 2), (1, 1), (2, 1)]
    assert record.summary["random"]["min_matching_level"] == 0
    assert len(record.records) == 3 and record.records[1]["dense_test_accuracy"] == 0.92


def test_a_given_tolerance_is_used_and_said():
    record = aggregate_imp(IMP_RECORDS, SEEDS, tolerance=0.05)
    assert record.tolerance["source"] == "given" and record.tolerance["value"] == 0.05
    assert record.tolerance["dense_std"] == pytest.approx(0.01)
    assert record.summary["imp"]["min_matching_level"] == 2
    assert matching_tolerance([0.9, 0.9])["value"] == 0.0


def test_imp_replicates_need_one_schedule_and_two_seeds():
    other = imp_record(0.9, [0.9, 0.8, 0.8], [0, 0, 0])
    other.methods["imp"][2]["density"] = 0.5
    with pytest.raises(LmcError, match="densities"):
        aggregate_imp([IMP_RECORDS[0], other], [0, 1])
    with pytest.raises(ConfigError, match="two distinct seeds"):
        aggregate_imp(IMP_RECORDS[:1], [0])


def instability_record(barriers: dict[int, list[float]], ends=(0.10, 0.12)) -> InstabilityRecord:
    """One seed's instability record: per step, pairs with these mean barriers (chord =
    mean − 0.005) and test-error ends."""
    def pair(b):
        return {"barriers": {"test": {"error": {"mean": b, "chord": b - 0.005}}},
                "curves": {"test": {"error": [ends[0], ends[0] + b, ends[1]]}},
                "aligned": {"barriers": {"test": {"error": {"mean": b / 2, "chord": b / 3}}},
                            "curves": {"test": {"error": list(ends)}}}}
    points = [{"step": k, "error_barrier": {"mean": float(np.mean(bs))},
               "child_test_accuracy": {"mean": 0.9}, "pairs": [pair(b) for b in bs]}
              for k, bs in barriers.items()]
    return InstabilityRecord(
        config={"model": "mlp", "dataset": "mnist1d"}, parents=["p"], children=3,
        replicates=1, sparse=False, density=None, threshold=0.02, alphas=[0, 0.5, 1],
        dense_test_accuracy=0.9, points=points, align="weight")


INSTABILITY_RECORDS = [instability_record({0: [0.10, 0.08, 0.06], 100: [0.01, 0.0, 0.02]}),
                       instability_record({0: [0.05, 0.05, 0.05], 100: [0.0, 0.0, 0.0]}),
                       instability_record({0: [0.07, 0.09, 0.08], 100: [0.03, 0.0, 0.0]},
                                          ends=(0.10, 0.16))]


def test_instability_per_step_is_an_estimate_of_each_seeds_mean_over_pairs():
    record = aggregate_instability(INSTABILITY_RECORDS, SEEDS)
    assert [p["step"] for p in record.points] == [0, 100]
    barrier = record.points[0]["barrier"]
    assert barrier["error"]["values"] == pytest.approx([0.08, 0.05, 0.08])
    assert barrier["error"]["n"] == 3  # seeds, not pairs
    assert barrier["error_chord"]["mean"] == pytest.approx(0.07 - 0.005)
    assert barrier["floor"]["values"] == pytest.approx([0.01, 0.01, 0.03])
    assert record.points[1]["aligned_barrier"]["error"]["values"] == pytest.approx(
        [0.005, 0.0, 0.005])
    assert record.dense_test_accuracy["std"] == 0.0 and record.align == "weight"
    with pytest.raises(LmcError, match="spawn steps"):
        aggregate_instability([INSTABILITY_RECORDS[0], instability_record({0: [0.1]})], [0, 1])


def test_figures_draw_means_bands_and_every_seed(tmp_path):
    """Each record kind round-trips through JSON and draws its figures; the accuracy figure
    has the matching band, every seed's points and a legend outside the axes."""
    imp = aggregate_imp(IMP_RECORDS, SEEDS)
    instability = aggregate_instability(INSTABILITY_RECORDS, SEEDS)
    for record in (imp, instability):
        path = record.save(tmp_path / f"{record.kind}.json")
        assert isinstance(load_record(path), (ImpReplicatesRecord, InstabilityReplicatesRecord))
    drawn = figures(imp)
    assert set(drawn) == {"", "_barriers"}
    axis = drawn[""].axes[0]
    assert not axis.get_legend() and drawn[""].legends  # below the axes, not over the data
    band = [p for p in axis.patches if p.get_label().startswith("matching band")]
    assert len(band) == 1 and "2 × seed std 1.00" in band[0].get_label()
    low, high = band[0].get_y(), band[0].get_y() + band[0].get_height()
    assert (low, high) == pytest.approx((89, 93))
    points = np.concatenate([c.get_offsets() for c in axis.collections
                             if len(c.get_offsets()) == 12])  # 4 levels × 3 seeds per method
    assert len(points) == 24
    labels = [t.get_text() for t in drawn["_barriers"].legends[0].get_texts()]
    assert {"chord definition (Entezari et al.)", "mean definition (Frankle et al.)"} <= set(
        labels)
    (axis,) = figures(instability)[""].axes
    assert "symlog" in axis.get_xlabel()


def test_cli_seeds_writes_replicates_and_plot_redraws(tmp_path, capsys):
    """The configuration of test_imp's CLI test (its compiled programs are reused)."""
    from lmc.cli import main

    out = tmp_path / "imp.json"
    assert main(["imp", "--model", "mlp", "--model-option", "widths=16", "--batch-size", "64",
                 "--duration", "100it", "--levels", "1", "--rewind", "10it", "--alphas", "5",
                 "--seeds", "2", "--runs", str(tmp_path / "runs"), "--out", str(out),
                 "--no-figure", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "2 seeds (0, 1)" in text and "2 × the seeds' std" in text and "chord" in text
    record = json.loads(out.read_text())
    assert record["kind"] == "imp_replicates" and record["seeds"] == [0, 1]
    assert [r["config"]["seed"] for r in record["records"]] == [0, 1]
    level = record["methods"]["imp"][1]
    assert level["test_accuracy"]["n"] == 2 and len(level["successive_barrier"]) == 3
    assert main(["plot", str(out)]) == 0
    assert (tmp_path / "imp.png").is_file() and (tmp_path / "imp_barriers.pdf").is_file()


def test_cli_prints_estimates_and_refuses_what_replicates_cannot_mean(tmp_path, capsys):
    """Per step: mean [low, high] and n; --seeds with pooled parents or an adaptive ratio is
    one readable error, before anything trains."""
    from lmc.cli import main
    from lmc.cli.instability import print_instability_replicates

    print_instability_replicates(aggregate_instability(INSTABILITY_RECORDS, SEEDS))
    lines = capsys.readouterr().out.splitlines()
    assert "mean, weight-aligned" in lines[2]
    half = 100 * (estimate([0.08, 0.05, 0.08])["interval"][1] - 0.07)
    assert lines[3].split()[:2] == ["0", "6.50"] and f"[{7 - half:.2f}, {7 + half:.2f}]" in lines[3]
    assert lines[3].split()[-2:] == ["3", "unstable"]
    common = ["--model", "mlp", "--runs", str(tmp_path), "--no-progress", "--seeds", "2"]
    assert main(["instability", *common, "--spawn-steps", "0it", "--replicates", "2"]) == 1
    assert "drop replicates (--replicates)" in capsys.readouterr().err
    assert main(["imp", *common, "--ratio", "auto"]) == 1
    assert "one fixed pruning ratio" in capsys.readouterr().err
    assert main(["imp", *common[:-1], "0"]) == 1
    assert "--seeds must be at least 1" in capsys.readouterr().err
