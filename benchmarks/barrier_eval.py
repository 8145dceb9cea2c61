"""Barrier evaluation time: lmc's `PathEvaluator` against a plain Python loop over α.

One measurement is what `lmc interpolate` does: the loss and error of the networks
`w(α) = (1 − α)·w_a + α·w_b` on an even grid of α (25 points) over a data set. Rows, per
model:

- **lmc vmap**: `PathEvaluator(apply_fn, policy=ExecutionPolicy(alpha_chunk=C))`: C
  interpolation points per vmapped program, one program per batch of data.
- **lmc loop**: `PathEvaluator(apply_fn, policy=ExecutionPolicy(alpha_chunk=1))`: α by α,
  the interpolation inside one compiled per-batch program, sums kept on the device until
  the end.
- **reference loop**: how peer scripts do it: for each α, the interpolated parameters are
  built eagerly with `jax.tree.map`, then a jitted per-batch function evaluates that one
  network and every batch's sums are read back with `float()`.

The `auto` column marks what `lmc.interpolate_checkpoints` picks by itself: the model's
`ExecutionPolicy.for_model` (α by α when the model convolves on the CPU backend, chunks of
5 for dense models there, one chunk of all α on accelerators). Both
implementations slice the same on-device arrays in batches of 1000, so the comparison is
of the evaluation strategy alone. Every lmc row's curves are checked against the
reference loop's (np.allclose, rtol 1e-4).

Models: the MLP 40-256-256-10 and the conv1d net on MNIST-1D (train 4000 + test 1000
examples); on a GPU also ResNet-20 on CIFAR-10-shaped random data (10,000 examples), with
BatchNorm statistics interpolated and, in extra rows, re-estimated ("reset") on 5000
examples in batches of 500 for every α. Two parameter sets come from `lmc.init_model`
with keys 0 and 1: trained weights do not change the time. All rows of a model are
measured interleaved in one process: a warm-up call (compilation) of every row, then
`--repeats` rounds timing each row once; the best round counts.

    python benchmarks/barrier_eval.py [--quick] [--repeats R] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import machine_info, write_results

import lmc
from lmc.core.interpolate import PathEvaluator, alpha_grid
from lmc.core.policy import ExecutionPolicy
from lmc.training.models import eval_apply, policy_for, train_apply

Curves = dict[str, dict[str, np.ndarray]]
Data = Mapping[str, tuple[jax.Array, jax.Array]]

BATCH_SIZE = 1000
RTOL = 1e-4
BN_MOMENTUM = 0.9  # flax momentum of lmc's BatchNorm (PyTorch's 0.1)


@dataclass(frozen=True)
class Sizes:
    """How much work one measurement is."""

    alphas: int
    chunks: tuple[int, ...]  # chunk sizes of the lmc vmap rows
    resnet_examples: int
    bn_examples: int
    bn_batch_size: int


FULL = Sizes(alphas=25, chunks=(5, 13, 25), resnet_examples=10_000, bn_examples=5000,
             bn_batch_size=500)
QUICK = Sizes(alphas=5, chunks=(2, 5), resnet_examples=200, bn_examples=100, bn_batch_size=50)


@dataclass(frozen=True)
class Problem:
    """Two networks of one model and the data to evaluate them on."""

    model: str
    module: Any
    params: tuple[Any, Any]
    states: tuple[Any, Any]
    data: Data
    bn_batches: jax.Array | None = None

    @property
    def n_examples(self) -> int:
        return sum(int(y.shape[0]) for _, y in self.data.values())


@dataclass(frozen=True)
class Case:
    """One row: an implementation, its settings and a call that computes the curves."""

    model: str
    implementation: str  # "lmc vmap", "lmc loop" or "reference loop"
    run: Callable[[], Curves]
    bn: str  # "none", "interpolate" or "reset"
    chunk: int | None = None  # α per vmapped program, lmc vmap only
    auto: bool = False  # what interpolate_checkpoints picks


# ----------------------------------------------------------------------------- reference


def lerp_tree(a: Any, b: Any, alpha: float) -> Any:
    """`(1 − α)·a + α·b` leaf by leaf, op by op (eagerly, not jitted)."""
    return jax.tree.map(lambda u, v: (1 - alpha) * u + alpha * v, a, b)


class ReferenceLoop:
    """A Python loop over α: eager interpolation, a jitted per-batch function, host sums."""

    def __init__(self, module: Any, batch_size: int = BATCH_SIZE):
        apply_fn, update_fn = eval_apply(module), train_apply(module)

        @jax.jit
        def batch_sums(params, state, x, y):
            logits = apply_fn(params, state, x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
            return loss, (jnp.argmax(logits, -1) == y).sum()

        self.batch_sums = batch_sums
        self.batch_stats = jax.jit(update_fn)  # from a zero state: (1 − m)·batch statistics
        self.batch_size = batch_size

    def reset_state(self, params: Any, template: Any, batches: jax.Array) -> Any:
        """BatchNorm statistics averaged over `batches` in train mode (SWA's "reset BN")."""
        zero = jax.tree.map(jnp.zeros_like, template)
        total = None
        for x in batches:
            s = self.batch_stats(params, zero, x)
            total = s if total is None else jax.tree.map(lambda t, u: t + u, total, s)
        return jax.tree.map(lambda t: t / (len(batches) * (1 - BN_MOMENTUM)), total)

    def curves(self, params_a: Any, params_b: Any, data: Data, *, state_a: Any = None,
               state_b: Any = None, alphas: int = 25, bn: str = "interpolate",
               bn_batches: jax.Array | None = None) -> Curves:
        """{split: {"loss": array over α, "error": array over α}}, as `PathEvaluator.curves`."""
        state_a = {} if state_a is None else state_a
        state_b = state_a if state_b is None else state_b
        out: dict[str, dict[str, list[float]]] = {s: {"loss": [], "error": []} for s in data}
        for alpha in alpha_grid(alphas):
            params = lerp_tree(params_a, params_b, float(alpha))
            if bn == "reset" and jax.tree.leaves(state_a):
                state = self.reset_state(params, state_a, bn_batches)
            else:
                state = lerp_tree(state_a, state_b, float(alpha))
            for split, (x, y) in data.items():
                n, loss, correct = int(y.shape[0]), 0.0, 0
                for start in range(0, n, self.batch_size):
                    end = start + self.batch_size
                    batch_loss, batch_correct = self.batch_sums(params, state, x[start:end],
                                                                y[start:end])
                    loss += float(batch_loss)
                    correct += int(batch_correct)
                out[split]["loss"].append(loss / n)
                out[split]["error"].append(1 - correct / n)
        return {s: {k: np.asarray(v) for k, v in m.items()} for s, m in out.items()}


# ----------------------------------------------------------------------------- problems


def mnist1d_problem(model: str, dataset: lmc.Dataset) -> Problem:
    """`model` at two random initialisations, on MNIST-1D's train and test sets."""
    module = lmc.build_model(model, dataset.num_classes)
    (pa, sa), (pb, sb) = (lmc.init_model(module, jax.random.key(i), dataset.input_shape)
                          for i in (0, 1))
    data = {"train": (dataset.x_train, dataset.y_train), "test": (dataset.x_test, dataset.y_test)}
    return Problem(model, module, (pa, pb), (sa, sb), data)


def resnet_problem(sizes: Sizes, num_classes: int = 10) -> Problem:
    """ResNet-20 at two random initialisations on CIFAR-10-shaped standard-normal data.

    The first `bn_examples` images, in batches of `bn_batch_size`, re-estimate BatchNorm.
    """
    module = lmc.build_model("resnet20", num_classes)
    shape = (32, 32, 3)
    (pa, sa), (pb, sb) = (lmc.init_model(module, jax.random.key(i), shape) for i in (0, 1))
    kx, ky = jax.random.split(jax.random.key(2))
    n = sizes.resnet_examples
    x = jax.random.normal(kx, (n, *shape))
    y = jax.random.randint(ky, (n,), 0, num_classes)
    bn = x[: sizes.bn_examples].reshape(-1, sizes.bn_batch_size, *shape)
    return Problem("resnet20", module, (pa, pb), (sa, sb), {"test": (x, y)}, bn)


# ----------------------------------------------------------------------------- cases


def cases_for(problem: Problem, sizes: Sizes, bn_modes: tuple[str, ...]) -> list[Case]:
    """The reference loop, lmc loop and lmc vmap over the chunk sizes, for each BN mode.

    "reset" rows get lmc's automatic choice and its alternative only, with all α a chunk.
    """
    module, (pa, pb), (sa, sb) = problem.module, problem.params, problem.states
    auto_policy = policy_for(module)
    auto_vectorize, auto_chunk = auto_policy.vectorize_alphas, auto_policy.alpha_chunk
    reference = ReferenceLoop(module)
    has_state = bool(jax.tree.leaves(sa))
    cases = []
    for bn in bn_modes:
        mode = bn if has_state else "none"

        def ref(bn: str = bn) -> Curves:
            return reference.curves(pa, pb, problem.data, state_a=sa, state_b=sb,
                                    alphas=sizes.alphas, bn=bn, bn_batches=problem.bn_batches)

        cases.append(Case(problem.model, "reference loop", ref, mode))
        chunks: tuple[int | None, ...] = (None,) + (
            sizes.chunks if bn == "interpolate" else (sizes.alphas,))
        for chunk in chunks:
            evaluator = PathEvaluator(
                eval_apply(module), train_apply=train_apply(module), bn=bn,
                batch_size=BATCH_SIZE,
                policy=ExecutionPolicy(alpha_chunk=1 if chunk is None else chunk))

            def run(evaluator: PathEvaluator = evaluator) -> Curves:
                return evaluator.curves(pa, pb, problem.data, state_a=sa, state_b=sb,
                                        alphas=sizes.alphas, bn_batches=problem.bn_batches)

            vectorized = chunk is not None
            auto = vectorized == auto_vectorize and (
                not vectorized or chunk == (auto_chunk or sizes.alphas))
            cases.append(Case(problem.model, "lmc vmap" if vectorized else "lmc loop", run,
                              mode, chunk, auto))
    return cases


# ----------------------------------------------------------------------------- measuring


def compare(curves: Curves, reference: Curves) -> tuple[bool, float]:
    """Whether all curves agree within RTOL, and the largest relative difference."""
    ok, worst = True, 0.0
    for split, metrics in reference.items():
        for key, expected in metrics.items():
            got = curves[split][key]
            ok &= bool(np.allclose(got, expected, rtol=RTOL))
            scale = np.maximum(np.abs(expected), 1e-12)
            worst = max(worst, float(np.max(np.abs(got - expected) / scale)))
    return ok, worst


def measure(problem: Problem, cases: list[Case], sizes: Sizes, repeats: int) -> list[dict]:
    """Warm up every case, then time them `repeats` times, interleaved; one row per case."""
    results = []
    for case in cases:
        start = time.perf_counter()
        results.append(case.run())
        print(f"  warmed up {describe(case)} in {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for case, case_times in zip(cases, times, strict=True):
            start = time.perf_counter()
            case.run()
            case_times.append(time.perf_counter() - start)
    rows = []
    for case, curves, case_times in zip(cases, results, times, strict=True):
        ref = next(i for i, c in enumerate(cases)
                   if c.implementation == "reference loop" and c.bn == case.bn)
        ok, worst = compare(curves, results[ref])
        rows.append({
            "model": case.model, "bn": case.bn, "n_examples": problem.n_examples,
            "n_alphas": sizes.alphas, "implementation": case.implementation,
            "chunk": case.chunk, "auto": case.auto, "seconds": min(case_times),
            "speedup": min(times[ref]) / min(case_times),
            "matches_reference": ok, "max_rel_diff": worst, "repeats_seconds": case_times,
        })
    return rows


def describe(case: Case) -> str:
    chunk = f" chunk={case.chunk}" if case.chunk else ""
    return f"{case.model} bn={case.bn} {case.implementation}{chunk}"


def markdown(info: dict[str, Any], settings: dict[str, Any], rows: list[dict],
             notes: list[str]) -> str:
    """The results as a markdown table with a header describing the machine."""
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    lines = [
        f"# Barrier evaluation ({info['backend']})", "",
        f"{machine}. Loss and error of {settings['alphas']} interpolated networks, batches of "
        f"{settings['batch_size']}; best of {settings['repeats']} interleaved repeats. "
        "x reference is the speedup over the reference loop (same BN mode); auto marks what "
        f"`interpolate_checkpoints` picks; match: curves equal the reference's "
        f"(rtol {RTOL:g}).", "",
        "| model | BN | examples | α | implementation | chunk | auto | seconds | x reference "
        "| match | max rel diff |",
        "|---|---|---:|---:|---|---:|---|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['bn']} | {r['n_examples']} | {r['n_alphas']} "
            f"| {r['implementation']} | {r['chunk'] or ''} | {'yes' if r['auto'] else ''} "
            f"| {r['seconds']:.3f} | {r['speedup']:.2f} "
            f"| {'yes' if r['matches_reference'] else 'NO'} | {r['max_rel_diff']:.1e} |"
        )
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test of every row, ResNet-20 included, on tiny sizes "
                             "(timings meaningless)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per row, the best counts (default 5; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                        help="directory for the .json and .md results")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 5)
    backend = jax.default_backend()

    notes = []
    mnist1d = lmc.load_dataset("mnist1d")
    work: list[tuple[Callable[[], Problem], tuple[str, ...]]] = [
        (lambda m=m: mnist1d_problem(m, mnist1d), ("interpolate",)) for m in ("mlp", "conv1d")
    ]
    if backend == "gpu" or args.quick:
        work.append((lambda: resnet_problem(sizes), ("interpolate", "reset")))
        if backend != "gpu":
            notes.append("ResNet-20 ran as a smoke test only (--quick on the CPU).")
    else:
        notes.append("ResNet-20 (CIFAR-10-shaped random data) is measured on a GPU only: "
                     "XLA's CPU convolutions are too slow.")

    rows = []
    for make, bn_modes in work:
        problem = make()
        print(f"{problem.model}:", file=sys.stderr, flush=True)
        rows += measure(problem, cases_for(problem, sizes, bn_modes), sizes, repeats)

    info = machine_info()
    settings = {"alphas": sizes.alphas, "chunks": list(sizes.chunks),
                "batch_size": BATCH_SIZE, "repeats": repeats, "quick": args.quick,
                "resnet_examples": sizes.resnet_examples, "bn_examples": sizes.bn_examples,
                "bn_batch_size": sizes.bn_batch_size}
    if not all(r["matches_reference"] for r in rows):
        notes.append("Some lmc curves differ from the reference loop's (match NO).")
    slower = [r for r in rows if r["auto"] and r["speedup"] < 1]
    if slower:
        notes.append("lmc's automatic choice is slower than the reference loop for: "
                     + ", ".join(f"{r['model']} (bn {r['bn']})" for r in slower) + ".")
    table = markdown(info, settings, rows, notes)
    name = f"barrier_eval_{backend}{'_quick' if args.quick else ''}"
    write_results(args.out, name,
                  {"machine": info, "settings": settings, "rows": rows, "notes": notes}, table)


if __name__ == "__main__":
    main()
