"""`lmc interpolate`: loss and error barriers on the line between two checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmc.cli._common import (
    add_data_dir,
    add_interpolation_arguments,
    add_model_arguments,
    csv,
    model_arguments,
    result_path,
    write_result,
)
from lmc.constants import EXAMPLE_LOSS_THRESHOLD
from lmc.workflows.alignment import METHODS
from lmc.workflows.interpolation import interpolate_checkpoints, save_per_example_arrays
from lmc.workflows.records import InterpolationRecord


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "interpolate", help="loss and error barriers between two checkpoints",
        description="Evaluate the straight line between two checkpoints of one architecture; "
        "print the barriers, write a JSON and a barrier plot.")
    p.add_argument("a", type=Path, help="checkpoint at α = 0")
    p.add_argument("b", type=Path, help="checkpoint at α = 1")
    add_interpolation_arguments(p)
    p.add_argument("--splits", type=csv, default=["train", "test"], help="default train,test")
    p.add_argument("--bn", choices=("reset", "interpolate"),
                   help="BatchNorm statistics: re-estimate per point (default for BN nets) or "
                   "interpolate them")
    p.add_argument("--max-examples", type=int, help="evaluate on a fixed subset of this size")
    p.add_argument("--layerwise", action="store_true",
                   help="also move one block at a time (and all but one)")
    p.add_argument("--align", choices=METHODS,
                   help="also interpolate after permuting B's hidden units to match A "
                   "(weight or activation matching); the JSON and the figure hold both")
    p.add_argument("--repair", action="store_true",
                   help="with --align, networks without BatchNorm: also REPAIR every "
                   "interpolated network (Jordan et al. 2023)")
    p.add_argument("--per-example", action="store_true",
                   help="also the fractions of examples the path connects: loss barrier "
                   "below the threshold, zero error barrier (Paul, Larsen et al. 2022)")
    p.add_argument("--per-example-threshold", type=float, metavar="NATS",
                   help="per-example loss barrier below which an example is connected "
                   f"(default {EXAMPLE_LOSS_THRESHOLD:g}; implies --per-example)")
    p.add_argument("--per-example-arrays", action="store_true",
                   help="also write every example's loss, correctness and barriers to an "
                   ".npz beside the JSON (implies --per-example)")
    add_model_arguments(p)
    add_data_dir(p)
    p.set_defaults(func=run)


def print_barrier_table(record, barriers=None) -> None:
    """Loss and error barriers (mean, chord, midpoint definitions) per split: the record's,
    or `barriers` of the same form."""
    print(f"{'split':<6} {'':>4}  {'loss: mean':>10} {'chord':>7} {'midpt':>7}   "
          f"{'error (pts): mean':>17} {'chord':>6} {'midpt':>6}")
    for split, b in (record.barriers if barriers is None else barriers).items():
        loss, err = b["loss"], b["error"]
        print(f"{split:<6} {'':>4}  {loss['mean']:>10.4f} {loss['chord']:>7.4f} "
              f"{loss['midpoint']:>7.4f}   {100 * err['mean']:>17.2f} {100 * err['chord']:>6.2f} "
              f"{100 * err['midpoint']:>6.2f}")


def print_interpolation(record: InterpolationRecord) -> None:
    bn = f", BatchNorm {record.bn}" if record.bn != "none" else ""
    print(f"{record.model['name']} on {record.data}, {len(record.alphas)} points{bn}")
    if record.aligned is not None:
        print("before alignment")
    print_barrier_table(record)
    if record.aligned is not None:
        aligned = record.aligned
        print(f"after {aligned['method']} alignment of B to A (objective "
              f"{aligned['objective_before']:.6g} -> {aligned['objective_after']:.6g})")
        print_barrier_table(record, aligned["barriers"])
        if "repaired" in aligned:
            print(f"after alignment and REPAIR (statistics on {aligned['repaired']['examples']} "
                  "training examples)")
            print_barrier_table(record, aligned["repaired"]["barriers"])
    if record.per_example is not None:
        print("per-example: " + "; ".join(
            f"{split} {100 * f['loss_connected']:.1f}% connected in loss (barrier < "
            f"{f['loss_threshold']:g}), {100 * f['error_connected']:.1f}% in error (barrier 0)"
            for split, f in record.per_example.items()))
    for row in record.layerwise or []:
        split = "test" if "test" in row["only"] else "train"
        print(f"  {row['block']:<20} {split} error barrier: only this block moves "
              f"{100 * row['only'][split]['error']:6.2f} pts, all but it "
              f"{100 * row['all_but'][split]['error']:6.2f} pts")


def per_example_path(json_path: Path) -> Path:
    """The .npz of per-example arrays beside a result JSON: <name>.per_example.npz."""
    return json_path.with_name(f"{json_path.stem}.per_example.npz")


def run(args: argparse.Namespace) -> None:
    threshold = args.per_example_threshold
    per_example = args.per_example or args.per_example_arrays or threshold is not None
    record = interpolate_checkpoints(
        args.a, args.b, alphas=args.alphas, splits=tuple(args.splits), bn=args.bn,
        max_examples=args.max_examples, layerwise=args.layerwise, data_dir=args.data_dir,
        align=args.align, repair=args.repair, per_example=per_example,
        example_loss_threshold=EXAMPLE_LOSS_THRESHOLD if threshold is None else threshold,
        **model_arguments(args))
    print_interpolation(record)
    write_result(record, args)
    if args.per_example_arrays:
        written = save_per_example_arrays(
            record, per_example_path(result_path(args.out, record.kind, args)))
        print(f"arrays     {written}")
