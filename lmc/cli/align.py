"""`lmc align`: permute the hidden units of one checkpoint to match another."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmc.cli._common import add_data_dir
from lmc.workflows.alignment import METHODS, align_checkpoints, write_aligned


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "align", help="permute checkpoint B's hidden units to match checkpoint A",
        description="Align B to A by permuting B's hidden units (weight matching, Ainsworth "
        "et al. 2022): the aligned B computes the same function as B. Print the matching "
        "objective before and after and write the aligned B as an lmc checkpoint (B's "
        "metadata and mask, permuted; no optimizer state: it is for analysis, e.g. "
        "`lmc interpolate A B_aligned.npz`).")
    p.add_argument("a", type=Path, help="reference checkpoint")
    p.add_argument("b", type=Path, help="checkpoint to permute")
    p.add_argument("--method", choices=METHODS, default="weight",
                   help="weight (default), or activation: correlation of hidden units on 1000 "
                   "training examples (lmc's sequential models)")
    p.add_argument("--seed", type=int, default=0,
                   help="order of the weight-matching sweeps (default 0)")
    p.add_argument("--out", type=Path,
                   help="aligned checkpoint (default: B's path with suffix _aligned.npz)")
    add_data_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    _, params, state, perms, info = align_checkpoints(args.a, args.b, method=args.method,
                                                      seed=args.seed, data_dir=args.data_dir)
    out = args.out or args.b.with_name(f"{args.b.stem}_aligned.npz")
    groups = ", ".join(f"{name} ({size})" for name, size in info["groups"].items())
    print(f"{info['method']} matching of {args.b} to {args.a}: {len(info['groups'])} "
          f"permutation groups: {groups}")
    print(f"objective  before {info['objective_before']:.6g}  after "
          f"{info['objective_after']:.6g}  ({len(info['history']) - 1} sweeps)")
    path = write_aligned(args.b, params, state, out, perms=perms, info=info)
    print(f"aligned    {path}")
