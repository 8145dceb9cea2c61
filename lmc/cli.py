"""The `lmc` command."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from lmc.config import OPTIMIZERS, SCHEDULES, Duration, TrainConfig
from lmc.errors import ConfigError, LmcError

DESCRIPTION = """\
lmc: loss landscapes through linear mode connectivity (JAX).

Train networks whose runs are stored by content hash (re-running finds finished work,
an interrupted run resumes where it stopped), and study them.
"""

EPILOG = """\
examples:
  lmc demo                                     train, interpolate and analyse instability
  lmc interpolate RUN/checkpoints/step_00000500.npz RUN/checkpoints/step_00006000.npz
  lmc instability --model mlp --lr 0.1 --spawn-steps 0it,50it,200it
  lmc plot lmc_results/instability-0123456789.json
  lmc train --model mlp --lr 0.05 --duration 20ep --save-at 0it,100it,500it
  lmc train --config resnet20_cifar10.json --runs /data/lmc_runs
durations are written as iterations (500it) or epochs (160ep).
"""


def _parse_value(text: str) -> Any:
    """Model option values: ints, floats, comma lists of numbers, else strings."""
    parts = text.split(",")
    try:
        numbers = [json.loads(p) for p in parts]
    except json.JSONDecodeError:
        return text
    if not all(isinstance(n, (int, float)) for n in numbers):
        return text
    return tuple(numbers) if len(parts) > 1 else numbers[0]


def _model_options(items: list[str]) -> dict[str, Any]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"model option {item!r} must be written KEY=VALUE, e.g. widths=512,512"
            )
        options[key] = _parse_value(value)
    return options


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training config (flags override --config)")
    g.add_argument("--config", type=Path, help="JSON file with TrainConfig fields")
    g.add_argument("--model", help=f"model name (default {d.model}); see `lmc list`")
    g.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, repeatable, e.g. widths=512,512 or norm=layer")
    g.add_argument("--dataset", help=f"data set name (default {d.dataset}); see `lmc list`")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default {d.optimizer})")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    g.add_argument("--momentum", type=float, help=f"(default {d.momentum})")
    g.add_argument("--weight-decay", type=float, help=f"(default {d.weight_decay})")
    g.add_argument("--schedule", choices=SCHEDULES, help=f"(default {d.schedule})")
    g.add_argument("--warmup", help="linear warmup length, e.g. 500it")
    g.add_argument("--milestones", type=_csv, help="step schedule: e.g. 80ep,120ep")
    g.add_argument("--gamma", type=float, help="step schedule factor (default 0.1)")
    g.add_argument("--cycle", help="cyclic schedule: first cycle length, e.g. 8ep")
    g.add_argument("--cycle-mult", type=float, help="cyclic schedule: cycle growth (default 2)")
    g.add_argument("--batch-size", type=int, help=f"(default {d.batch_size})")
    g.add_argument("--duration", help=f"training length (default {d.duration})")
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="turn data augmentation off")
    g.add_argument("--seed", type=int, help="seed of every stream not given its own")
    for stream in ("init", "data", "augment", "dropout"):
        g.add_argument(f"--{stream}-seed", type=int, help=f"seed of the {stream} stream")
    r = p.add_argument_group("run")
    r.add_argument("--save-at", type=_csv, default=[], metavar="STEPS",
                   help="extra checkpoint steps, e.g. 0it,50it,100it,500it")
    r.add_argument("--eval-every",
                   help="evaluation and checkpoint interval (default: 1/20 of the run)")
    r.add_argument("--runs", type=Path,
                   help="run store directory (default $LMC_RUNS or ./lmc_runs)")
    r.add_argument("--data-dir", help="data directory (default $LMC_DATA_DIR or ~/.cache/lmc/data)")
    r.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {}
    if args.config is not None:
        try:
            values = json.loads(args.config.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {args.config} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {args.config} is not valid JSON: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {args.config} must hold a JSON object")
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name != "model_options":
            values[f.name] = value
    if args.model_option:
        values["model_options"] = {**values.get("model_options", {}),
                                   **_model_options(args.model_option)}
    return TrainConfig.from_dict(values)


def _check_names(config: TrainConfig) -> None:
    from lmc.data import DATASETS
    from lmc.errors import check_name
    from lmc.models import MODELS

    check_name("model", config.model, MODELS)
    check_name("data set", config.dataset, DATASETS)


def _train_and_report(config: TrainConfig, args: argparse.Namespace) -> dict:
    from lmc.runs import Run, RunSpec, default_root, train_run

    _check_names(config)
    spec = RunSpec(config)
    if Run(args.runs or default_root(), spec).finished:
        print("reusing the finished run with this config")
    run = train_run(spec, args.runs, save_at=args.save_at, eval_every=args.eval_every,
                    progress=args.progress, data_dir=args.data_dir)
    result = run.result()
    final = result["final"]
    print(f"run        {run.dir}")
    print(f"checkpoint {result['checkpoint']}")
    print(f"step {final['step']}: train loss {final['train_loss']:.4f}, "
          f"train accuracy {final['train_accuracy']:.2%}, test loss {final['test_loss']:.4f}, "
          f"test accuracy {final['test_accuracy']:.2%}")
    return result


def cmd_train(args: argparse.Namespace) -> None:
    _train_and_report(config_from_args(args), args)


def _result_path(args: argparse.Namespace, kind: str, identity: Any) -> Path:
    """--out, else lmc_results/<kind>-<hash of what was computed>.json."""
    if args.out is not None:
        return Path(args.out)
    if isinstance(identity, argparse.Namespace):
        identity = {k: v for k, v in vars(identity).items() if k != "func"}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    return Path("lmc_results") / f"{kind}-{digest.hexdigest()[:10]}.json"


def _write_result(record: dict, path: Path, args: argparse.Namespace) -> None:
    from lmc.files import write_json

    write_json(path, record)
    print(f"results    {path}")
    if not args.no_figure:
        from lmc.plots import plot_result

        for written in plot_result(path, args.figure):
            print(f"figure     {written}")


def _print_barrier_table(record: dict) -> None:
    print(f"{'split':<6} {'':>4}  {'loss: mean':>10} {'chord':>7} {'midpt':>7}   "
          f"{'error (pts): mean':>17} {'chord':>6} {'midpt':>6}")
    for split, b in record["barriers"].items():
        loss, err = b["loss"], b["error"]
        print(f"{split:<6} {'':>4}  {loss['mean']:>10.4f} {loss['chord']:>7.4f} "
              f"{loss['midpoint']:>7.4f}   {100 * err['mean']:>17.2f} {100 * err['chord']:>6.2f} "
              f"{100 * err['midpoint']:>6.2f}")


def cmd_interpolate(args: argparse.Namespace) -> None:
    from lmc.interpolate import interpolate_checkpoints

    record = interpolate_checkpoints(
        args.a, args.b, alphas=args.alphas, splits=tuple(args.splits), bn=args.bn,
        max_examples=args.max_examples, layerwise=args.layerwise, data_dir=args.data_dir)
    bn = f", BatchNorm {record['bn']}" if record["bn"] != "none" else ""
    print(f"{record['model']['name']} on {record['data']}, {len(record['alphas'])} points{bn}")
    _print_barrier_table(record)
    for row in record.get("layerwise", []):
        split = "test" if "test" in row["only"] else "train"
        print(f"  {row['block']:<20} {split} error barrier: only this block moves "
              f"{100 * row['only'][split]['error']:6.2f} pts, all but it "
              f"{100 * row['all_but'][split]['error']:6.2f} pts")
    _write_result(record, _result_path(args, "interpolation", args), args)


def _run_and_step(path: Path, step: str | None):
    """A run directory and a step, from a checkpoint file or a run directory + --step."""
    from lmc.runs import Run

    if path.is_file():
        run = Run.open(path.parent.parent)
        return run, int(path.stem.removeprefix("step_"))
    run = Run.open(path)
    if step is None:
        raise ConfigError("give --step when spawning from a run directory")
    from lmc.data import steps_per_epoch

    meta = run.load(None).meta["data"]
    spe = steps_per_epoch(meta["num_train"], run.spec.config.batch_size)
    return run, Duration.parse(step).steps(spe)


def cmd_spawn(args: argparse.Namespace) -> None:
    from lmc.instability import pairwise_interpolations, spawn

    parent, step = _run_and_step(args.parent, args.step)
    print(f"spawning {args.children} children of {parent.dir} at step {step}")
    kids = spawn(parent, step, args.children, progress=args.progress, data_dir=args.data_dir)
    for kid in kids:
        final = kid.result()["final"]
        print(f"child      {kid.dir}  test accuracy {final['test_accuracy']:.2%}")
    if len(kids) > 1:
        records = pairwise_interpolations(kids, alphas=args.alphas, data_dir=args.data_dir)
        barrier = [100 * r["barriers"]["test"]["error"]["mean"] for r in records]
        print(f"test error barrier between children: {sum(barrier) / len(barrier):.2f} pts "
              f"(over {len(barrier)} pair{'s' * (len(barrier) > 1)})")


def cmd_instability(args: argparse.Namespace) -> None:
    from lmc.instability import instability_analysis

    config = config_from_args(args)
    _check_names(config)
    record = instability_analysis(
        config, args.spawn_steps, children=args.children, replicates=args.replicates,
        root=args.runs, alphas=args.alphas, threshold=args.threshold, progress=args.progress,
        data_dir=args.data_dir)
    _print_instability(record)
    _write_result(record, _result_path(args, "instability", args), args)


def _print_instability(record: dict) -> None:
    print(f"dense test accuracy {record['dense_test_accuracy']:.2%}; instability = test error "
          f"barrier between {record['children']} children (stable below "
          f"{100 * record['threshold']:g} pts)")
    for point in record["points"]:
        b = point["error_barrier"]
        stable = "stable" if b["mean"] < record["threshold"] else "unstable"
        print(f"  k = {point['step']:>6}: {100 * b['mean']:6.2f} ± {100 * b['std']:.2f} pts  "
              f"{stable}")


def cmd_imp(args: argparse.Namespace) -> None:
    from lmc.imp import AdaptiveFraction, run_imp

    config = config_from_args(args)
    _check_names(config)
    if args.fraction == "auto":
        fraction = AdaptiveFraction(args.estimator, safety=args.safety, floor=args.floor,
                                    keep_dense=args.keep_dense)
        if args.levels is None and args.target_density is None:
            args.levels = 30
    else:
        try:
            fraction = float(args.fraction)
        except ValueError:
            raise ConfigError(f"--ratio must be a number in (0, 1) or auto, got "
                              f"{args.fraction!r}") from None
    if args.levels is None and args.target_density is None:
        args.levels = 10
    record = run_imp(config, levels=args.levels, target_density=args.target_density,
                 fraction=fraction, rewind=args.rewind, criterion=args.criterion,
                 keep_dense=args.keep_dense, baselines=args.baselines,
                 successive_barriers=not args.no_barriers, tolerance=args.tolerance,
                 alphas=args.alphas, root=args.runs, progress=args.progress,
                 data_dir=args.data_dir)
    _print_imp(record)
    _write_result(record, _result_path(args, "imp", args), args)


def _print_imp(record: dict) -> None:
    dense = record["dense_test_accuracy"]
    print(f"dense test accuracy {dense:.2%}; matching: within {100 * record['tolerance']:g} "
          f"pts; rewind to step {record['rewind_step']}")
    print(f"  {'method':8} {'level':>5} {'weights left':>12} {'test acc':>9} "
          f"{'barrier to previous':>20} {'train s':>8}")
    for method, levels in record["methods"].items():
        for lv in levels[1:]:
            barrier = lv.get("successive_barrier")
            barrier = f"{100 * barrier['error']:.2f} pts" if barrier else ""
            seconds = f"{lv['train_seconds']:.1f}" if lv["train_seconds"] is not None else "reused"
            print(f"  {method:8} {lv['level']:>5} {lv['density']:>12.2%} "
                  f"{lv['test_accuracy']:>9.2%} {barrier:>20} {seconds:>8}"
                  f"{'' if lv['matching'] else '  not matching'}")
    for method, summary in record["summary"].items():
        print(f"  {method}: smallest matching density {summary['min_matching_density']:.2%} "
              f"(matching at every level down to "
              f"{summary['min_density_matching_throughout']:.2%})")
    if record.get("adaptive_predictions"):
        fractions = ", ".join(f"{100 * p['fraction']:.0f}%" for p in record["adaptive_predictions"])
        print(f"  adaptive schedule (predicted safe ratios): {fractions}")
        print(f"  predicted maximum sparsity {record['predicted_max_sparsity']:.2%} in "
              f"{record['summary']['imp']['levels']} levels")


def cmd_prune_ratio(args: argparse.Namespace) -> None:
    from lmc.predict import prune_ratio_record, ratio_grid

    record = prune_ratio_record(args.checkpoint, criterion=args.criterion,
                                grid=ratio_grid(args.grid_step),
                                epsilon=args.epsilon, examples=args.examples,
                                keep_dense=args.keep_dense, seed=args.seed,
                                data_dir=args.data_dir)
    _print_prune_ratio(record)
    _write_result(record, _result_path(args, "prune_ratio", args), args)


def _print_prune_ratio(record: dict) -> None:
    print(f"{record['num_prunable']:,} live prunable weights; Hessian on {record['examples']} "
          f"{record['split']} examples: λ_max {record['lambda_max']:.4g}, trace "
          f"{record['trace']:.4g}")
    print(f"ε = {record['epsilon']:.4g} ({record['epsilon_source']})")
    names = list(record["criteria"])
    print(f"  {'safe pruning ratio':28}" + "".join(f"{n:>14}" for n in names))
    labels = {"lambda_max": "A  ½·λ_max·R² ≤ ε", "quadratic": "B  gᵀΔ + ½ΔᵀHΔ ≤ ε",
              "gaussian_width": "C  p ≤ p_theory(R)  (default)"}
    for key, label in labels.items():
        cells = []
        for n in names:
            safe = record["criteria"][n]["safe"][key]
            if safe["status"] == "below_grid":  # fails at the first grid point
                cells.append(f"<{100 * record['grid'][0]:.1f}%")
            else:
                flag = "≥" if safe["status"] == "above_grid" else ""
                cells.append(f"{flag}{100 * safe['interpolated']:.1f}%")
        print(f"  {label:28}" + "".join(f"{c:>14}" for c in cells))


def cmd_sharpness(args: argparse.Namespace) -> None:
    from lmc.hessian import path_sharpness_record, sharpness_record

    common = dict(steps=args.steps, trace_probes=args.probes, split=args.split,
                  examples=args.examples, batch_size=args.batch_size, seed=args.seed,
                  data_dir=args.data_dir)
    if args.path:
        if args.checkpoint is not None:
            raise ConfigError("give either a checkpoint or --path A B, not both")
        record = path_sharpness_record(*args.path, alphas=args.alphas, **common)
        print(f"{'α':>6} {'λ_max':>10} {'trace':>12} {'test error':>11}")
        for al, lam, tr, se, err in zip(record["alphas"], record["lambda_max"], record["trace"],
                                        record["trace_standard_error"],
                                        record["curves"]["test"]["error"], strict=True):
            print(f"{al:>6.3f} {lam:>10.4g} {tr:>7.4g} ± {se:<5.2g} {100 * err:>9.2f}%")
    else:
        if args.checkpoint is None:
            raise ConfigError("give a checkpoint, or --path A B")
        record = sharpness_record(args.checkpoint, top_k=args.top_k, density=args.plot,
                                  **common)
        _print_sharpness(record)
    _write_result(record, _result_path(args, record["kind"], args), args)


def _print_sharpness(record: dict) -> None:
    top = record["top_eigenvalues"]
    scope = " (live weights)" if record["masked"] else ""
    print(f"Hessian of the {record['split']} loss on {record['examples']} examples, "
          f"dimension {record['dim']}{scope}")
    for i, (lam, res, ok) in enumerate(zip(top["eigenvalues"], top["residuals"],
                                           top["converged"], strict=True)):
        flag = "" if ok else "  (not converged)"
        print(f"  λ_{i + 1} = {lam:.5g}   residual ‖Hv − λv‖ = {res:.2g}{flag}")
    for name, t in record["trace"].items():
        print(f"  trace ({name}) = {t['trace']:.5g} ± {t['standard_error']:.2g} "
              f"({t['num_matvecs']} HVPs)")
    print(f"  {record['seconds']:.1f} s")


def cmd_plot(args: argparse.Namespace) -> None:
    from lmc.plots import plot_result

    for written in plot_result(args.result, args.out):
        print(f"figure     {written}")


DEMO_CONFIG = TrainConfig()


# The unstable-then-stable setting of experiments/instability_mnist1d.md.
DEMO_INSTABILITY = DEMO_CONFIG.replace(duration="3000it")
DEMO_SPAWN_STEPS = ("0it", "25it", "250it")
DEMO_IMP = DEMO_CONFIG.replace(model="mlp", model_options={"widths": (100, 100)},
                               duration="3000it")
DEMO_IMP_LEVELS, DEMO_REWIND = 8, "100it"


def cmd_demo(args: argparse.Namespace) -> None:
    from lmc.instability import final_checkpoint, instability_analysis, spawn
    from lmc.runs import Run

    config = DEMO_CONFIG if args.duration is None else DEMO_CONFIG.replace(duration=args.duration)
    print(f"== 1. training {config.model} on {config.dataset} for {config.duration} "
          f"({config.optimizer}, lr {config.lr}, batch {config.batch_size})")
    args.save_at, args.eval_every = ["100it", "500it"], None
    result = _train_and_report(config, args)

    from lmc.hessian import sharpness_record

    print("\n== 2. sharpness of the trained network (Hessian of the train loss)")
    _print_sharpness(sharpness_record(result["checkpoint"], top_k=2, steps=30, trace_probes=30,
                                      examples=1000, data_dir=args.data_dir))

    print("\n== 3. two children spawned at step 500, and the straight line between them")
    parent = Run.open(Path(result["checkpoint"]).parent.parent)
    kids = spawn(parent, 500, 2, progress=args.progress, data_dir=args.data_dir)
    args.a, args.b = (final_checkpoint(kid) for kid in kids)
    args.alphas, args.splits, args.bn, args.max_examples = 25, ["train", "test"], None, None
    args.layerwise, args.out, args.figure, args.no_figure = True, None, None, False
    cmd_interpolate(args)

    print(f"\n== 4. instability analysis: {DEMO_INSTABILITY.model} spawned at "
          f"{', '.join(DEMO_SPAWN_STEPS)}")
    record = instability_analysis(DEMO_INSTABILITY, DEMO_SPAWN_STEPS, root=args.runs,
                                  progress=args.progress, data_dir=args.data_dir)
    _print_instability(record)
    _write_result(record, _result_path(args, "instability", record["config"]), args)

    from lmc.imp import AdaptiveFraction, run_imp

    print(f"\n== 5. iterative magnitude pruning of an MLP {DEMO_IMP.model_options['widths']}: "
          f"{DEMO_IMP_LEVELS} levels of 20%, rewinding to {DEMO_REWIND}, against random pruning")
    common = dict(rewind=DEMO_REWIND, root=args.runs, progress=args.progress,
                  data_dir=args.data_dir)
    record = run_imp(DEMO_IMP, levels=DEMO_IMP_LEVELS, baselines=("random",), **common)
    _print_imp(record)
    _write_result(record, _result_path(args, "imp", record["config"]), args)
    measured = 1 - record["summary"]["imp"]["min_matching_density"]

    print("\n== 6. the safe pruning ratio of the dense MLP, and the maximum IMP sparsity "
          "predicted from the landscape")
    args.checkpoint, args.grid_step, args.examples = record["methods"]["imp"][0]["checkpoint"], \
        0.01, 2000
    args.criterion, args.epsilon, args.keep_dense, args.seed = "magnitude", None, [], 0
    cmd_prune_ratio(args)
    adaptive = run_imp(DEMO_IMP, levels=30, fraction=AdaptiveFraction(), **common)
    fractions = ", ".join(f"{100 * p['fraction']:.0f}%" for p in adaptive["adaptive_predictions"])
    print(f"adaptive IMP, pruning each level by its predicted safe ratio: {fractions}")
    print(f"predicted maximum sparsity {adaptive['predicted_max_sparsity']:.1%}; measured with "
          f"20% levels: largest sparsity still matching {measured:.1%} (of at most "
          f"{1 - 0.8 ** DEMO_IMP_LEVELS:.1%} reached)")


def cmd_list(args: argparse.Namespace) -> None:
    from lmc.data import DATASETS
    from lmc.models import MODELS

    print("models:    " + ", ".join(MODELS))
    print("data sets: " + ", ".join(DATASETS))


def _add_interpolation_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alphas", type=int, default=25,
                   help="evenly spaced interpolation points, ends included (default 25)")
    p.add_argument("--out", type=Path, help="result JSON (default lmc_results/<kind>-<hash>.json)")
    p.add_argument("--figure", type=Path,
                   help="figure path without suffix (default: beside the JSON); PNG and PDF")
    p.add_argument("--no-figure", action="store_true", help="write the JSON only")


def build_parser() -> argparse.ArgumentParser:
    from lmc import __version__

    parser = argparse.ArgumentParser(prog="lmc", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lmc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a network (reuses or resumes a stored run)",
                       description="Train a network. The run directory is named by a hash of "
                       "the config: a finished run is reused, an interrupted one resumed.")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="train on MNIST-1D, measure sharpness, interpolate, run an "
                       "instability analysis, IMP, and predict the safe pruning ratio")
    p.add_argument("--duration", help=f"training length (default {DEMO_CONFIG.duration})")
    p.add_argument("--runs", type=Path, help="run store directory (default ./lmc_runs)")
    p.add_argument("--data-dir", help="data directory")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("interpolate", help="loss and error barriers between two checkpoints",
                       description="Evaluate the straight line between two checkpoints of one "
                       "architecture; print the barriers, write a JSON and a barrier plot.")
    p.add_argument("a", type=Path, help="checkpoint at α = 0")
    p.add_argument("b", type=Path, help="checkpoint at α = 1")
    _add_interpolation_arguments(p)
    p.add_argument("--splits", type=_csv, default=["train", "test"], help="default train,test")
    p.add_argument("--bn", choices=("reset", "interpolate"),
                   help="BatchNorm statistics: re-estimate per point (default for BN nets) or "
                   "interpolate them")
    p.add_argument("--max-examples", type=int, help="evaluate on a fixed subset of this size")
    p.add_argument("--layerwise", action="store_true",
                   help="also move one block at a time (and all but one)")
    p.add_argument("--data-dir", help="data directory")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("spawn", help="train children of a checkpoint that differ in SGD noise",
                       description="Train N children from a run's checkpoint; they share "
                       "weights, optimizer state and schedule but not data order or "
                       "augmentation. Prints the test error barrier between them.")
    p.add_argument("parent", type=Path, help="a checkpoint file, or a run directory with --step")
    p.add_argument("--step", help="spawn step (with a run directory), e.g. 100it or 2ep")
    p.add_argument("--children", type=int, default=2, help="number of children (default 2)")
    p.add_argument("--alphas", type=int, default=25, help="interpolation points (default 25)")
    p.add_argument("--data-dir", help="data directory")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_spawn)

    p = sub.add_parser("instability", help="instability analysis over spawn steps",
                       description="Frankle et al. 2020: for every spawn step k, train "
                       "children from the parent's checkpoint at k and measure the test error "
                       "barrier between them. Writes a JSON and the instability figure.")
    _add_train_arguments(p)
    p.add_argument("--spawn-steps", type=_csv, required=True,
                   help="e.g. 0it,25it,100it,500it,2ep")
    p.add_argument("--children", type=int, default=2, help="children per parent (default 2)")
    p.add_argument("--replicates", type=int, default=1,
                   help="parents with seeds seed, seed+1, ... (default 1)")
    p.add_argument("--threshold", type=float, default=0.02,
                   help="stability threshold on the error barrier (default 0.02)")
    _add_interpolation_arguments(p)
    p.set_defaults(func=cmd_instability)

    p = sub.add_parser("imp", help="iterative magnitude pruning with rewinding, and baselines",
                       description="Frankle & Carbin 2019, Frankle et al. 2020: train, prune a "
                       "fraction of the live weights, rewind the survivors to step k, repeat. "
                       "Every level is a run in the run store (reused and resumed). Writes a "
                       "JSON, accuracy vs density and the successive-level barrier figure.")
    _add_train_arguments(p)
    p.add_argument("--ratio", "--fraction", dest="fraction", default="0.2",
                   help="fraction of the live weights pruned per level (default 0.2), or "
                   "auto: the predicted safe ratio of each level's solution (see "
                   "`lmc prune-ratio`), until it falls below --floor or successive levels "
                   "stop being linearly connected")
    p.add_argument("--estimator", default="gaussian_width",
                   choices=("gaussian_width", "quadratic", "lambda_max"),
                   help="with --ratio auto: the safe-ratio estimator (default gaussian_width)")
    p.add_argument("--safety", type=float, default=1.0,
                   help="with --ratio auto: prune this multiple of the safe ratio (default 1)")
    p.add_argument("--floor", type=float, default=0.05,
                   help="with --ratio auto: stop below this ratio (default 0.05)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--levels", type=int,
                   help="pruning levels (default 10; with --ratio auto at most 30)")
    g.add_argument("--target-density", type=float,
                   help="prune until at most this fraction of the weights is left")
    p.add_argument("--rewind", default="0it",
                   help="rewind step k, e.g. 0it (lottery ticket), 500it, 2ep (default 0it)")
    p.add_argument("--criterion", default="magnitude", help="pruning criterion (default "
                   "magnitude; also magnitude_layerwise, random, snip, grasp, synflow)")
    p.add_argument("--keep-dense", type=_csv, default=[], metavar="LAYERS",
                   help="top-level parameter names never pruned, e.g. output")
    p.add_argument("--baselines", type=_csv, default=[], metavar="METHODS",
                   help="also run: random, invert, shuffle, reinit (comma-separated)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="matching: test accuracy at least dense minus this (default 0.01)")
    p.add_argument("--no-barriers", action="store_true",
                   help="skip the error barrier between successive levels")
    _add_interpolation_arguments(p)
    p.set_defaults(func=cmd_imp, alphas=11)

    p = sub.add_parser("prune-ratio", help="predict the largest safe one-step pruning ratio",
                       description="At a trained (possibly sparse) checkpoint: the pruning "
                       "displacement R(p), the quadratic-model loss increase and the "
                       "Gaussian-width prediction p_theory(R) from the masked Hessian's "
                       "spectrum, for a grid of ratios p; the safe ratio under each "
                       "estimator, for the criterion and for random pruning (SPEC §5).")
    p.add_argument("checkpoint", type=Path, help="a checkpoint file")
    p.add_argument("--criterion", default="magnitude",
                   help="pruning criterion (default magnitude); random is always added")
    p.add_argument("--epsilon", type=float,
                   help="loss tolerance ε (default: std of the per-example training loss)")
    p.add_argument("--examples", type=int, default=2000,
                   help="training examples of the Hessian, gradient and ε (default 2000)")
    p.add_argument("--keep-dense", type=_csv, default=[], metavar="LAYERS",
                   help="top-level parameter names never pruned, e.g. output")
    p.add_argument("--grid-step", type=float, default=0.001,
                   help="spacing of the grid of ratios (default 0.001)")
    p.add_argument("--seed", type=int, default=0, help="probe and random-pruning seed")
    p.add_argument("--out", type=Path, help="result JSON (default lmc_results/<kind>-<hash>.json)")
    p.add_argument("--figure", type=Path, help="figure path without suffix")
    p.add_argument("--no-figure", action="store_true", help="write the JSON only")
    p.add_argument("--data-dir", help="data directory")
    p.set_defaults(func=cmd_prune_ratio)

    p = sub.add_parser("sharpness", help="Hessian eigenvalues, trace and spectral density",
                       description="Top eigenvalues (Lanczos), trace (Hutchinson and Hutch++) "
                       "and, with --plot, the spectral density (stochastic Lanczos "
                       "quadrature) of a checkpoint's loss Hessian over a fixed set of "
                       "examples; for a pruned network, of its live weights. --path A B "
                       "measures λ_max and the trace along the line between two checkpoints.")
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
    p.add_argument("--out", type=Path, help="result JSON (default lmc_results/<kind>-<hash>.json)")
    p.add_argument("--figure", type=Path, help="figure path without suffix")
    p.add_argument("--no-figure", action="store_true", help="write the JSON only")
    p.add_argument("--data-dir", help="data directory")
    p.set_defaults(func=cmd_sharpness)

    p = sub.add_parser("plot", help="redraw the figures of a result JSON")
    p.add_argument("result", type=Path, help="a JSON written by lmc")
    p.add_argument("--out", type=Path, help="figure path without suffix (default: beside the JSON)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("list", help="list the models and data sets")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        args.func(args)
    except LmcError as e:
        print(f"lmc {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lmc {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
