"""Barrier against width for MLPs on MNIST-1D, naive interpolation against weight matching
(Ainsworth et al. 2022, "Git Re-Basin", Fig. 4/5 at MNIST-1D scale).

For each width w, 3 pairs of independently initialised MLPs 40-w-w-10 (seeds 2k and
2k + 1: different initialisations and data orders), SGD momentum 0.9, lr 0.05 cosine,
batch 128, `--steps` iterations. For each pair the path A -> B (naive) and the path
A -> π(B), π from `lmc.weight_matching` (seed 0, up to 100 sweeps), are evaluated on the
same 25-point α grid on the full train (4000) and test (1000) splits; all barrier
definitions are kept. Summary: mean ± 95% t-interval over the pairs, and every pair.

    python experiments/alignment_mnist1d.py --root /tmp/lmc_alignment_runs --out figures/

Writes ``<out>/alignment_mnist1d.json`` and draws ``alignment_mnist1d.{png,pdf}`` from it
(``--plot-only`` redraws from the JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

import lmc
from lmc.files import write_json

BASE = dict(dataset="mnist1d", optimizer="momentum", momentum=0.9, lr=0.05, batch_size=128,
            schedule="cosine")
ALPHAS = 25
PAIRS = 3


def config(width: int, seed: int, steps: int) -> lmc.TrainConfig:
    return lmc.TrainConfig(model="mlp", model_options={"widths": (width, width)},
                           duration=f"{steps}it", seed=seed, **BASE)


def t_interval(values) -> dict:
    v = np.asarray(values, float)
    mean = float(v.mean())
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) \
        if len(v) > 1 else float("nan")
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "half": half}


def pair_record(path_a: Path, path_b: Path) -> dict:
    a = lmc.open_checkpoint(path_a)
    b = lmc.open_checkpoint(path_b, dataset=a.dataset)
    data = {split: a.split(split) for split in ("train", "test")}
    grid = lmc.alpha_grid(ALPHAS)
    evaluator = lmc.PathEvaluator(a.eval_apply, train_apply=a.train_apply, policy=a.policy)

    spec = lmc.spec_from_params(a.params, kind="sequential")
    start = time.perf_counter()
    perms, history = lmc.weight_matching(spec, a.params, b.params, max_sweeps=100, seed=0)
    wm_seconds = time.perf_counter() - start
    aligned, _ = lmc.apply_permutation(spec, perms, b.params)

    out = {"a": str(path_a), "b": str(path_b), "wm_seconds": wm_seconds,
           "wm_sweeps": len(history) - 1, "wm_objective": history}
    for name, params_b in (("naive", b.params), ("matched", aligned)):
        curves = evaluator.curves(a.params, params_b, data, state_a=a.state, state_b=b.state,
                                  alphas=grid)
        rec = lmc.interpolation_record(curves, grid)
        out[name] = rec
    # the function is unchanged by the permutation: endpoints must agree
    for split in ("train", "test"):
        e_n = out["naive"]["curves"][split]["error"][-1]
        e_m = out["matched"]["curves"][split]["error"][-1]
        assert abs(e_n - e_m) < 1e-6, (split, e_n, e_m)
    return out


def summarise(pairs: list[dict]) -> dict:
    summary = {}
    for name in ("naive", "matched"):
        s = {}
        for split, metric, kind in (("test", "error", "mean"), ("test", "error", "chord"),
                                    ("train", "loss", "mean"), ("train", "loss", "chord"),
                                    ("train", "error", "mean"), ("test", "loss", "mean")):
            vals = [p[name]["barriers"][split][metric][kind] for p in pairs]
            s[f"{split}_{metric}_{kind}"] = {**t_interval(vals), "values": vals}
        summary[name] = s
    for split, metric in (("test", "error"), ("train", "loss")):
        floors = [0.5 * abs(p["naive"]["curves"][split][metric][0]
                            - p["naive"]["curves"][split][metric][-1]) for p in pairs]
        summary[f"floor_{split}_{metric}"] = {**t_interval(floors), "values": floors}
    ends = [e for p in pairs for e in (p["naive"]["curves"]["test"]["error"][0],
                                       p["naive"]["curves"]["test"]["error"][-1])]
    summary["endpoint_test_error"] = {**t_interval(ends), "values": ends}
    summary["wm_seconds"] = [p["wm_seconds"] for p in pairs]
    summary["wm_sweeps"] = [p["wm_sweeps"] for p in pairs]
    return summary


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from lmc.plots.style import BLUE, DPI, STYLE, VERMILLION

    record = json.loads(path.read_text())
    widths = [row["width"] for row in record["widths"]]
    panels = (("test_error_mean", "test error barrier, mean def. (%)", "floor_test_error", 100),
              ("test_error_chord", "test error barrier, chord def. (%)", None, 100),
              ("train_loss_mean", "train loss barrier, mean def.", "floor_train_loss", 1))
    colours = {"naive": VERMILLION, "matched": BLUE}
    labels = {"naive": "naive", "matched": "weight matching"}
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(12, 3.6), layout="constrained")
        axes = fig.subplots(1, 3)
        for ax, (key, title, floor, scale) in zip(axes, panels, strict=True):
            for name in ("naive", "matched"):
                rows = [row["summary"][name][key] for row in record["widths"]]
                mean = np.array([r["mean"] for r in rows]) * scale
                lo = np.array([r["lo"] for r in rows]) * scale
                hi = np.array([r["hi"] for r in rows]) * scale
                ax.plot(widths, mean, "o-", color=colours[name], label=labels[name])
                ax.fill_between(widths, lo, hi, color=colours[name], alpha=0.2, lw=0)
                for w, r in zip(widths, rows, strict=True):
                    ax.scatter([w] * len(r["values"]), np.array(r["values"]) * scale, s=10,
                               color=colours[name], alpha=0.5, marker="x")
            if floor is not None:
                fl = np.array([row["summary"][floor]["mean"] for row in record["widths"]])
                ax.plot(widths, fl * scale, "k--", lw=1, label="½|E(0) − E(1)| floor")
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_xscale("log", base=2)
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.set_xlabel("hidden width (2 layers)")
            ax.set_title(title)
        axes[0].legend()
        fig.suptitle(f"MLP 40-w-w-10 on MNIST-1D, {record['steps']} it, "
                     f"{PAIRS} seed pairs (mean ± 95% t-interval, x: pairs)")
    written = []
    for ext in ("png", "pdf"):
        out = path.with_suffix(f".{ext}")
        fig.savefig(out, dpi=DPI)
        written.append(out)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="32,64,128,256,512,1024")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_alignment_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    path = args.out / "alignment_mnist1d.json"
    if args.plot_only:
        for written in plot(path):
            print(f"figure {written}")
        return

    start = time.perf_counter()
    record = {"study": "alignment_mnist1d", "steps": args.steps, "alphas": ALPHAS,
              "pairs": PAIRS, "recipe": {**BASE, "model": "mlp 40-w-w-10"}, "widths": []}
    for width in (int(w) for w in args.widths.split(",")):
        t0 = time.perf_counter()
        runs = [lmc.train_run(config(width, seed, args.steps), args.root, progress=False)
                for seed in range(2 * PAIRS)]
        train_s = time.perf_counter() - t0
        pairs = [pair_record(runs[2 * k].final_checkpoint(), runs[2 * k + 1].final_checkpoint())
                 for k in range(PAIRS)]
        row = {"width": width, "train_seconds": train_s, "summary": summarise(pairs),
               "pairs": [{k: p[k] for k in ("a", "b", "wm_seconds", "wm_sweeps")}
                         | {n: {"barriers": p[n]["barriers"], "curves": p[n]["curves"]}
                            for n in ("naive", "matched")} for p in pairs]}
        record["widths"].append(row)
        record["wall_seconds"] = time.perf_counter() - start
        write_json(path, record)  # after every width, so a cut run keeps what it did
        s = row["summary"]
        print(f"w={width:5d} train {train_s:6.1f}s  test err "
              f"{100 * s['endpoint_test_error']['mean']:.1f}%  "
              f"test-err barrier mean naive {100 * s['naive']['test_error_mean']['mean']:.2f} "
              f"matched {100 * s['matched']['test_error_mean']['mean']:.2f} "
              f"(floor {100 * s['floor_test_error']['mean']:.2f})  train-loss barrier naive "
              f"{s['naive']['train_loss_mean']['mean']:.3f} matched "
              f"{s['matched']['train_loss_mean']['mean']:.3f}  wm "
              f"{np.median(s['wm_seconds']):.2f}s", flush=True)
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
