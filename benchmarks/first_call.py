"""First-call latency of `lmc train`, `lmc interpolate`, `lmc sharpness` and `lmc
prune-ratio`: the wall time of the whole command as a fresh process, without JAX's
persistent compilation cache, with it empty (the first process) and with it warm (the
second process). Every timed process has a run store of its own (a second `lmc train`
in the same one would find its run finished).

    python benchmarks/first_call.py            # ~10-15 min on a 2-core CPU
    python benchmarks/first_call.py --quick    # one repeat, light settings: a smoke test

It trains one small checkpoint first (MLP 40-100-100-10 on MNIST-1D, 500 iterations), in
a temporary run store; `lmc list` (Python, JAX and lmc imported, nothing compiled) is the
floor of every row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info, write_results

TRAIN = ["train", "--model", "mlp", "--model-option", "widths=100,100", "--duration", "500it",
         "--no-progress"]
CONDITIONS = ("off", "cold", "warm")
CONDITION_NAMES = {"off": "cache off", "cold": "cache on, 1st process (cold)",
                   "warm": "cache on, 2nd process (warm)"}


def commands(checkpoints: Path, quick: bool) -> dict[str, list[str]]:
    first, last = checkpoints / "step_00000000.npz", checkpoints / "step_00000500.npz"
    light = ["--steps", "5", "--probes", "5", "--examples", "200"] if quick else []
    return {
        "list": ["list"],
        # the README's Python example as a command: evaluations every epoch (31 steps) and
        # a checkpoint at 100 leave gaps of many lengths between dispatches
        "train": ["train", "--model", "mlp", "--duration", "5ep" if quick else "20ep",
                  "--save-at", "100it", "--lr", "0.05", "--no-progress"],
        "interpolate": ["interpolate", str(first), str(last), "--no-figure",
                        *(["--alphas", "3"] if quick else [])],
        "sharpness": ["sharpness", str(last), "--steps", "20", "--probes", "20",
                      "--examples", "1000", "--no-figure", *light],
        "prune-ratio": ["prune-ratio", str(last), "--examples", "500", "--grid-step", "0.01",
                        "--no-figure"],
    }


def lmc(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds of wall time of `python -m lmc.cli ARGV` as a fresh process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lmc.cli", *argv], env=env, cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"lmc {' '.join(argv)} failed:\n{done.stderr}")
    return seconds


def _placeholder(arg: str) -> str:
    return f"<step {int(Path(arg).stem[5:])}>" if arg.endswith(".npz") else arg


def cache_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len([p for p in files if p.name.endswith("-cache")]), sum(p.stat().st_size
                                                                     for p in files)


def render(record: dict) -> str:
    """The markdown table of a record, with how it was measured."""
    rows, repeats, m = record["seconds"], record["repeats"], record["machine"]
    lines = [
        "# First-call latency of lmc commands",
        "",
        f"JAX {m['jax']} on {m['backend']} ({m['device_kind']}, {m['cpu_count']} cores), "
        f"Python {m['python']}, lmc {m['lmc']}. Wall time of the whole command as a fresh "
        f"process (`python -m lmc.cli ...`: interpreter start, imports, data, compilation and "
        f"the computation), seconds, median of {repeats} (min-max). Each repeat times every "
        "command in the three conditions in turn: `LMC_COMPILATION_CACHE=0`; then the cache "
        "on in a new, empty `$LMC_CACHE_DIR` (the first process, which compiles and writes "
        "the cache); then the same command again in that directory (the second process). "
        "The checkpoint is an MLP 40-100-100-10 trained 500 iterations on MNIST-1D "
        "(`lmc " + " ".join(record["train"]) + "`), in a cache no timed process sees; the "
        "data set is generated before timing. `lmc list` imports everything and compiles "
        "nothing: the floor of every row. Medians, since other processes may load "
        "the cores.",
        "",
        "| command | " + " | ".join(CONDITION_NAMES[c] for c in CONDITIONS)
        + " | off / warm | cache entries (MB) |",
        "|---|" + "---:|" * (len(CONDITIONS) + 2),
    ]
    for name, by_condition in rows.items():
        cells = []
        for c in CONDITIONS:
            t = by_condition[c]
            cells.append(f"{statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f})")
        ratio = statistics.median(by_condition["off"]) / statistics.median(by_condition["warm"])
        size = record["cache_bytes"][name] / 1e6
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {ratio:.1f}x | {record['cache_entries'][name]} ({size:.1f}) |")
    lines += ["", "Commands (checkpoint paths left out; `<step 0>` and `<step 500>` of the run):",
              ""]
    lines += [f"- `lmc {' '.join(argv)}`" for argv in record["commands"].values()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat, light settings")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats

    with tempfile.TemporaryDirectory(prefix="lmc_first_call_") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "LMC_DATA_DIR": str(tmp / "data"), "LMC_RUNS": str(tmp / "runs")}
        env.pop("LMC_COMPILATION_CACHE", None)
        # The training compiles in a cache that no timed process sees.
        lmc(TRAIN, {**env, "LMC_CACHE_DIR": str(tmp / "train_cache")}, tmp)
        (run,) = (tmp / "runs").iterdir()
        argvs = commands(run / "checkpoints", args.quick)
        rows = {name: {c: [] for c in CONDITIONS} for name in argvs}
        sizes = {}
        # Interleaved: every repeat times each command in each condition once, so that load
        # from other processes falls on all of them alike.
        for r in range(repeats):
            for name, argv in argvs.items():
                cache = tmp / f"cache_{name}_{r}"
                for condition in CONDITIONS:
                    timed = {**env, "LMC_CACHE_DIR": str(cache),
                             "LMC_RUNS": str(tmp / f"runs_{name}_{r}_{condition}")}
                    if condition == "off":
                        timed["LMC_COMPILATION_CACHE"] = "0"
                    rows[name][condition].append(lmc(argv, timed, tmp))
                sizes[name] = cache_size(cache / "jax_cache")
                print(f"repeat {r + 1}/{repeats} {name:12s} "
                      + "  ".join(f"{c} {rows[name][c][-1]:6.2f}s" for c in CONDITIONS),
                      flush=True)

    record = {"machine": machine_info(), "repeats": repeats, "quick": args.quick,
              "train": TRAIN, "commands": {n: [_placeholder(x) for x in a]
                                           for n, a in argvs.items()},
              "seconds": rows, "cache_entries": {n: s[0] for n, s in sizes.items()},
              "cache_bytes": {n: s[1] for n, s in sizes.items()}}
    backend = record["machine"]["backend"]
    write_results(args.out, f"first_call_{backend}" + ("_quick" if args.quick else ""),
                  record, render(record))


if __name__ == "__main__":
    main()
