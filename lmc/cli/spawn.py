"""`lmc spawn`: children of a checkpoint that differ only in SGD noise."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmc.cli._common import add_data_dir, add_no_progress
from lmc.errors import ConfigError
from lmc.training.config import Duration
from lmc.training.data import steps_per_epoch
from lmc.training.runs import Run
from lmc.workflows.instability import pairwise_interpolations, spawn


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "spawn", help="train children of a checkpoint that differ in SGD noise",
        description="Train N children from a run's checkpoint; they share weights, optimizer "
        "state and schedule but not data order or augmentation. Prints the test error "
        "barrier between them.")
    p.add_argument("parent", type=Path, help="a checkpoint file, or a run directory with --step")
    p.add_argument("--step", help="spawn step (with a run directory), e.g. 100it or 2ep")
    p.add_argument("--children", type=int, default=2, help="number of children (default 2)")
    p.add_argument("--alphas", type=int, default=25, help="interpolation points (default 25)")
    add_data_dir(p)
    add_no_progress(p)
    p.set_defaults(func=run)


def run_and_step(path: Path, step: str | None) -> tuple[Run, int]:
    """A run and a step, from a checkpoint file or from a run directory and --step."""
    if path.is_file():
        return Run.open(path.parent.parent), int(path.stem.removeprefix("step_"))
    parent = Run.open(path)
    if step is None:
        raise ConfigError("give --step when spawning from a run directory")
    meta = parent.load(None).meta["data"]
    config = parent.spec.config
    spe = steps_per_epoch(config.examples_per_epoch(meta["num_train"]), config.batch_size)
    return parent, Duration.parse(step).steps(spe)


def print_children(kids: list[Run]) -> None:
    for kid in kids:
        final = kid.result()["final"]
        print(f"child      {kid.dir}  test accuracy {final['test_accuracy']:.2%}")


def print_children_barrier(records) -> None:
    """The mean test error barrier over the pairs of children."""
    barrier = [100 * r.barriers["test"]["error"]["mean"] for r in records]
    print(f"test error barrier between children: {sum(barrier) / len(barrier):.2f} pts "
          f"(over {len(barrier)} pair{'s' * (len(barrier) > 1)})")


def run(args: argparse.Namespace) -> None:
    parent, step = run_and_step(args.parent, args.step)
    print(f"spawning {args.children} children of {parent.dir} at step {step}")
    kids = spawn(parent, step, args.children, progress=args.progress, data_dir=args.data_dir)
    print_children(kids)
    if len(kids) > 1:
        print_children_barrier(
            pairwise_interpolations(kids, alphas=args.alphas, data_dir=args.data_dir))
