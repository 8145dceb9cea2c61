"""Pruning at initialisation against lottery tickets, with the ablations: Frankle,
Dziugaite, Roy & Carbin 2021 ("Pruning neural networks at initialization: why are we
missing the mark?") on MNIST-1D, 3 seeds.

Methods, each at IMP's densities: magnitude at initialisation, SNIP (Lee et al. 2019),
GraSP (Wang et al. 2020), SynFlow (Tanaka et al. 2020; 100 rounds) and random pruning,
all one-shot at step 0 and trained from step 0; against the lottery ticket with
rewinding (LTR: IMP, 20% per level, survivors rewound to step 100; the runs of
experiments/imp_connectivity_mnist1d.py). Ablations of each mask: shuffled within each
layer (per-layer density kept), survivors re-initialised, scores inverted (the
highest-scoring weights pruned; not for LTR, whose inverted line is in imp_mnist1d.md).

The paper's findings to test: the at-initialisation methods beat random pruning, fall
short of LTR, and are insensitive to shuffling and re-initialisation (they find good
per-layer densities, not good weights), while LTR is not.

    python experiments/missing_the_mark_mnist1d.py --setting mlp --levels 4,8,12,16
    python experiments/missing_the_mark_mnist1d.py --setting conv1d --levels 4,8,12
    python experiments/missing_the_mark_mnist1d.py --setting mlp --plot-only

Writes ``<out>/missing_the_mark_mnist1d_<setting>.json`` and its figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

import lmc
from lmc.core import masks
from lmc.core import prune as pruning
from lmc.files import write_json
from lmc.training.data import load_dataset
from lmc.training.runs import Run, RunSpec, ensure_checkpoint, mask_id, train_runs
from lmc.workflows.imp import METHODS, LevelContext, run_imp
from lmc.workflows.opened import open_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from imp_mnist1d import SETTINGS  # noqa: E402  (the IMP study's recipes: same run ids)
from predict_validation_mnist1d import t_interval  # noqa: E402

REWIND = "100it"
AT_INIT = ("magnitude", "snip", "grasp", "synflow")
ABLATIONS = ("original", "shuffle", "reinit", "invert")
LTR_ABLATIONS = ("original", "shuffle", "reinit")
STREAM = 1000  # folded into the seed for this study's randomness (apart from IMP's streams)


def _train(trunk: Run, step: int, mask, reinit: int | None, dataset) -> dict:
    spec = RunSpec(trunk.spec.config, parent=trunk.spec.run_id, start_step=step,
                   mask=mask_id(mask), reinit=reinit)
    run = Run(trunk.root, spec)
    seconds = None
    if not run.finished:
        t = time.perf_counter()
        train_runs([spec], trunk.root, dataset=dataset, mask=mask, progress=False)
        seconds = time.perf_counter() - t
    final = run.result()["final"]
    return {"density": masks.density(mask), "test_accuracy": final["test_accuracy"],
            "train_accuracy": final["train_accuracy"], "run_id": spec.run_id,
            "train_seconds": seconds}


def _key(seed: int, *ints: int) -> jax.Array:
    key = jax.random.fold_in(jax.random.key(seed), STREAM)
    for i in ints:
        key = jax.random.fold_in(key, i)
    return key


def seed_rows(config, seed: int, levels: list[int], root: Path, dataset) -> dict:
    config = config.replace(seed=seed)
    imp = run_imp(config, levels=max(levels), rewind=REWIND, root=root, dataset=dataset,
                  successive_barriers=False, progress=False)
    trunk = Run(root, RunSpec(config))
    ensure_checkpoint(trunk, 0, dataset=dataset, progress=False)
    init = open_checkpoint(trunk.checkpoint_path(0), dataset=dataset)
    ctx = LevelContext(config, "magnitude", (), 1000)
    k = imp.rewind_step
    out = {"seed": seed, "dense_test_accuracy": imp.dense_test_accuracy, "levels": []}
    for level in levels:
        lv = imp.methods["imp"][level]
        imp_mask = open_checkpoint(lv["checkpoint"], dataset=dataset).mask
        shuffled, _ = METHODS["shuffle"].derive(ctx, imp_mask, level)
        _, reinit = METHODS["reinit"].derive(ctx, imp_mask, level)
        row = {"level": level, "density": lv["density"], "methods": {"ltr": {
            "original": {"density": lv["density"], "test_accuracy": lv["test_accuracy"],
                         "train_accuracy": lv["train_accuracy"], "run_id": lv["run_id"]},
            "shuffle": _train(trunk, k, shuffled, None, dataset),
            "reinit": _train(trunk, k, imp_mask, reinit, dataset)}}}
        fraction = 1 - lv["density"]  # one shot to IMP's density (ceil-rounded: at most it)
        for c, criterion in enumerate(AT_INIT):
            key = _key(seed, level, c)
            inputs = init.criterion_inputs(criterion, examples=ctx.examples, key=key)
            mask = pruning.prune(init.params, None, fraction, criterion, **inputs)
            inverted = pruning.prune(init.params, None, fraction, criterion, invert=True,
                                     **inputs)
            shuffled = masks.shuffle_mask(mask, jax.random.fold_in(key, 1))
            fresh = int(jax.random.randint(jax.random.fold_in(key, 2), (), 0, 2**31 - 1))
            row["methods"][criterion] = {
                "original": _train(trunk, 0, mask, None, dataset),
                "shuffle": _train(trunk, 0, shuffled, None, dataset),
                "reinit": _train(trunk, 0, mask, fresh, dataset),
                "invert": _train(trunk, 0, inverted, None, dataset)}
        mask = pruning.prune(init.params, None, fraction, "random",
                             key=_key(seed, level, len(AT_INIT)))
        row["methods"]["random"] = {"original": _train(trunk, 0, mask, None, dataset)}
        out["levels"].append(row)
        print(f"  seed {seed} level {level} ({lv['density']:.1%}): " + ", ".join(
            f"{m} {100 * v['original']['test_accuracy']:.1f}"
            for m, v in row["methods"].items()), flush=True)
    return out


def path_fraction(mask) -> float:
    """Fraction of the live weights that lie on some path from the input to the output.

    A weight is useful only if its input unit is reachable from the input through live
    weights and its output unit reaches the output. Units are the hidden units of dense
    layers and the channels of convolutions (a channel counts as connected if any tap of
    its kernel is live: an upper bound for convolutions). Layers are the kernels in the
    order of their names (dense0, dense1, output; conv0, conv1, conv2, output).
    """
    kernels = [np.asarray(mask[name]["kernel"], bool) for name in sorted(mask)]
    units = []  # each kernel as (..., inputs, outputs)
    for i, k in enumerate(kernels):
        if i > 0 and k.ndim == 2 and kernels[i - 1].ndim == 3:  # dense after a flatten
            k = k.reshape(-1, kernels[i - 1].shape[-1], k.shape[-1])
        units.append(k if k.ndim == 3 else k[None])
    links = [k.any(0) for k in units]  # (inputs, outputs) of each layer
    forward = [np.ones(links[0].shape[0], bool)]
    for link in links:
        forward.append((forward[-1][:, None] & link).any(0))
    backward = [np.ones(links[-1].shape[1], bool)]
    for link in reversed(links):
        backward.insert(0, (link & backward[0][None, :]).any(1))
    live = sum(int(k.sum()) for k in units)
    useful = sum(int((k & forward[i][None, :, None] & backward[i + 1][None, None, :]).sum())
                 for i, k in enumerate(units))
    return useful / live if live else 0.0


def diagnose(record: dict, root: Path) -> None:
    """Adds to every line of every level the fraction of its live weights on an
    input-output path (`path_fraction`), read from the runs' final checkpoints."""
    from lmc.training.checkpoint import load_checkpoint

    for seed in record["seeds"]:
        for level in seed["levels"]:
            for lines in level["methods"].values():
                for line in lines.values():
                    run = Run.open(root / line["run_id"])
                    line["path_fraction"] = path_fraction(
                        load_checkpoint(run.final_checkpoint()).mask)


def _accuracies(record: dict, level_index: int, method: str, ablation: str) -> list[float]:
    return [s["levels"][level_index]["methods"][method][ablation]["test_accuracy"]
            for s in record["seeds"]]


def summarise(record: dict) -> dict:
    """Per level: every line's mean accuracy with a 95% t-interval over seeds, and the
    paired (same seed) differences the paper's claims are about, in points."""
    out = []
    for i, level in enumerate(record["seeds"][0]["levels"]):
        methods = level["methods"]
        lines = {f"{m}/{a}": t_interval(_accuracies(record, i, m, a))
                 for m in methods for a in methods[m]}
        paths = {f"{m}/{a}": t_interval([s["levels"][i]["methods"][m][a]["path_fraction"]
                                         for s in record["seeds"]])
                 for m in methods for a in methods[m]
                 if "path_fraction" in methods[m][a]}

        def diff(m1, a1, m2, a2, i=i):
            x = np.subtract(_accuracies(record, i, m1, a1), _accuracies(record, i, m2, a2))
            return t_interval(100 * x)

        claims = {}
        for m in AT_INIT:
            claims[f"{m} - random"] = diff(m, "original", "random", "original")
            claims[f"ltr - {m}"] = diff("ltr", "original", m, "original")
            for a in ABLATIONS[1:]:
                claims[f"{m} - {m}/{a}"] = diff(m, "original", m, a)
        for a in LTR_ABLATIONS[1:]:
            claims[f"ltr - ltr/{a}"] = diff("ltr", "original", "ltr", a)
        out.append({"level": level["level"], "density": level["density"], "lines": lines,
                    "differences_pts": claims, "path_fraction": paths})
    return {"levels": out}


NAMES = {"ltr": "LTR (IMP, rewind 100 it)", "magnitude": "magnitude at init",
         "snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow", "random": "random"}


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from lmc.plots.style import STYLE

    record = json.loads(path.read_text())
    levels = record["summary"]["levels"]
    d = [lv["density"] for lv in levels]
    dense = [s["dense_test_accuracy"] for s in record["seeds"]]
    colours = {"ltr": "k", "magnitude": "C0", "snip": "C1", "grasp": "C2", "synflow": "C3",
               "random": "grey", "original": "k", "shuffle": "C0", "reinit": "C1",
               "invert": "C3"}

    def line(ax, key, colour, label, ls="-"):
        stats = [lv["lines"][key] for lv in levels]
        mean = [100 * s["mean"] for s in stats]
        ax.plot(d, mean, ls, marker="o", ms=3, color=colour, label=label)
        ax.fill_between(d, [max(0.0, 100 * s["lo"]) for s in stats],  # accuracy ≥ 0
                        [min(100.0, 100 * s["hi"]) for s in stats], color=colour,
                        alpha=0.15, lw=0)

    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(13, 7.5), layout="constrained")
        axes = fig.subplots(2, 3, sharex=True, sharey=True).ravel()
        for m in ("ltr", *AT_INIT, "random"):
            line(axes[0], f"{m}/original", colours[m], NAMES[m])
        axes[0].set_title("every method, unablated")
        for ax, m in zip(axes[1:], ("ltr", *AT_INIT), strict=True):
            for a in (LTR_ABLATIONS if m == "ltr" else ABLATIONS):
                line(ax, f"{m}/{a}", colours[a], a)
            line(ax, "random/original", "grey", "random pruning", ls=":")
            ax.set_title(NAMES[m])
        band = 100 * np.mean(dense), 100 * np.std(dense, ddof=1)
        for ax in axes:
            ax.axhspan(band[0] - 2 * band[1], band[0] + 2 * band[1], color="green",
                       alpha=0.12, lw=0)
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.set_ylim(bottom=0)
            ax.xaxis.set_major_locator(FixedLocator(d))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:.3g}%"))
            ax.xaxis.set_minor_locator(NullLocator())
        # Two legends below the panels: the methods of the first, the ablations of the rest.
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower left", ncol=6,
                   fontsize="small", title="first panel")
        fig.legend(*axes[2].get_legend_handles_labels(), loc="outside lower right", ncol=5,
                   fontsize="small", title="other panels (invert: not for LTR)")
        for ax in axes[3:]:
            ax.set_xlabel("weights remaining (log scale)")
        for ax in axes[::3]:
            ax.set_ylabel("test accuracy (%)")
        fig.suptitle(f"{record['setting']} on MNIST-1D: pruning at initialisation vs lottery "
                     f"tickets, mean and 95% interval over {len(record['seeds'])} seeds "
                     f"(green: dense ± 2 std)")
    return lmc.save_figure(fig, path.with_suffix(""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="mlp")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--levels", default="4,8,12,16",
                        help="IMP levels whose densities are compared (0.8^level)")
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_validation_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--diagnose-only", action="store_true",
                        help="add the path fractions to an existing result (needs the runs)")
    args = parser.parse_args()
    path = args.out / f"missing_the_mark_mnist1d_{args.setting}.json"
    if args.diagnose_only:
        record = json.loads(path.read_text())
        diagnose(record, args.root)
        record["summary"] = summarise(record)
        write_json(path, record)
    elif not args.plot_only:
        start = time.perf_counter()
        config, dataset = SETTINGS[args.setting], load_dataset("mnist1d")
        levels = [int(x) for x in args.levels.split(",")]
        record = {"study": "missing_the_mark_mnist1d", "setting": args.setting,
                  "config": config.to_dict(), "rewind": REWIND, "levels": levels,
                  "seeds": [seed_rows(config, int(s), levels, args.root, dataset)
                            for s in args.seeds.split(",")]}
        diagnose(record, args.root)
        record["summary"] = summarise(record)
        record["wall_seconds"] = time.perf_counter() - start
        write_json(path, record)
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
