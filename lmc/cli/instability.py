"""`lmc instability`: the instability analysis of Frankle et al. (2020) over spawn steps."""

from __future__ import annotations

import argparse

from lmc.cli._common import (
    add_interpolation_arguments,
    add_train_arguments,
    check_names,
    config_from_args,
    csv,
    write_result,
)
from lmc.constants import STABILITY_THRESHOLD
from lmc.workflows.alignment import METHODS as ALIGN_METHODS
from lmc.workflows.instability import instability_analysis
from lmc.workflows.records import InstabilityRecord


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "instability", help="instability analysis over spawn steps",
        description="Frankle et al. 2020: for every spawn step k, train children from the "
        "parent's checkpoint at k and measure the test error barrier between them. Writes a "
        "JSON and the instability figure.")
    add_train_arguments(p)
    p.add_argument("--spawn-steps", type=csv, required=True,
                   help="e.g. 0it,25it,100it,500it,2ep")
    p.add_argument("--children", type=int, default=2, help="children per parent (default 2)")
    p.add_argument("--replicates", type=int, default=1,
                   help="parents with seeds seed, seed+1, ... (default 1)")
    p.add_argument("--threshold", type=float, default=STABILITY_THRESHOLD,
                   help=f"stability threshold on the error barrier (default "
                   f"{STABILITY_THRESHOLD:g})")
    p.add_argument("--align", choices=ALIGN_METHODS, default=None,
                   help="also measure the barrier after permuting one child of every pair "
                   "to match the other (weight or activation matching, Ainsworth et al. "
                   "2022): instability modulo permutation symmetry")
    add_interpolation_arguments(p)
    p.set_defaults(func=run)


def print_instability(record: InstabilityRecord) -> None:
    print(f"dense test accuracy {record.dense_test_accuracy:.2%}; instability = test error "
          f"barrier between {record.children} children (stable below "
          f"{100 * record.threshold:g} pts)")
    if record.align is not None:
        print(f"  naive barrier, then after {record.align} matching (aligned)")
    for point in record.points:
        b = point["error_barrier"]
        stable = "stable" if b["mean"] < record.threshold else "unstable"
        line = f"  k = {point['step']:>6}: {100 * b['mean']:6.2f} ± {100 * b['std']:.2f} pts  "
        aligned = point.get("aligned_error_barrier")
        if aligned is None:
            print(line + stable)
            continue
        stable_aligned = "stable" if aligned["mean"] < record.threshold else "unstable"
        print(f"{line}{stable:<8}  aligned {100 * aligned['mean']:6.2f} ± "
              f"{100 * aligned['std']:.2f} pts  {stable_aligned}")


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    check_names(config)
    record = instability_analysis(
        config, args.spawn_steps, children=args.children, replicates=args.replicates,
        root=args.runs, alphas=args.alphas, threshold=args.threshold, progress=args.progress,
        data_dir=args.data_dir, align=args.align)
    print_instability(record)
    write_result(record, args)
