"""Fewer retraining rounds? Adaptive IMP (each level prunes the predicted safe ratio of
the previous level's solution) against IMP at 20% per level, on MNIST-1D, 3 seeds.

For each seed (the recipes and run ids of experiments/imp_mnist1d.py, rewinding to step
100): IMP at 20% per level for 16 levels, and adaptive IMP (`lmc imp --ratio auto`) with
estimator C (the Gaussian-width threshold, Paul et al. 2023 §3.3 / Zhang et al. 2024),
with the fine-tuning probe judged by training loss, and judged by training accuracy (τ
0.3, fitted in experiments/probe_criteria_mnist1d.py, or τ = the dense network's train −
test gap, or half of it), on a grid or by bisection, at safety 1, 0.75, 0.5, with a 20%
floor or a 50% / 36% cap per level; every schedule's safety is 1 unless it names another.
Each stops when the predicted ratio falls below 5% or two successive levels stop being
linearly connected. The trivial baselines: 36% and 50% per level, fixed. `--setting
conv1d` runs the convnet's subset of schedules, `--setting mlp-heldout` the MLP's main
ones on held-out seeds 3-5.

Every level is judged on MNIST-1D's 1000 test examples and on 20,000 from its generator
(experiments/mnist1d_large_test.py): by its sparsest matching level (`reached`; the
target: at least 20%-IMP's with at most half its steps, probe included) and at equal
density against 20%-IMP (`equal_density`: accuracy and steps, no tolerance). Compute is
counted in training steps (the dense trunk, T − k per level, the probe's fine-tuning
steps) and seconds.

    python experiments/adaptive_imp_mnist1d.py [--setting conv1d | mlp-heldout]
    python experiments/adaptive_imp_mnist1d.py --plot-only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import lmc
from lmc.core.evaluate import Evaluator
from lmc.files import write_json
from lmc.training.data import load_dataset
from lmc.workflows.imp import run_imp
from lmc.workflows.opened import open_checkpoint
from lmc.workflows.prune_ratio import AdaptiveFraction
from lmc.workflows.retraining import Solution

sys.path.insert(0, str(Path(__file__).parent))
from imp_mnist1d import SETTINGS  # noqa: E402  (the IMP study's recipes: same run ids)
from mnist1d_large_test import large_test_dataset  # noqa: E402
from predict_validation_mnist1d import t_interval  # noqa: E402

REWIND = 100
SCHEDULES = ("fixed 20%", "adaptive C", "adaptive probe", "adaptive probe, train accuracy",
             "adaptive probe, train accuracy, bisection", "adaptive probe, gap",
             "adaptive probe, gap, safety 0.75", "adaptive probe, gap, safety 0.5",
             "adaptive probe, gap, at least 20%", "adaptive probe, gap, at most 50%",
             "adaptive probe, gap, at most 36%",
             "adaptive probe, train accuracy, bisection, at most 50%",
             "adaptive probe, half gap", "fixed 36%", "fixed 50%")
# The conv1d's: the default probe, capped, and with its own fitted τ (0.1); C is left out
# (its Hessian of a convnet costs minutes per level on these CPUs)
CONV1D_SCHEDULES = ("fixed 20%", "adaptive probe, gap",
                    "adaptive probe, gap, safety 0.75", "adaptive probe, gap, at most 50%",
                    "adaptive probe, gap, at most 36%", "adaptive probe, τ 0.1, bisection",
                    "adaptive probe, half gap", "fixed 36%", "fixed 50%")
# Held-out seeds (3-5) for the claims read off seeds 0-2 on the 20,000-example split:
# the default, the τ 0.3 probe and safety 0.75 (equal accuracy at equal density)
HELDOUT_SCHEDULES = ("fixed 20%", "adaptive probe, train accuracy, bisection",
                     "adaptive probe, gap", "adaptive probe, gap, safety 0.75",
                     "adaptive probe, half gap", "fixed 36%", "fixed 50%")
SETTING_SCHEDULES = {"mlp": SCHEDULES, "conv1d": CONV1D_SCHEDULES,
                     "mlp-heldout": HELDOUT_SCHEDULES}
DEFAULT_SEEDS = {"mlp": "0,1,2", "conv1d": "0,1,2", "mlp-heldout": "3,4,5"}
# estimator and AdaptiveFraction options of each adaptive schedule
ADAPTIVE = {"adaptive C": ("gaussian_width", {}),
            "adaptive probe": ("probe", {"probe_criterion": "train_loss",
                                         "probe_search": "grid"}),
            "adaptive probe, train accuracy": (
                "probe", {"probe_criterion": "train_accuracy", "probe_tolerance": 0.3,
                          "probe_search": "grid"}),
            "adaptive probe, train accuracy, bisection": (
                "probe", {"probe_criterion": "train_accuracy", "probe_tolerance": 0.3,
                          "probe_search": "bisection"}),
            "adaptive probe, gap": ("probe", {}),
            "adaptive probe, gap, safety 0.75": ("probe", {"safety": 0.75}),
            "adaptive probe, gap, safety 0.5": ("probe", {"safety": 0.5}),
            "adaptive probe, gap, at least 20%": ("probe", {"min_fraction": 0.2}),
            # capped first steps (`--max-ratio`): 50%, and 36% = two 20%-levels in one
            "adaptive probe, gap, at most 50%": ("probe", {"cap": 0.5}),
            "adaptive probe, gap, at most 36%": ("probe", {"cap": 0.36}),
            "adaptive probe, τ 0.1, bisection": (
                "probe", {"probe_criterion": "train_accuracy", "probe_tolerance": 0.1,
                          "probe_search": "bisection"}),
            "adaptive probe, train accuracy, bisection, at most 50%": (
                "probe", {"probe_criterion": "train_accuracy", "probe_tolerance": 0.3,
                          "probe_search": "bisection", "cap": 0.5}),
            # τ = half the dense network's train − test gap (set per seed, `half_gap`),
            # safety 1: a tighter step instead of a shrunk one (hypothesis stated in the
            # write-up before it was run)
            "adaptive probe, half gap": ("probe", {"probe_tolerance": "half gap"})}


# The trivial baselines of adaptive IMP: a larger fixed fraction per level, as many levels
# as reach 20%-IMP's last density (2.8%). 36% is two 20%-levels in one: it reaches every
# density with half 20%-IMP's levels, so it meets the compute half of the target by
# construction; the question is what it costs in accuracy.
FIXED_WIDER = {"fixed 36%": (0.36, 8), "fixed 50%": (0.5, 6)}


def half_gap(checkpoint: str, dataset) -> float:
    """Half the dense network's train − test accuracy, as `AdaptiveFraction` measures the
    gap (its training examples, the standard test split)."""
    solution = Solution.open(checkpoint, dataset=dataset)
    o, evaluate = solution.opened, Evaluator(solution.opened.eval_apply)
    train = float(evaluate(o.params, o.state, *solution.train_split())["accuracy"])
    test = float(evaluate(o.params, o.state, *o.split("test"))["accuracy"])
    return max(0.0, train - test) / 2


def schedule_row(record, predictions, total_steps: int) -> dict:
    levels = [{"level": lv["level"], "density": lv["density"], "fraction": lv.get("fraction"),
               "test_accuracy": lv["test_accuracy"], "train_seconds": lv["train_seconds"],
               "checkpoint": lv["checkpoint"],
               "chord_barrier": (lv.get("successive_barrier") or {}).get("error_chord")}
              for lv in record.methods["imp"]]
    return {"levels": levels, "predictions": predictions, "steps_per_level": total_steps - REWIND,
            "trunk_steps": total_steps}


def seed_rows(config, seed: int, root: Path, dataset, schedules: tuple[str, ...],
              out: dict | None = None) -> dict:
    """Every schedule of one seed; those already in `out` (a cached row) are kept."""
    config = config.replace(seed=seed)
    total = config.total_steps(1)  # durations are in iterations here
    out = out or {"seed": seed, "schedules": {}}
    if "fixed 20%" not in out["schedules"]:
        fixed = run_imp(config, levels=16, rewind=REWIND, root=root, dataset=dataset,
                        successive_barriers=False, progress=False)
        out["schedules"]["fixed 20%"] = schedule_row(fixed, [], total)
        out["dense_test_accuracy"] = fixed.dense_test_accuracy
    for name in schedules[1:]:
        if name in out["schedules"]:
            continue
        if name in FIXED_WIDER:
            fraction, levels = FIXED_WIDER[name]
            record = run_imp(config, levels=levels, rewind=REWIND, fraction=fraction,
                             root=root, dataset=dataset, successive_barriers=False,
                             progress=False)
            out["schedules"][name] = schedule_row(record, [], total)
            continue
        estimator, options = ADAPTIVE[name]
        if options.get("probe_tolerance") == "half gap":
            dense = out["schedules"]["fixed 20%"]["levels"][0]["checkpoint"]
            options = {**options, "probe_tolerance": half_gap(dense, dataset)}
        # safety 1 (the predicted ratio itself) unless the schedule names another
        adaptive = AdaptiveFraction(estimator, dataset=dataset, **{"safety": 1.0, **options})
        record = run_imp(config, levels=30, rewind=REWIND, fraction=adaptive, root=root,
                         dataset=dataset, progress=False)
        out["schedules"][name] = schedule_row(record, adaptive.predictions, total)
        print(f"  seed {seed} {name}: fractions "
              + ", ".join(f"{p['fraction']:.2f}" for p in adaptive.predictions)
              + f"; densities {[round(lv['density'], 3) for lv in record.methods['imp']]}",
              flush=True)
    return out


def add_checkpoints(row: dict, config, root: Path, dataset) -> None:
    """Each level's checkpoint, for rows cached before the study kept them: the schedule
    replayed with its recorded fractions (same masks, so the same runs: nothing trains)."""
    levels = row["levels"]
    if all("checkpoint" in lv for lv in levels):
        return
    fractions = [lv["fraction"] for lv in levels[1:]]
    # a fixed fraction as a number: a callable one is an adaptive schedule, which stops
    # where successive levels are no longer connected
    fraction = (fractions[0] if len(set(fractions)) == 1 and row["predictions"] == []
                else lambda level, _: fractions[level - 1])
    replay = run_imp(config, levels=len(fractions), rewind=REWIND, root=root, dataset=dataset,
                     fraction=fraction, successive_barriers=False, progress=False)
    for lv, again in zip(levels, replay.methods["imp"], strict=True):
        assert abs(lv["test_accuracy"] - again["test_accuracy"]) < 1e-9, "not the same run"
        lv["checkpoint"] = again["checkpoint"]


def add_large_test_accuracy(row: dict, large, dataset) -> None:
    """Each level's accuracy on the 20,000-example test split (mnist1d_large_test.py)."""
    for lv in row["levels"]:
        if "large_test_accuracy" in lv:
            continue
        o = open_checkpoint(lv["checkpoint"], dataset=large)
        evaluate = Evaluator(o.eval_apply)
        lv["large_test_accuracy"] = float(evaluate(o.params, o.state, *o.split("test"))["accuracy"])
        # the checkpoint is the level: its standard test accuracy is the recorded one
        standard = evaluate(o.params, o.state, dataset.x_test, dataset.y_test)["accuracy"]
        assert abs(float(standard) - lv["test_accuracy"]) < 1e-6, lv["checkpoint"]


def reached(row: dict, dense_mean: float, tolerance: float, key: str = "test_accuracy"
            ) -> tuple[int, float]:
    """(levels, density) of the sparsest matching level. Not "matching from the dense one
    down": with 1000 test examples one level in a run of matching ones can dip below the
    tolerance by noise (20%-IMP's seed 0 does at 33%, then matches down to 5.5%)."""
    ok = [i for i, lv in enumerate(row["levels"])
          if lv[key] >= dense_mean - tolerance]
    last = max(ok, default=0)
    return last, row["levels"][last]["density"]


def compute(row: dict, levels: int, seconds_per_step: float) -> dict:
    """Training steps and seconds of the trunk and the first `levels` levels, with the
    predictions made to choose them (the prediction after the last level is counted:
    adaptive IMP cannot know it has reached its end without it)."""
    preds = row["predictions"][:levels + 1]
    steps = row["trunk_steps"] + levels * row["steps_per_level"]
    probe = sum(p.get("probe_steps", 0) for p in preds)
    predict_seconds = sum(p["seconds"] for p in preds)
    return {"levels": levels, "train_steps": steps, "probe_steps": probe,
            "seconds": (steps + probe) * seconds_per_step + predict_seconds,
            "prediction_seconds": predict_seconds}


SPARSE_END = 0.1  # equal-density comparisons: the schedule's levels at ≤ 10% density


def equal_density(row: dict, fixed: dict, key: str) -> dict | None:
    """The schedule against 20%-IMP at the same densities: over the schedule's levels at
    ≤ `SPARSE_END` density inside 20%-IMP's range, the mean of (its accuracy − 20%-IMP's,
    interpolated in log density) and of (its steps to that level, probe included, / the
    steps 20%-IMP takes to that density, trunk + log d / log 0.8 levels). None without
    such levels. No matching tolerance enters."""
    d = np.log([lv["density"] for lv in fixed["levels"]])[::-1]
    acc = np.array([lv[key] for lv in fixed["levels"]])[::-1]
    gaps, ratios = [], []
    for i, lv in enumerate(row["levels"]):
        if lv["density"] > SPARSE_END or np.log(lv["density"]) < d[0]:
            continue
        gaps.append(lv[key] - np.interp(np.log(lv["density"]), d, acc))
        own = compute(row, i, 0.0)
        levels = np.log(lv["density"]) / np.log(0.8)
        ratios.append((own["train_steps"] + own["probe_steps"])
                      / (fixed["trunk_steps"] + levels * fixed["steps_per_level"]))
    if not gaps:
        return None
    return {"accuracy_gap": float(np.mean(gaps)), "steps_ratio": float(np.mean(ratios)),
            "levels_compared": len(gaps)}


def summarise(record: dict, key: str = "test_accuracy") -> dict:
    """The schedules judged by `key`: the standard 1000-example test split's accuracy
    (matching tolerance 2 × the seeds' std of the dense accuracy), or
    "large_test_accuracy" (the 20,000-example split; the dense accuracies and so the
    matching threshold come from the same split; tolerance max(2 × the seeds' std, 2 ×
    the binomial standard error), fixed before the split was made)."""
    seeds = record["seeds"]
    dense = [s["schedules"]["fixed 20%"]["levels"][0][key] for s in seeds]
    tolerance = 2 * float(np.std(dense, ddof=1))
    if key == "large_test_accuracy":  # and never below the split's binomial noise
        p, n = float(np.mean(dense)), record["large_test_examples"]
        tolerance = max(tolerance, 2 * float(np.sqrt(p * (1 - p) / n)))
    # Seconds per training step, measured on the levels this study trained (adaptive).
    timed = [(lv["train_seconds"], row["steps_per_level"]) for s in seeds
             for row in s["schedules"].values() for lv in row["levels"][1:]
             if lv["train_seconds"]]
    per_step = float(np.median([t / n for t, n in timed]))
    out = {"tolerance": tolerance, "seconds_per_step": per_step, "schedules": {}}
    schedules = record["schedules"]
    for name in schedules:
        cells = []
        for s in seeds:
            row = s["schedules"][name]
            levels, density = reached(row, float(np.mean(dense)), tolerance, key)
            cells.append({"seed": s["seed"], "density": density,
                          **compute(row, levels, per_step)})
        out["schedules"][name] = {
            "per_seed": cells,
            **{k: t_interval([c[k] for c in cells])
               for k in ("density", "levels", "train_steps", "probe_steps", "seconds",
                         "prediction_seconds")}}
    # The fixed schedule's compute to reach the density each adaptive schedule reached.
    for name in schedules[1:]:
        ratios_steps, ratios_seconds, deeper = [], [], []
        for s, cell in zip(seeds, out["schedules"][name]["per_seed"], strict=True):
            fixed = s["schedules"]["fixed 20%"]
            lv = next((i for i, x in enumerate(fixed["levels"])
                       if x["density"] <= cell["density"] + 1e-12), len(fixed["levels"]) - 1)
            base = compute(fixed, lv, per_step)
            fixed_reach = out["schedules"]["fixed 20%"]["per_seed"][seeds.index(s)]
            ratios_steps.append((cell["train_steps"] + cell["probe_steps"]) / base["train_steps"])
            ratios_seconds.append(cell["seconds"] / base["seconds"])
            deeper.append(cell["density"] <= fixed_reach["density"] + 1e-12)
        # The target as stated: at least 20%-IMP's sparsest matching level, with at most
        # half the steps 20%-IMP took to reach it.
        target = []
        for s, cell in zip(seeds, out["schedules"][name]["per_seed"], strict=True):
            own = out["schedules"]["fixed 20%"]["per_seed"][seeds.index(s)]
            ratio = (cell["train_steps"] + cell["probe_steps"]) / own["train_steps"]
            target.append({"steps_ratio_vs_fixed_reach": ratio,
                           "met": bool(cell["density"] <= own["density"] + 1e-12
                                       and ratio <= 0.5)})
        out["schedules"][name]["target"] = target
        out["schedules"][name]["compute_vs_fixed_at_same_density"] = {
            "steps_ratio": t_interval(ratios_steps), "seconds_ratio": t_interval(ratios_seconds),
            "reaches_fixed_sparsity": deeper}
        same = [equal_density(s["schedules"][name], s["schedules"]["fixed 20%"], key)
                for s in seeds]
        out["schedules"][name]["equal_density"] = {
            "per_seed": same,
            **{k: t_interval([c[k] if c else None for c in same])
               for k in ("accuracy_gap", "steps_ratio")}}
    return out


# The schedules the figure draws (the table has all): the uncapped and the capped ones.
UNCAPPED = ("adaptive C", "adaptive probe, train accuracy, bisection",
            "adaptive probe, τ 0.1, bisection",
            "adaptive probe, gap", "adaptive probe, gap, safety 0.75",
            "adaptive probe, half gap")
CAPPED = ("adaptive probe, gap, at most 50%", "adaptive probe, gap, at most 36%",
          "adaptive probe, train accuracy, bisection, at most 50%")
WIDER = tuple(FIXED_WIDER)  # the trivial baselines: drawn dashed
LABELS = {"adaptive probe, train accuracy, bisection": "probe, τ 0.3",
          "adaptive probe, τ 0.1, bisection": "probe, τ 0.1",
          "adaptive probe, gap": "probe, gap, safety 1",
          "adaptive probe, gap, safety 0.75": "probe, gap, safety 0.75",
          "adaptive probe, half gap": "probe, half gap, safety 1",
          "adaptive probe, gap, at most 50%": "probe, gap, at most 50%",
          "adaptive probe, gap, at most 36%": "probe, gap, at most 36%",
          "adaptive probe, train accuracy, bisection, at most 50%": "probe, τ 0.3, at most 50%"}


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from lmc.plots.style import STYLE, density_axis

    record = json.loads(path.read_text())
    summary = record["summary_large_test"]
    key, seeds = "large_test_accuracy", record["seeds"]
    colours = {name: f"C{i}" for i, name in enumerate(UNCAPPED + CAPPED)}
    colours.update({"fixed 36%": "C9", "fixed 50%": "navy"})
    drawn = [name for name in record["schedules"] if name in colours]
    markers = ("o", "s", "^")  # seeds
    fixed = [s["schedules"]["fixed 20%"]["levels"] for s in seeds]
    density = [lv["density"] for lv in fixed[0]]
    acc = 100 * np.array([[lv[key] for lv in levels] for levels in fixed])
    band = [t_interval(column) for column in acc.T]
    threshold = 100 * (np.mean(acc[:, 0] / 100) - summary["tolerance"])

    def line(name):
        return "--" if name in WIDER else "-"

    def steps_of(row):
        probe = np.cumsum([0] + [p.get("probe_steps", 0) for p in row["predictions"]])
        return [row["trunk_steps"] + j * row["steps_per_level"] + probe[min(j, len(probe) - 1)]
                for j in range(len(row["levels"]))]

    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(19, 4.6), layout="constrained")
        axes = fig.subplots(1, 4, width_ratios=(1, 1, 1, 0.8))
        ax = axes[0]
        ax.fill_between([100 * d for d in density], [b["lo"] for b in band],
                        [b["hi"] for b in band], color="k", alpha=0.15, lw=0)
        ax.plot([100 * d for d in density], [b["mean"] for b in band], "k-", lw=2,
                label="fixed 20% (mean, 95% interval)")
        for name in (n for n in UNCAPPED + WIDER if n in drawn):
            for i, s in enumerate(seeds):
                levels = s["schedules"][name]["levels"]
                ax.plot([100 * lv["density"] for lv in levels], [100 * lv[key] for lv in levels],
                        line(name), marker=markers[i], ms=3.5, lw=0.8, color=colours[name],
                        label=LABELS.get(name, name) if i == 0 else None)
        ax.axhline(threshold, color="grey", ls="--", lw=1,
                   label="matching (dense − 2 × seeds' std)")
        density_axis(ax, density)
        ax.set_ylim(threshold - 8, np.max(acc) + 1)
        ax.set_ylabel(f"test accuracy (%, {record['large_test_examples']:,} examples)")
        ax.set_title("accuracy of each level")
        ax.legend(loc="lower left", fontsize="x-small")
        # the same levels against 20%-IMP's of the same seed at the same density
        ax = axes[1]
        ax.axhline(0, color="k", lw=2, label="fixed 20% (same seed)")
        for name in drawn:
            for i, s in enumerate(seeds):
                fixed_levels = s["schedules"]["fixed 20%"]["levels"]
                d = np.log([lv["density"] for lv in fixed_levels])[::-1]
                a = np.array([lv[key] for lv in fixed_levels])[::-1]
                levels = [lv for lv in s["schedules"][name]["levels"][1:]
                          if np.log(lv["density"]) >= d[0]]
                ax.plot([100 * lv["density"] for lv in levels],
                        [100 * (lv[key] - np.interp(np.log(lv["density"]), d, a))
                         for lv in levels], line(name), marker=markers[i], ms=3.5, lw=0.8,
                        color=colours[name], label=LABELS.get(name, name) if i == 0 else None)
        ax.axvspan(100 * SPARSE_END, 100 * density[-1], color="C7", alpha=0.08, lw=0,
                   label=f"compared (≤ {100 * SPARSE_END:.0f}% density)")
        density_axis(ax, density)
        ax.set_ylabel("accuracy − 20%-IMP's at the same density (points)")
        ax.set_title("against 20% per level, same seed")
        ax.legend(loc="lower left", fontsize="x-small", ncol=2)
        cost = axes[2]
        for i, s in enumerate(seeds):
            row = s["schedules"]["fixed 20%"]
            cost.plot(steps_of(row), [100 * lv["density"] for lv in row["levels"]], "k-",
                      marker=markers[i], ms=3, lw=1.5, label="fixed 20%" if i == 0 else None)
            for name in drawn:
                row = s["schedules"][name]
                cost.plot(steps_of(row), [100 * lv["density"] for lv in row["levels"]],
                          line(name), marker=markers[i], ms=3, lw=0.8, color=colours[name],
                          label=LABELS.get(name, name) if i == 0 else None)
        cost.set_yscale("log")
        cost.set_yticks([100, 50, 20, 10, 5, 2], ["100%", "50%", "20%", "10%", "5%", "2%"])
        cost.minorticks_off()
        cost.set_xlabel("training steps (trunk + levels + the probe's fine-tuning)")
        cost.set_ylabel("weights remaining (log scale)")
        cost.set_title("density against training steps")
        cost.legend(loc="upper right", fontsize="x-small")
        # the trade-off: each schedule's equal-density accuracy against its steps
        ax = axes[3]
        ax.axhline(0, color="k", lw=1)
        ax.axvline(1, color="k", lw=1)
        ax.fill_between([0, 0.5], 0, 10, color="gold", alpha=0.25, lw=0,
                        label="the target (≤ 0.5×, no accuracy lost)")
        spans, absent = [], []
        for name in drawn:
            same = summary["schedules"][name]["equal_density"]
            gap, ratio = same["accuracy_gap"], same["steps_ratio"]
            if gap["mean"] is None:
                absent.append(LABELS.get(name, name))
                continue
            ax.errorbar(ratio["mean"], 100 * gap["mean"],
                        xerr=[[ratio["mean"] - ratio["lo"]], [ratio["hi"] - ratio["mean"]]],
                        yerr=[[100 * (gap["mean"] - gap["lo"])], [100 * (gap["hi"] - gap["mean"])]],
                        fmt="s" if name in WIDER else "o", color=colours[name], ms=5, lw=1,
                        capsize=2,
                        label=LABELS.get(name, name))
            spans += [100 * gap["lo"], 100 * gap["hi"]]
        if absent:
            ax.text(0.98, 0.98, f"no level ≤ {100 * SPARSE_END:.0f}%:\n" + "\n".join(absent),
                    transform=ax.transAxes, fontsize="x-small", va="top", ha="right")
        ax.set_xlim(0, max(1.5, ax.get_xlim()[1]))
        ax.set_ylim(min(spans + [-1]) - 0.3, max(spans + [1]) + 0.3)
        ax.set_xlabel("training steps / 20%-IMP's at the same density")
        ax.set_ylabel("accuracy − 20%-IMP's (points, ≤ 10% density)")
        ax.set_title("the trade-off (mean, 95% interval over seeds)")
        ax.legend(loc="lower right", fontsize="x-small")
        fig.suptitle(f"{record['setting']} on MNIST-1D, {len(seeds)} seeds (markers): adaptive "
                     "IMP schedules against 20% per level")
    return lmc.save_figure(fig, path.with_suffix(""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=tuple(SETTING_SCHEDULES), default="mlp")
    parser.add_argument("--seeds", help="default 0,1,2; 3,4,5 for mlp-heldout")
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_validation_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    path = args.out / f"adaptive_imp_mnist1d_{args.setting}.json"
    schedules = SETTING_SCHEDULES[args.setting]
    if not args.plot_only:
        start, dataset = time.perf_counter(), load_dataset("mnist1d")
        large = large_test_dataset()
        config = SETTINGS[args.setting.removesuffix("-heldout")]
        rows = []
        for seed in (int(s) for s in (args.seeds or DEFAULT_SEEDS[args.setting]).split(",")):
            # Each seed's row is kept beside the run store: the predictions are not runs,
            # so a rerun would otherwise repeat them.
            tag = "" if args.setting.startswith("mlp") else f"_{args.setting}"
            cached = args.root / f"adaptive_imp_mnist1d{tag}_seed{seed}.json"
            row = json.loads(cached.read_text()) if cached.exists() else None
            if row is None or not set(schedules) <= set(row["schedules"]):
                row = seed_rows(config, seed, args.root, dataset, schedules, row)
                write_json(cached, row)
            for schedule in row["schedules"].values():
                add_checkpoints(schedule, config.replace(seed=seed), args.root, dataset)
                add_large_test_accuracy(schedule, large, dataset)
            write_json(cached, row)
            rows.append(row)
        record = {"study": "adaptive_imp_mnist1d", "setting": args.setting,
                  "config": config.to_dict(), "rewind": REWIND, "schedules": list(schedules),
                  "large_test_examples": int(large.y_test.shape[0]), "seeds": rows}
        record["wall_seconds"] = time.perf_counter() - start
    else:  # the summaries are functions of the rows: recompute them (cheap)
        record = json.loads(path.read_text())
        record.setdefault("schedules", list(schedules))
    record["summary"] = summarise(record)
    record["summary_large_test"] = summarise(record, "large_test_accuracy")
    write_json(path, record)
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
