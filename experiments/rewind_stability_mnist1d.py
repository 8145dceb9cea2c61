"""Rewinding and stability: Frankle, Dziugaite, Roy & Carbin 2020 ("Linear mode
connectivity and the lottery ticket hypothesis", §4-5) on MNIST-1D, 3 seeds.

IMP (20% per level) rewound to k = 0 (the original lottery ticket, Frankle & Carbin 2019),
k = 100 (3% of training; the runs of experiments/imp_connectivity_mnist1d.py) and
k = 1000 (33%). At several levels, the sparse instability analysis: two children of the
pruned network m_L ⊙ w_k (IMP's mask of that level, same rewind point k) trained under
different data orders, and the test-error barrier between them (mean and chord
definitions, with the mean's floor ½|E(0) − E(1)|); level 0 is the dense network.

The paper's findings to test: IMP subnetworks are matching only when they are stable
(barrier < 2 points); for small networks on MNIST-like data k = 0 suffices, for deeper
ones rewinding to k > 0 is needed; IMP subnetworks become stable earlier (at smaller k)
than the dense network.

    python experiments/rewind_stability_mnist1d.py --setting mlp --levels 16 \
        --spawn-levels 0,4,8,12,16
    python experiments/rewind_stability_mnist1d.py --setting conv1d --levels 12 \
        --spawn-levels 0,6,12
    python experiments/rewind_stability_mnist1d.py --setting mlp --plot-only

Writes ``<out>/rewind_stability_mnist1d_<setting>.json`` and its figure.
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
from lmc.training.runs import Run, RunSpec
from lmc.workflows.imp import run_imp
from lmc.workflows.instability import spawn
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.opened import open_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from imp_mnist1d import SETTINGS  # noqa: E402  (the IMP study's recipes: same run ids)
from predict_validation_mnist1d import t_interval  # noqa: E402

REWINDS = ("0it", "100it", "1000it")


def instability(trunk: Run, k: int, mask, dataset) -> dict:
    """Test-error barrier between two children of m ⊙ w_k (mean, chord and floor)."""
    kids = spawn(trunk, k, 2, mask=mask, dataset=dataset, progress=False)
    record = interpolate_checkpoints(kids[0].final_checkpoint(), kids[1].final_checkpoint(),
                                     alphas=11, splits=("test",), dataset=dataset)
    error = record.barriers["test"]["error"]
    ends = record.curves["test"]["error"]
    return {"error": error["mean"], "error_chord": error["chord"],
            "floor": 0.5 * abs(ends[0] - ends[-1]),
            "child_test_accuracy": [kid.result()["final"]["test_accuracy"] for kid in kids],
            "children": [kid.spec.run_id for kid in kids]}


def seed_rows(config, seed: int, levels: int, spawn_levels: list[int], root: Path,
              dataset) -> dict:
    config = config.replace(seed=seed)
    out = {"seed": seed, "rewinds": {}}
    for rewind in REWINDS:
        imp = run_imp(config, levels=levels, rewind=rewind, root=root, dataset=dataset,
                      successive_barriers=False, progress=False)
        trunk = Run(root, RunSpec(config))
        lines = imp.methods["imp"]
        spawned = {}
        for level in spawn_levels:
            mask = None if level == 0 else open_checkpoint(
                lines[level]["checkpoint"], dataset=dataset).mask
            spawned[str(level)] = instability(trunk, imp.rewind_step, mask, dataset)
        out["dense_test_accuracy"] = imp.dense_test_accuracy
        out["rewinds"][rewind] = {
            "step": imp.rewind_step,
            "levels": [{"level": lv["level"], "density": lv["density"],
                        "test_accuracy": lv["test_accuracy"],
                        "train_accuracy": lv["train_accuracy"]} for lv in lines],
            "instability": spawned}
        print(f"  seed {seed} rewind {rewind}: " + ", ".join(
            f"L{lv} {100 * s['error_chord']:.1f}" for lv, s in spawned.items()), flush=True)
    return out


def summarise(record: dict) -> dict:
    """Matching per level from the seed means (tolerance 2 × the seed-to-seed std of the
    dense accuracy), instability per spawn level with intervals, and the per-seed
    matching-vs-stable contingency."""
    seeds = record["seeds"]
    dense = [s["dense_test_accuracy"] for s in seeds]
    tolerance = 2 * float(np.std(dense, ddof=1))
    out = {"tolerance": tolerance, "dense_test_accuracy": t_interval(dense), "rewinds": {}}
    table = {"matching_stable": 0, "matching_unstable": 0, "not_matching_stable": 0,
             "not_matching_unstable": 0}
    for rewind in REWINDS:
        n_levels = len(seeds[0]["rewinds"][rewind]["levels"])
        acc = [t_interval([s["rewinds"][rewind]["levels"][i]["test_accuracy"] for s in seeds])
               for i in range(n_levels)]
        matching = [bool(a["mean"] >= np.mean(dense) - tolerance) for a in acc]
        unbroken = next((i for i, m in enumerate(matching) if not m), n_levels) - 1
        inst = {}
        for level in seeds[0]["rewinds"][rewind]["instability"]:
            cells = [s["rewinds"][rewind]["instability"][level] for s in seeds]
            inst[level] = {key: t_interval([100 * c[key] for c in cells])
                           for key in ("error", "error_chord", "floor")}
            for s, c in zip(seeds, cells, strict=True):
                if level == "0":
                    continue
                acc_s = s["rewinds"][rewind]["levels"][int(level)]["test_accuracy"]
                key = (("matching" if acc_s >= s["dense_test_accuracy"] - tolerance
                        else "not_matching") + "_"
                       + ("stable" if c["error_chord"] < STABILITY_THRESHOLD else "unstable"))
                table[key] += 1
        out["rewinds"][rewind] = {
            "accuracy": acc, "matching": matching,
            "density": [lv["density"] for lv in seeds[0]["rewinds"][rewind]["levels"]],
            "min_density_matching_throughout":
                seeds[0]["rewinds"][rewind]["levels"][unbroken]["density"],
            "instability_pts": inst}
    out["contingency"] = table
    return out


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from lmc.plots.style import STYLE

    record = json.loads(path.read_text())
    summary = record["summary"]
    colours = dict(zip(REWINDS, ("C3", "C0", "C2"), strict=True))
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(11.5, 4.4), layout="constrained")
        acc_ax, inst_ax = fig.subplots(1, 2, sharex=True)
        dense = summary["dense_test_accuracy"]
        acc_ax.axhspan(100 * (dense["mean"] - summary["tolerance"]),
                       100 * (dense["mean"] + summary["tolerance"]), color="green",
                       alpha=0.15, lw=0, label="dense ± tolerance (matching band)")
        for rewind in REWINDS:
            s = summary["rewinds"][rewind]
            d, acc = s["density"], s["accuracy"]
            c = colours[rewind]
            acc_ax.plot(d, [100 * a["mean"] for a in acc], "-o", ms=3, color=c,
                        label=f"rewind to {rewind}")
            acc_ax.fill_between(d, [100 * a["lo"] for a in acc], [100 * a["hi"] for a in acc],
                                color=c, alpha=0.15, lw=0)
            levels = sorted(s["instability_pts"], key=int)
            x = [d[int(lv)] for lv in levels]
            for key, ls in (("error_chord", "-"), ("floor", ":")):
                y = [s["instability_pts"][lv][key] for lv in levels]
                mean = [v["mean"] for v in y]
                if key == "error_chord":
                    inst_ax.errorbar(x, mean, yerr=[np.subtract(mean, [v["lo"] for v in y]),
                                                    np.subtract([v["hi"] for v in y], mean)],
                                     fmt="-o", ms=3, color=c, capsize=2,
                                     label=f"rewind to {rewind}")
                else:
                    inst_ax.plot(x, mean, ls, color=c, lw=1)
        inst_ax.plot([], [], ":", color="grey", label="floor ½|E(0) − E(1)| (mean def.)")
        inst_ax.axhline(100 * STABILITY_THRESHOLD, color="grey", ls="--", lw=1,
                        label="2 pts (stable below)")
        d0 = summary["rewinds"][REWINDS[0]]["density"]
        for ax in (acc_ax, inst_ax):
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.xaxis.set_major_locator(FixedLocator(d0[::2]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:.3g}%"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("weights remaining (log scale)")
        acc_ax.set_ylabel("test accuracy (%)")
        acc_ax.set_title("IMP, mean and 95% interval over seeds")
        acc_ax.legend(loc="lower right", fontsize="small")
        inst_ax.set_ylabel("instability: chord test-error barrier (pts)")
        inst_ax.set_title("sparse instability at the rewind point")
        inst_ax.set_ylim(bottom=0)
        inst_ax.legend(loc="upper left", fontsize="small")
        t = summary["contingency"]
        fig.suptitle(f"{record['setting']} on MNIST-1D, {len(record['seeds'])} seeds: "
                     f"subnetworks matching & stable {t['matching_stable']}, matching & "
                     f"unstable {t['matching_unstable']}, not matching & stable "
                     f"{t['not_matching_stable']}, neither {t['not_matching_unstable']}")
    return lmc.save_figure(fig, path.with_suffix(""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="mlp")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--spawn-levels", default="0,4,8,12,16")
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_validation_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    path = args.out / f"rewind_stability_mnist1d_{args.setting}.json"
    if not args.plot_only:
        start = time.perf_counter()
        config, dataset = SETTINGS[args.setting], load_dataset("mnist1d")
        spawn_levels = [int(x) for x in args.spawn_levels.split(",")]
        record = {"study": "rewind_stability_mnist1d", "setting": args.setting,
                  "config": config.to_dict(), "rewinds": list(REWINDS),
                  "threshold": STABILITY_THRESHOLD,
                  "seeds": [seed_rows(config, int(s), args.levels, spawn_levels, args.root,
                                      dataset) for s in args.seeds.split(",")]}
        record["summary"] = summarise(record)
        record["wall_seconds"] = time.perf_counter() - start
        write_json(path, record)
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
