"""Are successive IMP levels linearly connected exactly while they are matching? Paul et
al. 2023 ("Unmasking the lottery ticket hypothesis") on MNIST-1D, over 3 seeds, on the
chord barrier (Entezari et al. 2022) rather than the mean one, whose floor ½|E(0) − E(1)|
makes a barrier appear wherever accuracy drops.

For each setting and seed, IMP (20% per level, rewinding to step 100; the recipe and run
ids of experiments/imp_mnist1d.py, seeds 0-2) and, between every level and the previous,
the test-error barrier by both definitions, the floor and the train-loss barrier. A level
is *matching* when its test accuracy is within the tolerance of the dense one (2 × the
seed-to-seed std of the dense accuracy) and *connected* to the previous level when its
chord barrier is below 2 points (`lmc.constants.STABILITY_THRESHOLD`).

    python experiments/imp_connectivity_mnist1d.py --setting mlp --levels 16 --out figures
    python experiments/imp_connectivity_mnist1d.py --setting mlp --plot-only --out figures

Writes ``<out>/imp_connectivity_mnist1d_<setting>.json`` and its figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import lmc
from lmc.constants import STABILITY_THRESHOLD
from lmc.files import write_json
from lmc.training.data import load_dataset
from lmc.workflows.imp import run_imp

sys.path.insert(0, str(Path(__file__).parent))
from imp_mnist1d import SETTINGS  # noqa: E402  (the IMP study's recipes: same run ids)

REWIND = "100it"


def contingency(seeds: list[dict]) -> dict:
    """Levels counted by (matching, connected), over every seed."""
    table = {"matching_connected": 0, "matching_not_connected": 0,
             "not_matching_connected": 0, "not_matching_not_connected": 0}
    for seed in seeds:
        for lv in seed["levels"][1:]:
            key = (("matching" if lv["matching"] else "not_matching") + "_"
                   + ("connected" if lv["connected"] else "not_connected"))
            table[key] += 1
    return table


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from lmc.plots.style import BLUE, ORANGE, STYLE

    record = json.loads(path.read_text())
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        acc_ax, bar_ax = fig.subplots(1, 2)
        densities = [lv["density"] for lv in record["seeds"][0]["levels"]]
        for i, seed in enumerate(record["seeds"]):
            lv = seed["levels"]
            d = [x["density"] for x in lv]
            acc_ax.plot(d, [100 * x["test_accuracy"] for x in lv], "-o", ms=3, lw=1,
                        color="k", alpha=0.4 + 0.2 * i, label=f"seed {seed['seed']}")
            dense = 100 * seed["dense_test_accuracy"]
            acc_ax.axhline(dense - 100 * record["tolerance"], color="k", ls=":", lw=0.8,
                           alpha=0.4 + 0.2 * i)
            d = d[1:]
            for key, colour, label in (("error_chord", ORANGE, "chord"),
                                       ("error", BLUE, "mean"), ("floor", BLUE, "floor")):
                y = [100 * x["barrier"][key] for x in lv[1:]]
                filled = [x["matching"] for x in lv[1:]]
                style = ":" if key == "floor" else "-"
                bar_ax.plot(d, y, style, color=colour, lw=1, alpha=0.8,
                            label=f"{label} definition" if i == 0 and key != "floor" else
                            ("floor ½|E(0) − E(1)| of the mean" if i == 0 else None))
                if key != "floor":
                    bar_ax.scatter(d, y, s=18, color=colour,
                                   facecolors=[colour if f else "white" for f in filled])
        bar_ax.axhline(100 * STABILITY_THRESHOLD, color="grey", ls="--", lw=1,
                       label="2 pts (connected below)")
        bar_ax.scatter([], [], color="grey", label="filled: level matching")
        bar_ax.scatter([], [], color="grey", facecolors="white", label="hollow: not matching")
        for ax in (acc_ax, bar_ax):
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.xaxis.set_major_locator(FixedLocator(densities[::2]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:.3g}%"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("weights remaining (log scale)")
        acc_ax.set_ylabel("test accuracy (%)")
        acc_ax.set_title("IMP levels (dotted: dense − tolerance, per seed)")
        bar_ax.set_ylabel("test error barrier to the previous level (pts)")
        bar_ax.set_title("successive-level barriers, every seed")
        bar_ax.set_ylim(bottom=0)
        acc_ax.legend(loc="lower left", fontsize="small")
        fig.legend(*bar_ax.get_legend_handles_labels(), loc="outside right center",
                   fontsize="small")
        t = record["contingency"]
        fig.suptitle(f"{record['setting']} on MNIST-1D, {len(record['seeds'])} seeds: levels "
                     f"matching & connected {t['matching_connected']}, matching only "
                     f"{t['matching_not_connected']}, connected only "
                     f"{t['not_matching_connected']}, neither "
                     f"{t['not_matching_not_connected']}")
    return lmc.save_figure(fig, path.with_suffix(""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="mlp")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_validation_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    path = args.out / f"imp_connectivity_mnist1d_{args.setting}.json"
    if not args.plot_only:
        start = time.perf_counter()
        config, dataset = SETTINGS[args.setting], load_dataset("mnist1d")
        seeds = [int(s) for s in args.seeds.split(",")]
        trunks = [lmc.train_run(config.replace(seed=s), args.root, dataset=dataset,
                                save_at=[REWIND], progress=False) for s in seeds]
        dense = [t.result()["final"]["test_accuracy"] for t in trunks]
        tolerance = 2 * float(np.std(dense, ddof=1))
        record = {"study": "imp_connectivity_mnist1d", "setting": args.setting,
                  "config": config.to_dict(), "rewind": REWIND, "tolerance": tolerance,
                  "threshold": STABILITY_THRESHOLD, "seeds": []}
        for seed in seeds:
            imp = run_imp(config.replace(seed=seed), levels=args.levels, rewind=REWIND,
                          root=args.root, dataset=dataset, tolerance=tolerance, alphas=11,
                          progress=False)
            levels = []
            for lv in imp.methods["imp"]:
                b = lv.get("successive_barrier")
                levels.append({"level": lv["level"], "density": lv["density"],
                               "test_accuracy": lv["test_accuracy"],
                               "train_accuracy": lv["train_accuracy"],
                               "matching": lv["matching"], "barrier": b,
                               "connected": b is not None
                               and b["error_chord"] < STABILITY_THRESHOLD})
            record["seeds"].append({"seed": seed, "dense_test_accuracy":
                                    imp.dense_test_accuracy, "summary": imp.summary["imp"],
                                    "levels": levels})
        record["contingency"] = contingency(record["seeds"])
        record["wall_seconds"] = time.perf_counter() - start
        write_json(path, record)
        print(json.dumps(record["contingency"]))
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
