"""`lmc scores`: EL2N and GraNd of every training example early in training, averaged over
independent runs (Paul, Ganguli & Dziugaite 2021)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from lmc.cli._common import (
    add_output_arguments,
    add_train_arguments,
    check_names,
    config_from_args,
    result_path,
    write_record,
)
from lmc.core.scores import CHUNK_SIZE
from lmc.errors import ConfigError
from lmc.plots.data import scored
from lmc.training.config import TrainConfig
from lmc.workflows.records import ScoresRecord
from lmc.workflows.scores import data_scores


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "scores", help="per-example data scores (EL2N, GraNd) early in training",
        description="Paul et al. 2021 ('Deep learning on a data diet'): train --replicates "
        "independent runs of the config (seeds seed, seed+1, ...; reused from the run "
        "store), score every training example at --step with EL2N = ‖softmax(f(x)) − "
        "onehot(y)‖ and GraNd = ‖∇_w loss(x, y)‖, and average over the runs; or score the "
        "checkpoints given. Writes a JSON, an .npz of the per-example scores beside it "
        "(keys el2n, grand, el2n_std, grand_std, labels, dataset, num_train) and a "
        "histogram figure.")
    p.add_argument("checkpoints", type=Path, nargs="*",
                   help="checkpoints of one network to score instead of training runs")
    p.add_argument("--replicates", type=int, default=4,
                   help="independent runs, seeds seed, seed+1, ... (default 4)")
    p.add_argument("--step", default="2ep",
                   help="the training step to score at, e.g. 2ep or 500it (default 2ep)")
    p.add_argument("--chunk-size", type=int, default=CHUNK_SIZE,
                   help=f"examples per per-example-gradient program; bounds the memory "
                   f"(default {CHUNK_SIZE})")
    add_train_arguments(p)
    add_output_arguments(p)
    p.set_defaults(func=run)


def print_scores(record: ScoresRecord) -> None:
    at = f"step {record.step}" if record.step is not None else "their steps"
    scope = " (GraNd of the live weights)" if record.masked else ""
    print(f"data scores of {record.num_train} training examples, {scored(record)} at "
          f"{at}{scope}")
    print(f"  {'score':<6} {'mean':>8} {'median':>8} {'10%':>8} {'90%':>8} {'max':>8} "
          f"{'run std':>8}")
    for name, s in record.summary.items():
        print(f"  {name:<6} {s['mean']:>8.4g} {s['median']:>8.4g} {s['q10']:>8.4g} "
              f"{s['q90']:>8.4g} {s['max']:>8.4g} {s['run_std']:>8.4g}")
    print(f"  Spearman ρ(EL2N, GraNd) = {record.rank_correlation:.3f}")
    print(f"arrays     {record.arrays}")


def _config_flags_given(args: argparse.Namespace) -> bool:
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "model_options"]
    return (args.config is not None or bool(args.model_option)
            or any(getattr(args, name, None) is not None for name in fields))


def run(args: argparse.Namespace) -> None:
    if args.checkpoints:
        if _config_flags_given(args):
            raise ConfigError("give checkpoints or training-config flags, not both")
        source = args.checkpoints
    else:
        source = config_from_args(args)
        check_names(source)
    path = result_path(args.out, "scores", args)
    record = data_scores(source, path.with_suffix(".npz"), runs=args.replicates,
                         step=args.step, chunk_size=args.chunk_size, root=args.runs,
                         data_dir=args.data_dir, progress=args.progress)
    print_scores(record)
    write_record(record, path, args.figure, args.no_figure)
