"""Fewer retraining rounds? Adaptive IMP (each level prunes the predicted safe ratio of
the previous level's solution) against IMP at 20% per level, on MNIST-1D, 3 seeds.

For each seed of the MLP setting (the recipe and run ids of experiments/imp_mnist1d.py,
rewinding to step 100): IMP at 20% per level for 16 levels (the runs of
experiments/imp_connectivity_mnist1d.py), and adaptive IMP (`lmc imp --ratio auto`) with
estimator C (the Gaussian-width threshold, Paul et al. 2023 §3.3 / Zhang et al. 2024; the
default), with the fine-tuning probe E judged by training loss (`--estimator probe`) and
with the probe judged by training accuracy (`--probe-criterion train_accuracy`, τ = 0.3
fitted on seed 0 in experiments/probe_criteria_mnist1d.py; also with the candidates
searched by bisection, `--probe-search bisection`; and lmc's default, the probe with the
dense network's train − test gap as tolerance and bisection), each stopping when the
predicted ratio falls below 5% or two successive levels stop being linearly connected.

Compute is counted in training steps (the dense trunk, T − k per level, the probe's
fine-tuning steps) and in seconds (training at the measured seconds per step of this
machine plus the measured prediction time). A schedule *reaches* density d when its
level at d is matching (test accuracy ≥ the seed-mean dense accuracy − 2 × the seeds'
std) and d is its sparsest matching level (see `reached`). The claim to test: at most
half of 20%-IMP's compute, prediction included, for at least the same matching sparsity.

    python experiments/adaptive_imp_mnist1d.py
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
from lmc.files import write_json
from lmc.training.data import load_dataset
from lmc.workflows.imp import run_imp
from lmc.workflows.prune_ratio import AdaptiveFraction

sys.path.insert(0, str(Path(__file__).parent))
from imp_mnist1d import SETTINGS  # noqa: E402  (the IMP study's recipes: same run ids)
from predict_validation_mnist1d import t_interval  # noqa: E402

REWIND = 100
SCHEDULES = ("fixed 20%", "adaptive C", "adaptive probe", "adaptive probe, train accuracy",
             "adaptive probe, train accuracy, bisection", "adaptive probe, gap (default)",
             "adaptive probe, gap, safety 0.75", "adaptive probe, gap, safety 0.5",
             "adaptive probe, gap, at least 20%")
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
            "adaptive probe, gap (default)": ("probe", {}),
            "adaptive probe, gap, safety 0.75": ("probe", {"safety": 0.75}),
            "adaptive probe, gap, safety 0.5": ("probe", {"safety": 0.5}),
            "adaptive probe, gap, at least 20%": ("probe", {"min_fraction": 0.2})}


def schedule_row(record, predictions, total_steps: int) -> dict:
    levels = [{"level": lv["level"], "density": lv["density"], "fraction": lv.get("fraction"),
               "test_accuracy": lv["test_accuracy"], "train_seconds": lv["train_seconds"],
               "chord_barrier": (lv.get("successive_barrier") or {}).get("error_chord")}
              for lv in record.methods["imp"]]
    return {"levels": levels, "predictions": predictions, "steps_per_level": total_steps - REWIND,
            "trunk_steps": total_steps}


def seed_rows(config, seed: int, root: Path, dataset, out: dict | None = None) -> dict:
    """Every schedule of one seed; those already in `out` (a cached row) are kept."""
    config = config.replace(seed=seed)
    total = config.total_steps(1)  # durations are in iterations here
    out = out or {"seed": seed, "schedules": {}}
    if "fixed 20%" not in out["schedules"]:
        fixed = run_imp(config, levels=16, rewind=REWIND, root=root, dataset=dataset,
                        successive_barriers=False, progress=False)
        out["schedules"]["fixed 20%"] = schedule_row(fixed, [], total)
        out["dense_test_accuracy"] = fixed.dense_test_accuracy
    for name, (estimator, options) in ADAPTIVE.items():
        if name in out["schedules"]:
            continue
        adaptive = AdaptiveFraction(estimator, dataset=dataset, **options)
        record = run_imp(config, levels=30, rewind=REWIND, fraction=adaptive, root=root,
                         dataset=dataset, progress=False)
        out["schedules"][name] = schedule_row(record, adaptive.predictions, total)
        print(f"  seed {seed} {name}: fractions "
              + ", ".join(f"{p['fraction']:.2f}" for p in adaptive.predictions)
              + f"; densities {[round(lv['density'], 3) for lv in record.methods['imp']]}",
              flush=True)
    return out


def reached(row: dict, dense_mean: float, tolerance: float) -> tuple[int, float]:
    """(levels, density) of the sparsest matching level. Not "matching from the dense one
    down": with 1000 test examples one level in a run of matching ones can dip below the
    tolerance by noise (20%-IMP's seed 0 does at 33%, then matches down to 5.5%)."""
    ok = [i for i, lv in enumerate(row["levels"])
          if lv["test_accuracy"] >= dense_mean - tolerance]
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


def summarise(record: dict) -> dict:
    seeds = record["seeds"]
    dense = [s["dense_test_accuracy"] for s in seeds]
    tolerance = 2 * float(np.std(dense, ddof=1))
    # Seconds per training step, measured on the levels this study trained (adaptive).
    timed = [(lv["train_seconds"], row["steps_per_level"]) for s in seeds
             for row in s["schedules"].values() for lv in row["levels"][1:]
             if lv["train_seconds"]]
    per_step = float(np.median([t / n for t, n in timed]))
    out = {"tolerance": tolerance, "seconds_per_step": per_step, "schedules": {}}
    for name in SCHEDULES:
        cells = []
        for s in seeds:
            row = s["schedules"][name]
            levels, density = reached(row, float(np.mean(dense)), tolerance)
            cells.append({"seed": s["seed"], "density": density,
                          **compute(row, levels, per_step)})
        out["schedules"][name] = {
            "per_seed": cells,
            **{k: t_interval([c[k] for c in cells])
               for k in ("density", "levels", "train_steps", "probe_steps", "seconds",
                         "prediction_seconds")}}
    # The fixed schedule's compute to reach the density each adaptive schedule reached.
    for name in SCHEDULES[1:]:
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
        out["schedules"][name]["compute_vs_fixed_at_same_density"] = {
            "steps_ratio": t_interval(ratios_steps), "seconds_ratio": t_interval(ratios_seconds),
            "reaches_fixed_sparsity": deeper}
    return out


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    from lmc.plots.style import STYLE

    record = json.loads(path.read_text())
    summary = record["summary"]
    colours = dict(zip(SCHEDULES, ("k", "C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8"),
                       strict=True))
    markers = ("o", "s", "^")  # seeds
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(11.5, 4.3), layout="constrained")
        acc_ax, cost_ax = fig.subplots(1, 2)
        # The grid probe trains the same levels as the bisection one (same ratios): drawn
        # dashed on the cost panel only, where their probe steps differ.
        grid_probe = "adaptive probe, train accuracy"
        for name in SCHEDULES:
            for i, s in enumerate(record["seeds"]):
                row = s["schedules"][name]
                probe = np.cumsum([0] + [p.get("probe_steps", 0) for p in row["predictions"]])
                steps = [row["trunk_steps"] + j * row["steps_per_level"]
                         + probe[min(j, len(probe) - 1)] for j in range(len(row["levels"]))]
                d = [lv["density"] for lv in row["levels"]]
                label = name if i == 0 else None
                if name != grid_probe:
                    acc_ax.plot(d, [100 * lv["test_accuracy"] for lv in row["levels"]], "-",
                                marker=markers[i], ms=3, lw=1, color=colours[name],
                                label=label)
                cost_ax.plot(steps, d, "--" if name == grid_probe else "-",
                             marker=markers[i], ms=3, lw=1, color=colours[name], label=label)
        dense = np.mean([s["dense_test_accuracy"] for s in record["seeds"]])
        acc_ax.axhline(100 * (dense - summary["tolerance"]), color="grey", ls="--", lw=1,
                       label="matching threshold (dense − 2 std)")
        for ax in (acc_ax,):
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:.3g}%"))
            ax.set_xlabel("weights remaining (log scale)")
        acc_ax.set_ylabel("test accuracy (%)")
        acc_ax.set_title("levels of each schedule (markers: seeds)")
        acc_ax.legend(loc="lower left", fontsize="small")
        cost_ax.set_yscale("log")
        cost_ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{100 * y:.3g}%"))
        cost_ax.set_xlabel("training steps (trunk + levels + the probe's fine-tuning)")
        cost_ax.set_ylabel("weights remaining (log scale)")
        cost_ax.set_title("density reached against training steps")
        cost_ax.legend(loc="upper right", fontsize="small")
        fig.suptitle("MLP on MNIST-1D, 3 seeds: adaptive IMP schedules vs 20% per level\n"
                     "(the probes reach 7-9% density in 2-3 levels; none reaches 20%-IMP's "
                     "sparsest matching level with half its steps)")
    return lmc.save_figure(fig, path.with_suffix(""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_validation_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    path = args.out / "adaptive_imp_mnist1d_mlp.json"
    if not args.plot_only:
        start, dataset = time.perf_counter(), load_dataset("mnist1d")
        config = SETTINGS["mlp"]
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            # Each seed's row is kept beside the run store: the predictions are not runs,
            # so a rerun would otherwise repeat them.
            cached = args.root / f"adaptive_imp_mnist1d_seed{seed}.json"
            row = json.loads(cached.read_text()) if cached.exists() else None
            if row is None or set(row["schedules"]) != set(SCHEDULES):
                row = seed_rows(config, seed, args.root, dataset, row)
                write_json(cached, row)
            rows.append(row)
        record = {"study": "adaptive_imp_mnist1d", "setting": "mlp", "config": config.to_dict(),
                  "rewind": REWIND, "seeds": rows}
        record["summary"] = summarise(record)
        record["wall_seconds"] = time.perf_counter() - start
        write_json(path, record)
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
