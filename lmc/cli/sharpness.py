"""`lmc sharpness`: Hessian eigenvalues, trace and spectral density of a checkpoint, or
λ_max and the trace along the line between two."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmc.cli._common import (
    add_data_dir,
    add_model_arguments,
    add_output_arguments,
    model_arguments,
    write_result,
)
from lmc.errors import ConfigError
from lmc.workflows.records import SharpnessPathRecord, SharpnessRecord
from lmc.workflows.sharpness import path_sharpness_record, sharpness_record


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sharpness", help="Hessian eigenvalues, trace and spectral density",
        description="Top eigenvalues (Lanczos), trace (Hutchinson and Hutch++) and, with "
        "--plot, the spectral density (stochastic Lanczos quadrature) of a checkpoint's loss "
        "Hessian over a fixed set of examples; for a pruned network, of its live weights. "
        "--path A B measures λ_max and the trace along the line between two checkpoints.")
    p.add_argument("checkpoint", type=Path, nargs="?", help="a checkpoint file")
    p.add_argument("--path", type=Path, nargs=2, metavar=("A", "B"),
                   help="sharpness along the interpolation between A and B instead")
    p.add_argument("--top-k", type=int, default=1, help="eigenvalues to report (default 1)")
    p.add_argument("--steps", type=int, default=100, help="Lanczos steps (default 100)")
    p.add_argument("--probes", type=int, default=100, help="trace probes (default 100)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--examples", type=int,
                   help="a fixed random subset of this many examples (default: all)")
    p.add_argument("--batch-size", type=int, default=500,
                   help="HVPs are accumulated over batches of this size (default 500)")
    p.add_argument("--seed", type=int, default=0, help="probe seed (default 0)")
    p.add_argument("--plot", action="store_true", help="also compute and draw the density")
    p.add_argument("--alphas", type=int, default=11, help="points on the path (default 11)")
    add_output_arguments(p)
    add_model_arguments(p)
    add_data_dir(p)
    p.set_defaults(func=run)


def print_sharpness(record: SharpnessRecord) -> None:
    top = record.top_eigenvalues
    scope = " (live weights)" if record.masked else ""
    print(f"Hessian of the {record.split} loss on {record.examples} examples, "
          f"dimension {record.dim}{scope}")
    for i, (lam, res, ok) in enumerate(zip(top["eigenvalues"], top["residuals"],
                                           top["converged"], strict=True)):
        flag = "" if ok else "  (not converged)"
        print(f"  λ_{i + 1} = {lam:.5g}   residual ‖Hv − λv‖ = {res:.2g}{flag}")
    for name, t in record.trace.items():
        print(f"  trace ({name}) = {t['trace']:.5g} ± {t['standard_error']:.2g} "
              f"({t['num_matvecs']} HVPs)")
    print(f"  {record.seconds:.1f} s")


def print_path_sharpness(record: SharpnessPathRecord) -> None:
    print(f"{'α':>6} {'λ_max':>10} {'trace':>12} {'test error':>11}")
    for al, lam, tr, se, err in zip(record.alphas, record.lambda_max, record.trace,
                                    record.trace_standard_error,
                                    record.curves["test"]["error"], strict=True):
        print(f"{al:>6.3f} {lam:>10.4g} {tr:>7.4g} ± {se:<5.2g} {100 * err:>9.2f}%")


def run(args: argparse.Namespace) -> None:
    common = dict(steps=args.steps, trace_probes=args.probes, split=args.split,
                  examples=args.examples, batch_size=args.batch_size, seed=args.seed,
                  data_dir=args.data_dir, **model_arguments(args))
    if args.path:
        if args.checkpoint is not None:
            raise ConfigError("give either a checkpoint or --path A B, not both")
        record = path_sharpness_record(*args.path, alphas=args.alphas, **common)
        print_path_sharpness(record)
    else:
        if args.checkpoint is None:
            raise ConfigError("give a checkpoint, or --path A B")
        record = sharpness_record(args.checkpoint, top_k=args.top_k, density=args.plot,
                                  **common)
        print_sharpness(record)
    write_result(record, args)
