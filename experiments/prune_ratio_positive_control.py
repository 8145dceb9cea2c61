"""Positive control for the safe-ratio prediction C (Zhang et al. 2024): networks trained
with an L1 penalty, one-shot global magnitude pruning without fine-tuning, measured on the
1/1000 grid, against estimator C of `lmc.prune_ratio_record`.

Settings (model x l1), 3 seeds each: the MNIST-1D recipe of experiments/imp_mnist1d.py
(SGD momentum 0.9, lr 0.05 cosine, batch 128, 3000 it, no weight decay) for the MLP
40-100-100-10 and the 1-D convnet (25 channels), with l1 = 0 (control) and L1 penalties.

    python experiments/prune_ratio_positive_control.py --stage train
    python experiments/prune_ratio_positive_control.py --stage measure
    python experiments/prune_ratio_positive_control.py --stage predict
    python experiments/prune_ratio_positive_control.py --stage exact
    python experiments/prune_ratio_positive_control.py --plot-only

Every stage adds to ``figures/prune_ratio_positive_control.json`` (written atomically) and
redraws the figures ``figures/prune_ratio_positive_control{,_summary}.{png,pdf}``.
See experiments/prune_ratio_positive_control.md for the definitions and the results.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imp_mnist1d import BASE  # noqa: E402  (the project's MNIST-1D recipe)

import lmc  # noqa: E402
from lmc.core.prune_ratio import largest_passing_ratio, one_shot_curve  # noqa: E402
from lmc.files import read_json, write_json  # noqa: E402
from lmc.plots import save_figure  # noqa: E402
from lmc.plots.style import BLUE, GREEN, GREY, ORANGE, STYLE, VERMILLION  # noqa: E402
from lmc.training.data import load_dataset  # noqa: E402
from lmc.workflows.opened import open_checkpoint  # noqa: E402

MODELS = {"mlp": ("mlp", {"widths": (100, 100)}), "conv1d": ("conv1d", {"channels": 25})}
L1S = (0.0, 1e-4, 3e-4)
SEEDS = (0, 1, 2)
GRID = np.arange(1, 1000) / 1000
OUT = Path("figures/prune_ratio_positive_control.json")
ROOT = Path("/tmp/lmc_posctl_runs")
# C's variants: (basis, eigenvalues, epsilon); "default" is the record's defaults.
VARIANTS = {
    "prunable_abs_mb": ("prunable", "abs", "minibatch_std"),
    "prunable_clip_mb": ("prunable", "clip", "minibatch_std"),
    "all_abs_mb": ("all", "abs", "minibatch_std"),
    "all_clip_mb": ("all", "clip", "minibatch_std"),
    "prunable_abs_ex": ("prunable", "abs", "example_std"),
}
VARIANT_STYLE = {"prunable_abs_mb": (BLUE, "-"), "prunable_clip_mb": ("#CC79A7", ":"),
                 "all_abs_mb": (ORANGE, "-"), "all_clip_mb": ("#56B4E9", ":"),
                 "prunable_abs_ex": (GREEN, "--"), "default": (GREY, "--")}


def setting_name(model: str, l1: float) -> str:
    return f"{model}_l1={l1:g}"


def config(model: str, l1: float, seed: int) -> lmc.TrainConfig:
    name, options = MODELS[model]
    return lmc.TrainConfig(model=name, model_options=options, l1=l1,
                           **{**BASE, "seed": seed})


def load(path: Path) -> dict:
    return read_json(path) if path.exists() else {"settings": {}}


# ----------------------------------------------------------------------------- training


def train_all(data: dict, models, l1s, seeds, root: Path) -> None:
    for model in models:
        for l1 in l1s:
            s = data["settings"].setdefault(setting_name(model, l1),
                                            {"model": model, "l1": l1, "seeds": {}})
            for seed in seeds:
                entry = s["seeds"].setdefault(str(seed), {})
                t = time.perf_counter()
                run = lmc.train_run(config(model, l1, seed), root, progress=False)
                wall = time.perf_counter() - t
                if wall > 2 or "train_seconds" not in entry:  # not merely reused
                    entry["train_seconds"] = wall
                final = run.result()["final"]
                entry.update(checkpoint=str(run.final_checkpoint()), run_id=run.spec.run_id,
                             dense_test_accuracy=final["test_accuracy"],
                             dense_train_accuracy=final["train_accuracy"],
                             dense_train_loss=final["train_loss"])
                print(f"{setting_name(model, l1)} seed {seed}: test {final['test_accuracy']:.3f}"
                      f" train {final['train_accuracy']:.3f} ({entry['train_seconds']:.1f} s)")


# ----------------------------------------------------------------------------- one-shot


def oneshot_accuracy(path: str, dataset, grid: np.ndarray) -> dict:
    """Test accuracy of the one-shot global-magnitude-pruned network at every p of `grid`
    (no fine-tuning; `lmc.core.prune_ratio.one_shot_curve`)."""
    opened = open_checkpoint(path, dataset=dataset)
    curve = one_shot_curve(opened.eval_apply, opened.params, opened.state, dataset.x_test,
                           dataset.y_test, grid, mask=opened.mask, chunk=111)
    return {"dense": curve["dense_accuracy"], "accuracy": curve["accuracy"],
            "num_prunable": curve["num_live"]}


def first_failure(grid, ok) -> float:
    """Largest p such that it and every smaller grid point pass (0 if the first fails)."""
    return largest_passing_ratio(grid, ok)


def last_pass(grid, ok) -> float:
    good = np.flatnonzero(np.asarray(ok))
    return float(grid[good[-1]]) if good.size else 0.0


def measure_all(data: dict) -> None:
    dataset = load_dataset("mnist1d")
    grid = np.asarray(data.get("grid", GRID.tolist()))
    data["grid"] = grid.tolist()
    for name, s in data["settings"].items():
        for seed, e in s["seeds"].items():
            t = time.perf_counter()
            e["oneshot"] = oneshot_accuracy(e["checkpoint"], dataset, grid)
            e["oneshot"]["seconds"] = time.perf_counter() - t
            print(f"{name} seed {seed}: one-shot curve in {e['oneshot']['seconds']:.1f} s")
        ground_truth(s, grid)


def ground_truth(s: dict, grid: np.ndarray) -> None:
    dense = np.array([e["dense_test_accuracy"] for e in s["seeds"].values()])
    tau = 2 * float(np.std(dense, ddof=1)) if len(dense) > 1 else 0.0
    s["tolerance"] = tau
    for e in s["seeds"].values():
        acc, d = np.asarray(e["oneshot"]["accuracy"]), e["oneshot"]["dense"]
        tol_ok, zhang_ok = acc >= d - tau - 1e-9, acc >= d - 1e-9
        e["measured"] = {
            "tolerance_first_failure": first_failure(grid, tol_ok),
            "tolerance_last_pass": last_pass(grid, tol_ok),
            "zhang_first_failure": first_failure(grid, zhang_ok),
            "zhang_last_pass": last_pass(grid, zhang_ok),
        }


# ----------------------------------------------------------------------------- prediction


def predict_options() -> set[str]:
    return set(inspect.signature(lmc.prune_ratio_record).parameters)


def predict_all(data: dict, examples: int, variants: list[str], seeds: list[str],
                models: list[str]) -> None:
    dataset = load_dataset("mnist1d")
    have = predict_options()
    for name, s in data["settings"].items():
        if s["model"] not in models:
            continue
        for seed, e in s["seeds"].items():
            if seed not in seeds:
                continue
            preds = e.setdefault("predictions", {})
            for v in variants:
                kwargs = {}
                if v != "default":
                    basis, eig, eps = VARIANTS[v]
                    if not {"basis", "eigenvalues"} <= have:
                        print(f"prune_ratio_record has no basis/eigenvalues options: skip {v}")
                        continue
                    kwargs = {"basis": basis, "eigenvalues": eig, "epsilon": eps}
                t = time.perf_counter()
                rec = lmc.prune_ratio_record(e["checkpoint"], criterion="magnitude",
                                             with_random=False, grid=GRID, examples=examples,
                                             dataset=dataset, **kwargs).to_json()
                wall = time.perf_counter() - t
                safe = rec["criteria"]["magnitude"]["safe"]
                keep = ("dim", "num_prunable", "loss", "gradient_norm", "epsilon",
                        "epsilon_source", "lambda_max", "trace", "zero_curvature_mass",
                        "negative_mass", "basis", "eigenvalues", "batch_size",
                        "epsilon_detail")
                preds[v] = {**{k: rec[k] for k in keep if k in rec}, "safe": safe,
                            "C": safe["gaussian_width"]["interpolated"], "seconds": wall,
                            "examples": examples}
                print(f"{name} seed {seed} {v}: C = {preds[v]['C']} "
                      f"(eps {rec.get('epsilon')}, {wall:.1f} s)")


# ----------------------------------------------------------------------------- summary


def mean_ci(values) -> dict:
    v = np.asarray([x for x in values if x is not None], float)
    if v.size == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    m = float(v.mean())
    if v.size < 2:
        return {"mean": m, "low": None, "high": None, "n": 1}
    h = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return {"mean": m, "low": m - h, "high": m + h, "n": int(v.size)}


def summarise(data: dict) -> dict:
    out = {}
    measured = {n: np.mean([e["measured"]["tolerance_first_failure"]
                            for e in s["seeds"].values()])
                for n, s in data["settings"].items() if all("measured" in e for e in
                                                             s["seeds"].values())}
    for n, s in data["settings"].items():
        seeds = s["seeds"].values()
        if not all("measured" in e for e in seeds):
            continue
        row = {"tolerance": s["tolerance"],
               "dense": mean_ci([e["dense_test_accuracy"] for e in seeds]),
               "measured": {k: mean_ci([e["measured"][k] for e in seeds])
                            for k in next(iter(seeds))["measured"]},
               "baseline_other_settings": float(np.mean([m for k, m in measured.items()
                                                         if k != n])),
               "train_seconds": float(np.mean([e["train_seconds"] for e in seeds])),
               "predictions": {}}
        names = sorted({v for e in seeds for v in e.get("predictions", {})})
        for v in names:
            cs = [e["predictions"][v]["C"] if v in e.get("predictions", {}) else None
                  for e in seeds]
            err = [c - e["measured"]["tolerance_first_failure"] if c is not None else None
                   for c, e in zip(cs, seeds, strict=True)]
            row["predictions"][v] = {
                "C": mean_ci(cs), "per_seed": cs, "error": mean_ci(err),
                "seconds": float(np.mean([e["predictions"][v]["seconds"] for e in seeds
                                          if v in e.get("predictions", {})])),
                **{k: mean_ci([e["predictions"][v].get(k) for e in seeds
                               if v in e.get("predictions", {})])
                   for k in ("zero_curvature_mass", "negative_mass", "epsilon")
                   if any(k in e.get("predictions", {}).get(v, {}) for e in seeds)},
            }
        out[n] = row
    return out


def fmt_ci(c: dict, digits: int = 3) -> str:
    if c["mean"] is None:
        return "—"
    if c["low"] is None:
        return f"{c['mean']:.{digits}f}"
    return f"{c['mean']:.{digits}f} [{c['low']:.{digits}f}, {c['high']:.{digits}f}]"


def print_tables(data: dict) -> None:
    summary = data.get("summary", {})
    print("| setting | dense test acc | τ | measured (τ, first failure) | per seed |"
          " Zhang (≥ dense) | last pass (τ) | baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for n, r in summary.items():
        s = data["settings"][n]
        per = ", ".join(f"{e['measured']['tolerance_first_failure']:.3f}"
                        for e in s["seeds"].values())
        print(f"| {n} | {fmt_ci(r['dense'])} | {r['tolerance']:.4f} | "
              f"{fmt_ci(r['measured']['tolerance_first_failure'])} | {per} | "
              f"{fmt_ci(r['measured']['zhang_first_failure'])} | "
              f"{fmt_ci(r['measured']['tolerance_last_pass'])} | "
              f"{r['baseline_other_settings']:.3f} |")
    print()
    print("| setting | variant | C mean [95% CI] | per seed | C − measured | "
          "zero-curv. mass | neg. mass | ε | s / prediction |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, r in summary.items():
        for v, p in r["predictions"].items():
            per = ", ".join("—" if c is None else f"{c:.3f}" for c in p["per_seed"])
            zc = fmt_ci(p["zero_curvature_mass"]) if "zero_curvature_mass" in p else "—"
            ng = fmt_ci(p["negative_mass"]) if "negative_mass" in p else "—"
            ep = fmt_ci(p["epsilon"], 4) if "epsilon" in p else "—"
            print(f"| {n} | {v} | {fmt_ci(p['C'])} | {per} | {fmt_ci(p['error'])} | "
                  f"{zc} | {ng} | {ep} | {p['seconds']:.1f} |")


# ----------------------------------------------------------------------------- figures


def plot(data: dict, out: Path) -> list[Path]:
    if "grid" not in data:
        return []
    grid = np.asarray(data["grid"])
    names = [n for n, s in data["settings"].items()
             if all("oneshot" in e for e in s["seeds"].values())]
    written = []
    if names:
        models = sorted({data["settings"][n]["model"] for n in names}, reverse=True)
        l1s = sorted({data["settings"][n]["l1"] for n in names})
        with matplotlib.rc_context(STYLE):
            fig = Figure(figsize=(3.4 * len(l1s), 2.9 * len(models) + 0.9),
                         layout="constrained")
            axes = fig.subplots(len(models), len(l1s), squeeze=False, sharex=True)
            handles = {}
            for i, model in enumerate(models):
                for j, l1 in enumerate(l1s):
                    ax = axes[i][j]
                    n = setting_name(model, l1)
                    ax.set_title(f"{model}, l1 = {l1:g}", fontsize=9)
                    if n not in data["settings"]:
                        ax.set_visible(False)
                        continue
                    s = data["settings"][n]
                    for k, e in enumerate(s["seeds"].values()):
                        h, = ax.plot(grid, e["oneshot"]["accuracy"], color="black", lw=0.7,
                                     alpha=0.5 + 0.2 * k)
                        handles["one-shot test accuracy (per seed)"] = h
                        m = e["measured"]["tolerance_first_failure"]
                        h = ax.scatter([m], [np.interp(m, grid, e["oneshot"]["accuracy"])
                                             if m > 0 else e["oneshot"]["dense"]],
                                       color=VERMILLION, zorder=5, s=14)
                        handles["measured ratio (dense − τ, first failure)"] = h
                        for v, pr in e.get("predictions", {}).items():
                            if pr["C"] is None:
                                continue
                            color, ls = VARIANT_STYLE.get(v, (GREY, "-"))
                            h = ax.axvline(pr["C"], color=color, ls=ls, lw=0.9, alpha=0.8)
                            handles[f"C: {v}"] = h
                    dense = np.mean([e["dense_test_accuracy"] for e in s["seeds"].values()])
                    h = ax.axhline(dense - s["tolerance"], color=GREY, lw=0.6, ls="-.")
                    handles["mean dense − τ"] = h
                    ax.set_ylim(0, 1)
                    ax.set_xlim(0, 1)
                    if i == len(models) - 1:
                        ax.set_xlabel("one-shot pruning ratio p")
                    if j == 0:
                        ax.set_ylabel("test accuracy")
            fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                       ncol=3, fontsize=7, frameon=False)
            written += save_figure(fig, out.with_suffix(""))
    summary = data.get("summary", {})
    if summary and any(r["predictions"] for r in summary.values()):
        with matplotlib.rc_context(STYLE):
            fig = Figure(figsize=(5.2, 4.4), layout="constrained")
            ax = fig.subplots()
            markers = {"mlp": "o", "conv1d": "s"}
            handles = {}
            for n, r in summary.items():
                s = data["settings"][n]
                meas = [e["measured"]["tolerance_first_failure"] for e in s["seeds"].values()]
                for v, p in r["predictions"].items():
                    color, _ = VARIANT_STYLE.get(v, (GREY, "-"))
                    fill = color if s["l1"] > 0 else "none"
                    for mx, c in zip(meas, p["per_seed"], strict=True):
                        if c is None:
                            continue
                        h = ax.scatter([mx], [c], marker=markers[s["model"]], s=22,
                                       facecolors=fill, edgecolors=color, lw=0.8)
                        handles.setdefault(f"C: {v}", ax.scatter([], [], marker="o", s=22,
                                                                 color=color))
            for model, mk in markers.items():
                handles[model] = ax.scatter([], [], marker=mk, s=22, facecolors="none",
                                            edgecolors="black")
            handles["filled: l1 > 0, hollow: l1 = 0"] = ax.scatter([], [], s=0)
            ax.plot([0, 1], [0, 1], color="black", lw=0.7, ls="--")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_aspect("equal")
            ax.set_xlabel("measured one-shot ratio (dense − τ)")
            ax.set_ylabel("predicted ratio C")
            fig.legend(list(handles.values()), list(handles), loc="outside right center",
                       fontsize=7, frameon=False)
            written += save_figure(fig, out.with_name(out.stem + "_summary"))
    return written


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=("train", "measure", "predict", "summary"),
                        default="summary")
    parser.add_argument("--plot-only", action="store_true", help="redraw from the JSON")
    parser.add_argument("--models", default="mlp,conv1d")
    parser.add_argument("--l1", default=",".join(f"{v:g}" for v in L1S))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--examples", type=int, default=500,
                        help="training examples of the Hessian and ε (4000 was not affordable "
                        "on 2 shared CPU cores)")
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    data = load(args.out)
    if not args.plot_only:
        start = time.perf_counter()
        if args.stage == "train":
            train_all(data, args.models.split(","), [float(v) for v in args.l1.split(",")],
                      [int(s) for s in args.seeds.split(",")], args.root)
        elif args.stage == "measure":
            measure_all(data)
        elif args.stage == "predict":
            predict_all(data, args.examples, args.variants.split(","), args.seeds.split(","),
                        args.models.split(","))
        data.setdefault("wall_seconds", {})[args.stage] = time.perf_counter() - start
        data["summary"] = summarise(data)
        write_json(args.out, data)
    print_tables(data)
    for path in plot(data, args.out):
        print(f"figure {path}")


if __name__ == "__main__":
    main()
