"""Instability modulo permutation on MNIST-1D: are the unstable k = 0 children of
Frankle, Dziugaite, Roy & Carbin 2020 ("Linear mode connectivity and the lottery ticket
hypothesis") in one basin once one child is permuted to match the other (weight or
activation matching, Ainsworth, Hayase & Srinivasa 2022, "Git Re-Basin")?

Settings: the "main" setting of experiments/instability_mnist1d.py (conv1d with 25
channels, SGD momentum 0.9, lr 0.05 cosine, batch 128, 3000 iterations, no warmup:
unstable at k = 0, stable from k = 10-50), and the MLP 40-100-100-10 with the same recipe.
For each, 3 parents (seeds 0, 1, 2), `--children` children per parent at every spawn
step k, and every pair of children interpolated three ways through
`lmc.workflows.instability.instability_analysis(..., align=method)`: naive, after weight
matching, after activation matching (25 α, full train and test splits). As a reference,
the 3 pairs of parents (independent seeds: different initialisation and data order) are
interpolated the same three ways.

Summary per k: the test error barrier (mean and chord definitions) and the train loss
barrier (mean definition), each as the mean over parents (each parent: the mean over its
pairs) with a 95% t-interval over the 3 parents (2 degrees of freedom), every pair, and
the floor ½|E(0) − E(1)| of the mean definition.

    python experiments/instability_permutation_mnist1d.py --root /tmp/lmc_instperm_runs \
        --out figures
    python experiments/instability_permutation_mnist1d.py --plot-only --out figures

Writes ``<out>/instability_permutation_mnist1d.json`` and draws the ``.png``/``.pdf`` of
the same name from it; the full instability records (every curve) go to ``--records``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from lmc.constants import STABILITY_THRESHOLD
from lmc.files import write_json
from lmc.plots import save_figure
from lmc.plots.style import BLUE, GREEN, GREY, STYLE, VERMILLION, step_axis
from lmc.training.runs import Run, RunSpec
from lmc.workflows.instability import instability_analysis
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.records import InstabilityRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
from instability_mnist1d import SETTINGS as INSTABILITY_SETTINGS  # noqa: E402

SPAWN_STEPS = ["0it", "10it", "25it", "50it", "100it", "250it"]
REPLICATES = 3
MATCHINGS = ("weight", "activation")
METHODS = ("naive", *MATCHINGS)
LABELS = {"naive": "naive", "weight": "weight matching", "activation": "activation matching"}
COLOURS = {"naive": BLUE, "weight": VERMILLION, "activation": GREEN}
MARKERS = {"naive": "o", "weight": "s", "activation": "^"}
# identical curves (alignment finds the identity) must stay visible: style, size, fill
LINES = {"naive": dict(ls="-", lw=2.6, ms=8, mfc="none", mew=1.6),
         "weight": dict(ls="--", lw=1.8, ms=5),
         "activation": dict(ls=":", lw=1.8, ms=4)}
MAIN = INSTABILITY_SETTINGS["main"]
SETTINGS = {
    "conv1d": (MAIN, "conv1d, 25 channels"),
    "mlp": (MAIN.replace(model="mlp", model_options={"widths": [100, 100]}),
            "MLP 40-100-100-10"),
}
# (split, metric, barrier definition), and its label
KEYS = {("test", "error", "mean"): "test error barrier, mean def. (pp)",
        ("test", "error", "chord"): "test error barrier, chord def. (pp)",
        ("train", "loss", "mean"): "train loss barrier, mean def."}


def key_name(key: tuple[str, str, str]) -> str:
    return "_".join(key)


def scale(key: tuple[str, str, str]) -> float:
    return 100.0 if key[1] == "error" else 1.0  # errors in percentage points


def interval(values) -> dict:
    """Mean and 95% t-interval (n − 1 degrees of freedom) of `values`."""
    v = np.asarray(values, float)
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) \
        if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "lo": float(v.mean() - half), "hi": float(v.mean() + half),
            "half_width": half, "n": int(len(v))}


def pair_row(pair: dict, parent: str | None = None) -> dict:
    """Barriers of one pair, naive and aligned, in display units, and the floors."""
    row = {"a": pair["a"], "b": pair["b"]}
    if parent is not None:
        row["parent"] = parent
    for key in KEYS:
        split, metric, definition = key
        row[key_name(key)] = {"naive": scale(key) * pair["barriers"][split][metric][definition]}
    for split, metric in (("test", "error"), ("train", "loss")):
        c = pair["curves"][split][metric]
        row[f"floor_{split}_{metric}"] = scale((split, metric, "")) * 0.5 * abs(c[0] - c[-1])
    row["ends_test_error"] = [100 * pair["curves"]["test"]["error"][0],
                               100 * pair["curves"]["test"]["error"][-1]]
    return row


def add_aligned(row: dict, pair: dict, method: str) -> None:
    aligned = pair["aligned"]
    for key in KEYS:
        split, metric, definition = key
        row[key_name(key)][method] = scale(key) * aligned["barriers"][split][metric][definition]
    row.setdefault("objective", {})[method] = [aligned["objective_before"],
                                               aligned["objective_after"]]


def summarise(rows: list[dict], by_parent: bool) -> dict:
    """Mean and t-interval over parents (each parent: mean over its pairs) or, for the
    independent seeds, over pairs."""
    groups: dict[str, list[dict]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r["parent"] if by_parent else str(i), []).append(r)
    out = {}
    for name in [key_name(k) for k in KEYS] + ["floor_test_error", "floor_train_loss"]:
        if name.startswith("floor"):
            out[name] = interval([np.mean([r[name] for r in g]) for g in groups.values()])
            continue
        out[name] = {m: interval([np.mean([r[name][m] for r in g]) for g in groups.values()])
                     for m in METHODS}
        out[name]["per_unit"] = {m: [float(np.mean([r[name][m] for r in g]))
                                     for g in groups.values()] for m in METHODS}
    return out


def run_setting(name: str, args: argparse.Namespace) -> dict:
    config, description = SETTINGS[name]
    records: dict[str, InstabilityRecord] = {}
    seconds = {}
    for method in MATCHINGS:
        start = time.time()
        records[method] = instability_analysis(
            config, SPAWN_STEPS, children=args.children, replicates=REPLICATES,
            root=args.root, align=method, progress=args.progress)
        seconds[method] = time.time() - start
        path = records[method].save(Path(args.records) / f"instability_permutation_"
                                    f"{name}_{method}.json")
        print(f"[{name}] {method}: {seconds[method]:.0f} s -> {path}", flush=True)
    first = records[MATCHINGS[0]]
    points = []
    for i, point in enumerate(first.points):
        rows = [pair_row(p, p["parent"]) for p in point["pairs"]]
        for method in MATCHINGS:
            other = records[method].points[i]
            assert other["step"] == point["step"]
            for row, pair in zip(rows, other["pairs"], strict=True):
                assert (pair["a"], pair["b"]) == (row["a"], row["b"])
                # the naive path is recomputed by every call: it must agree
                naive = pair["barriers"]["test"]["error"]["mean"]
                assert abs(100 * naive - row["test_error_mean"]["naive"]) < 1e-6
                add_aligned(row, pair, method)
        points.append({"step": point["step"], "summary": summarise(rows, True),
                       "child_test_accuracy": point["child_test_accuracy"], "pairs": rows})
    # reference: independent seeds (the parents' final checkpoints, every pair)
    start = time.time()
    finals = [str(Run(args.root, RunSpec(config.replace(seed=config.seed + r))).final_checkpoint())
              for r in range(REPLICATES)]
    seed_rows = []
    for a, b in itertools.combinations(finals, 2):
        row = None
        for method in MATCHINGS:
            pair = interpolate_checkpoints(a, b, alphas=len(first.alphas), splits=("test", "train"),
                                           align=method).to_json()
            row = row or pair_row(pair)
            add_aligned(row, pair, method)
        seed_rows.append(row)
    seconds["independent_seeds"] = time.time() - start
    return {"description": description, "config": config.to_dict(),
            "parents": first.parents, "dense_test_accuracy": first.dense_test_accuracy,
            "children": args.children, "replicates": REPLICATES, "alphas": len(first.alphas),
            "points": points,
            "independent_seeds": {"summary": summarise(seed_rows, False), "pairs": seed_rows},
            "wall_seconds": seconds}


def print_table(name: str, setting: dict) -> None:
    print(f"\n[{name}] {setting['description']}: dense test accuracy "
          f"{100 * setting['dense_test_accuracy']:.1f}%, {setting['children']} children x "
          f"{setting['replicates']} parents")
    entries = [(f"k = {p['step']}", p["summary"]) for p in setting["points"]]
    entries.append(("indep. seeds", setting["independent_seeds"]["summary"]))
    for key in KEYS:
        name_ = key_name(key)
        print(f"  {KEYS[key]}")
        for label, summary in entries:
            cells = [f"{m} {summary[name_][m]['mean']:6.2f} [{summary[name_][m]['lo']:6.2f}, "
                     f"{summary[name_][m]['hi']:6.2f}]" for m in METHODS]
            floor = summary["floor_test_error" if key[1] == "error" else "floor_train_loss"]
            extra = f"  floor {floor['mean']:.2f}" if key[2] == "mean" else ""
            print(f"    {label:>12}: " + "  ".join(cells) + extra)


def plot(path: Path) -> list[Path]:
    data = json.loads(path.read_text())
    settings = data["settings"]
    threshold = 100 * data["threshold"]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(13.0, 3.3 * len(settings) + 0.9), layout="constrained")
        grid = fig.add_gridspec(len(settings), 2 * len(KEYS),
                                width_ratios=[6, 1] * len(KEYS))
        for row, setting in enumerate(settings.values()):
            steps = [p["step"] for p in setting["points"]]
            seeds = setting["independent_seeds"]["summary"]
            for col, (key, label) in enumerate(KEYS.items()):
                axis = fig.add_subplot(grid[row, 2 * col])
                side = fig.add_subplot(grid[row, 2 * col + 1])
                kname = key_name(key)
                for m in METHODS:
                    s = [p["summary"][kname][m] for p in setting["points"]]
                    axis.fill_between(steps, [x["lo"] for x in s], [x["hi"] for x in s],
                                      color=COLOURS[m], alpha=0.15, lw=0)
                    axis.plot(steps, [x["mean"] for x in s], color=COLOURS[m],
                              marker=MARKERS[m], **LINES[m],
                              label=LABELS[m] + " (mean over parents, 95% t-interval)")
                    for p in setting["points"]:  # every pair, small and faint
                        axis.plot([p["step"]] * len(p["pairs"]),
                                  [r[kname][m] for r in p["pairs"]], ls="none",
                                  marker=MARKERS[m], ms=2.5, color=COLOURS[m], alpha=0.35)
                    x = METHODS.index(m)
                    side.errorbar([x], [seeds[kname][m]["mean"]],
                                  yerr=[[seeds[kname][m]["mean"] - seeds[kname][m]["lo"]],
                                        [seeds[kname][m]["hi"] - seeds[kname][m]["mean"]]],
                                  color=COLOURS[m], marker=MARKERS[m], capsize=3,
                                  ms=LINES[m]["ms"], mfc=LINES[m].get("mfc"))
                    side.plot([x] * len(setting["independent_seeds"]["pairs"]),
                              [r[kname][m] for r in setting["independent_seeds"]["pairs"]],
                              ls="none", marker=MARKERS[m], ms=2.5, color=COLOURS[m],
                              alpha=0.35)
                if key[2] == "mean":
                    floor = "floor_test_error" if key[1] == "error" else "floor_train_loss"
                    axis.plot(steps, [p["summary"][floor]["mean"] for p in setting["points"]],
                              color="black", ls="--", lw=1.0,
                              label="floor ½|E(0) − E(1)| of the mean def.")
                    side.axhline(seeds[floor]["mean"], color="black", ls="--", lw=1.0)
                if key[1] == "error":
                    for ax in (axis, side):
                        ax.axhline(threshold, color=GREY, ls=":", lw=1.2,
                                   label=f"stability threshold {threshold:g} pp"
                                   if ax is axis else None)
                axis.axhline(0, color="black", lw=0.6)
                step_axis(axis, steps)
                axis.set_xlabel("spawn step k (iterations, symlog scale)")
                axis.set_ylabel(label)
                if col == 0:
                    axis.set_title(f"{setting['description']}: dense test accuracy "
                                   f"{100 * setting['dense_test_accuracy']:.1f}%, "
                                   f"{setting['children']} children per parent",
                                   loc="left")
                axis.set_ylim(bottom=min(axis.get_ylim()[0], -0.05 * axis.get_ylim()[1]))
                side.set_xticks([1], ["indep.\nseeds\n(own scale)"])
                side.set_xlim(-0.7, 2.7)
                side.set_ylim(bottom=0)
                side.yaxis.tick_right()
                side.grid(False, axis="x")
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=3)
        fig.suptitle("Instability modulo permutation on MNIST-1D (Frankle et al. 2020; "
                     "Ainsworth et al. 2022)\nbarrier between children spawned at k: mean "
                     f"over {data['replicates']} parents with 95% t-interval (faint: every "
                     "pair); right of each panel: independent seeds, on their own scale")
    return save_figure(fig, path.with_suffix(""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/tmp/lmc_instperm_runs",
                        help="run store (finished runs are reused)")
    parser.add_argument("--out", default="figures", help="directory for the JSON and figures")
    parser.add_argument("--records", default="/tmp/lmc_instperm_records",
                        help="directory for the full instability records")
    parser.add_argument("--children", type=int, default=3, help="children per parent")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--plot-only", action="store_true", help="redraw from the JSON")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    path = Path(args.out) / "instability_permutation_mnist1d.json"
    if not args.plot_only:
        Path(args.records).mkdir(parents=True, exist_ok=True)
        previous = json.loads(path.read_text()) if path.exists() else {"settings": {}}
        settings = dict(previous["settings"])
        for name in args.settings:
            start = time.time()
            settings[name] = run_setting(name, args)
            settings[name]["wall_seconds"]["total"] = time.time() - start
            print_table(name, settings[name])
        write_json(path, {"spawn_steps": SPAWN_STEPS, "replicates": REPLICATES,
                          "threshold": STABILITY_THRESHOLD, "methods": list(METHODS),
                          "keys": {key_name(k): v for k, v in KEYS.items()},
                          "settings": {n: settings[n] for n in SETTINGS if n in settings}})
    else:
        data = json.loads(path.read_text())
        for name in data["settings"]:
            print_table(name, data["settings"][name])
    for p in plot(path):
        print("wrote", p)


if __name__ == "__main__":
    main()
