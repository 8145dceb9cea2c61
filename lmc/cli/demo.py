"""`lmc demo`: train on MNIST-1D, measure sharpness, interpolate, run an instability
analysis, IMP, and predict the safe pruning ratio. It calls the workflows and the printers
of the commands directly."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmc.cli._common import add_data_dir, add_no_progress, check_names, result_path, write_record
from lmc.cli.imp import adaptive_fractions, print_imp
from lmc.cli.instability import print_instability
from lmc.cli.interpolate import print_interpolation
from lmc.cli.prune_ratio import print_prune_ratio
from lmc.cli.sharpness import print_sharpness
from lmc.cli.train import print_reuse, print_run
from lmc.core.prune_ratio import ratio_grid
from lmc.training.config import TrainConfig
from lmc.training.runs import RunSpec, train_run
from lmc.workflows.imp import run_imp
from lmc.workflows.instability import instability_analysis, spawn
from lmc.workflows.interpolation import interpolate_checkpoints
from lmc.workflows.prune_ratio import AdaptiveFraction, prune_ratio_record
from lmc.workflows.sharpness import sharpness_record

DEMO_CONFIG = TrainConfig()
DEMO_SAVE_AT = ("100it", "500it")
DEMO_SPAWN_STEP = 500

# The unstable-then-stable setting of experiments/instability_mnist1d.md.
DEMO_INSTABILITY = DEMO_CONFIG.replace(duration="3000it")
DEMO_SPAWN_STEPS = ("0it", "25it", "250it")
DEMO_IMP = DEMO_CONFIG.replace(model="mlp", model_options={"widths": (100, 100)},
                               duration="3000it")
DEMO_IMP_LEVELS, DEMO_IMP_FRACTION, DEMO_REWIND = 8, 0.2, "100it"
DEMO_ADAPTIVE_LEVELS = 30


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="train on MNIST-1D, measure sharpness, interpolate, run an instability "
        "analysis, IMP, and predict the safe pruning ratio")
    p.add_argument("--duration", help=f"training length (default {DEMO_CONFIG.duration})")
    p.add_argument("--runs", type=Path, help="run store directory (default ./lmc_runs)")
    add_data_dir(p)
    add_no_progress(p, help=None)
    p.add_argument("--no-figure", action="store_true", help="write the JSON files only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    root, progress, data_dir = args.runs, args.progress, args.data_dir

    def write(record, identity) -> None:
        write_record(record, result_path(None, record.kind, identity),
                     no_figure=args.no_figure)

    config = DEMO_CONFIG if args.duration is None else DEMO_CONFIG.replace(duration=args.duration)
    print(f"== 1. training {config.model} on {config.dataset} for {config.duration} "
          f"({config.optimizer}, lr {config.lr}, batch {config.batch_size})")
    check_names(config)
    spec = RunSpec(config)
    print_reuse(spec, root)
    trunk = train_run(spec, root, save_at=list(DEMO_SAVE_AT), progress=progress,
                      data_dir=data_dir)
    print_run(trunk)

    print("\n== 2. sharpness of the trained network (Hessian of the train loss)")
    print_sharpness(sharpness_record(trunk.final_checkpoint(), top_k=2, steps=30,
                                     trace_probes=30, examples=1000, data_dir=data_dir))

    print(f"\n== 3. two children spawned at step {DEMO_SPAWN_STEP}, and the straight line "
          "between them")
    kids = spawn(trunk, DEMO_SPAWN_STEP, 2, progress=progress, data_dir=data_dir)
    a, b = (kid.final_checkpoint() for kid in kids)
    interpolation = dict(alphas=25, splits=("train", "test"), bn=None, max_examples=None,
                         layerwise=True)
    record = interpolate_checkpoints(a, b, data_dir=data_dir, **interpolation)
    print_interpolation(record)
    write(record, {"a": str(a), "b": str(b), **interpolation})

    print(f"\n== 4. instability analysis: {DEMO_INSTABILITY.model} spawned at "
          f"{', '.join(DEMO_SPAWN_STEPS)}")
    record = instability_analysis(DEMO_INSTABILITY, DEMO_SPAWN_STEPS, root=root,
                                  progress=progress, data_dir=data_dir)
    print_instability(record)
    write(record, record.config)

    print(f"\n== 5. iterative magnitude pruning of an MLP {DEMO_IMP.model_options['widths']}: "
          f"{DEMO_IMP_LEVELS} levels of {DEMO_IMP_FRACTION:.0%}, rewinding to {DEMO_REWIND}, "
          "against random pruning")
    common = dict(rewind=DEMO_REWIND, root=root, progress=progress, data_dir=data_dir)
    record = run_imp(DEMO_IMP, levels=DEMO_IMP_LEVELS, fraction=DEMO_IMP_FRACTION,
                     baselines=("random",), **common)
    print_imp(record)
    write(record, record.config)
    measured = 1 - record.summary["imp"]["min_matching_density"]

    print("\n== 6. the safe pruning ratio of the dense MLP, and the maximum IMP sparsity "
          "predicted from the landscape")
    prediction = dict(checkpoint=record.methods["imp"][0]["checkpoint"], criterion="magnitude",
                      grid_step=0.01, epsilon=None, examples=2000, keep_dense=[], seed=0)
    ratio = prune_ratio_record(
        prediction["checkpoint"], criterion=prediction["criterion"],
        grid=ratio_grid(prediction["grid_step"]), epsilon=prediction["epsilon"],
        examples=prediction["examples"], keep_dense=prediction["keep_dense"],
        seed=prediction["seed"], data_dir=data_dir)
    print_prune_ratio(ratio)
    write(ratio, prediction)
    adaptive = run_imp(DEMO_IMP, levels=DEMO_ADAPTIVE_LEVELS, fraction=AdaptiveFraction(),
                       **common)
    print(f"adaptive IMP, pruning each level by its predicted safe ratio: "
          f"{adaptive_fractions(adaptive)}")
    print(f"predicted maximum sparsity {adaptive.predicted_max_sparsity:.1%}; measured with "
          f"{DEMO_IMP_FRACTION:.0%} levels: largest sparsity still matching {measured:.1%} "
          f"(of at most {1 - (1 - DEMO_IMP_FRACTION) ** DEMO_IMP_LEVELS:.1%} reached)")
