"""`lmc plot`: redraw the figures of a result JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmc.plots import plot_result


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plot", help="redraw the figures of a result JSON")
    p.add_argument("result", type=Path, help="a JSON written by lmc")
    p.add_argument("--out", type=Path, help="figure path without suffix (default: beside the JSON)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    for written in plot_result(args.result, args.out):
        print(f"figure     {written}")
