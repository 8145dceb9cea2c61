"""The local ground truth: how far can a level be pruned and *fine-tuned from its
projection* (no rewinding) and stay matching and in its valley? Estimator C (the
Gaussian-width threshold, which describes this local question) and the probe against
it, MLP and conv1d on MNIST-1D, 3 seeds.

The validation study's ground truth (experiments/predict_validation_mnist1d.py) rewinds
and retrains, as IMP does. Its local variant (`measured_safe_ratio(variant="local")`:
m ⊙ w_L trained at a tenth of the recipe's learning rate, constant, for the steps a
rewound level trains) was never measured. Here it is, at levels 0, 4, 8, 12, 16 of the
validation study's MLP runs and 0, 4, 8, 12 of its conv1d runs (seeds 0-2; the levels
whose checkpoints that study kept), with every network judged on the
20,000-example test split (experiments/mnist1d_large_test.py) at two tolerances fixed in
advance, as in experiments/gap_rule_mnist1d.py: noise-aware (max(2 × the seeds' std of
the dense accuracy, 2 × its binomial standard error)) and 2 points. Predictors (no new
predictions are computed: they are the validation and probe-criteria studies'): C, the
probe with the gap rule (100 steps), the loss-judged probe (400 steps), the constant 0.2
and the seed-0 curve (judged on seeds 1-2).

    python experiments/local_ground_truth_mnist1d.py [--setting conv1d]
    python experiments/local_ground_truth_mnist1d.py [--setting conv1d] --plot-only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lmc.core.evaluate import Evaluator
from lmc.files import write_json
from lmc.workflows.retraining import Solution, measured_safe_ratio

sys.path.insert(0, str(Path(__file__).parent))
from gap_rule_mnist1d import (  # noqa: E402
    TOLERANCES,
    gap,
    print_maes,
    tolerance_grid,
    tolerance_of,
)
from mnist1d_large_test import large_test_dataset  # noqa: E402
from predict_validation_mnist1d import t_interval  # noqa: E402
from probe_criteria_mnist1d import accuracy_prediction, seed0_curve  # noqa: E402

LEVELS = {"mlp": (0, 4, 8, 12, 16), "conv1d": (0, 4, 8, 12)}
REWIND = 100


def measure(setting: str) -> dict:
    large = large_test_dataset()
    validation = json.loads(Path(f"figures/predict_validation_mnist1d_{setting}.json").read_text())
    probes = {(c["seed"], c["level"]): c for c in json.loads(
        Path(f"figures/probe_criteria_mnist1d_{setting}.json").read_text())["rows"]}
    solutions, dense = {}, {}
    for seed in validation["seeds"]:
        for row in seed["rows"]:
            if row["level"] in LEVELS[setting] and row.get("truth"):
                solutions[seed["seed"], row["level"]] = (Solution.open(
                    row["truth"]["checkpoint"], dataset=large,
                    rewind=REWIND if row["level"] == 0 else None), row)
    for (s, level), (solution, _) in solutions.items():
        if level == 0:
            o = solution.opened
            dense[s] = float(Evaluator(o.eval_apply)(o.params, o.state,
                                                     *o.split("test"))["accuracy"])
    seeds = sorted(dense)
    tolerances = {"noise-aware": tolerance_of([dense[s] for s in seeds],
                                              int(large.y_test.shape[0])), "2 points": 0.02}
    print(f"dense {dense}, tolerances {tolerances}", flush=True)
    rows = []
    for (s, level), (solution, _) in sorted(solutions.items()):
        truths = {name: measured_safe_ratio(solution, dense_test_accuracy=dense[s],
                                            tolerance=t, variant="local")
                  for name, t in tolerances.items()}
        probe = probes[s, level]
        # the rewind ground truth of the probe-criteria study (the validation study's on
        # the MLP; re-measured there with a noise-aware tolerance on the conv1d)
        rows.append({**probe, "dense_test_accuracy_large": dense[s],
                     "rewind_truth_1000": probe["truth"],
                     "truths": {name: {"ratio": t.ratio, "status": t.status,
                                       "outcomes": t.to_json()["outcomes"]}
                                for name, t in truths.items()}})
        print(f"  seed {s} level {level:2d}: local truths "
              + ", ".join(f"{n} {t.ratio:.3f}" for n, t in truths.items())
              + f" (rewind, 1000 examples: {probe['truth']:.3f})", flush=True)
    return {"levels": list(LEVELS[setting]), "seeds": seeds, "dense_test_accuracy": dense,
            "tolerances": tolerances, "test_examples": int(large.y_test.shape[0]),
            "rows": rows}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for name in TOLERANCES:
        cells = [{**c, "truth": c["truths"][name]["ratio"]} for c in rows]
        curve = seed0_curve(cells)
        predictors = {
            "C (Gaussian width)": (lambda c: c["C"], "all"),
            "probe, τ = dense gap, 100 steps": (
                lambda c: accuracy_prediction(c, 100, gap(c), "dense"), "all"),
            "probe, train loss, 400 steps": (
                lambda c: c["probes"]["400"]["loss_ratio"], "all"),
            "constant 0.2": (lambda c: 0.2, "all"),
            "seed-0 curve": (lambda c, f=curve: f(c["density"]), "held out"),
            "the rewind ground truth (1000 examples)": (
                lambda c: c["rewind_truth_1000"], "all"),
        }
        out[name] = {}
        for label, (f, judged) in predictors.items():
            mine = [c for c in cells if judged == "all" or c["seed"] != 0]
            out[name][label] = {
                "judged": judged,
                "mae": t_interval([abs(f(c) - c["truth"]) for c in mine]),
                "per_seed": {s: {"levels": [c["level"] for c in mine if c["seed"] == s],
                                 "predicted": [f(c) for c in mine if c["seed"] == s],
                                 "truth": [c["truth"] for c in mine if c["seed"] == s]}
                             for s in sorted({c["seed"] for c in mine})}}
    return out


def plot(path: Path) -> list[Path]:
    record = json.loads(path.read_text())
    show = ["C (Gaussian width)", "probe, τ = dense gap, 100 steps",
            "probe, train loss, 400 steps", "constant 0.2",
            "the rewind ground truth (1000 examples)"]
    return tolerance_grid(path, record, show,
                          "local ground truth (fine-tuned from the projection)",
                          f"{record['setting']} on MNIST-1D: the local safe ratio (prune, "
                          "fine-tune from the projection) against the predictions",
                          dashed=(show[-1],))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=tuple(LEVELS), default="mlp")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    path = args.out / f"local_ground_truth_mnist1d_{args.setting}.json"
    if not args.plot_only:
        start = time.perf_counter()
        record = {"study": "local_ground_truth_mnist1d", "setting": args.setting,
                  **measure(args.setting)}
        record["wall_seconds"] = time.perf_counter() - start
    else:
        record = json.loads(path.read_text())
    record["summary"] = summarise(record["rows"])
    write_json(path, record)
    print_maes(record["summary"], "local ground truth")
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
