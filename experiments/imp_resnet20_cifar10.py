"""IMP with rewinding on ResNet-20 / CIFAR-10 (Frankle et al. 2020, Figure 4) — for a GPU.

The open_lth recipe (experiments/configs/resnet20_cifar10.json), 20% of the live weights
per level, rewinding to iteration 2000 (the paper's stable point; 500-2000 work), random
pruning and the ablations on the same schedule. Published: only IMP is matching between
80% and 13.4% of the weights remaining. 16 levels reach 2.8%; each level is a full
160-epoch training (~20-30 min on one modern GPU with lmc: plan a day for all methods).
`--short` trains 4 epochs per level for 3 levels: a pipeline check, not a reproduction.

CIFAR-10 must be prepared by tensorflow-datasets first (see README: needs TensorFlow and
internet once).

    python experiments/imp_resnet20_cifar10.py --root lmc_runs --out figures
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lmc

CONFIG = Path(__file__).parent / "configs" / "resnet20_cifar10.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="lmc_runs", help="run store")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--rewind", default="2000it")
    parser.add_argument("--baselines", default="random,shuffle,reinit")
    parser.add_argument("--short", action="store_true",
                        help="4 epochs, 3 levels, rewind to 100it: a pipeline check")
    args = parser.parse_args()

    config = lmc.TrainConfig.from_dict(json.loads(CONFIG.read_text()))
    levels, rewind, name = args.levels, args.rewind, "imp_resnet20_cifar10"
    if args.short:
        config = config.replace(duration="4ep", milestones=("2ep", "3ep"))
        levels, rewind, name = 3, "100it", f"{name}_short"
    record = lmc.run_imp(config, levels=levels, rewind=rewind,
                         baselines=tuple(b for b in args.baselines.split(",") if b),
                         root=args.root)
    path = record.save(args.out / f"{name}.json")
    for method, summary in record.summary.items():
        print(f"{method}: smallest matching density {summary['min_matching_density']:.2%}")
    print(*lmc.plot_result(path), sep="\n")


if __name__ == "__main__":
    main()
