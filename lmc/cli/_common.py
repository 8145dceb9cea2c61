"""What the commands share: the training-config flags, the interpolation and output flags,
the config they describe, the default path of a result, and writing a record with its
figures."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from lmc.errors import ConfigError, check_name
from lmc.plots import plot_result
from lmc.training.config import OPTIMIZERS, SCHEDULES, TrainConfig
from lmc.training.data import DATASETS
from lmc.training.models import MODELS
from lmc.training.rng import STREAMS
from lmc.workflows.records import Record
from lmc.workflows.replicates import bounds

RESULTS = Path("lmc_results")


def csv(text: str) -> list[str]:
    """A comma-separated list flag, e.g. 0it,50it,100it."""
    return [t for t in text.split(",") if t]


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


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (default $LMC_DATA_DIR, else data/ in "
                   "$LMC_CACHE_DIR or ~/.cache/lmc)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --model-option and --data: checkpoints of your own network."""
    g = p.add_argument_group(
        "your own network (checkpoints without lmc metadata: an orbax directory, a flax "
        "msgpack file, an .npz or .safetensors of arrays)")
    g.add_argument("--model", metavar="PACKAGE.MODULE:FACTORY",
                   help="a callable returning a flax linen or NNX module (or one of lmc's "
                   "model names); see README, 'Your own model'")
    g.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the factory, repeatable, e.g. width=64")
    g.add_argument("--data", metavar="NAME|FILE.npz",
                   help="a registered data set or an .npz with x_train, y_train, x_test, y_test")


def model_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The `model`, `model_options` and `data` keywords of the workflows, from the flags of
    `add_model_arguments`."""
    options = _model_options(args.model_option)
    if options and args.model is None:
        raise ConfigError("--model-option needs --model package.module:factory")
    return {"model": args.model, "model_options": options or None, "data": args.data}


def add_no_progress(p: argparse.ArgumentParser, help: str | None = "no progress bar") -> None:
    p.add_argument("--no-progress", dest="progress", action="store_false", help=help)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training-config flags (overriding --config) and the run-store flags."""
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
    g.add_argument("--l1", type=float, help=f"L1 penalty on weights and biases, as in Zhang "
                   f"et al. 2024 (default {d.l1})")
    g.add_argument("--schedule", choices=SCHEDULES, help=f"(default {d.schedule})")
    g.add_argument("--warmup", help="linear warmup length, e.g. 500it")
    g.add_argument("--milestones", type=csv, help="step schedule: e.g. 80ep,120ep")
    g.add_argument("--gamma", type=float, help=f"step schedule factor (default {d.gamma:g})")
    g.add_argument("--cycle", help="cyclic schedule: first cycle length, e.g. 8ep")
    g.add_argument("--cycle-mult", type=float,
                   help=f"cyclic schedule: cycle growth (default {d.cycle_mult:g})")
    g.add_argument("--batch-size", type=int, help=f"(default {d.batch_size})")
    g.add_argument("--duration", help=f"training length (default {d.duration})")
    g.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="turn data augmentation off")
    g.add_argument("--seed", type=int, help="seed of every stream not given its own")
    for stream in STREAMS:
        g.add_argument(f"--{stream}-seed", type=int, help=f"seed of the {stream} stream")
    g.add_argument("--subset", metavar="END:KEEP:SCORE:FILE",
                   help="train on part of the training set (Paul et al. 2021's data diet): "
                   "the fraction KEEP in (0, 1] with the highest (END hardest) or lowest "
                   "(easiest) SCORE, el2n or grand, of a scores file of `lmc scores`, e.g. "
                   "hardest:0.5:el2n:scores.npz; or random:KEEP, a random subset drawn from "
                   "the data seed. Epochs are passes over the kept examples. The run id "
                   "names the scores by content, not by the file's path")
    r = p.add_argument_group("run")
    r.add_argument("--save-at", type=csv, default=[], metavar="STEPS",
                   help="extra checkpoint steps, e.g. 0it,50it,100it,500it")
    r.add_argument("--eval-every",
                   help="evaluation and checkpoint interval (default: 1/20 of the run)")
    r.add_argument("--runs", type=Path,
                   help="run store directory (default $LMC_RUNS or ./lmc_runs)")
    add_data_dir(r)
    add_no_progress(r)


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """--out, --figure and --no-figure."""
    p.add_argument("--out", type=Path,
                   help=f"result JSON (default {RESULTS}/<kind>-<hash>.json)")
    p.add_argument("--figure", type=Path,
                   help="figure path without suffix (default: beside the JSON); PNG and PDF")
    p.add_argument("--no-figure", action="store_true", help="write the JSON only")


def add_interpolation_arguments(p: argparse.ArgumentParser, alphas: int = 25) -> None:
    """--alphas and the output flags."""
    p.add_argument("--alphas", type=int, default=alphas,
                   help=f"evenly spaced interpolation points, ends included (default {alphas})")
    add_output_arguments(p)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The training config of --config overridden by the flags that were given."""
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


def check_names(config: TrainConfig) -> None:
    """One readable line listing the valid names for an unknown model or data set."""
    check_name("model", config.model, MODELS)
    check_name("data set", config.dataset, DATASETS)


def arguments(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """A command's parsed arguments (without its function), with `overrides`; the
    namespace is left as it is."""
    values = {k: v for k, v in vars(args).items() if k != "func"}
    return {**values, **overrides}


def result_path(out: Path | None, kind: str, identity: Any) -> Path:
    """`out`, else lmc_results/<kind>-<hash of what was computed>.json.

    `identity` is a command's parsed arguments (a namespace: every argument but the
    command function) or any JSON-able description of the computation (e.g. a config).
    """
    if out is not None:
        return Path(out)
    if isinstance(identity, argparse.Namespace):
        identity = arguments(identity)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    return RESULTS / f"{kind}-{digest.hexdigest()[:10]}.json"


def write_record(record: Record, path: Path, figure: Path | None = None,
                 no_figure: bool = False) -> None:
    """Save the record (atomically), then draw its figures unless `no_figure`."""
    record.save(path)
    print(f"results    {path}")
    if not no_figure:
        for written in plot_result(path, figure):
            print(f"figure     {written}")


def write_result(record: Record, args: argparse.Namespace, identity: Any = None) -> None:
    """Write a command's record where its --out/--figure/--no-figure flags say; the default
    path hashes `identity` (default: the command's arguments)."""
    path = result_path(args.out, record.kind, args if identity is None else identity)
    write_record(record, path, args.figure, args.no_figure)


# barrier key -> column heading: the definitions printed side by side
BARRIER_COLUMNS = {"error_chord": "chord", "error": "mean", "floor": "floor ½|ΔE|"}


def format_estimate(est: dict, scale: float = 100) -> str:
    """An estimate over seeds as "mean [low, high]" (times `scale`, two decimals); the mean
    alone for one seed."""
    if est.get("interval") is None:
        return f"{scale * est['mean']:.2f}"
    low, high = bounds(est)
    return f"{scale * est['mean']:.2f} [{scale * low:.2f}, {scale * high:.2f}]"
