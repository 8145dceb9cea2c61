"""`lmc prune-ratio`: the largest safe one-step pruning ratio of a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmc.cli._common import (
    add_data_dir,
    add_model_arguments,
    add_output_arguments,
    csv,
    model_arguments,
    write_result,
)
from lmc.core.prune import CRITERIA
from lmc.core.prune_ratio import (
    BASES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EXAMPLES,
    EIGENVALUES,
    EPSILONS,
    ratio_grid,
)
from lmc.workflows.prune_ratio import prune_ratio_record
from lmc.workflows.records import PruneRatioRecord

# What the validation measured (experiments/predict_validation_mnist1d.md), printed with
# every answer so that it is read as what it is.
VALIDATION = ("validation (MNIST-1D, 3 seeds, against rewind-and-retrain): C's mean absolute "
              "error 0.30 on an MLP, no better than a constant 0.2 (0.32); every estimator "
              "under-predicts the retrained safe ratio; Zhang et al.'s setting (L1, one-shot, "
              "no retraining): C within +0.04..+0.10. The fine-tuning probe judged by "
              "training accuracy (lmc imp --ratio auto's default) predicts it to "
              "0.05-0.08 on an MLP and a convnet, not on a convnet trained on half the "
              "data (0.15-0.25)")
# The rows of the table: the estimators (`ESTIMATORS`) in the order A, B, C, D.
LABELS = {"lambda_max": "A  ½·λ_max·R² ≤ ε", "quadratic": "B  gᵀΔ + ½ΔᵀHΔ ≤ ε",
          "gaussian_width": "C  p ≤ p_theory(R)  (default)",
          "compensated": "D  min_δ q(Δ + δ) ≤ ε"}


def epsilon_argument(text: str) -> float | str:
    """--epsilon: a positive number or one of `EPSILONS`."""
    if text in EPSILONS:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a positive number or one of {', '.join(EPSILONS)}, "
                                         f"got {text!r}") from None


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prune-ratio", help="predict the largest safe one-step pruning ratio",
        description="At a trained (possibly sparse) checkpoint: the pruning displacement "
        "R(p), the quadratic-model loss increase and the Gaussian-width prediction "
        "p_theory(R) from the masked Hessian's spectrum, for a grid of ratios p; the safe "
        "ratio under each estimator, for the criterion and for random pruning "
        "(Paul et al. 2023; Zhang et al. 2024). Measured accuracy: " + VALIDATION + ".")
    p.add_argument("checkpoint", type=Path, help="a checkpoint file")
    p.add_argument("--criterion", default="magnitude",
                   help="pruning criterion (default magnitude; one of "
                   f"{', '.join(c for c in CRITERIA if c != 'magnitude_layerwise')}); "
                   "random is always added")
    p.add_argument("--epsilon", type=epsilon_argument, default=EPSILONS[0],
                   help="loss tolerance ε: a number, minibatch_std (default; std over the "
                   "Hessian's batches of the batch loss, Zhang et al. 2024) or example_std "
                   "(std of the per-example loss)")
    p.add_argument("--basis", choices=BASES, default=BASES[0],
                   help="estimator C's Hessian: prunable (default; the live prunable weights "
                   "the ratio counts, Zhang et al. 2024) or all (every live parameter, "
                   "biases too)")
    p.add_argument("--eigenvalues", choices=EIGENVALUES, default=EIGENVALUES[0],
                   help="estimator C's negative curvature: abs (default; |λ|, Zhang et al. "
                   "2024) or clip (max(λ, 0): a negative direction counts as flat)")
    p.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                   help=f"training examples of the Hessian, gradient and ε "
                   f"(default {DEFAULT_EXAMPLES})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"examples per batch of the Hessian: the minibatch of "
                   f"--epsilon minibatch_std (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--keep-dense", type=csv, default=[], metavar="LAYERS",
                   help="top-level parameter names never pruned, e.g. output")
    p.add_argument("--grid-step", type=float, default=0.001,
                   help="spacing of the grid of ratios (default 0.001)")
    p.add_argument("--seed", type=int, default=0, help="probe and random-pruning seed")
    add_output_arguments(p)
    add_model_arguments(p)
    add_data_dir(p)
    p.set_defaults(func=run)


def print_prune_ratio(record: PruneRatioRecord) -> None:
    print(f"{record.num_prunable:,} live prunable weights; Hessian on {record.examples} "
          f"{record.split} examples: λ_max {record.lambda_max:.4g}, trace "
          f"{record.trace:.4g}")
    print(f"ε = {record.epsilon:.4g} ({record.epsilon_detail or record.epsilon_source})")
    basis = ("the live prunable weights" if record.basis == "prunable"
             else f"all {record.dim:,} live parameters")
    mass = ""
    if record.zero_curvature_mass is not None:
        mass = (f"; spectrum mass at |λ| ≤ 1e-3·λ_max {record.zero_curvature_mass:.1%}, "
                f"below −1e-3·λ_max {record.negative_mass:.1%}")
    print(f"C: spectrum of {basis}, eigenvalues {record.eigenvalues}{mass}")
    names = list(record.criteria)
    print(f"  {'safe pruning ratio':28}" + "".join(f"{n:>14}" for n in names))
    for key, label in LABELS.items():
        if any(key not in record.criteria[n]["safe"] for n in names):
            continue  # a record written before the estimator existed
        cells = []
        for n in names:
            safe = record.criteria[n]["safe"][key]
            if safe["status"] == "below_grid":  # fails at the first grid point
                cells.append(f"<{100 * record.grid[0]:.1f}%")
            else:
                flag = "≥" if safe["status"] == "above_grid" else ""
                cells.append(f"{flag}{100 * safe['interpolated']:.1f}%")
        print(f"  {label:28}" + "".join(f"{c:>14}" for c in cells))
    print(VALIDATION)


def run(args: argparse.Namespace) -> None:
    record = prune_ratio_record(args.checkpoint, criterion=args.criterion,
                                grid=ratio_grid(args.grid_step), epsilon=args.epsilon,
                                basis=args.basis, eigenvalues=args.eigenvalues,
                                examples=args.examples, batch_size=args.batch_size,
                                keep_dense=args.keep_dense,
                                seed=args.seed, data_dir=args.data_dir,
                                **model_arguments(args))
    print_prune_ratio(record)
    write_result(record, args)
