"""The data side on MNIST-1D, 3 seeds: data pruning by EL2N/GraNd (Paul, Ganguli &
Dziugaite 2021, "Deep learning on a data diet"), lottery tickets on a data diet and
per-example linear mode connectivity (Paul, Larsen et al. 2022, "Lottery tickets on a
data diet: finding initializations with sparse trainable networks").

1. Scores: EL2N and GraNd of every training example at step 150 (5 epochs of 3000
   iterations), averaged over 4 independent runs (seeds 100-103, none of the study's).
2. Data-pruning curve: train on the hardest (highest EL2N or GraNd), the easiest (lowest
   EL2N) or a random fraction of the training set, same number of iterations (so more
   epochs of fewer examples), test accuracy against the fraction kept.
3. Data-diet IMP: the rewind point w_100 pre-trained for 100 steps on all the data (the
   runs of experiments/imp_connectivity_mnist1d.py), on a random 10% subset, or on the
   easiest 10% by EL2N; then IMP (20% per level, every level trained on all the data)
   rewinding to it. Compared by the matching range (tolerance 2 × the seed-to-seed std
   of the dense accuracy).
4. Per-example linear mode connectivity at each rewind point (those of 3 and the
   full-data w_0 and w_1000 of experiments/rewind_stability_mnist1d.py): two children
   of w_k trained on all the data under different data orders, and the fraction of
   training examples whose error barrier along the path between them is 0 (and whose
   loss barrier is below 0.1 nats), against IMP's matching range from that rewind point.

    python experiments/data_diet_mnist1d.py
    python experiments/data_diet_mnist1d.py --plot-only

Writes ``<out>/data_diet_mnist1d_mlp.json``, its figure, and the scores' record, arrays
and histogram (``data_scores_mnist1d_mlp.*``).
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
from lmc.files import write_json
from lmc.training.data import load_dataset
from lmc.training.runs import Run, RunSpec, train_runs
from lmc.training.subsets import Subset
from lmc.workflows.imp import run_imp
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.scores import data_scores

sys.path.insert(0, str(Path(__file__).parent))
from imp_mnist1d import SETTINGS  # noqa: E402  (the IMP study's recipes: same run ids)
from predict_validation_mnist1d import t_interval  # noqa: E402

SCORE_STEP = "150it"
SCORE_SEED = 100
KEEPS = (0.25, 0.5, 0.75)
CURVES = (("hardest", "el2n"), ("easiest", "el2n"), ("hardest", "grand"),
          ("random", "random"))
REWIND = 100
DIET_KEEP = 0.1


def subset(end: str, score: str, keep: float, npz: Path) -> Subset:
    if score == "random":
        return Subset("random", keep, "random")
    return Subset.from_file(npz, score, keep, end)


def connectivity(config, source: Run, k: int, dataset) -> dict:
    """Per-example LMC of two full-data children of `source` at step k."""
    specs = [RunSpec(config, parent=source.spec.run_id, start_step=k, sibling=i)
             for i in range(2)]
    kids = train_runs(specs, source.root, dataset=dataset, progress=False)
    record = interpolate_checkpoints(kids[0].final_checkpoint(), kids[1].final_checkpoint(),
                                     alphas=11, splits=("train", "test"), dataset=dataset,
                                     per_example=True)
    return {"children": [kid.spec.run_id for kid in kids],
            "error_barrier": record.barriers["test"]["error"],
            "per_example": record.per_example}


def imp_line(record) -> list[dict]:
    return [{"level": lv["level"], "density": lv["density"],
             "test_accuracy": lv["test_accuracy"]} for lv in record.methods["imp"]]


def seed_rows(config, seed: int, npz: Path, levels: int, root: Path, dataset) -> dict:
    config = config.replace(seed=seed)
    out = {"seed": seed, "curves": {}, "diet": {}}
    for end, score in CURVES:
        accs = []
        for keep in KEEPS:
            run = lmc.train_run(config.replace(subset=subset(end, score, keep, npz)), root,
                                dataset=dataset, progress=False)
            accs.append(run.result()["final"]["test_accuracy"])
        out["curves"][f"{end}/{score}"] = accs
    sources = {"full": Run(root, RunSpec(config))}
    for name, end, score in (("random10", "random", "random"),
                             ("easiest10", "easiest", "el2n")):
        pre = config.replace(subset=subset(end, score, DIET_KEEP, npz))
        sources[name] = lmc.train_run(pre, root, dataset=dataset, save_at=[REWIND],
                                      progress=False)
    for name, source in sources.items():
        imp = run_imp(config, levels=levels, rewind=REWIND, root=root, dataset=dataset,
                      successive_barriers=False, progress=False,
                      rewind_from=None if name == "full" else source)
        out["diet"][name] = {"rewind_step": REWIND, "source": source.spec.run_id,
                             "dense_test_accuracy": imp.dense_test_accuracy,
                             "levels": imp_line(imp),
                             "connectivity": connectivity(config, source, REWIND, dataset)}
    for k in (0, 1000):  # the full-data rewind points of the rewinding study
        imp = run_imp(config, levels=levels, rewind=k, root=root, dataset=dataset,
                      successive_barriers=False, progress=False)
        out["diet"][f"full_k{k}"] = {"rewind_step": k, "source": sources["full"].spec.run_id,
                                     "dense_test_accuracy": imp.dense_test_accuracy,
                                     "levels": imp_line(imp),
                                     "connectivity": connectivity(config, sources["full"], k,
                                                                  dataset)}
    out["dense_test_accuracy"] = out["diet"]["full"]["dense_test_accuracy"]
    connected = {name: d["connectivity"]["per_example"]["train"]["error_connected"]
                 for name, d in out["diet"].items()}
    print(f"  seed {seed}: examples connected " + ", ".join(
        f"{name} {100 * c:.1f}%" for name, c in connected.items()), flush=True)
    return out


def summarise(record: dict) -> dict:
    seeds = record["seeds"]
    dense = [s["dense_test_accuracy"] for s in seeds]
    tolerance = 2 * float(np.std(dense, ddof=1))
    curves = {name: [t_interval([s["curves"][name][i] for s in seeds])
                     for i in range(len(KEEPS))] for name in seeds[0]["curves"]}
    diet = {}
    for name in seeds[0]["diet"]:
        lines = [s["diet"][name]["levels"] for s in seeds]
        acc = [t_interval([line[i]["test_accuracy"] for line in lines])
               for i in range(len(lines[0]))]
        matching = [a["mean"] >= np.mean(dense) - tolerance for a in acc]
        unbroken = next((i for i, m in enumerate(matching) if not m), len(acc)) - 1

        def per_seed_matching(s, name=name):
            """The sparsest level of one seed within the tolerance of its full-data dense
            accuracy (1.0 if none is: the dense level itself falls short)."""
            lv = s["diet"][name]["levels"]
            ok = [x["density"] for x in lv
                  if x["test_accuracy"] >= s["dense_test_accuracy"] - tolerance]
            return min(ok, default=1.0)

        diet[name] = {
            "accuracy": acc, "density": [lv["density"] for lv in lines[0]],
            "min_density_matching_throughout": lines[0][unbroken]["density"],
            "per_seed_min_matching_density": [per_seed_matching(s) for s in seeds],
            "error_connected": t_interval([
                s["diet"][name]["connectivity"]["per_example"]["train"]["error_connected"]
                for s in seeds]),
            "loss_connected": t_interval([
                s["diet"][name]["connectivity"]["per_example"]["train"]["loss_connected"]
                for s in seeds]),
            "instability_chord_pts": t_interval([
                100 * s["diet"][name]["connectivity"]["error_barrier"]["chord"]
                for s in seeds])}
    # Rank correlation over the rewind points: more examples connected vs a sparser
    # matching range (of the seed means), which Paul, Larsen et al. 2022 relate.
    xs = [d["error_connected"]["mean"] for d in diet.values()]
    ys = [-d["min_density_matching_throughout"] for d in diet.values()]
    rho = float(stats.spearmanr(xs, ys).statistic)
    return {"tolerance": tolerance, "dense_test_accuracy": t_interval(dense),
            "curves": curves, "diet": diet,
            "spearman_connected_vs_sparsity": rho}


NAMES = {"full": "all data, k = 100", "random10": "random 10%, k = 100",
         "easiest10": "easiest 10% (EL2N), k = 100", "full_k0": "all data, k = 0",
         "full_k1000": "all data, k = 1000"}


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from lmc.plots.style import STYLE

    record = json.loads(path.read_text())
    summary = record["summary"]
    dense = summary["dense_test_accuracy"]
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(14, 4.4), layout="constrained")
        prune_ax, imp_ax, lmc_ax = fig.subplots(1, 3)
        for ax in (prune_ax, imp_ax):
            ax.axhspan(100 * (dense["mean"] - summary["tolerance"]),
                       100 * (dense["mean"] + summary["tolerance"]), color="green",
                       alpha=0.15, lw=0, label="all data, dense ± tolerance")
        for j, (name, stats) in enumerate(summary["curves"].items()):
            x = [100 * k for k in KEEPS]
            prune_ax.errorbar(x, [100 * s["mean"] for s in stats],
                              yerr=[[100 * (s["mean"] - s["lo"]) for s in stats],
                                    [100 * (s["hi"] - s["mean"]) for s in stats]],
                              fmt="-o", ms=3, capsize=2, color=f"C{j}",
                              label=name.replace("/", " by ").replace("random by random",
                                                                      "random"))
        prune_ax.set_xlabel("training examples kept (%)")
        prune_ax.set_ylabel("test accuracy (%)")
        prune_ax.set_title("data pruning (same iterations)")
        prune_ax.legend(fontsize="small", loc="lower right")
        for j, (name, d) in enumerate(summary["diet"].items()):
            imp_ax.plot(d["density"], [100 * a["mean"] for a in d["accuracy"]], "-o", ms=2.5,
                        color=f"C{j}", label=NAMES[name])
            imp_ax.fill_between(d["density"], [100 * a["lo"] for a in d["accuracy"]],
                                [100 * a["hi"] for a in d["accuracy"]], color=f"C{j}",
                                alpha=0.07, lw=0)
            x = 100 * d["error_connected"]["mean"]
            xerr = [[x - 100 * d["error_connected"]["lo"]],
                    [100 * d["error_connected"]["hi"] - x]]
            lmc_ax.errorbar([x], [100 * d["min_density_matching_throughout"]], xerr=xerr,
                            fmt="o", color=f"C{j}", capsize=2, label=NAMES[name])
            y = 100 * np.asarray(d["per_seed_min_matching_density"])
            lmc_ax.scatter([x] * len(y), y, s=12, marker="x", color=f"C{j}", alpha=0.7)
        d0 = next(iter(summary["diet"].values()))["density"]
        imp_ax.set_xscale("log")
        imp_ax.invert_xaxis()
        imp_ax.xaxis.set_major_locator(FixedLocator(d0[::2]))
        imp_ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:.3g}%"))
        imp_ax.xaxis.set_minor_locator(NullLocator())
        imp_ax.set_xlabel("weights remaining (log scale)")
        imp_ax.set_ylabel("test accuracy (%)")
        imp_ax.set_title("IMP from each rewind point (full data)")
        imp_ax.legend(fontsize="x-small", loc="lower left")
        lmc_ax.set_yscale("log")
        lmc_ax.invert_yaxis()
        lmc_ax.yaxis.set_major_locator(FixedLocator([100 * x for x in d0]))
        lmc_ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.3g}%"))
        lmc_ax.yaxis.set_minor_locator(NullLocator())
        lmc_ax.set_xlabel("training examples connected between children of w_k (%)")
        lmc_ax.set_ylabel("weights remaining, matching (log)")
        lmc_ax.set_title("per-example LMC at w_k vs how far IMP matches\n"
                         "o: seed mean (throughout); x: seeds (sparsest)")
        lmc_ax.legend(fontsize="x-small")
        fig.suptitle(f"MLP on MNIST-1D, {len(record['seeds'])} seeds: data pruning, lottery "
                     f"tickets on a data diet and per-example linear mode connectivity")
    return lmc.save_figure(fig, path.with_suffix(""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--levels", type=int, default=14)
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_validation_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    path = args.out / "data_diet_mnist1d_mlp.json"
    if not args.plot_only:
        start = time.perf_counter()
        config, dataset = SETTINGS["mlp"], load_dataset("mnist1d")
        npz = args.out / "data_scores_mnist1d_mlp.npz"
        scores = data_scores(config.replace(seed=SCORE_SEED), npz, runs=4, step=SCORE_STEP,
                             root=args.root, dataset=dataset, progress=False)
        scores.save(args.out / "data_scores_mnist1d_mlp.json")
        lmc.plot_result(args.out / "data_scores_mnist1d_mlp.json")
        record = {"study": "data_diet_mnist1d", "setting": "mlp", "config": config.to_dict(),
                  "score_step": SCORE_STEP, "score_runs": scores.runs, "keeps": list(KEEPS),
                  "diet_keep": DIET_KEEP, "rewind": REWIND,
                  "rank_correlation_el2n_grand": scores.rank_correlation,
                  "seeds": [seed_rows(config, int(s), npz, args.levels, args.root, dataset)
                            for s in args.seeds.split(",")]}
        record["summary"] = summarise(record)
        record["wall_seconds"] = time.perf_counter() - start
        write_json(path, record)
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
