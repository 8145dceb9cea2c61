"""Do the safe-ratio estimators predict how far one pruning step can go? Validation on
MNIST-1D against a retraining ground truth, over seeds.

For each seed, IMP (20% per level, rewinding to step 100, the recipe of
experiments/imp_mnist1d.py) gives solutions w_L at decreasing densities. At every
`--every`-th level the **ground truth** (`lmc.workflows.retraining.measured_safe_ratio`,
defined before any prediction was compared with it) is the largest p, by bisection on the
grid k/64 (6 retrainings), such that w_L pruned by p, rewound and retrained is matching
(test accuracy >= dense - tolerance, tolerance = 2 x the seed-to-seed std of the dense
accuracy) and in w_L's valley (chord test-error barrier < 2 points). At every level the
estimators predict it from w_L alone: A (λ_max), B (directional quadratic), C (Gaussian
width), D (compensated quadratic, Optimal Brain Surgeon) from `lmc.prune_ratio_record`,
and the probe E (`probe_safe_ratio`: fine-tune each candidate for a few steps) at several
lengths; next to two trivial predictors, the constant 0.2 (IMP's own step) and the ground
truth of seed 0 as a function of density, judged on seeds 1 and 2 only.

    python experiments/predict_validation_mnist1d.py --setting mlp --out figures
    python experiments/predict_validation_mnist1d.py --setting mlp --plot-only --out figures

Writes ``<out>/predict_validation_mnist1d_<setting>.json`` (after every level: a cut run
keeps what it did and resumes from the run store) and its figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

import lmc
from lmc.core.prune_ratio import largest_safe_ratio
from lmc.files import write_json
from lmc.training.data import load_dataset
from lmc.workflows.imp import run_imp
from lmc.workflows.replicates import estimate
from lmc.workflows.retraining import Solution, measured_safe_ratio, probe_safe_ratio

sys.path.insert(0, str(Path(__file__).parent))
from imp_mnist1d import SETTINGS  # noqa: E402  (the IMP study's recipes: same run ids)

REWIND = "100it"
FRACTION = 0.2  # IMP's step: also the constant trivial predictor
ESTIMATORS = ("lambda_max", "quadratic", "gaussian_width", "compensated")
PROBE_STEPS = (25, 100, 400)
CONSTANT = "constant_0.2"
FITTED = "seed0_curve"


def t_interval(values) -> dict:
    """Mean and 95% Student-t interval of the finite values (`lmc.workflows.replicates
    .estimate`, the one definition), as {"mean", "lo", "hi", "n"}; NaN bounds for one."""
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    if not v:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    e = estimate(v)
    lo, hi = (float("nan"), float("nan")) if e["interval"] is None else e["interval"]
    return {"mean": e["mean"], "lo": lo, "hi": hi, "n": e["n"]}


def predictions(path: str, dataset, epsilon: float | None, examples: int) -> dict:
    """A-D for magnitude and random pruning at one solution, and their costs."""
    rec = lmc.prune_ratio_record(path, epsilon=epsilon, examples=examples, dataset=dataset,
                                 grid=np.arange(1, 1000) / 1000, with_random=False)
    out = {"epsilon": rec.epsilon, "epsilon_source": rec.epsilon_source,
           "lambda_max": rec.lambda_max, "trace": rec.trace, "seconds": rec.seconds,
           "num_prunable": rec.criteria["magnitude"]["num_prunable"], "dim": rec.dim}
    for criterion, c in rec.criteria.items():
        out[criterion] = {e: c["safe"][e]["interpolated"] for e in ESTIMATORS if e in c["safe"]}
    return out


def seed_rows(config, seed: int, args, tolerance: float, dataset) -> dict:
    cfg = config.replace(seed=seed)
    t0 = time.perf_counter()
    imp = run_imp(cfg, levels=args.levels, rewind=REWIND, root=args.root, dataset=dataset,
                  tolerance=tolerance, alphas=11, progress=False)
    imp_seconds = time.perf_counter() - t0
    levels = imp.methods["imp"]
    level_seconds = [lv["train_seconds"] for lv in levels[1:] if lv["train_seconds"]]
    rows, epsilon = [], None
    for lv in levels:
        path, level = lv["checkpoint"], lv["level"]
        solution = Solution.open(path, rewind=imp.rewind_step if level == 0 else None,
                                 dataset=dataset)
        measured = level % args.every == 0
        # A-D cost tens of seconds each (mostly compilation, per level: experiments/
        # predict_validation_mnist1d.md): only where the ground truth is measured
        pred = predictions(path, dataset, epsilon, args.examples) if measured else None
        epsilon = epsilon or pred["epsilon"]  # fixed along the schedule: the dense network's
        row = {"level": level, "density": lv["density"], "test_accuracy": lv["test_accuracy"],
               "dense_test_accuracy": imp.dense_test_accuracy, "tolerance": tolerance,
               "matching": lv["matching"], "successive_barrier": lv.get("successive_barrier"),
               "predictions": pred, "probe": {}}
        for steps in PROBE_STEPS:
            t = time.perf_counter()
            probe = probe_safe_ratio(solution, epsilon, steps=steps)
            row["probe"][str(steps)] = {"ratio": probe.interpolated, "status": probe.status,
                                        "seconds": time.perf_counter() - t,
                                        "finetuned_loss": probe.finetuned_loss,
                                        "finetuned_test_accuracy":
                                            probe.finetuned_test_accuracy,
                                        "grid": probe.grid,
                                        "pruned_loss": probe.pruned_loss,
                                        "reference_loss": probe.reference_loss}
        if measured:
            t = time.perf_counter()
            truth = measured_safe_ratio(solution, dense_test_accuracy=imp.dense_test_accuracy,
                                        tolerance=tolerance)
            row["truth"] = truth.to_json() | {"seconds": time.perf_counter() - t}
        rows.append(row)
        print(f"seed {seed} level {level:2d} density {lv['density']:.4f} "
              f"truth {row.get('truth', {}).get('ratio', float('nan')):.3f}  "
              + "  ".join(f"{e[:4]} {pred['magnitude'].get(e, float('nan')):.3f}"
                          for e in ESTIMATORS if pred)
              + "  " + "  ".join(f"E{s} {row['probe'][str(s)]['ratio']:.3f}"
                                 for s in PROBE_STEPS), flush=True)
    return {"seed": seed, "imp_seconds": imp_seconds,
            "imp_level_seconds": float(np.median(level_seconds)) if level_seconds else None,
            "dense_test_accuracy": imp.dense_test_accuracy, "summary": imp.summary["imp"],
            "epsilon": epsilon, "rows": rows}


# ----------------------------------------------------------------------------- summary


def predicted(row: dict, name: str, seed0: dict | None) -> float | None:
    if name == CONSTANT:
        return FRACTION
    if name == FITTED:
        pts = [(np.log(r["density"]), r["truth"]["ratio"]) for r in seed0["rows"] if "truth" in r]
        x, y = zip(*sorted(pts), strict=True)
        return float(np.interp(np.log(row["density"]), x, y))
    if name.endswith("_acc"):  # the probe judged as the ground truth is: test accuracy
        probe = row["probe"][name[1:-4]]
        margin = (np.asarray(probe["finetuned_test_accuracy"])
                  - (row["dense_test_accuracy"] - row["tolerance"]))
        return largest_safe_ratio(probe["grid"], margin, 1.0).interpolated
    if name.startswith("E"):
        return row["probe"][name[1:]]["ratio"]
    return row["predictions"]["magnitude"].get(name) if row["predictions"] else None


def predictor_names() -> list[str]:
    return [*ESTIMATORS, *(f"E{s}" for s in PROBE_STEPS), *(f"E{s}_acc" for s in PROBE_STEPS),
            CONSTANT, FITTED]


def max_sparsity_level(seed: dict, name: str, seed0: dict) -> int:
    """The IMP level whose sparsity IMP is predicted to reach: the first level whose
    predicted safe ratio falls below IMP's step (the next step would leave the valley)."""
    for row in seed["rows"]:
        p = predicted(row, name, seed0)
        if p is not None and p < FRACTION:  # None: not predicted at this level
            return row["level"]
    return seed["rows"][-1]["level"]


def measured_max_level(seed: dict) -> int:
    """The last IMP level before the first that is not matching."""
    rows = seed["rows"]
    first_fail = next((r["level"] for r in rows if not r["matching"]), None)
    return rows[-1]["level"] if first_fail is None else first_fail - 1


def summarise(record: dict) -> dict:
    seeds = record["seeds"]
    seed0 = next(s for s in seeds if s["seed"] == 0)
    judged = [s for s in seeds if s["seed"] != 0]  # calibration (the fitted curve) on seed 0
    out = {}
    for name in predictor_names():
        errors, rhos, ms = [], [], []
        for s in judged:
            rows = [r for r in s["rows"] if "truth" in r]
            truth = np.array([r["truth"]["ratio"] for r in rows])
            pred = np.array([predicted(r, name, seed0) for r in rows], float)
            errors += list(np.abs(pred - truth))
            rho = stats.spearmanr(pred, truth).statistic if np.ptp(pred) > 0 else float("nan")
            rhos.append(float(rho))
            level, truth_level = max_sparsity_level(s, name, seed0), measured_max_level(s)
            density = {r["level"]: r["density"] for r in s["rows"]}
            ms.append({"predicted_level": level, "measured_level": truth_level,
                       "predicted": 1 - density[level], "measured": 1 - density[truth_level]})
        out[name] = {"mae": t_interval(errors), "spearman": t_interval(rhos),
                     "spearman_per_seed": rhos, "max_sparsity": ms,
                     # within one IMP level: densities within a factor 0.8
                     "max_sparsity_within_one_level": all(
                         abs(m["predicted_level"] - m["measured_level"]) <= 1 for m in ms)}
    truth_seconds = [r["truth"]["seconds"] for s in seeds for r in s["rows"] if "truth" in r]
    out["costs"] = {
        "imp_level_seconds": t_interval([s["imp_level_seconds"] for s in seeds]),
        "prediction_seconds": t_interval([r["predictions"]["seconds"] for s in seeds
                                          for r in s["rows"] if r["predictions"]]),
        **{f"probe_{k}_seconds": t_interval([r["probe"][str(k)]["seconds"] for s in seeds
                                             for r in s["rows"]]) for k in PROBE_STEPS},
        "truth_seconds": t_interval(truth_seconds)}
    return out


# ----------------------------------------------------------------------------- figures


COLOURS = {"lambda_max": "#999999", "quadratic": "#E69F00", "gaussian_width": "#56B4E9",
           "compensated": "#009E73", "E25": "#CC79A7", "E100": "#D55E00", "E400": "#0072B2",
          "E25_acc": "#F0B7DA", "E100_acc": "#F2A176", "E400_acc": "#332288",
           CONSTANT: "#000000", FITTED: "#AA3377"}
LABELS = {"lambda_max": "A: λ_max bound", "quadratic": "B: quadratic", "gaussian_width":
          "C: Gaussian width", "compensated": "D: compensated (OBS)", "E25": "E: probe 25 it",
          "E100": "E: probe 100 it", "E400": "E: probe 400 it",
          "E25_acc": "E-acc: probe 25 it, test accuracy", "E100_acc": "E-acc: 100 it",
          "E400_acc": "E-acc: 400 it", CONSTANT: "constant 0.2",
          FITTED: "seed-0 curve"}


PANELS = (("Hessian estimators (from w_L alone)", [*ESTIMATORS, FITTED]),
          ("fine-tuning probes (E: train loss; E-acc: test accuracy)",
           [*(f"E{s}" for s in PROBE_STEPS), *(f"E{s}_acc" for s in PROBE_STEPS)]))


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from lmc.plots.style import STYLE

    record = json.loads(path.read_text())
    seeds = record["seeds"]
    seed0 = next(s for s in seeds if s["seed"] == 0)
    summary = record["summary"]
    densities = np.array([r["density"] for r in seeds[0]["rows"]])
    truth = np.array([[r["truth"]["ratio"] for r in s["rows"] if "truth" in r] for s in seeds])
    dens_t = [r["density"] for r in seeds[0]["rows"] if "truth" in r]
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(15, 5.4), layout="constrained")
        axes = fig.subplots(1, 3, width_ratios=(1, 1, 0.8))
        for ax, (title, names) in zip(axes[:2], PANELS, strict=True):
            ax.fill_between(dens_t, truth.min(0), truth.max(0), color="k", alpha=0.12, lw=0)
            ax.plot(dens_t, truth.mean(0), "k-o", lw=2, ms=4,
                    label="measured (rewind + retrain; band: range over seeds)")
            for name in names:
                vals = np.array([[predicted(r, name, seed0) for r in s["rows"]] for s in seeds],
                                float)
                mean = np.nanmean(vals, 0)
                shown = np.isfinite(mean)  # A-D: only at the ground-truth levels
                mae = summary[name]["mae"]["mean"]
                ax.plot(densities[shown], mean[shown], "-", color=COLOURS[name], lw=1.3,
                        label=f"{LABELS[name]} (MAE {mae:.2f})")
            ax.axhline(FRACTION, color="k", ls=":", lw=1, label=f"constant 0.2 (MAE "
                       f"{summary[CONSTANT]['mae']['mean']:.2f})")
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(densities[::2]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda d, _: f"{100 * d:.3g}%"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.invert_xaxis()
            ax.set_xlabel("density of w_L (log scale)")
            ax.set_ylabel("largest safe pruning ratio p")
            ax.set_ylim(0, 1)
            ax.set_title(title, fontsize="medium")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                      fontsize="x-small", frameon=False)
        # predicted vs measured on the judged seeds, for the best of each family
        best = [min((n for n in names if n != FITTED), key=lambda n: summary[n]["mae"]["mean"])
                for _, names in PANELS]
        ax = axes[2]
        for name in [*best, FITTED, CONSTANT]:
            xs, ys = [], []
            for s in seeds:
                for r in s["rows"]:
                    if s["seed"] != 0 and "truth" in r:
                        xs.append(r["truth"]["ratio"])
                        ys.append(predicted(r, name, seed0))
            ax.scatter(xs, ys, s=18, color=COLOURS[name], alpha=0.85, label=LABELS[name])
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlim(-0.02, 1)
        ax.set_ylim(-0.02, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("measured safe ratio")
        ax.set_ylabel("predicted")
        ax.set_title("seeds 1-2, every ground-truth level\n(best of each family; y = x dashed)",
                     fontsize="medium")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="x-small",
                  frameon=False)
        fig.suptitle(f"{record['setting']} on MNIST-1D, {len(seeds)} seeds; matching tolerance "
                     f"τ = {100 * record['tolerance']:.2g} pts (2 × seed std of the dense "
                     f"accuracy); MAE over seeds 1-2")
    return lmc.save_figure(fig, path.with_suffix(""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="mlp")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--every", type=int, default=2, help="ground truth every n-th level")
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_validation_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    path = args.out / f"predict_validation_mnist1d_{args.setting}.json"
    if args.plot_only:
        record = json.loads(path.read_text())
        record["summary"] = summarise(record)
        write_json(path, record)
        for written in plot(path):
            print(f"figure {written}")
        return
    config = SETTINGS[args.setting]
    dataset = load_dataset("mnist1d")
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    # the tolerance comes from the seeds' dense accuracies, before any level is pruned
    trunks = [lmc.train_run(config.replace(seed=s), args.root, dataset=dataset,
                            save_at=[REWIND], progress=False) for s in seeds]
    dense = [t.result()["final"]["test_accuracy"] for t in trunks]
    tolerance = 2 * float(np.std(dense, ddof=1))
    record = {"study": "predict_validation_mnist1d", "setting": args.setting,
              "config": config.to_dict(), "rewind": REWIND, "fraction": FRACTION,
              "dense_test_accuracy": dense, "tolerance": tolerance, "every": args.every,
              "examples": args.examples, "probe_steps": list(PROBE_STEPS), "seeds": []}
    for seed in seeds:
        record["seeds"].append(seed_rows(config, seed, args, tolerance, dataset))
        record["wall_seconds"] = time.perf_counter() - start
        write_json(path, record)
    record["summary"] = summarise(record)
    write_json(path, record)
    for name, s in record["summary"].items():
        if name != "costs":
            print(f"{name:16s} MAE {s['mae']['mean']}  Spearman {s['spearman']['mean']}  "
                  f"max sparsity within one level: {s['max_sparsity_within_one_level']}")
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
