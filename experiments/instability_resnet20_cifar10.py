"""Instability analysis of ResNet-20 on CIFAR-10 (Frankle et al. 2020, Figure 3) — for a GPU.

The open_lth recipe (experiments/configs/resnet20_cifar10.json): 160 epochs, batch 128,
SGD momentum 0.9, lr 0.1 ×0.1 at epochs 80 and 120, weight decay 1e-4, flip + 4-px crop.
The paper finds the dense network unstable at k = 0 and stable from k ≈ 2000 iterations
(≈3% of training). `--short` trains a few epochs instead: a smoke test of the pipeline on a
GPU, not a reproduction.

CIFAR-10 must be prepared by tensorflow-datasets first (see README: needs TensorFlow and
internet once). On XLA's CPU backend ResNet-20 trains at ~1.4 steps/s: use a GPU.

    python experiments/instability_resnet20_cifar10.py --root lmc_runs --out figures
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lmc

CONFIG = Path(__file__).parent / "configs" / "resnet20_cifar10.json"
SPAWN_STEPS = ["0it", "100it", "250it", "500it", "1000it", "2000it", "4000it"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="lmc_runs", help="run store")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--replicates", type=int, default=2)
    parser.add_argument("--short", action="store_true",
                        help="4 epochs, spawn steps up to 500it: a pipeline check")
    args = parser.parse_args()

    config = lmc.TrainConfig.from_dict(json.loads(CONFIG.read_text()))
    steps = SPAWN_STEPS
    name = "instability_resnet20_cifar10"
    if args.short:
        config = config.replace(duration="4ep", milestones=("2ep", "3ep"))
        steps, name = SPAWN_STEPS[:4], f"{name}_short"
    record = lmc.instability_analysis(config, steps, children=2, replicates=args.replicates,
                                      root=args.root)
    path = record.save(args.out / f"{name}.json")
    for point in record.points:
        b = point["error_barrier"]
        print(f"k = {point['step']:>5}: {100 * b['mean']:.2f} ± {100 * b['std']:.2f} pts")
    print(*lmc.plot_result(path), sep="\n")


if __name__ == "__main__":
    main()
