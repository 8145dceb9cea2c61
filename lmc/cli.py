"""The `lmc` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from lmc.config import OPTIMIZERS, SCHEDULES, TrainConfig
from lmc.errors import ConfigError, LmcError

DESCRIPTION = """\
lmc: loss landscapes through linear mode connectivity (JAX).

Train networks whose runs are stored by content hash (re-running finds finished work,
an interrupted run resumes where it stopped), and study them.
"""

EPILOG = """\
examples:
  lmc demo                                     train the default model on MNIST-1D
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


DEMO_CONFIG = TrainConfig()


def cmd_demo(args: argparse.Namespace) -> None:
    config = DEMO_CONFIG if args.duration is None else DEMO_CONFIG.replace(duration=args.duration)
    print(f"lmc demo: training {config.model} on {config.dataset} for {config.duration} "
          f"({config.optimizer}, lr {config.lr}, batch {config.batch_size})")
    args.save_at, args.eval_every = ["100it", "500it"], None
    _train_and_report(config, args)


def cmd_list(args: argparse.Namespace) -> None:
    from lmc.data import DATASETS
    from lmc.models import MODELS

    print("models:    " + ", ".join(MODELS))
    print("data sets: " + ", ".join(DATASETS))


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

    p = sub.add_parser("demo", help="train the default model on MNIST-1D and report accuracy")
    p.add_argument("--duration", help=f"training length (default {DEMO_CONFIG.duration})")
    p.add_argument("--runs", type=Path, help="run store directory (default ./lmc_runs)")
    p.add_argument("--data-dir", help="data directory")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_demo)

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
