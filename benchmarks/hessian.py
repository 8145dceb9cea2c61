"""Hessian measurements: `lmc.core.curvature` against the exact Hessian, PyHessian and the gradient.

Three tables:

- **Accuracy**: small MLPs (one hidden layer of 16 and 32 units, 826 and 1642 parameters)
  trained on MNIST-1D (2000 iterations of the default recipe), with the Hessian of the mean
  training loss over all 4000 examples (batches of 1000). The exact Hessian is
  `jax.hessian` of the loss of the raveled parameters, diagonalised in float64. Against it:
  λ_max by Lanczos (`top_eigenpairs`, a ladder of step counts) and by power iteration
  (`power_iteration`), and the trace by Hutchinson (`hutchinson_trace`, 100 probes,
  tol 1e-3: PyHessian's defaults) and Hutch++ (`hutchpp_trace`, several budgets); and
  PyHessian's `hessian(...).eigenvalues(top_n=1, maxIter=100, tol=1e-3)` and
  `.trace(maxIter=100, tol=1e-3)` on the same network copied into PyTorch and the same
  batches (its dataloader mode). Randomised methods run with `--seeds` seeds; errors are
  relative to the exact value.
- **HVP / gradient**: the time of one Hessian-vector product over the time of one gradient
  (theory: 2-4), jitted, on 1000 examples, for the MLP 40-256-256-10 and the conv1d net,
  with PyTorch's double-backward HVP for the MLP where torch is installed.
- **Overheads**: the time of a repeated `top_eigenpairs` call against the time of its HVPs.
- **Second prediction**: `predict_prune_ratio` (defaults: Lanczos 100, SLQ 4 × 90, the
  1/1000 grid, D) on a checkpoint of the MLP 40-100-100-10 (2000 Hessian examples in
  batches of 100, prunable basis, a magnitude mask) and then on another checkpoint of the
  same network (other initialisation, other mask and live count, as the next IMP level or
  seed): seconds and XLA compilations of each. The networks are untrained (the cost of
  the programs does not depend on training). `--prediction-only` runs just this row and
  adds it to the existing results.

All rows of a table are timed interleaved, best of `--repeats`: compare ratios, the
machine may be shared. PyTorch runs on the CPU with `--torch-threads` threads (default 1:
on a shared machine its OpenMP threads stall when another process holds a core).

    python benchmarks/hessian.py [--quick] [--repeats R] [--seeds S] [--out DIR]
    python benchmarks/hessian.py --prediction-only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine_info, package_version, write_results
from jax.flatten_util import ravel_pytree

import lmc
from lmc.core.batching import batches_of
from lmc.core.curvature import hutchinson_trace, hutchpp_trace, power_iteration, top_eigenpairs
from lmc.core.operators import HessianOperator, make_hvp

TOL = 1e-3  # PyHessian's default relative tolerance, for both λ_max and the trace
MAX_ITER = 100  # PyHessian's default maximum number of iterations / probes
BATCH_SIZE = 1000


@dataclass(frozen=True)
class Sizes:
    """How much work one run is."""

    widths: tuple[tuple[int, ...], ...]  # hidden layers of the accuracy MLPs
    duration: str  # training of the accuracy MLPs
    lanczos_steps: tuple[int, ...]
    hutchpp_budgets: tuple[int, ...]
    hvp_models: tuple[tuple[str, dict[str, Any]], ...]
    hvp_examples: int
    probe_batch: int


FULL = Sizes(widths=((16,), (32,)), duration="2000it", lanczos_steps=(5, 10, 20, 30, 50, 100),
             hutchpp_budgets=(30, 99, 300, 600), hvp_models=(("mlp", {}), ("conv1d", {})),
             hvp_examples=1000, probe_batch=10)
QUICK = Sizes(widths=((8,),), duration="100it", lanczos_steps=(5, 20), hutchpp_budgets=(30,),
              hvp_models=(("mlp", {"widths": (32,)}), ("conv1d", {"channels": 4})),
              hvp_examples=100, probe_batch=10)


# ----------------------------------------------------------------------------- timing


def best_times(fns: dict[str, Callable[[], Any]], repeats: int,
               min_seconds: float = 0.05) -> dict[str, float]:
    """Seconds per call of each function: warm up, calibrate the calls per measurement so
    that one lasts `min_seconds`, then `repeats` interleaved rounds; the best counts."""
    calls = {}
    for name, fn in fns.items():
        jax.block_until_ready(fn())
        start = time.perf_counter()
        jax.block_until_ready(fn())
        once = time.perf_counter() - start
        calls[name] = max(1, min(1000, int(min_seconds / max(once, 1e-6))))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                out = fn()
            jax.block_until_ready(out)
            best[name] = min(best[name], (time.perf_counter() - start) / calls[name])
    return best


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence PyTorch's warnings about `backward(create_graph=True)` (PyHessian uses it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- problems


@dataclass
class Problem:
    """A trained network, its loss and the data set the Hessian is taken over."""

    name: str
    widths: tuple[int, ...]
    module: Any
    params: Any
    state: Any
    loss: Callable[[Any, jax.Array, jax.Array], jax.Array]
    x: jax.Array
    y: jax.Array
    train_accuracy: float

    def operator(self) -> HessianOperator:
        return HessianOperator(self.loss, self.params, batches_of(self.x, self.y, BATCH_SIZE))


def loss_of(module: Any, state: Any) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """The mean cross-entropy of a batch in evaluation mode, `(params, x, y) -> loss`."""
    apply_fn = lmc.eval_apply(module)
    return lambda p, x, y: lmc.cross_entropy(apply_fn(p, state, x), y)


def trained_mlp(widths: tuple[int, ...], duration: str, dataset: lmc.Dataset) -> Problem:
    """An MLP with hidden `widths` trained on MNIST-1D with lmc's default recipe."""
    config = lmc.TrainConfig(model="mlp", model_options={"widths": widths}, duration=duration)
    result = lmc.train(config, dataset, progress=False)
    final = result.history[0][-1]
    module = lmc.build_model("mlp", dataset.num_classes, widths=widths)
    params, state = result.states[0].params, result.states[0].state
    return Problem(f"mlp {'-'.join(map(str, (40, *widths, 10)))}", widths, module, params, state,
                   loss_of(module, state), dataset.x_train, dataset.y_train,
                   float(final["train_accuracy"]))


def exact_hessian(problem: Problem) -> tuple[np.ndarray, float]:
    """The Hessian of the mean loss over all examples (float64) and the seconds it took."""
    flat, unravel = ravel_pytree(problem.params)
    xs, ys = batches_of(problem.x, problem.y, BATCH_SIZE)

    def total(w: jax.Array) -> jax.Array:
        return jnp.mean(jax.vmap(lambda x, y: problem.loss(unravel(w), x, y))(xs, ys))

    start = time.perf_counter()
    h = np.asarray(jax.jit(jax.hessian(total))(flat), np.float64)
    return (h + h.T) / 2, time.perf_counter() - start


# ----------------------------------------------------------------------------- PyHessian


def torch_mlp(params: Any, in_features: int) -> Any:
    """lmc's MLP as `nn.Sequential(Flatten, Linear, ReLU, ..., Linear)` with its weights
    (a flax Dense kernel is (in, out), a torch Linear weight (out, in))."""
    import torch
    from torch import nn

    names = [f"dense{i}" for i in range(len(params) - 1)] + ["output"]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, name in enumerate(names):
        kernel = np.asarray(params[name]["kernel"])
        linear = nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(kernel.T))
            linear.bias.copy_(torch.tensor(np.asarray(params[name]["bias"])))
        layers += [linear] + ([nn.ReLU()] if i < len(names) - 1 else [])
    if layers[1].in_features != in_features:
        raise ValueError(f"the MLP takes {layers[1].in_features} inputs, not {in_features}")
    return nn.Sequential(*layers)


class PyHessianRunner:
    """PyHessian's `hessian` in dataloader mode on the same batches, counting HVPs."""

    def __init__(self, problem: Problem):
        import torch
        from pyhessian import hessian

        self.torch = torch
        self.model = torch_mlp(problem.params, int(np.prod(problem.x.shape[1:])))
        x = torch.tensor(np.asarray(problem.x))  # a copy: jax's arrays are read-only
        y = torch.tensor(np.asarray(problem.y), dtype=torch.long)
        logits = self.model(x).detach().numpy()
        expected = np.asarray(lmc.eval_apply(problem.module)(problem.params, problem.state,
                                                             problem.x))
        self.logit_diff = float(np.max(np.abs(logits - expected)))
        n = x.shape[0] // BATCH_SIZE * BATCH_SIZE  # batches_of drops the rest too
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:n], y[:n]),
                                             batch_size=BATCH_SIZE, shuffle=False)
        with quiet():
            self.hessian = hessian(self.model, torch.nn.CrossEntropyLoss(), dataloader=loader,
                                   cuda=False)
        self.hvps = 0
        product = self.hessian.dataloader_hv_product

        def counted(v: Any) -> Any:
            self.hvps += 1
            return product(v)

        self.hessian.dataloader_hv_product = counted

    def eigenvalue(self, seed: int) -> tuple[float, int]:
        """(λ_max, HVPs) by PyHessian's power iteration."""
        self.torch.manual_seed(seed)
        self.hvps = 0
        with quiet():
            values, _ = self.hessian.eigenvalues(maxIter=MAX_ITER, tol=TOL, top_n=1)
        return float(values[0]), self.hvps

    def trace(self, seed: int) -> tuple[float, float, int]:
        """(trace, standard error, HVPs) by PyHessian's Hutchinson estimator."""
        self.torch.manual_seed(seed)
        self.hvps = 0
        with quiet():
            samples = np.asarray(self.hessian.trace(maxIter=MAX_ITER, tol=TOL))
        se = float(samples.std(ddof=1) / np.sqrt(samples.size)) if samples.size > 1 else np.nan
        return float(samples.mean()), se, self.hvps


# ----------------------------------------------------------------------------- accuracy


@dataclass(frozen=True)
class Method:
    """One row of the accuracy table: `run(seed) -> (estimate, uncertainty, HVPs, flag)`."""

    quantity: str  # "lambda_max" or "trace"
    name: str
    run: Callable[[int], tuple[float, float, int, bool | None]]
    seeded: bool = True  # run with every seed (else seed 0 only)


def lmc_methods(op: HessianOperator, sizes: Sizes) -> list[Method]:
    """lmc's estimators with PyHessian's settings where they have them."""

    def lanczos(steps: int) -> Callable[[int], tuple[float, float, int, bool | None]]:
        def run(seed: int) -> tuple[float, float, int, bool | None]:
            e = top_eigenpairs(op, 1, steps=steps, tol=TOL, seed=seed)
            return (float(e.eigenvalues[0]), float(e.residuals[0] / abs(e.eigenvalues[0])),
                    e.num_matvecs, bool(e.converged[0]))
        return run

    def power(seed: int) -> tuple[float, float, int, bool | None]:
        e = power_iteration(op, 1, max_iterations=MAX_ITER, tol=TOL, seed=seed)
        return (float(e.eigenvalues[0]), float(e.residuals[0] / abs(e.eigenvalues[0])),
                e.num_matvecs, bool(e.converged[0]))

    def hutchinson(seed: int) -> tuple[float, float, int, bool | None]:
        t = hutchinson_trace(op, MAX_ITER, probe_batch=sizes.probe_batch, tol=TOL, seed=seed)
        return t.trace, t.standard_error, t.num_matvecs, t.standard_error <= TOL * abs(t.trace)

    def hutchpp(budget: int) -> Callable[[int], tuple[float, float, int, bool | None]]:
        def run(seed: int) -> tuple[float, float, int, bool | None]:
            t = hutchpp_trace(op, budget, seed=seed)
            return t.trace, t.standard_error, t.num_matvecs, None
        return run

    # Lanczos compiles a new program per call (see the overheads table): seed 0 only.
    methods = [Method("lambda_max", f"lmc Lanczos, {s} steps", lanczos(s), seeded=False)
               for s in sizes.lanczos_steps]
    methods.append(Method("lambda_max", f"lmc power iteration (≤{MAX_ITER}, tol {TOL:g})",
                          power))
    methods.append(Method("trace", f"lmc Hutchinson (≤{MAX_ITER} probes, tol {TOL:g})",
                          hutchinson))
    methods += [Method("trace", f"lmc Hutch++, {b} HVPs", hutchpp(b))
                for b in sizes.hutchpp_budgets]
    return methods


def pyhessian_methods(runner: PyHessianRunner) -> list[Method]:
    def eig(seed: int) -> tuple[float, float, int, bool | None]:
        value, hvps = runner.eigenvalue(seed)
        return value, float("nan"), hvps, hvps < MAX_ITER

    def trace(seed: int) -> tuple[float, float, int, bool | None]:
        value, se, hvps = runner.trace(seed)
        return value, se, hvps, hvps < MAX_ITER

    return [Method("lambda_max", f"PyHessian power iteration (≤{MAX_ITER}, tol {TOL:g})", eig),
            Method("trace", f"PyHessian Hutchinson (≤{MAX_ITER} probes, tol {TOL:g})", trace)]


def accuracy_rows(problem: Problem, sizes: Sizes, seeds: int, repeats: int,
                  with_pyhessian: bool, notes: list[str]) -> tuple[list[dict], dict]:
    """Every estimator against the exact Hessian of `problem`; and facts about the problem."""
    h, exact_seconds = exact_hessian(problem)
    eigenvalues = np.linalg.eigvalsh(h)
    exact = {"lambda_max": float(eigenvalues[-1]), "trace": float(np.trace(h))}
    op = problem.operator()
    dense_diff = float(np.max(np.abs(op.dense() - h)) / np.max(np.abs(h)))
    hvp_seconds = best_times({"hvp": lambda: op.matvec(jnp.ones(op.dim, op.dtype))},
                             repeats)["hvp"]
    facts = {
        "model": problem.name, "dim": op.dim, "examples": int(problem.y.shape[0]),
        "train_accuracy": problem.train_accuracy, "exact_seconds": exact_seconds,
        "lambda_max": exact["lambda_max"], "lambda_2": float(eigenvalues[-2]),
        "lambda_min": float(eigenvalues[0]), "trace": exact["trace"],
        "frobenius": float(np.linalg.norm(h)), "dense_vs_exact_max_rel_diff": dense_diff,
        "lmc_hvp_seconds": hvp_seconds,
    }
    methods = lmc_methods(op, sizes)
    if with_pyhessian:
        runner = PyHessianRunner(problem)
        facts["pyhessian_logit_max_abs_diff"] = runner.logit_diff
        facts["pyhessian_hvp_seconds"] = best_times(
            {"hvp": lambda: runner.hessian.dataloader_hv_product(
                [runner.torch.ones_like(p) for p in runner.hessian.params])}, repeats)["hvp"]
        methods += pyhessian_methods(runner)
    print(f"{problem.name}: dim {op.dim}, λ_max {exact['lambda_max']:.4f}, trace "
          f"{exact['trace']:.3f}, exact Hessian in {exact_seconds:.1f} s", file=sys.stderr,
          flush=True)

    results: dict[str, list[tuple[float, float, int, bool | None]]] = {}
    times: dict[str, list[float]] = {}
    for m in methods:  # every seed once, after a warm-up (compilation) of seed 0
        if m.seeded:  # (Lanczos compiles on every call: no warm-up helps)
            m.run(0)
        results[m.name], times[m.name] = [], []
        for seed in range(seeds if m.seeded else 1):
            start = time.perf_counter()
            results[m.name].append(m.run(seed))
            times[m.name].append(time.perf_counter() - start)
    for _ in range(repeats - 1):  # more timings of seed 0, interleaved
        for m in methods:
            start = time.perf_counter()
            m.run(0)
            times[m.name][0] = min(times[m.name][0], time.perf_counter() - start)

    rows = []
    for m in methods:
        runs = results[m.name]
        errors = np.asarray([(r[0] - exact[m.quantity]) / abs(exact[m.quantity]) for r in runs])
        value, uncertainty, hvps, flag = runs[0]
        rows.append({
            "model": problem.name, "dim": op.dim, "quantity": m.quantity, "method": m.name,
            "exact": exact[m.quantity], "estimate": value, "rel_error": float(errors[0]),
            "seeds": len(runs), "mean_abs_rel_error": float(np.mean(np.abs(errors))),
            "max_abs_rel_error": float(np.max(np.abs(errors))),
            "within_tol_fraction": float(np.mean(np.abs(errors) <= TOL)),
            "uncertainty": uncertainty, "flag": flag, "hvps": hvps,
            "mean_hvps": float(np.mean([r[2] for r in runs])),
            "seconds": times[m.name][0], "seconds_per_hvp": times[m.name][0] / max(hvps, 1),
            "all_rel_errors": errors.tolist(), "all_hvps": [r[2] for r in runs],
        })
    return rows, facts


def probes_needed(rows: list[dict]) -> dict[str, float]:
    """Hutchinson probes for a standard error of TOL·|trace|, from each model's run."""
    out = {}
    for r in rows:
        if r["method"].startswith("lmc Hutchinson") and r["uncertainty"] > 0:
            per_probe = r["uncertainty"] * np.sqrt(r["hvps"]) / abs(r["estimate"])
            out[r["model"]] = float((per_probe / TOL) ** 2)
    return out


# ----------------------------------------------------------------------------- HVP / grad


def model_label(model: str, module: Any) -> str:
    """ "mlp 40-256-256-10" or "conv1d 25 ch" ."""
    if model == "mlp":
        return f"mlp {'-'.join(map(str, (40, *module.widths, module.num_classes)))}"
    return f"{model} {module.channels} ch" if hasattr(module, "channels") else model


def hvp_rows(model: str, options: dict[str, Any], dataset: lmc.Dataset, examples: int,
             repeats: int, threads: int, with_torch: bool) -> list[dict]:
    """Seconds of a loss, a gradient and HVPs (lmc's and plain ones) on `examples` examples."""
    module = lmc.build_model(model, dataset.num_classes, **options)
    params, state = lmc.init_model(module, jax.random.key(0), dataset.input_shape)
    loss = loss_of(module, state)
    x, y = dataset.x_train[:examples], dataset.y_train[:examples]
    op = HessianOperator(loss, params, batches_of(x, y, examples))
    v = jax.random.normal(jax.random.key(1), (op.dim,), op.dtype)
    vs = jax.random.normal(jax.random.key(2), (10, op.dim), op.dtype)
    v_tree = op.to_tree(v)
    loss_jit = jax.jit(loss)
    grad_jit = jax.jit(jax.grad(loss))
    tree_hvp = jax.jit(make_hvp(loss))
    one_batch = batches_of(x, y, examples)
    fwd_rev = jax.jit(lambda p, t: jax.jvp(lambda q: jax.grad(loss)(q, x, y), (p,), (t,))[1])
    rev_rev = jax.jit(jax.grad(lambda p, t: jax.tree.reduce(
        jnp.add, jax.tree.map(jnp.vdot, jax.grad(loss)(p, x, y), t)), argnums=0))
    fns: dict[str, Callable[[], Any]] = {
        "loss (forward)": lambda: loss_jit(params, x, y),
        "gradient": lambda: grad_jit(params, x, y),
        "HVP forward-over-reverse (plain jvp(grad))": lambda: fwd_rev(params, v_tree),
        "HVP reverse-over-reverse (plain grad(vdot(grad)))": lambda: rev_rev(params, v_tree),
        "HVP lmc make_hvp (trees)": lambda: tree_hvp(params, one_batch, v_tree),
        "HVP lmc HessianOperator.matvec (flat)": lambda: op.matvec(v),
        "HVP lmc HessianOperator.matmat, per vector of 10": lambda: op.matmat(vs),
    }
    per_call = {"HVP lmc HessianOperator.matmat, per vector of 10": 10}
    if with_torch and model == "mlp":
        fns.update(torch_hvp_fns(params, x, y, threads))
    times = best_times(fns, repeats)
    times = {k: t / per_call.get(k, 1) for k, t in times.items()}
    rows = []
    for impl, seconds in times.items():
        framework = "pytorch" if impl.startswith("pytorch") else "jax"
        grad_key = "pytorch gradient" if framework == "pytorch" else "gradient"
        rows.append({"model": model_label(model, module), "options": options, "dim": op.dim,
                     "examples": examples, "framework": framework, "what": impl, "seconds": seconds,
                     "over_gradient": seconds / times[grad_key]})
    return rows


def torch_hvp_fns(params: Any, x: jax.Array, y: jax.Array,
                  threads: int) -> dict[str, Callable[[], Any]]:
    """PyTorch gradient and double-backward HVP (as PyHessian computes it) of the same MLP."""
    import torch

    net = torch_mlp(params, int(np.prod(x.shape[1:])))
    tx, ty = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y), dtype=torch.long)
    ps = list(net.parameters())
    vs = [torch.randn_like(p) for p in ps]
    criterion = torch.nn.CrossEntropyLoss()

    def grad() -> Any:
        torch.set_num_threads(threads)
        return torch.autograd.grad(criterion(net(tx), ty), ps)

    def hvp() -> Any:
        torch.set_num_threads(threads)
        g = torch.autograd.grad(criterion(net(tx), ty), ps, create_graph=True)
        return torch.autograd.grad(g, ps, grad_outputs=vs)

    return {"pytorch gradient": grad, "pytorch HVP double backward (PyHessian's)": hvp}


def hvp_notes(rows: list[dict]) -> list[str]:
    """Where lmc's HVP is much slower than a plain `jvp(grad)` of the same batch."""
    notes = []
    for model in dict.fromkeys(r["model"] for r in rows):
        by = {r["what"]: r["seconds"] for r in rows if r["model"] == model}
        plain = by["HVP forward-over-reverse (plain jvp(grad))"]
        lmc_hvp = by["HVP lmc HessianOperator.matvec (flat)"]
        if lmc_hvp > 1.5 * plain:
            notes.append(f"{model}: lmc's HVP takes {lmc_hvp / plain:.1f}x the time of a plain "
                         "jvp(grad) on the same batch: `make_hvp` runs the batches in a "
                         "`lax.scan`, and XLA's CPU convolutions inside a loop are several "
                         "times slower than outside one.")
    return notes


# ----------------------------------------------------------------------------- overheads


def overhead_rows(problem: Problem, steps: int, repeats: int) -> list[dict]:
    """Seconds of a first and a repeated `top_eigenpairs` call on a new operator against
    the seconds of its HVPs, and the size of the compiled HVP program."""
    op = problem.operator()
    start = time.perf_counter()
    top_eigenpairs(op, 1, steps=steps)
    first = time.perf_counter() - start
    hvp = best_times({"hvp": lambda: op.matvec(jnp.ones(op.dim, op.dtype))}, repeats)["hvp"]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        top_eigenpairs(op, 1, steps=steps)
        best = min(best, time.perf_counter() - start)
    hlo = len(op._matvec.lower(op.operands, jnp.ones(op.size, op.dtype)).as_text())
    return [{"model": problem.name, "examples": int(problem.y.shape[0]), "steps": steps,
             "first_call_seconds": first, "top_eigenpairs_seconds": best, "hvp_seconds": hvp,
             "hvps_seconds": (steps + 1) * hvp, "hlo_chars_of_one_hvp": hlo,
             "data_floats": int(np.prod(problem.x.shape))}]


# ----------------------------------------------------------------------------- predictions

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
# the programs built from the HVP (matvec, Lanczos driven or looped, curvature chunks and
# D's CG: "run"), the gradient and the batch losses ("loss" of `_eval_loss`)
HVP_PROGRAMS = {"hvp", "lanczos", "_lanczos_init", "one", "run", "grad", "loss"}


@contextlib.contextmanager
def compiled_programs() -> Iterator[list[tuple[str, float]]]:
    """(name, seconds) of every XLA compilation inside the block (jax.monitoring)."""
    seen: list[tuple[str, float]] = []

    def listen(event: str, seconds: float, **kwargs: Any) -> None:
        if event == BACKEND_COMPILE:
            name = str(kwargs.get("fun_name"))
            seen.append((name.removeprefix("jit(").removesuffix(")"), seconds))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def prediction_rows(dataset: lmc.Dataset, widths: tuple[int, ...] = (100, 100),
                    examples: int = 2000, batch_size: int = 100) -> list[dict]:
    """Seconds and compilations of a first prediction and of a second one on another
    checkpoint (other parameters, mask and live count) of the same network."""
    from lmc.core import masks, prune
    from lmc.core.operators import StatefulLoss
    from lmc.core.prune_ratio import predict_prune_ratio
    from lmc.training.models import build_model, eval_apply, init_model
    from lmc.workflows.opened import _eval_loss

    module = build_model("mlp", dataset.num_classes, widths=widths)
    loss = _eval_loss(eval_apply(module))
    batches = batches_of(dataset.x_train[:examples], dataset.y_train[:examples], batch_size)
    rows = []
    for which, seed, density in (("first prediction (new network)", 0, 0.8),
                                 ("second prediction, other checkpoint of the same network",
                                  1, 0.64)):
        params, state = init_model(module, jax.random.key(seed), dataset.input_shape)
        mask = prune.prune(params, masks.dense_mask(params), 1 - density)  # magnitude
        fn = StatefulLoss(loss, state)
        start = time.perf_counter()
        with compiled_programs() as seen:
            op = HessianOperator(fn, params, batches, mask=mask,
                                 select=masks.prunable(params))
            pred = predict_prune_ratio(op, fn, prune.scores("magnitude", params))
            seconds = time.perf_counter() - start
        hvp_based = [(n, t) for n, t in seen if n in HVP_PROGRAMS]
        rows.append({"model": model_label("mlp", module), "which": which, "dim": op.dim,
                     "examples": examples, "seconds": seconds, "compilations": len(seen),
                     "compile_seconds": sum(t for _, t in seen),
                     "hvp_compilations": len(hvp_based),
                     "hvp_compile_seconds": sum(t for _, t in hvp_based),
                     "programs": sorted({n for n, _ in seen}) if len(seen) <= 10 else None,
                     "lambda_max": pred.lambda_max,
                     "safe_compensated": pred.safe.compensated.ratio})
        print(f"{which}: {seconds:.1f} s, {len(seen)} compilations "
              f"({len(hvp_based)} HVP-based)", file=sys.stderr, flush=True)
    return rows


def prediction_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    first = rows[0]["seconds"]
    lines = ["", "## Second prediction: another checkpoint of the same network", "",
             "| model | prediction | live prunable | s | × first | XLA compilations "
             "| compile s | HVP-based compilations | their compile s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['which']} | {r['dim']:,} | {r['seconds']:.1f} "
                     f"| {r['seconds'] / first:.2f} | {r['compilations']} "
                     f"| {r['compile_seconds']:.1f} | {r['hvp_compilations']} "
                     f"| {r['hvp_compile_seconds']:.1f} |")
    lines += ["", "- Both rows in one run (the machine may be loaded: compare within the run). "
              "HVP-based: the matvec, Lanczos (driven steps or the loop), the curvature "
              "chunks, D's CG, the gradient and the batch losses. What the second still "
              "compiles: " + ", ".join(rows[-1].get("programs") or ["(more than 10)"])
              + " (draws of the live count's shape)."]
    return lines


def add_prediction_rows(out: Path, backend: str, rows: list[dict]) -> None:
    """Put the prediction rows into existing results (`--prediction-only`)."""
    import json

    name = f"hessian_{backend}"
    record = json.loads((out / f"{name}.json").read_text())
    record["second_prediction"] = rows
    record.setdefault("settings", {})["second_prediction_load_average"] = os.getloadavg()
    table = (out / f"{name}.md").read_text()
    marker = "\n## Second prediction"
    if marker in table:
        table = table[: table.index(marker)].rstrip("\n") + "\n"
    table = table.rstrip("\n") + "\n" + "\n".join(prediction_table(rows)) + "\n"
    write_results(out, name, record, table)


# ----------------------------------------------------------------------------- output


def _num(x: float | None, fmt: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return ""
    return format(x, fmt)


def _flag(x: bool | None) -> str:
    return "" if x is None else ("yes" if x else "no")


def markdown(info: dict[str, Any], settings: dict[str, Any], facts: list[dict],
             accuracy: list[dict], hvp: list[dict], overheads: list[dict],
             notes: list[str]) -> str:
    """The three tables with a header describing the machine."""
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    lines = [
        f"# Hessian ({info['backend']})", "",
        f"{machine}. {settings['examples']} MNIST-1D training examples in batches of "
        f"{BATCH_SIZE}; best of {settings['repeats']} interleaved repeats; randomised "
        f"methods over {settings['seeds']} seeds.", "",
        "## Problems", "",
        "| model | params | train acc | λ_max | λ_2 | λ_min | trace | exact Hessian s "
        "| lmc dense vs exact | torch logits diff | lmc ms/HVP | PyHessian ms/HVP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in facts:
        torch_ms = f.get("pyhessian_hvp_seconds")
        lines.append(
            f"| {f['model']} | {f['dim']} | {100 * f['train_accuracy']:.1f}% "
            f"| {f['lambda_max']:.4f} | {f['lambda_2']:.4f} | {f['lambda_min']:.2e} "
            f"| {f['trace']:.3f} | {f['exact_seconds']:.1f} "
            f"| {f['dense_vs_exact_max_rel_diff']:.1e} "
            f"| {_num(f.get('pyhessian_logit_max_abs_diff'), '.1e')} "
            f"| {1e3 * f['lmc_hvp_seconds']:.2f} "
            f"| {_num(None if torch_ms is None else 1e3 * torch_ms, '.2f')} |")
    lines += [
        "", "## Accuracy against the exact Hessian", "",
        "rel err: (estimate − exact)/exact for seed 0; mean/max |rel err| over seeds; "
        "≤1e-3: fraction of seeds within 1e-3. unc.: the method's own uncertainty "
        "(Lanczos/power: residual ‖Hv − λv‖/λ; trace: standard error). stop: converged "
        "flag (lmc Lanczos: residual ≤ 1e-3·λ; power iterations: their stopping rule "
        "fired before the iteration cap; lmc Hutchinson: SE ≤ 1e-3·|trace|; PyHessian "
        "Hutchinson: stopped before its cap). HVPs and seconds: seed 0.", "",
        "| model | quantity | method | estimate | rel err | mean \\|rel err\\| "
        "| max \\|rel err\\| | ≤1e-3 | unc. | stop | HVPs | mean HVPs | seconds | ms/HVP |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in accuracy:
        q = "λ_max" if r["quantity"] == "lambda_max" else "trace"
        lines.append(
            f"| {r['model']} | {q} | {r['method']} | {r['estimate']:.5g} "
            f"| {r['rel_error']:+.1e} | {r['mean_abs_rel_error']:.1e} "
            f"| {r['max_abs_rel_error']:.1e} | {r['within_tol_fraction']:.0%} "
            f"| {_num(r['uncertainty'], '.2g')} | {_flag(r['flag'])} | {r['hvps']} "
            f"| {r['mean_hvps']:.0f} | {r['seconds']:.2f} | {1e3 * r['seconds_per_hvp']:.1f} |")
    lines += [
        "", f"## HVP time over gradient time ({settings['hvp_examples']} examples, one batch)",
        "", "| model | params | framework | what | ms | × gradient |",
        "|---|---:|---|---|---:|---:|",
    ]
    for r in hvp:
        lines.append(f"| {r['model']} | {r['dim']} | {r['framework']} | {r['what']} "
                     f"| {1e3 * r['seconds']:.2f} | {r['over_gradient']:.2f} |")
    lines += [
        "", "## Overheads of a repeated `top_eigenpairs` call", "",
        "| model | examples | steps | first call s | repeated call s | its HVPs s "
        "| HLO chars of one HVP | data floats |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in overheads:
        lines.append(f"| {r['model']} | {r['examples']} | {r['steps']} "
                     f"| {r['first_call_seconds']:.2f} | {r['top_eigenpairs_seconds']:.2f} "
                     f"| {r['hvps_seconds']:.2f} "
                     f"| {r['hlo_chars_of_one_hvp']:,} | {r['data_floats']:,} |")
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test of every row on tiny sizes (numbers meaningless)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per row, the best counts (default 3; 1 with --quick)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds of the randomised estimators (default 5; 2 with --quick)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="PyTorch threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                        help="directory for the .json and .md results")
    parser.add_argument("--prediction-only", action="store_true",
                        help="run only the second-prediction row, added to the results")
    args = parser.parse_args(argv)
    if args.prediction_only:
        rows = prediction_rows(lmc.load_dataset("mnist1d"))
        add_prediction_rows(args.out, jax.default_backend(), rows)
        return
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    seeds = args.seeds or (2 if args.quick else 5)
    backend = jax.default_backend()
    start = time.perf_counter()
    load_before = os.getloadavg()

    notes: list[str] = []
    with_pyhessian = package_version("pyhessian") is not None
    if with_pyhessian:
        import torch

        torch.set_num_threads(args.torch_threads)
    else:
        notes.append("PyHessian is not installed (`pip install pyhessian --no-deps` next to "
                     "torch): its rows are left out.")
    with_torch = package_version("torch") is not None

    dataset = lmc.load_dataset("mnist1d")
    facts, accuracy = [], []
    problems = [trained_mlp(w, sizes.duration, dataset) for w in sizes.widths]
    for problem in problems:
        rows, fact = accuracy_rows(problem, sizes, seeds, repeats, with_pyhessian, notes)
        accuracy += rows
        facts.append(fact)
    needed = probes_needed(accuracy)
    notes.append("Hutchinson probes for a standard error of 1e-3·trace (extrapolated from "
                 "the 100-probe standard error): "
                 + ", ".join(f"{m}: {n:,.0f}" for m, n in needed.items()) + ".")

    hvp = []
    for model, options in sizes.hvp_models:
        print(f"HVP/gradient: {model}", file=sys.stderr, flush=True)
        hvp += hvp_rows(model, options, dataset, sizes.hvp_examples, repeats,
                        args.torch_threads, with_torch)
    overheads = overhead_rows(problems[-1], 20, repeats)
    notes += hvp_notes(hvp)
    predictions = prediction_rows(dataset, (32,) if args.quick else (100, 100),
                                  400 if args.quick else 2000)

    info = machine_info(torch=package_version("torch"), torch_threads=args.torch_threads,
                        pyhessian=package_version("pyhessian"))
    settings = {"quick": args.quick, "repeats": repeats, "seeds": seeds, "tol": TOL,
                "max_iter": MAX_ITER, "batch_size": BATCH_SIZE,
                "examples": int(dataset.y_train.shape[0]), "train_duration": sizes.duration,
                "lanczos_steps": list(sizes.lanczos_steps),
                "hutchpp_budgets": list(sizes.hutchpp_budgets),
                "hvp_examples": sizes.hvp_examples, "probe_batch": sizes.probe_batch,
                "load_average_before": load_before, "load_average_after": os.getloadavg(),
                "wall_seconds": time.perf_counter() - start}
    table = markdown(info, settings, facts, accuracy, hvp, overheads, notes)
    table = table.rstrip("\n") + "\n" + "\n".join(prediction_table(predictions)) + "\n"
    name = f"hessian_{backend}{'_quick' if args.quick else ''}"
    write_results(args.out, name,
                  {"machine": info, "settings": settings, "problems": facts,
                   "accuracy": accuracy, "hvp_over_gradient": hvp, "overheads": overheads,
                   "second_prediction": predictions, "notes": notes}, table)


if __name__ == "__main__":
    main()
