"""Instability analysis (Frankle, Dziugaite, Roy & Carbin, ICML 2020) on MNIST-1D.

The small 1-D convnet of Greydanus 2020 (conv1d, 25 channels), SGD momentum 0.9, lr 0.05,
cosine schedule, batch 128, 3000 iterations:

- ``main``: no warmup. Children spawned at k = 0 end up in different basins (test error
  barrier well above 2 points); spawned at k >= 10-50 they are linearly connected.
- ``control_warmup``: identical, but with 300 iterations of linear LR warmup. Frankle et
  al. report that warmup makes networks stable earlier; here it is stable already at k = 0.

Writes ``<out>/instability_mnist1d_<name>.json`` (one instability result per setting),
``<out>/instability_mnist1d_summary.json`` (per-parent barriers, first stable k),
``<out>/instability_mnist1d.json`` (both on one axis) and the figures (PNG + PDF), all
redrawable with ``lmc plot``.
See experiments/instability_mnist1d.md for the settings tried and the results.

    python experiments/instability_mnist1d.py --root lmc_runs --out figures/
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lmc
from lmc.files import write_json
from lmc.workflows.instability import instability_analysis
from lmc.workflows.records import InstabilityComparison, InstabilityRecord

SPAWN_STEPS = ["0it", "10it", "25it", "50it", "100it", "250it", "500it", "1000it"]
BASE = dict(model="conv1d", model_options={"channels": 25}, dataset="mnist1d",
            optimizer="momentum", momentum=0.9, lr=0.05, batch_size=128, schedule="cosine",
            duration="3000it", seed=0)
LABELS = {"main": "no warmup", "control_warmup": "300-it warmup (control)"}
SETTINGS = {
    "main": lmc.TrainConfig(**BASE, warmup="0it"),
    "control_warmup": lmc.TrainConfig(**BASE, warmup="300it"),
}


def summarise(result: InstabilityRecord) -> dict:
    """Barrier (percentage points) per spawn step, and the first k from which it stays stable."""
    thr = result.threshold
    rows = []
    for p in result.points:
        per_parent = {}
        for pair in p["pairs"]:
            barrier = pair["barriers"]["test"]["error"]["mean"]
            per_parent.setdefault(pair["parent"], []).append(barrier)
        rows.append({"step": p["step"],
                     "barrier_pp_mean": 100 * p["error_barrier"]["mean"],
                     "barrier_pp_std": 100 * p["error_barrier"]["std"],
                     "barrier_pp_min": 100 * p["error_barrier"]["min"],
                     "barrier_pp_max": 100 * p["error_barrier"]["max"],
                     "n_pairs": p["error_barrier"]["n"],
                     "barrier_pp_per_parent": [100 * sum(v) / len(v) for v in per_parent.values()],
                     "child_test_accuracy": p["child_test_accuracy"]["mean"]})
    stable_from = None
    for i, r in enumerate(rows):
        if all(q["barrier_pp_mean"] < 100 * thr for q in rows[i:]):
            stable_from = r["step"]
            break
    return {"config": result.config, "dense_test_accuracy": result.dense_test_accuracy,
            "threshold_pp": 100 * thr, "stable_from_step": stable_from, "points": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="lmc_runs", help="run store (finished runs are reused)")
    parser.add_argument("--out", default="figures/", help="directory for JSON and figures")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--replicates", type=int, default=2, help="parents (seeds 0, 1, ...)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    summaries, results = {}, {}
    for name in args.settings:
        start = time.time()
        result = instability_analysis(SETTINGS[name], SPAWN_STEPS, children=args.children,
                                      replicates=args.replicates, root=args.root,
                                      progress=args.progress)
        seconds = time.time() - start
        path = result.save(out / f"instability_mnist1d_{name}.json")
        summaries[name] = summarise(result) | {"wall_seconds": seconds, "result_file": path.name}
        s = summaries[name]
        print(f"[{name}] dense test acc {100 * s['dense_test_accuracy']:.1f}%, "
              f"stable from k = {s['stable_from_step']}, {seconds:.0f} s")
        for r in s["points"]:
            print(f"  k = {r['step']:5d}: barrier {r['barrier_pp_mean']:5.2f} ± "
                  f"{r['barrier_pp_std']:4.2f} pp  (parents: "
                  f"{', '.join(f'{v:.2f}' for v in r['barrier_pp_per_parent'])}; "
                  f"child acc {100 * r['child_test_accuracy']:.1f}%)")
        results[LABELS[name]] = result
        for p in lmc.plot_result(path):
            print("  wrote", p)

    write_json(out / "instability_mnist1d_summary.json", {
        "spawn_steps": SPAWN_STEPS, "children": args.children, "replicates": args.replicates,
        "settings": summaries})
    # Both settings on one axis; only what the figure needs, the full results are beside it.
    comparison = InstabilityComparison(
        title="Instability on MNIST-1D: conv1d, lr 0.05 cosine, 3000 it\n"
              f"mean ± std over {args.replicates} parents × {args.children} children",
        threshold=next(iter(results.values())).threshold,
        series={label: {"dense_test_accuracy": r.dense_test_accuracy,
                        "points": [{"step": p["step"], "error_barrier": p["error_barrier"]}
                                   for p in r.points]}
                for label, r in results.items()},
    ).save(out / "instability_mnist1d.json")
    for p in lmc.plot_result(comparison):
        print("wrote", p)


if __name__ == "__main__":
    main()
