"""`lmc list`: the models and data sets (a module not named `list`, so that importing it
does not shadow the builtin in `lmc.cli`)."""

from __future__ import annotations

import argparse

from lmc.training.data import DATASETS
from lmc.training.models import MODELS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("list", help="list the models and data sets")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    print("models:    " + ", ".join(MODELS))
    print("data sets: " + ", ".join(DATASETS))
