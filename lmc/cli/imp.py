"""`lmc imp`: iterative magnitude pruning with rewinding, and its baselines."""

from __future__ import annotations

import argparse
import inspect

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
from lmc.constants import MATCHING_TOLERANCE, PROBE_TOLERANCE_GAP
from lmc.core.prune import CRITERIA
from lmc.errors import ConfigError
from lmc.workflows.imp import ImpSettings, baselines, run_imp
from lmc.workflows.prune_ratio import ADAPTIVE_ESTIMATORS, PROBE, AdaptiveFraction
from lmc.workflows.records import ImpRecord, ImpReplicatesRecord
from lmc.workflows.replicates import replicate_imp, seed_range
from lmc.workflows.retraining import PROBE_CRITERIA, PROBE_SEARCHES

LEVELS = 10  # default length of a fixed-ratio schedule
ADAPTIVE_LEVELS = 30  # default cap of an adaptive (--ratio auto) schedule

_ADAPTIVE = inspect.signature(AdaptiveFraction).parameters


def probe_tolerance(text: str) -> float | str:
    """--probe-tolerance: a number, or the name of the dense network's generalisation gap."""
    if text == PROBE_TOLERANCE_GAP:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or {PROBE_TOLERANCE_GAP!r}, got {text!r}") from None


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "imp", help="iterative magnitude pruning with rewinding, and baselines",
        description="Frankle & Carbin 2019, Frankle et al. 2020: train, prune a fraction of "
        "the live weights, rewind the survivors to step k, repeat. Every level is a run in "
        "the run store (reused and resumed). Writes a JSON, accuracy vs density and the "
        "successive-level barrier figure.")
    add_train_arguments(p)
    p.add_argument("--ratio", "--fraction", dest="fraction", default="0.2",
                   help="fraction of the live weights pruned per level (default 0.2), or "
                   "auto: the predicted safe ratio of each level's solution (see "
                   "`lmc prune-ratio`), until it falls below --floor or successive levels "
                   "stop being linearly connected")
    estimator = _ADAPTIVE["estimator"].default
    p.add_argument("--estimator", default=estimator, choices=ADAPTIVE_ESTIMATORS,
                   help=f"with --ratio auto: the safe-ratio estimator (default {estimator}; "
                   f"{PROBE}: fine-tune candidate ratios briefly, see --probe-steps)")
    probe_steps = _ADAPTIVE["probe_steps"].default
    p.add_argument("--probe-steps", type=int, default=probe_steps,
                   help=f"with --estimator {PROBE}: fine-tuning steps per candidate ratio "
                   f"(default {probe_steps})")
    criterion = _ADAPTIVE["probe_criterion"].default
    p.add_argument("--probe-criterion", default=criterion, choices=PROBE_CRITERIA,
                   help=f"with --estimator {PROBE}: a candidate passes while its training "
                   "loss is within ε of the level's (train_loss) or its training accuracy "
                   "within --probe-tolerance of the dense network's (train_accuracy; "
                   f"validated on MNIST-1D, experiments/probe_criteria_mnist1d.md) "
                   f"(default {criterion})")
    tolerance = _ADAPTIVE["probe_tolerance"].default
    p.add_argument("--probe-tolerance", type=probe_tolerance, default=tolerance,
                   help="with --probe-criterion train_accuracy: the training accuracy a "
                   f"candidate may lose against the dense network, a number or {tolerance} "
                   "(the dense network's train − test accuracy; the default)")
    search = _ADAPTIVE["probe_search"].default
    p.add_argument("--probe-search", default=search, choices=PROBE_SEARCHES,
                   help=f"with --estimator {PROBE}: fine-tune every candidate (grid) or only "
                   f"those a bisection for the first failure needs (default {search})")
    safety, floor = _ADAPTIVE["safety"].default, _ADAPTIVE["floor"].default
    p.add_argument("--safety", type=float, default=safety,
                   help=f"with --ratio auto: prune this multiple of the safe ratio "
                   f"(default {safety:g})")
    p.add_argument("--floor", type=float, default=floor,
                   help=f"with --ratio auto: stop below this ratio (default {floor:g})")
    least = _ADAPTIVE["min_fraction"].default
    p.add_argument("--min-ratio", type=float, default=least, dest="min_fraction",
                   help="with --ratio auto: prune at least this fraction per level while the "
                   f"prediction stays above --floor, e.g. 0.2 (default {least:g})")
    most = _ADAPTIVE["cap"].default
    p.add_argument("--max-ratio", type=float, default=most, dest="cap",
                   help="with --ratio auto: prune at most this fraction per level, e.g. 0.5 "
                   f"(default {most:g})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--levels", type=int,
                   help=f"pruning levels (default {LEVELS}; with --ratio auto at most "
                   f"{ADAPTIVE_LEVELS})")
    g.add_argument("--target-density", type=float,
                   help="prune until at most this fraction of the weights is left")
    p.add_argument("--rewind", default="0it",
                   help="rewind step k, e.g. 0it (lottery ticket), 500it, 2ep (default 0it)")
    criterion = ImpSettings.criterion
    others = ", ".join(c for c in CRITERIA if c != criterion)
    p.add_argument("--criterion", default=criterion,
                   help=f"pruning criterion (default {criterion}; also {others})")
    p.add_argument("--keep-dense", type=csv, default=[], metavar="LAYERS",
                   help="top-level parameter names never pruned, e.g. output")
    p.add_argument("--baselines", type=csv, default=[], metavar="METHODS",
                   help=f"also run: {', '.join(baselines())} (comma-separated)")
    p.add_argument("--tolerance", type=float,
                   help=f"matching: test accuracy at least dense minus this (default "
                   f"{MATCHING_TOLERANCE:g}; with --seeds, 2 × the seeds' std of the dense "
                   "accuracy)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="replicates: run IMP for the seeds seed, seed+1, ..., seed+N-1 (a "
                   "count, not a list; finished runs are reused) and report every level as "
                   "the mean over seeds with a 95%% Student-t interval, n and every seed "
                   "(default 1: one run)")
    p.add_argument("--no-barriers", action="store_true",
                   help="skip the error barrier between successive levels")
    add_interpolation_arguments(p, alphas=ImpSettings.alphas)
    p.set_defaults(func=run)


def print_imp(record: ImpRecord) -> None:
    print(f"dense test accuracy {record.dense_test_accuracy:.2%}; matching: within "
          f"{100 * record.tolerance:g} pts; rewind to step {record.rewind_step}")
    print(f"  {'method':8} {'level':>5} {'weights left':>12} {'test acc':>9} "
          f"{'barrier mean/chord pts':>22} {'train s':>8}")
    for method, levels in record.methods.items():
        for lv in levels[1:]:
            barrier = lv.get("successive_barrier")
            if barrier and "error_chord" in barrier:
                barrier = f"{100 * barrier['error']:.2f} / {100 * barrier['error_chord']:.2f}"
            else:
                barrier = f"{100 * barrier['error']:.2f}" if barrier else ""
            seconds = f"{lv['train_seconds']:.1f}" if lv["train_seconds"] is not None else "reused"
            print(f"  {method:8} {lv['level']:>5} {lv['density']:>12.2%} "
                  f"{lv['test_accuracy']:>9.2%} {barrier:>22} {seconds:>8}"
                  f"{'' if lv['matching'] else '  not matching'}")
    for method, summary in record.summary.items():
        print(f"  {method}: smallest matching density {summary['min_matching_density']:.2%} "
              f"(matching at every level down to "
              f"{summary['min_density_matching_throughout']:.2%})")
    if record.adaptive_predictions:
        print(f"  adaptive schedule (predicted safe ratios): "
              f"{adaptive_fractions(record)}")
        print(f"  predicted maximum sparsity {record.predicted_max_sparsity:.2%} in "
              f"{record.summary['imp']['levels']} levels")


def print_imp_replicates(record: ImpReplicatesRecord) -> None:
    tol, dense = record.tolerance, record.dense_test_accuracy
    how = (f"{tol['factor']:g} × the seeds' std {100 * tol['dense_std']:.2f} pts of the dense "
           f"accuracy, n = {tol['n']}" if tol["source"] == "measured" else "given")
    print(f"{len(record.seeds)} seeds ({', '.join(map(str, record.seeds))}), mean "
          f"[{100 * record.confidence:g}% Student-t interval]; rewind to step "
          f"{record.rewind_step}")
    print(f"dense test accuracy (%) {format_estimate(dense)}, n = {dense['n']}; matching: "
          f"seed mean within {100 * tol['value']:.2f} pts of the dense mean ({how})")
    print(f"  {'method':8} {'level':>5} {'weights left':>12}  {'test acc (%)':>24} {'n':>3}")
    for method, levels in record.methods.items():
        for lv in levels[1:]:
            acc = lv["test_accuracy"]
            print(f"  {method:8} {lv['level']:>5} {lv['density']:>12.2%}  "
                  f"{format_estimate(acc):>24} {acc['n']:>3}"
                  f"{'' if lv['matching'] else '  not matching'}")
    successive = [lv for lv in record.methods.get("imp", []) if lv.get("successive_barrier")]
    if successive:
        print("  IMP successive-level test error barriers (pts)")
        keys = [k for k in BARRIER_COLUMNS
                if all(k in lv["successive_barrier"] for lv in successive)]
        print(f"  {'level':>5} {'weights left':>12}  "
              + "  ".join(f"{BARRIER_COLUMNS[k]:>22}" for k in keys) + f" {'n':>3}")
        for lv in successive:
            b = lv["successive_barrier"]
            print(f"  {lv['level']:>5} {lv['density']:>12.2%}  "
                  + "  ".join(f"{format_estimate(b[k]):>22}" for k in keys)
                  + f" {b[keys[0]]['n']:>3}")
    for method, summary in record.summary.items():
        per_seed = ", ".join(
            f"{p['seed']}: {p['min_matching_density']:.2%}" for p in summary["per_seed"])
        print(f"  {method}: sparsest matching density of the seed mean "
              f"{summary['min_matching_density']:.2%} (level {summary['min_matching_level']});"
              f" per seed {per_seed}")


def adaptive_fractions(record: ImpRecord) -> str:
    """The fractions an adaptive schedule pruned, e.g. 74%, 41%, 42%."""
    return ", ".join(f"{100 * p['fraction']:.0f}%" for p in record.adaptive_predictions)


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    check_names(config)
    levels = args.levels
    if args.fraction == "auto":
        fraction = AdaptiveFraction(args.estimator, safety=args.safety, floor=args.floor,
                                    min_fraction=args.min_fraction, cap=args.cap,
                                    keep_dense=args.keep_dense, probe_steps=args.probe_steps,
                                    probe_criterion=args.probe_criterion,
                                    probe_tolerance=args.probe_tolerance,
                                    probe_search=args.probe_search)
        if levels is None and args.target_density is None:
            levels = ADAPTIVE_LEVELS
    else:
        try:
            fraction = float(args.fraction)
        except ValueError:
            raise ConfigError(f"--ratio must be a number in (0, 1) or auto, got "
                              f"{args.fraction!r}") from None
    if levels is None and args.target_density is None:
        levels = LEVELS
    tolerance = MATCHING_TOLERANCE if args.tolerance is None else args.tolerance
    settings = ImpSettings(levels=levels, target_density=args.target_density,
                           fraction=fraction, rewind=args.rewind, criterion=args.criterion,
                           keep_dense=args.keep_dense, baselines=args.baselines,
                           successive_barriers=not args.no_barriers, tolerance=tolerance,
                           alphas=args.alphas)
    # The default path hashes the arguments with the number of levels that ran (and, for
    # one seed, without --seeds: the path of a single run is as before the flag existed).
    identity = arguments(args, levels=levels)
    if args.seeds == 1:
        record = run_imp(config, settings, root=args.runs, progress=args.progress,
                         data_dir=args.data_dir)
        print_imp(record)
        identity["tolerance"] = tolerance
        del identity["seeds"]
    else:
        record = replicate_imp(config, settings, seed_range(config, args.seeds),
                               tolerance=args.tolerance, root=args.runs,
                               progress=args.progress, data_dir=args.data_dir)
        print_imp_replicates(record)
    write_result(record, args, identity)
