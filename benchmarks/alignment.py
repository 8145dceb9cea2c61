"""Weight-matching time: `lmc.weight_matching` against a straightforward reference.

One measurement: weight matching (Ainsworth et al. 2022) of two independently initialised
networks (`lmc.init_model` with keys 0 and 1; no data: the time depends on the shapes, and
the number of sweeps little on whether the weights are trained), run to convergence
(a sweep without improvement; `max_sweeps=100`). Rows, per model:

- **lmc**: `lmc.weight_matching(spec, params_a, params_b, state_a, state_b, seed=0)`, spec
  from `lmc.spec_from_params`. "first" is the first call in the process (conversion of
  the device arrays to numpy included), "repeat" the median of the later calls.
- **reference**: written below, clearly the reference: the textbook loop of the Git
  Re-Basin code (`get_permuted_param` + `weight_matching`), in plain numpy on the same
  spec. For each group it loops over *every* leaf of the variables tree, and for each
  axis of the group on that leaf re-gathers the leaf of B by all the other groups'
  current permutations (from the jax arrays, converted to float64 every time), and adds
  ``W_a ⋅ P(W_b)ᵀ`` to the similarity matrix. Same group order (the same
  `np.random.default_rng(seed).permutation` per sweep), same acceptance rule, same
  stopping rule, so it must give the same permutations; the benchmark checks that, and
  that the objective histories agree (rtol 1e-9).

Also checked, per model: weight matching of A against a randomly permuted copy of A
recovers ``argsort(π)`` exactly (the objective's global maximum).

Models: ResNet-20 (CIFAR-10 shape 32×32×3, BatchNorm statistics in the objective), VGG-11
(same shape), MLPs 40-w-w-10 (MNIST-1D shape) for w in 512, 1024, 2048. Rows measured
interleaved (lmc, reference, lmc, ...); medians of `--repeats`.

**Time split** (always; alone with ``--split``, which adds it to the existing results
file instead of re-measuring the rows): where `lmc.weight_matching`'s time goes, for the
question whether batching many pairs (vmap of the similarity matmuls over pairs) could pay.
Each coordinate-descent step of a group (a) builds the group's similarity matrix — gathers
of B's leaves by the other groups' permutations and a sum of matmuls, in numpy float64 on
the host — and (b) solves its linear assignment with `scipy.optimize.linear_sum_assignment`
(host, sequential, not batchable by vmap). (b) is timed by wrapping the scipy function as
`weight_matching` calls it; (a) is the rest of the call (similarity matrices, plus the
objective once per sweep): an upper bound on what batching the matmuls could save.
Same inputs as the rows (numpy copies, so no device transfer is timed); the split of the
median of ``--repeats`` calls after one warm-up call. Run it with OPENBLAS_NUM_THREADS=1 on
a shared machine (the record says which): see `run_split`.

    python benchmarks/alignment.py [--quick] [--split] [--repeats R] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from _common import machine_info, write_results
from scipy.optimize import linear_sum_assignment

import lmc
import lmc.core.alignment as lmc_alignment
from lmc.core.masks import path_name

MODELS = {  # name -> (build_model args, input shape, spec kind)
    "resnet20": (("resnet20", 10, {}), (32, 32, 3), "resnet"),
    "vgg11": (("vgg11", 10, {}), (32, 32, 3), "sequential"),
    "mlp512": (("mlp", 10, {"widths": (512, 512)}), (40,), "sequential"),
    "mlp1024": (("mlp", 10, {"widths": (1024, 1024)}), (40,), "sequential"),
    "mlp2048": (("mlp", 10, {"widths": (2048, 2048)}), (40,), "sequential"),
}
QUICK_MODELS = ("resnet20", "mlp512")
SPLIT_MODELS = ("resnet20", "mlp512", "mlp2048")


# --- the reference ---------------------------------------------------------------------------


def reference_weight_matching(spec: lmc.PermutationSpec, params_a: Any, params_b: Any,
                              state_a: Any = None, state_b: Any = None, *,
                              max_sweeps: int = 100, seed: int = 0
                              ) -> tuple[dict[str, np.ndarray], list[float]]:
    """REFERENCE (not lmc's code): the straightforward per-layer loop, in plain numpy."""

    def leaves(params, state):
        tree = {"params": params, **(state or {})}
        return {path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

    la, lb = leaves(params_a, state_a), leaves(params_b, state_b)
    sizes = spec.check(params_a, state_a, need_state=False)
    perms = {g: np.arange(n) for g, n in sizes.items()}

    def index(axis, size, perm):
        if axis.channels is None:
            return perm
        return (np.arange(size // axis.channels)[:, None] * axis.channels
                + perm[None, :]).ravel()

    def permuted_b(path, except_group=None):  # get_permuted_param
        w = np.asarray(lb[path], np.float64)
        for group, axes in spec.groups.items():
            if group == except_group:
                continue
            for axis in axes:
                if axis.path == path:
                    w = np.take(w, index(axis, w.shape[axis.axis], perms[group]), axis=axis.axis)
        return w

    def objective():
        total = 0.0
        for path in la:
            if any(axis.path == path for axes in spec.groups.values() for axis in axes):
                total += float(np.vdot(np.asarray(la[path], np.float64), permuted_b(path)))
        return total

    names = list(spec.groups)
    rng = np.random.default_rng(seed)
    history = [objective()]
    for _ in range(max_sweeps):
        improved = False
        for i in rng.permutation(len(names)):
            group = names[i]
            n = sizes[group]
            s = np.zeros((n, n))
            for path in la:  # every leaf of the tree
                for axis in spec.groups[group]:
                    if axis.path != path:
                        continue
                    wa = np.asarray(la[path], np.float64)
                    wb = permuted_b(path, except_group=group)
                    ax = axis.axis % wa.ndim
                    if axis.channels is not None:
                        shape = (*wa.shape[:ax], -1, axis.channels, *wa.shape[ax + 1:])
                        wa, wb, ax = wa.reshape(shape), wb.reshape(shape), ax + 1
                    wa = np.moveaxis(wa, ax, 0).reshape(n, -1)
                    wb = np.moveaxis(wb, ax, 0).reshape(n, -1)
                    s += wa @ wb.T
            _, cols = linear_sum_assignment(s, maximize=True)
            rows = np.arange(n)
            new, old = s[rows, cols].sum(), s[rows, perms[group]].sum()
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[group] = cols.astype(np.int64)
                improved = True
        history.append(objective())
        if not improved:
            break
    return perms, history


# --- the measurement -------------------------------------------------------------------------


def setup(name: str):
    (model, classes, options), shape, kind = MODELS[name]
    module = lmc.build_model(model, classes, **options)
    pa, sa = lmc.init_model(module, jax.random.key(0), shape)
    pb, sb = lmc.init_model(module, jax.random.key(1), shape)
    sa, sb = (sa or None), (sb or None)
    spec = lmc.spec_from_params(pa, sa, kind=kind)
    return module, spec, pa, sa, pb, sb


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def measure(name: str, repeats: int) -> dict[str, Any]:
    _, spec, pa, sa, pb, sb = setup(name)
    n_params = lmc.count_params(pa)
    sizes = spec.check(pa, sa)
    impls = {"lmc": lmc.weight_matching, "reference": reference_weight_matching}
    times: dict[str, list[float]] = {k: [] for k in impls}
    results = {}
    for r in range(repeats + 1):  # round 0 is the first call
        for impl, fn in impls.items():
            t, out = timed(fn, spec, pa, pb, sa, sb, max_sweeps=100, seed=0)
            times[impl].append(t)
            results.setdefault(impl, out)
        print(f"  {name} round {r}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()),
              file=sys.stderr, flush=True)
    (p_lmc, h_lmc), (p_ref, h_ref) = results["lmc"], results["reference"]
    same_perms = all(np.array_equal(p_lmc[g], p_ref[g]) for g in spec.groups)
    same_objective = bool(np.allclose(h_lmc, h_ref, rtol=1e-9, atol=0))
    # recovery of a known permutation
    pi = lmc.random_permutation(spec, pa, jax.random.key(7), sa)
    pc, sc = lmc.apply_permutation(spec, pi, pa, sa)
    t_rec, (p_rec, h_rec) = timed(lmc.weight_matching, spec, pa, pc, sa, sc)
    recovered = all(np.array_equal(p_rec[g], np.argsort(pi[g])) for g in spec.groups)
    row = {"model": name, "params": n_params, "groups": len(sizes),
           "largest_group": max(sizes.values()), "sweeps": len(h_lmc) - 1,
           "objective_identity": h_lmc[0], "objective_final": h_lmc[-1],
           "same_perms": same_perms, "same_objective": same_objective,
           "recovers_known_permutation": recovered, "recovery_seconds": t_rec,
           "recovery_sweeps": len(h_rec) - 1}
    for impl, ts in times.items():
        row[impl] = {"first": ts[0], "repeat_median": float(np.median(ts[1:])),
                     "repeats": ts[1:]}
    row["speedup_repeat"] = row["reference"]["repeat_median"] / row["lmc"]["repeat_median"]
    return row


def measure_split(name: str, repeats: int) -> dict[str, Any]:
    """(a) similarity building vs (b) linear assignment in `lmc.weight_matching`."""
    _, spec, pa, sa, pb, sb = setup(name)
    pa, sa, pb, sb = (jax.tree.map(np.asarray, t) for t in (pa, sa, pb, sb))
    solver = lmc_alignment.linear_sum_assignment
    lsa = {"seconds": 0.0, "calls": 0}

    def timed_lsa(*args, **kwargs):
        start = time.perf_counter()
        out = solver(*args, **kwargs)
        lsa["seconds"] += time.perf_counter() - start
        lsa["calls"] += 1
        return out

    totals, solves, calls = [], [], []
    lmc_alignment.linear_sum_assignment = timed_lsa  # as weight_matching looks it up
    try:
        for r in range(repeats + 1):  # call 0: warm-up, not counted
            lsa.update(seconds=0.0, calls=0)
            t, (_, history) = timed(lmc.weight_matching, spec, pa, pb, sa, sb, seed=0)
            if r:
                totals.append(t)
                solves.append(lsa["seconds"])
                calls.append(lsa["calls"])
    finally:
        lmc_alignment.linear_sum_assignment = solver
    median = int(np.argsort(totals)[len(totals) // 2])  # the split of the median call
    total, solve = totals[median], solves[median]
    similarity = total - solve
    row = {"model": name, "sweeps": len(history) - 1, "assignments": calls[0],
           "largest_group": max(spec.check(pa, sa).values()), "total_seconds": total,
           "similarity_seconds": similarity, "assignment_seconds": solve,
           "similarity_share": similarity / total, "assignment_share": solve / total,
           "totals": totals, "assignments_seconds": solves}
    print(f"  split {name}: total {total:.3f}s, similarity {similarity:.3f}s, assignment "
          f"{solve:.3f}s", file=sys.stderr, flush=True)
    return row


def split_table(split: dict[str, Any]) -> str:
    m = split["machine"]
    lines = ["", "## Time split: similarity matrices vs linear assignment", "",
             f"Where `lmc.weight_matching`'s time goes (same pairs, converged; the call of "
             f"median time of "
             f"{split['repeats']} calls after a warm-up; BLAS threads "
             f"{split.get('blas_threads', 'default')}; load average before/after "
             f"{m['load_before']:.2f} / {m['load_after']:.2f}). (a) similarity: building "
             f"each group's similarity matrix (gathers + a sum of matmuls, numpy float64 on "
             f"the host) plus the objective once per sweep, i.e. the call minus (b); (b) "
             f"assignment: `scipy.optimize.linear_sum_assignment`, host, sequential. "
             f"Batching pairs with vmap can only shrink (a).", "",
             "| model | largest group | sweeps | assignments | total (s) | (a) similarity (s) "
             "| (b) assignment (s) | (a) share | (b) share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in split["rows"]:
        lines.append(
            f"| {r['model']} | {r['largest_group']} | {r['sweeps']} | {r['assignments']} | "
            f"{r['total_seconds']:.4f} | {r['similarity_seconds']:.4f} | "
            f"{r['assignment_seconds']:.4f} | {100 * r['similarity_share']:.0f}% | "
            f"{100 * r['assignment_share']:.0f}% |")
    return "\n".join(lines) + "\n"


def run_split(names: tuple[str, ...], repeats: int) -> dict[str, Any]:
    import scipy

    load_before = os.getloadavg()[0]
    rows = [measure_split(name, repeats) for name in names]
    # multi-threaded OpenBLAS on a loaded machine spins: its small matmuls then take ~40x
    # longer (ResNet-20: 1.5 s instead of 0.04 s per matching), so say which was used
    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return {"repeats": repeats, "rows": rows, "blas_threads": blas_threads or "default",
            "machine": machine_info(scipy=scipy.__version__, load_before=load_before,
                                    load_after=os.getloadavg()[0])}


def table(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [f"# Weight matching ({m['backend']})", "",
             f"jax {m['jax']}, backend {m['backend']}, cpu_count {m['cpu_count']}, python "
             f"{m['python']}, lmc {m['lmc']}, scipy {m['scipy']}. Load average (1 min) "
             f"before/after: {m['load_before']:.2f} / {m['load_after']:.2f} (the 2 cores were "
             f"shared with other jobs: timings are noisy). Two independent initialisations "
             f"(keys 0, 1), weight matching to convergence (seed 0, max 100 sweeps); first "
             f"call and median of {record['repeats']} interleaved repeats, seconds. "
             f"Reference: the straightforward per-layer numpy loop in `benchmarks/alignment.py`.",
             "",
             "| model | params | groups | largest group | sweeps | lmc first (s) "
             "| lmc repeat (s) | reference first (s) | reference repeat (s) | x ref "
             "| same perms | same objective | recovers π |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in record["rows"]:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['groups']} | {r['largest_group']} | "
            f"{r['sweeps']} | {r['lmc']['first']:.3f} | {r['lmc']['repeat_median']:.3f} | "
            f"{r['reference']['first']:.3f} | {r['reference']['repeat_median']:.3f} | "
            f"{r['speedup_repeat']:.2f} | {'yes' if r['same_perms'] else 'NO'} | "
            f"{'yes' if r['same_objective'] else 'NO'} | "
            f"{'yes' if r['recovers_known_permutation'] else 'NO'} |")
    text = "\n".join(lines) + "\n"
    if "time_split" in record:
        text += split_table(record["time_split"])
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--split", action="store_true",
                        help="measure only the time split and add it to the existing results")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default=None, help="comma-separated, from " + ", ".join(MODELS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    names = args.models.split(",") if args.models else (QUICK_MODELS if args.quick
                                                        else tuple(MODELS))
    repeats = 1 if args.quick else args.repeats
    suffix = "_quick" if args.quick else ""
    name = f"alignment_{jax.default_backend()}{suffix}"
    split_names = tuple(args.models.split(",")) if args.models else SPLIT_MODELS
    if args.split:
        path = args.out / f"{name}.json"
        if not path.exists():
            raise SystemExit(f"--split adds to {path}, which does not exist: run without "
                             f"--split first")
        record = json.loads(path.read_text())
        record["time_split"] = run_split(split_names, repeats)
        write_results(args.out, name, record, table(record))
        return
    import scipy

    load_before = os.getloadavg()[0]
    rows = [measure(name, repeats) for name in names]
    record = {"benchmark": "alignment", "repeats": repeats, "rows": rows,
              "machine": machine_info(scipy=scipy.__version__, load_before=load_before,
                                      load_after=os.getloadavg()[0])}
    record["time_split"] = run_split(split_names, repeats)
    write_results(args.out, name, record, table(record))


if __name__ == "__main__":
    main()
