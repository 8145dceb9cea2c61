"""The `lmc` command: one module per subcommand, each with `add_parser(subparsers)` and
`run(args)`, and the printers of its records; `_common` holds the shared flags and the
writing of results. `lmc demo` calls the workflows and the printers directly."""

from __future__ import annotations

import argparse
import sys
import warnings

from lmc._version import __version__
from lmc.cli import (
    align,
    demo,
    imp,
    instability,
    interpolate,
    listing,
    plot,
    prune_ratio,
    scores,
    sharpness,
    spawn,
    train,
)
from lmc.cli._common import config_from_args
from lmc.errors import LmcError
from lmc.training.cache import (
    JAX_CACHE_WARNINGS,
    CompilationCacheWarning,
    compilation_cache_switched_off,
    enable_compilation_cache,
)

__all__ = ["COMMANDS", "build_parser", "config_from_args", "main"]

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
  lmc interpolate A.npz B.npz --align weight    barriers before and after aligning B to A
  lmc align A.npz B.npz --out B_aligned.npz     B with its hidden units permuted to match A
  lmc plot lmc_results/instability-0123456789.json
  lmc train --model mlp --lr 0.05 --duration 20ep --save-at 0it,100it,500it
  lmc train --config resnet20_cifar10.json --runs /data/lmc_runs
durations are written as iterations (500it) or epochs (160ep).
compiled programs are cached in $LMC_CACHE_DIR/jax_cache (default ~/.cache/lmc/jax_cache),
so a command's second process starts faster; --no-compilation-cache or
LMC_COMPILATION_CACHE=0 turns this off.
"""

NO_CACHE_HELP = ("do not keep compiled programs in $LMC_CACHE_DIR/jax_cache (default "
                 "~/.cache/lmc/jax_cache); also LMC_COMPILATION_CACHE=0")

# In the order of `lmc --help`.
COMMANDS = (train, demo, interpolate, align, spawn, instability, imp, prune_ratio, sharpness,
            scores, plot, listing)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmc", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lmc {__version__}")
    parser.add_argument("--no-compilation-cache", dest="compilation_cache",
                        action="store_false", help=NO_CACHE_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    # Also after the command (`lmc interpolate A B --no-compilation-cache`); SUPPRESS keeps
    # a command from resetting a flag given before it.
    for p in subparsers.choices.values():
        p.add_argument("--no-compilation-cache", dest="compilation_cache",
                       action="store_false", default=argparse.SUPPRESS, help=NO_CACHE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # Not an argument of the computation: kept out of the records and their default paths.
    compilation_cache = vars(args).pop("compilation_cache", True)
    try:
        with warnings.catch_warnings():
            # A cache that cannot be used costs compile time, never the command (not even
            # where warnings are errors).
            warnings.filterwarnings("default", category=CompilationCacheWarning)
            warnings.filterwarnings("default", message=JAX_CACHE_WARNINGS)
            if compilation_cache and not compilation_cache_switched_off():
                enable_compilation_cache()
            args.func(args)
    except LmcError as e:
        print(f"lmc {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lmc {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0
