"""Barrier against width on MNIST-1D for five interpolation paths: naive, weight matching,
activation matching, and each matching followed by REPAIR (Ainsworth et al. 2022, "Git
Re-Basin", Fig. 4/5; Entezari et al. 2022; Jordan et al. 2023, "REPAIR").

For each width w, 3 pairs of independently trained networks (seeds 2k and 2k + 1:
different initialisations and data orders) — the MLP 40-w-w-10 (`--model mlp`) or the
MNIST-1D convnet with w channels (`--model conv1d`) — SGD momentum 0.9, lr 0.05 cosine,
batch 128, `--steps` iterations. Each pair goes through
`lmc.workflows.interpolation.interpolate_checkpoints(A, B, align=method, repair=True)`
for method "weight" and "activation": the naive path A -> B, the path A -> π(B) and the
same path with every interpolated network REPAIRed, on one 25-point α grid on the full
train (4000) and test (1000) splits; all barrier definitions are kept. Summary: mean and
95% t-interval over the pairs, and every pair.

    python experiments/alignment_mnist1d.py --model mlp --root /tmp/lmc_alignment_runs
    python experiments/alignment_mnist1d.py --model conv1d --root /tmp/lmc_alignment_runs

Writes ``<out>/alignment_mnist1d.json`` (MLP) or ``alignment_mnist1d_conv1d.json`` (`--out`
defaults to figures/) and draws the ``.png``/``.pdf`` of the same name from it;
``--plot-only`` redraws them and prints the tables of the notes.
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
from lmc.workflows.alignment import align_opened
from lmc.workflows.interpolation import interpolate_checkpoints

BASE = dict(dataset="mnist1d", optimizer="momentum", momentum=0.9, lr=0.05, batch_size=128,
            schedule="cosine")
ALPHAS = 25
PAIRS = 3
MATCHINGS = ("weight", "activation")
METHODS = ("naive", "weight", "activation", "weight_repair", "activation_repair")
LABELS = {"naive": "naive", "weight": "weight matching", "activation": "activation matching",
          "weight_repair": "weight matching + REPAIR",
          "activation_repair": "activation matching + REPAIR"}
MODELS = {  # model -> (default widths, the model option the width sets, description)
    "mlp": ("32,64,128,256,512,1024", "widths", "MLP 40-w-w-10"),
    "conv1d": ("16,32,64,128", "channels", "conv1d, w channels (3 conv layers)"),
}
XLABEL = {"mlp": "hidden width w (both layers)", "conv1d": "channels w (all 3 conv layers)"}
SUMMARY_KEYS = (("test", "error", "mean"), ("test", "error", "chord"),
                ("train", "loss", "mean"), ("train", "loss", "chord"),
                ("train", "error", "mean"), ("test", "loss", "mean"))


def config(model: str, width: int, seed: int, steps: int) -> lmc.TrainConfig:
    option = MODELS[model][1]
    value = (width, width) if option == "widths" else width
    return lmc.TrainConfig(model=model, model_options={option: value},
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
    out = {"a": str(path_a), "b": str(path_b), "align": {}}
    for method in MATCHINGS:
        # the workflow does not report how long matching took: time it on its own
        start = time.perf_counter()
        _, _, _, info = align_opened(a, b, method)
        seconds = time.perf_counter() - start
        rec = interpolate_checkpoints(path_a, path_b, align=method, repair=True,
                                      alphas=ALPHAS, dataset=a.dataset)
        # matching is deterministic, so the workflow found the same permutation
        assert np.isclose(info["objective_after"], rec.aligned["objective_after"]), method
        out["align"][method] = {"seconds": seconds, "objective_before": info["objective_before"],
                                "objective_after": info["objective_after"],
                                "sweeps": len(info["history"]) - 1 if method == "weight" else None}
        out["naive"] = {"barriers": rec.barriers, "curves": rec.curves}
        out[method] = {k: rec.aligned[k] for k in ("barriers", "curves")}
        out[f"{method}_repair"] = {k: rec.aligned["repaired"][k] for k in ("barriers", "curves")}
    # permuting B does not change its function: the matched endpoints must have B's errors;
    # REPAIR at α = 1 should give back B up to rounding (the deviation is recorded)
    out["repair_endpoint_deviation"] = 0.0
    for split in ("train", "test"):
        e_b = out["naive"]["curves"][split]["error"][-1]
        for method in MATCHINGS:
            e_m = out[method]["curves"][split]["error"][-1]
            assert abs(e_b - e_m) < 1e-6, (split, method, e_b, e_m)
            e_r = out[f"{method}_repair"]["curves"][split]["error"]
            e_a = out["naive"]["curves"][split]["error"][0]
            out["repair_endpoint_deviation"] = max(out["repair_endpoint_deviation"],
                                                   abs(e_r[-1] - e_b), abs(e_r[0] - e_a))
    return out


def summarise(pairs: list[dict]) -> dict:
    summary = {}
    for name in METHODS:
        summary[name] = {}
        for split, metric, kind in SUMMARY_KEYS:
            vals = [p[name]["barriers"][split][metric][kind] for p in pairs]
            summary[name][f"{split}_{metric}_{kind}"] = {**t_interval(vals), "values": vals}
    for split, metric in (("test", "error"), ("train", "loss")):
        floors = [0.5 * abs(p["naive"]["curves"][split][metric][0]
                            - p["naive"]["curves"][split][metric][-1]) for p in pairs]
        summary[f"floor_{split}_{metric}"] = {**t_interval(floors), "values": floors}
    for split in ("train", "test"):
        ends = [e for p in pairs for e in (p["naive"]["curves"][split]["error"][0],
                                           p["naive"]["curves"][split]["error"][-1])]
        summary[f"endpoint_{split}_error"] = {**t_interval(ends), "values": ends}
    for method in MATCHINGS:
        summary[f"{method}_seconds"] = [p["align"][method]["seconds"] for p in pairs]
    summary["weight_sweeps"] = [p["align"]["weight"]["sweeps"] for p in pairs]
    summary["repair_endpoint_deviation"] = max(p["repair_endpoint_deviation"] for p in pairs)
    return summary


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from lmc.plots.style import BLUE, GREEN, STYLE, VERMILLION

    record = json.loads(path.read_text())
    widths = [row["width"] for row in record["widths"]]
    panels = (("test_error_mean", "test error barrier, mean def. (%)", "floor_test_error", 100),
              ("test_error_chord", "test error barrier, chord def. (%)", None, 100),
              ("train_loss_mean", "train loss barrier, mean def.", "floor_train_loss", 1))
    # Okabe-Ito; REPAIR paths dashed with square markers so they read apart in grey too
    colours = {"naive": VERMILLION, "weight": BLUE, "activation": GREEN,
               "weight_repair": "#56B4E9", "activation_repair": "#CC79A7"}
    style = {m: ("s--" if m.endswith("repair") else "o-") for m in METHODS}
    # top row: all five paths; bottom row: the matched paths only, on their own scale
    rows_of = ((METHODS, "all five paths"), (METHODS[1:], "matched paths only"))
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(12, 7.6), layout="constrained")
        axes = fig.subplots(2, 3)
        for ax_row, (methods, note) in zip(axes, rows_of, strict=True):
            for ax, (key, title, floor, scale) in zip(ax_row, panels, strict=True):
                for name in methods:
                    rows = [row["summary"][name][key] for row in record["widths"]]
                    mean = np.array([r["mean"] for r in rows]) * scale
                    lo = np.array([r["lo"] for r in rows]) * scale
                    hi = np.array([r["hi"] for r in rows]) * scale
                    ax.plot(widths, mean, style[name], color=colours[name], label=LABELS[name])
                    ax.fill_between(widths, lo, hi, color=colours[name], alpha=0.15, lw=0)
                    for w, r in zip(widths, rows, strict=True):
                        ax.scatter([w] * len(r["values"]), np.array(r["values"]) * scale,
                                   s=12, color=colours[name], alpha=0.6, marker="x", lw=0.8)
                if floor is not None:
                    fl = np.array([row["summary"][floor]["mean"] for row in record["widths"]])
                    ax.plot(widths, fl * scale, "k--", lw=1, label="½|E(0) − E(1)| floor")
                ax.axhline(0, color="grey", lw=0.5)
                ax.set_xscale("log", base=2)
                ax.set_xticks(widths, [str(w) for w in widths])
                ax.minorticks_off()
                ax.set_xlabel(XLABEL[record["model"]])
                ax.set_title(title)
            ax_row[0].set_ylabel(note)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=6)
        fig.suptitle(f"{record['description']} on MNIST-1D, {record['steps']} it, "
                     f"{record['pairs']} seed pairs (lines: mean, shaded: 95% t-interval, "
                     f"x: pairs)")
    return lmc.save_figure(fig, path.with_suffix(""))


def tables(path: Path) -> str:
    """Markdown tables (width x method: mean [95% CI] (pairs)) of the JSON, for the notes."""
    record = json.loads(path.read_text())
    out = []
    for key, scale, digits, what in (
            ("test_error_mean", 100, 1, "test error barrier (points), mean def."),
            ("test_error_chord", 100, 1, "test error barrier (points), chord def."),
            ("train_loss_mean", 1, 2, "train loss barrier, mean def.")):
        floor = "floor_test_error" if key.startswith("test_error") else "floor_train_loss"
        out += [f"{what}:", "", "| w | " + " | ".join(LABELS[m] for m in METHODS)
                + " | floor |", "| ---: " * (len(METHODS) + 2) + "|"]
        for row in record["widths"]:
            cells = []
            for m in METHODS:
                r = row["summary"][m][key]
                pairs = ", ".join(f"{scale * v:.{digits}f}" for v in r["values"])
                cells.append(f"{scale * r['mean']:.{digits}f} [{scale * r['lo']:.{digits}f}, "
                             f"{scale * r['hi']:.{digits}f}] ({pairs})")
            fl = scale * row["summary"][floor]["mean"]
            out.append(f"| {row['width']} | " + " | ".join(cells) + f" | {fl:.{digits}f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--widths", help="comma-separated; default: per model")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_alignment_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    default_widths, option, description = MODELS[args.model]
    suffix = "" if args.model == "mlp" else f"_{args.model}"
    path = args.out / f"alignment_mnist1d{suffix}.json"
    if args.plot_only:
        for written in plot(path):
            print(f"figure {written}")
        print(tables(path))
        return

    start = time.perf_counter()
    record = {"study": "alignment_mnist1d", "model": args.model, "description": description,
              "width_option": option, "steps": args.steps, "alphas": ALPHAS, "pairs": PAIRS,
              "methods": list(METHODS), "recipe": BASE, "widths": []}
    for width in (int(w) for w in (args.widths or default_widths).split(",")):
        t0 = time.perf_counter()
        runs = [lmc.train_run(config(args.model, width, seed, args.steps), args.root,
                              progress=False) for seed in range(2 * PAIRS)]
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pairs = [pair_record(runs[2 * k].final_checkpoint(), runs[2 * k + 1].final_checkpoint())
                 for k in range(PAIRS)]
        row = {"width": width, "train_seconds": train_s,
               "eval_seconds": time.perf_counter() - t0, "summary": summarise(pairs),
               "pairs": pairs}
        record["widths"].append(row)
        record["wall_seconds"] = time.perf_counter() - start
        write_json(path, record)  # after every width, so a cut run keeps what it did
        s = row["summary"]
        bars = "  ".join(f"{m} {100 * s[m]['test_error_mean']['mean']:.2f}" for m in METHODS)
        print(f"w={width:5d} train {train_s:6.1f}s eval {row['eval_seconds']:6.1f}s  test err "
              f"{100 * s['endpoint_test_error']['mean']:.1f}%  test-err barrier: {bars} "
              f"(floor {100 * s['floor_test_error']['mean']:.2f})  align s: wm "
              f"{np.median(s['weight_seconds']):.2f} am {np.median(s['activation_seconds']):.2f}",
              flush=True)
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
