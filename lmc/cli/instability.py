"""`lmc instability`: the instability analysis of Frankle et al. (2020) over spawn steps."""

from __future__ import annotations

import argparse

from lmc.cli._common import (
    BARRIER_COLUMNS,
    add_interpolation_arguments,
    add_train_arguments,
    arguments,
    check_names,
    config_from_args,
    csv,
    format_estimate,
    write_result,
)
from lmc.constants import STABILITY_THRESHOLD
from lmc.workflows.alignment import METHODS as ALIGN_METHODS
from lmc.workflows.instability import instability_analysis
from lmc.workflows.records import InstabilityRecord, InstabilityReplicatesRecord
from lmc.workflows.replicates import replicate_instability, seed_range


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
                   help="parents with seeds seed, seed+1, ..., pooled into one estimate "
                   "(default 1)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="replicates: the whole analysis for the seeds seed, seed+1, ..., "
                   "seed+N-1 (a count, not a list; one parent each, finished runs reused), "
                   "every spawn step reported as the mean over seeds with a 95%% Student-t "
                   "interval, n and every seed (default 1: one analysis)")
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


def print_instability_replicates(record: InstabilityReplicatesRecord) -> None:
    dense = record.dense_test_accuracy
    print(f"{len(record.seeds)} seeds ({', '.join(map(str, record.seeds))}) × "
          f"{record.children} children, mean [{100 * record.confidence:g}% Student-t "
          f"interval]; dense test accuracy (%) {format_estimate(dense)}, n = {dense['n']}")
    print(f"  instability = test error barrier between children (pts; stable below "
          f"{100 * record.threshold:g} pts by the mean definition)")
    aligned = all("aligned_barrier" in p for p in record.points)
    names = BARRIER_COLUMNS
    header = "  ".join(f"{n:>22}" for n in names.values())
    if aligned:
        header += f"  {'mean, ' + str(record.align) + '-aligned':>22}"
    print(f"  {'k':>8}  {header} {'n':>3}")
    for point in record.points:
        b = point["barrier"]
        line = f"  {point['step']:>8}  " + "  ".join(
            f"{format_estimate(b[k]):>22}" for k in names)
        if aligned:
            line += f"  {format_estimate(point['aligned_barrier']['error']):>22}"
        stable = "stable" if b["error"]["mean"] < record.threshold else "unstable"
        print(f"{line} {b['error']['n']:>3}  {stable}")


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    check_names(config)
    options = {"children": args.children, "root": args.runs, "alphas": args.alphas,
               "threshold": args.threshold, "progress": args.progress,
               "data_dir": args.data_dir, "align": args.align}
    identity = arguments(args)
    if args.seeds == 1:
        record = instability_analysis(config, args.spawn_steps, replicates=args.replicates,
                                      **options)
        print_instability(record)
        del identity["seeds"]  # the path of a single analysis is as before --seeds existed
    else:
        record = replicate_instability(config, args.spawn_steps,
                                       seed_range(config, args.seeds),
                                       replicates=args.replicates, **options)
        print_instability_replicates(record)
    write_result(record, args, identity)
