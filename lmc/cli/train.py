"""`lmc train`: train a network, reusing a finished run or resuming an interrupted one."""

from __future__ import annotations

import argparse

from lmc.cli._common import add_train_arguments, check_names, config_from_args
from lmc.training.runs import Run, RunSpec, default_root, train_run


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a network (reuses or resumes a stored run)",
        description="Train a network. The run directory is named by a hash of the config: "
        "a finished run is reused, an interrupted one resumed.")
    add_train_arguments(p)
    p.set_defaults(func=run)


def print_reuse(spec: RunSpec, root) -> None:
    """Say so when the run of `spec` is finished already (before training it)."""
    if Run(root or default_root(), spec).finished:
        print("reusing the finished run with this config")


def print_run(trained: Run) -> None:
    """The run directory, its final checkpoint and its final metrics."""
    result = trained.result()
    final = result["final"]
    print(f"run        {trained.dir}")
    print(f"checkpoint {result['checkpoint']}")
    print(f"step {final['step']}: train loss {final['train_loss']:.4f}, "
          f"train accuracy {final['train_accuracy']:.2%}, test loss {final['test_loss']:.4f}, "
          f"test accuracy {final['test_accuracy']:.2%}")


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    check_names(config)
    spec = RunSpec(config)
    if config.subset is not None:
        print(f"subset     {config.subset}")
    print_reuse(spec, args.runs)
    trained = train_run(spec, args.runs, save_at=args.save_at, eval_every=args.eval_every,
                        progress=args.progress, data_dir=args.data_dir)
    print_run(trained)
