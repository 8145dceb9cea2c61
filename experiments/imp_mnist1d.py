"""Iterative magnitude pruning with rewinding on MNIST-1D, against random pruning and the
ablations of Frankle et al. 2021 (shuffled masks, reinitialised weights, inverted scores),
with the error barrier between successive IMP levels (Paul et al. 2023).

Two settings (see experiments/imp_mnist1d.md for what was tried and what happened):

- ``mlp``:    MLP 40-100-100-10, SGD momentum 0.9, lr 0.05 cosine, batch 128, 3000 it.
- ``conv1d``: the 1-D convnet (25 channels), same recipe (the instability study's model).

20% of the live weights per level, rewinding to step 100; the output layer is pruned too
(it is a large share of the small models' weights).

    python experiments/imp_mnist1d.py --setting mlp --root lmc_runs --out figures/
    python experiments/imp_mnist1d.py --setting conv1d --levels 16 --baselines random,reinit

Writes ``<out>/imp_mnist1d_<setting>.json`` and its figures (``lmc plot`` redraws them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lmc
from lmc.workflows.imp import baselines, run_imp

BASE = dict(dataset="mnist1d", optimizer="momentum", momentum=0.9, lr=0.05, batch_size=128,
            schedule="cosine", duration="3000it", seed=0)
SETTINGS = {
    "mlp": lmc.TrainConfig(model="mlp", model_options={"widths": (100, 100)}, **BASE),
    "conv1d": lmc.TrainConfig(model="conv1d", model_options={"channels": 25}, **BASE),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="mlp")
    parser.add_argument("--levels", type=int, default=18)
    parser.add_argument("--rewind", default="100it")
    parser.add_argument("--baselines", default=",".join(baselines()),
                        help="comma-separated, from: " + ", ".join(baselines()))
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--root", type=Path, default=Path("lmc_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    args = parser.parse_args()

    config = SETTINGS[args.setting]
    start = time.perf_counter()
    record = run_imp(config, levels=args.levels, rewind=args.rewind,
                     baselines=tuple(b for b in args.baselines.split(",") if b),
                     tolerance=args.tolerance, root=args.root)
    record.extra["setting"] = args.setting
    record.extra["wall_seconds"] = time.perf_counter() - start
    path = record.save(args.out / f"imp_mnist1d_{args.setting}.json")
    for written in lmc.plot_result(path):
        print(f"figure {written}")
    dense = record.dense_test_accuracy
    print(f"{args.setting}: dense test accuracy {dense:.2%}")
    for method, levels in record.methods.items():
        trained = [lv["train_seconds"] for lv in levels[1:] if lv["train_seconds"] is not None]
        per_level = f", {sum(trained) / len(trained):.1f} s per level" if trained else ""
        summary = record.summary[method]
        print(f"  {method:8} smallest matching density {summary['min_matching_density']:.2%}"
              f" (throughout down to {summary['min_density_matching_throughout']:.2%})"
              f"{per_level}")
        for lv in levels:
            barrier = lv.get("successive_barrier")
            print(f"    L{lv['level']:>2} {lv['density']:7.2%} {lv['test_accuracy']:.2%}"
                  + (f"  barrier {100 * barrier['error']:.2f}" if barrier else ""))


if __name__ == "__main__":
    main()
