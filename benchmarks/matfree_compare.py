"""matfree 0.6.3 against `lmc.core.curvature`: accuracy against the exact Hessian, and speed.

matfree (Krämer et al.) is a JAX library of matrix-free Lanczos (`decomp.tridiag_sym`,
`eig.eigh_partial`), stochastic Lanczos quadrature (`funm.monte_carlo_funm_sym`) and
stochastic trace estimators (`stochtrace`: Hutchinson, and XTrace — it has no Hutch++;
XTrace, Epperly, Tropp & Webber 2024, is its leave-one-out successor). Two tables:

- **Accuracy**: an MLP 40-16-10 (826 parameters) at `lmc.init_model`'s initialisation, the
  Hessian of the mean loss over 2,000 MNIST-1D training examples (batches of 1000); exact
  by `jax.hessian` of the raveled loss, `eigvalsh` in float64. λ_max (top 1) and the top 5
  by Lanczos at several step counts, from the same start vector in lmc and matfree; the
  trace by Hutchinson (same Rademacher probes in both), by Hutch++ (lmc) and XTrace
  (matfree) with the same number of HVPs; and the first two moments implied by SLQ
  (tr H and tr(H²)/d) from the same probes. Randomised rows over `--seeds` seeds.
- **Speed**: the MLP 40-100-100-10 (15,210 parameters) and the conv1d net over 2,000
  examples (2 batches of 1000), random weights: one HVP, Lanczos (`--steps` steps), SLQ
  (4 probes), Hutch++/XTrace and Hutchinson with equal HVP counts. lmc under both execution
  policies (Lanczos in one `fori_loop`, or driven from Python one compiled step at a
  time; the HVP is the same program in both), matfree as it comes (its Lanczos is always
  one `fori_loop`). Both compile `HessianOperator.function` with the operands
  (parameters, data) as arguments. First call: on a new operator (compilation included);
  steady state: the median of `--repeats` interleaved repeats.

Both libraries run the same HVP, so the comparison is of the algorithms and their
layout. The machine may be shared: rows are interleaved, medians reported.

    python benchmarks/matfree_compare.py [--quick] [--repeats R] [--seeds S] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine_info, package_version, write_results
from jax.flatten_util import ravel_pytree

import lmc
from lmc.core.batching import batches_of
from lmc.core.curvature import (
    _rademacher,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    spectral_density,
    top_eigenpairs,
)
from lmc.core.operators import HessianOperator
from lmc.core.policy import ExecutionPolicy
from lmc.training.models import policy_for

BATCH_SIZE = 1000
FORI = ExecutionPolicy.for_model(convolutional=False)  # Lanczos in one fori_loop
DRIVEN = ExecutionPolicy.for_model(convolutional=True)  # Lanczos driven from Python


# ----------------------------------------------------------------------------- problems


def problem(model: str, options: dict[str, Any], dataset: lmc.Dataset, examples: int,
            seed: int = 0) -> tuple[Any, Callable, Any, Any]:
    """(module, loss(params, x, y), params, batches) at random initial weights."""
    module = lmc.build_model(model, dataset.num_classes, **options)
    params, state = lmc.init_model(module, jax.random.key(seed), dataset.x_train.shape[1:])
    apply_fn = lmc.eval_apply(module)

    def loss(p: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return lmc.cross_entropy(apply_fn(p, state, x), y)

    batches = batches_of(dataset.x_train[:examples], dataset.y_train[:examples],
                         min(BATCH_SIZE, examples // 2))
    return module, loss, params, batches


def exact_hessian(loss: Callable, params: Any, batches: Any) -> np.ndarray:
    flat, unravel = ravel_pytree(params)
    xs, ys = batches

    def total(w: jax.Array) -> jax.Array:
        return jnp.mean(jax.vmap(lambda x, y: loss(unravel(w), x, y))(xs, ys))

    h = np.asarray(jax.jit(jax.hessian(total))(flat), np.float64)
    return (h + h.T) / 2


# ----------------------------------------------------------------------------- matfree


def mf_matvec(op: HessianOperator) -> Callable:
    """matfree's matvec convention `(v, *params)`: the operands are its parameters."""
    function = op.function
    return lambda v, operands: function(operands, v)


def mf_tridiag(op: HessianOperator, steps: int) -> Callable:
    """`run(operands, v0) -> (Q (steps, dim), (diag, offdiag), residual vector)`, jitted."""
    from matfree import decomp

    tridiag = decomp.tridiag_sym(steps, materialize=False)
    matvec = mf_matvec(op)

    def run(operands: Any, v0: jax.Array) -> tuple:
        Q, (d, e), r, _ = tridiag(matvec, v0, operands)
        return Q, (d, e), r

    return jax.jit(run)


def mf_eigh(Q: jax.Array, d: jax.Array, e: jax.Array, r: jax.Array, k: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """The top-k Ritz values of a matfree tridiagonalisation (what `eig.eigh_partial`
    computes: eigh of T, vectors Sᵀ Q) and matfree's a-posteriori residual estimates
    ‖r‖·|s_last,i| (no extra HVP; lmc computes ‖H v − λ v‖ with one HVP each)."""
    T = jnp.diag(d) + jnp.diag(e, 1) + jnp.diag(e, -1)
    theta, S = jnp.linalg.eigh(T)
    order = jnp.argsort(-theta)[:k]
    estimate = jnp.linalg.norm(r) * jnp.abs(S[-1, order])
    return np.asarray(theta[order]), np.asarray(estimate)


def mf_slq(op: HessianOperator, steps: int, fn: Callable, probes: jax.Array) -> Callable:
    """`run(operands) -> mean_z zᵀ f(H) z` by matfree's SLQ integrand on fixed probes."""
    from matfree import decomp, funm, stochtrace

    integrand = funm.monte_carlo_funm_sym(funm.dense_funm_sym_eigh(fn),
                                          decomp.tridiag_sym(steps))
    estimate = stochtrace.estimator_monte_carlo(integrand, lambda _key: probes)
    matvec = mf_matvec(op)
    key = jax.random.PRNGKey(0)  # unused: the sampler returns the fixed probes
    return jax.jit(lambda operands: estimate(matvec, key, operands))


def mf_slq_nodes(op: HessianOperator, steps: int, probes: jax.Array) -> Callable:
    """Nodes and weights from matfree's tridiagonalisation (it returns none itself)."""
    run = mf_tridiag(op, steps)

    def nodes(operands: Any) -> tuple[jax.Array, jax.Array]:
        _, (d, e), _ = jax.vmap(run, in_axes=(None, 0))(operands, probes)
        T = jax.vmap(lambda a, b: jnp.diag(a) + jnp.diag(b, 1) + jnp.diag(b, -1))(d, e)
        theta, S = jnp.linalg.eigh(T)
        return theta, S[:, 0, :] ** 2

    return jax.jit(nodes)


def mf_hutchinson(op: HessianOperator, probes: jax.Array) -> Callable:
    """`run(operands) -> (mean, sem)`, matfree's Monte-Carlo estimator on fixed probes."""
    from matfree import stochtrace

    estimate = stochtrace.estimator_monte_carlo_mean_and_sem(stochtrace.monte_carlo_trace(),
                                                             lambda _key: probes)
    matvec = mf_matvec(op)
    key = jax.random.PRNGKey(0)
    return jax.jit(lambda operands: estimate(matvec, key, operands))


def mf_xtrace(op: HessianOperator, samples: int) -> Callable:
    """`run(operands, key) -> (trace, sem)` by XTrace with `samples` Gaussian probes
    (2·samples HVPs)."""
    from matfree import stochtrace

    sampler = stochtrace.sampler_normal(jnp.zeros(op.dim, op.dtype), num=samples)
    estimate = stochtrace.estimator_leave_one_out_mean_and_sem(
        stochtrace.leave_one_out_xtrace(), sampler)
    matvec = mf_matvec(op)
    return jax.jit(lambda operands, key: estimate(matvec, key, operands))


def lmc_probes(dim: int, num: int, seed: int, batch: int, dtype: Any) -> jax.Array:
    """The Rademacher probes `hutchinson_trace(…, probe_batch=batch, seed=seed)` draws."""
    key = jax.random.key(seed)
    return jnp.concatenate([_rademacher(jax.random.fold_in(key, j),
                                        (min(batch, num - j), dim), dtype)
                            for j in range(0, num, batch)])


# ----------------------------------------------------------------------------- accuracy


def accuracy_rows(dataset: lmc.Dataset, examples: int, seeds: int, lanczos_steps: tuple,
                  budgets: tuple, slq_steps: int, slq_probes: int
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    _, loss, params, batches = problem("mlp", {"widths": (16,)}, dataset, examples)
    start = time.perf_counter()
    h = exact_hessian(loss, params, batches)
    exact_seconds = time.perf_counter() - start
    lam = np.linalg.eigvalsh(h)[::-1]
    op = HessianOperator(loss, params, batches, policy=FORI)
    d = op.dim
    exact = {"lambda_max": float(lam[0]), "top5": lam[:5].tolist(), "trace": float(lam.sum()),
             "m2": float(np.sum(lam ** 2) / d)}
    facts = {"model": "mlp 40-16-10 (init)", "dim": d, "examples": examples,
             "exact_seconds": exact_seconds, **exact, "lambda_min": float(lam[-1]),
             "dense_vs_exact_max_rel_diff": float(np.max(np.abs(op.dense() - h))
                                                  / np.max(np.abs(h)))}
    print(f"accuracy: dim {d}, λ_max {lam[0]:.5g}, trace {lam.sum():.5g}", file=sys.stderr,
          flush=True)
    rows: list[dict[str, Any]] = []

    def add(quantity: str, library: str, method: str, hvps: int, errors: list[float],
            estimates: list[float], extra: dict[str, Any] | None = None) -> None:
        e = np.abs(np.asarray(errors))
        rows.append({"quantity": quantity, "library": library, "method": method, "hvps": hvps,
                     "estimate_seed0": estimates[0], "rel_error_seed0": errors[0],
                     "median_abs_rel_error": float(np.median(e)),
                     "max_abs_rel_error": float(e.max()), "seeds": len(errors),
                     **(extra or {})})

    # λ_max and the top 5 by Lanczos, same start vector in both.
    for steps in lanczos_steps:
        run = mf_tridiag(op, steps)
        for k in (1, 5):
            if k > steps:
                continue
            err_l, err_m, est_l, est_m, res_l, res_m, conv_l, agree = [], [], [], [], [], [], [], []
            for seed in range(seeds):
                e = top_eigenpairs(op, k, steps=steps, seed=seed)
                v0 = jax.random.normal(jax.random.key(seed), (d,), op.dtype)
                Q, (dd, ee), r = run(op.operands, v0)
                values, estimate = mf_eigh(Q, dd, ee, r, k)
                ref = lam[:k]
                err_l.append(float(np.max(np.abs(e.eigenvalues - ref) / np.abs(ref))))
                err_m.append(float(np.max(np.abs(values - ref) / np.abs(ref))))
                est_l.append(float(e.eigenvalues[0]))
                est_m.append(float(values[0]))
                res_l.append(float(np.max(e.residuals / np.abs(e.eigenvalues))))
                res_m.append(float(np.max(estimate / np.abs(values))))
                conv_l.append(bool(np.all(e.converged)))
                agree.append(float(np.max(np.abs(e.eigenvalues - values) / np.abs(ref))))
            q = "λ_max" if k == 1 else "top 5 (max over the 5)"
            add(q, "lmc", f"top_eigenpairs, {steps} steps", steps + k, err_l, est_l,
                {"max_rel_residual": float(np.max(res_l)), "converged_fraction":
                 float(np.mean(conv_l)), "residual_kind": "‖Hv−λv‖/|λ| (k HVPs)"})
            add(q, "matfree", f"tridiag_sym + eigh, {steps} steps", steps, err_m, est_m,
                {"max_rel_residual": float(np.max(res_m)), "converged_fraction": None,
                 "residual_kind": "‖r‖·|s_last|/|λ| (estimate, no HVP)",
                 "max_rel_diff_to_lmc": float(np.max(agree))})
        print(f"  Lanczos {steps} steps done", file=sys.stderr, flush=True)

    # Hutchinson with the same probes; Hutch++ vs XTrace with the same HVP count.
    for budget in budgets:
        m = budget // 3 * 3
        samples = budget // 2
        xtrace = mf_xtrace(op, samples)
        err_l, err_m, est_l, est_m = [], [], [], []
        for seed in range(seeds):
            t = hutchpp_trace(op, budget, seed=seed)
            tm, _ = xtrace(op.operands, jax.random.PRNGKey(seed))
            err_l.append((t.trace - exact["trace"]) / abs(exact["trace"]))
            err_m.append((float(tm) - exact["trace"]) / abs(exact["trace"]))
            est_l.append(t.trace)
            est_m.append(float(tm))
        add("trace", "lmc", f"hutchpp_trace, {m} HVPs", m, err_l, est_l)
        add("trace", "matfree", f"XTrace (leave_one_out_xtrace), {2 * samples} HVPs",
            2 * samples, err_m, est_m)
        n = budget
        err_l, err_m, est_l, est_m, agree = [], [], [], [], []
        for seed in range(seeds):
            t = hutchinson_trace(op, n, probe_batch=10, seed=seed)
            probes = lmc_probes(d, n, seed, 10, op.dtype)
            tm, _ = mf_hutchinson(op, probes)(op.operands)
            err_l.append((t.trace - exact["trace"]) / abs(exact["trace"]))
            err_m.append((float(tm) - exact["trace"]) / abs(exact["trace"]))
            est_l.append(t.trace)
            est_m.append(float(tm))
            agree.append(abs(t.trace - float(tm)) / abs(exact["trace"]))
        add("trace", "lmc", f"hutchinson_trace, {n} probes", n, err_l, est_l)
        add("trace", "matfree", f"Hutchinson (monte_carlo_trace), {n} probes, same probes", n,
            err_m, est_m, {"max_rel_diff_to_lmc": float(np.max(agree))})
        print(f"  traces at {budget} HVPs done", file=sys.stderr, flush=True)

    # SLQ: the implied trace and second moment, same probes.
    hvps = slq_probes * slq_steps
    errs: dict[str, list[float]] = {k: [] for k in ("lt", "l2", "mt", "m2")}
    ests: dict[str, list[float]] = {k: [] for k in errs}
    nodes_diff = []
    for seed in range(seeds):
        sd = spectral_density(op, num_probes=slq_probes, steps=slq_steps, seed=seed)
        probes = _rademacher(jax.random.key(seed), (slq_probes, d), op.dtype)
        lt = sd.trace()
        l2 = float(np.mean(np.sum(sd.weights * sd.nodes ** 2, axis=1)))
        mt = float(mf_slq(op, slq_steps, lambda x: x, probes)(op.operands))
        m2 = float(mf_slq(op, slq_steps, lambda x: x ** 2, probes)(op.operands)) / d
        theta, _ = mf_slq_nodes(op, slq_steps, probes)(op.operands)
        top = np.abs(np.asarray(sd.nodes[:, -1]))
        nodes_diff.append(float(np.max(np.abs(np.asarray(theta)[:, -1] - sd.nodes[:, -1])
                                       / top)))
        for key, value, ref in (("lt", lt, exact["trace"]), ("l2", l2, exact["m2"]),
                                ("mt", mt, exact["trace"]), ("m2", m2, exact["m2"])):
            errs[key].append((value - ref) / abs(ref))
            ests[key].append(value)
    add("SLQ tr H", "lmc", f"spectral_density {slq_probes}×{slq_steps}: d·Σ τθ", hvps,
        errs["lt"], ests["lt"])
    add("SLQ tr H", "matfree", f"monte_carlo_funm_sym(x) {slq_probes}×{slq_steps}", hvps,
        errs["mt"], ests["mt"])
    add("SLQ tr(H²)/d", "lmc", f"spectral_density {slq_probes}×{slq_steps}: Σ τθ²", hvps,
        errs["l2"], ests["l2"])
    add("SLQ tr(H²)/d", "matfree", f"monte_carlo_funm_sym(x²)/d {slq_probes}×{slq_steps}",
        hvps, errs["m2"], ests["m2"], {"max_rel_diff_top_node_to_lmc": float(max(nodes_diff))})
    return facts, rows


# ----------------------------------------------------------------------------- speed


def block(x: Any) -> Any:
    return jax.block_until_ready(x)


def speed_rows(dataset: lmc.Dataset, model: str, options: dict[str, Any], examples: int,
               steps: int, repeats: int, budget: int, slq_probes: int
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Rows of the speed table for one model: first call on a new operator, then the
    median of `repeats` interleaved steady-state calls."""
    module, loss, params, batches = problem(model, options, dataset, examples)
    policy = policy_for(module)
    dim = int(ravel_pytree(params)[0].size)
    v0 = jax.random.normal(jax.random.key(0), (dim,), jnp.float32)
    probes = _rademacher(jax.random.key(0), (slq_probes, dim), jnp.float32)
    hprobes = lmc_probes(dim, budget, 0, 10, jnp.float32)
    samples = budget // 2

    def new(pol: ExecutionPolicy) -> HessianOperator:
        return HessianOperator(loss, params, batches, policy=pol)

    # name -> (hvps, builder returning a zero-argument call on a new operator)
    cases: dict[str, tuple[int, Callable[[], Callable[[], Any]]]] = {}

    def case(name: str, hvps: int, builder: Callable[[], Callable[[], Any]]) -> None:
        cases[name] = (hvps, builder)

    def hvp() -> Callable[[], Any]:
        op = new(policy)

        def call() -> Any:  # `steps` separate HVPs, so that one timing is long enough
            return [op.matvec(v0) for _ in range(steps)]
        return call

    case(f"HVP (`matvec`, {steps} calls)", steps, hvp)
    for label, pol in (("fori_loop", FORI), ("driven", DRIVEN)):
        def lmc_lanczos(pol: ExecutionPolicy = pol) -> Callable[[], Any]:
            op = new(pol)
            return lambda: lanczos(op, v0, steps)
        case(f"lmc `lanczos`, {label}", steps, lmc_lanczos)

    def mf_lanczos() -> Callable[[], Any]:
        op = new(policy)
        run = mf_tridiag(op, steps)
        return lambda: run(op.operands, v0)

    case("matfree `tridiag_sym` (fori_loop)", steps, mf_lanczos)
    for label, pol in (("fori_loop", FORI), ("driven", DRIVEN)):
        def lmc_slq(pol: ExecutionPolicy = pol) -> Callable[[], Any]:
            op = new(pol)
            return lambda: spectral_density(op, num_probes=slq_probes, steps=steps, seed=0)
        case(f"lmc `spectral_density` {slq_probes} probes, {label}", slq_probes * steps,
             lmc_slq)

    def mf_slq_case() -> Callable[[], Any]:
        op = new(policy)
        run = mf_slq(op, steps, lambda x: x ** 2, probes)
        return lambda: run(op.operands)

    case(f"matfree `monte_carlo_funm_sym` {slq_probes} probes", slq_probes * steps, mf_slq_case)

    def lmc_hpp() -> Callable[[], Any]:
        op = new(policy)
        return lambda: hutchpp_trace(op, budget, seed=0)

    def mf_xt() -> Callable[[], Any]:
        op = new(policy)
        run = mf_xtrace(op, samples)
        return lambda: run(op.operands, jax.random.PRNGKey(0))

    def lmc_hutch() -> Callable[[], Any]:
        op = new(policy)
        return lambda: hutchinson_trace(op, budget, probe_batch=10, seed=0)

    def mf_hutch() -> Callable[[], Any]:
        op = new(policy)
        run = mf_hutchinson(op, hprobes)
        return lambda: run(op.operands)

    case("lmc `hutchpp_trace`", budget // 3 * 3, lmc_hpp)
    case("matfree XTrace", 2 * samples, mf_xt)
    case("lmc `hutchinson_trace` (batches of 10)", budget, lmc_hutch)
    case("matfree Hutchinson (all probes vmapped)", budget, mf_hutch)

    first, calls = {}, {}
    for name, (_, builder) in cases.items():
        start = time.perf_counter()
        call = builder()
        block(call())
        first[name] = time.perf_counter() - start
        calls[name] = call
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            block(call())
            times[name].append(time.perf_counter() - start)
    rows = []
    for name, (hvps, _) in cases.items():
        median = float(np.median(times[name]))
        rows.append({"model": model, "dim": dim, "case": name, "hvps": hvps,
                     "first_call_seconds": first[name], "median_seconds": median,
                     "min_seconds": float(np.min(times[name])), "all_seconds": times[name],
                     "hvps_per_second": hvps / median})
    print(f"speed: {model} done", file=sys.stderr, flush=True)
    return {"model": model, "dim": dim, "examples": examples,
            "policy_drive_lanczos": policy.drive_lanczos}, rows


# ----------------------------------------------------------------------------- output


def markdown(info: dict, settings: dict, facts: dict, accuracy: list[dict],
             speed_facts: list[dict], speed: list[dict], notes: list[str]) -> str:
    lines = [
        "# matfree vs lmc.core.curvature", "",
        f"JAX {info['jax']} on {info['backend']} ({info['device_kind']}, {info['cpu_count']} "
        f"cores), matfree {info['matfree']}, lmc {info['lmc']}. Load average before/after: "
        f"{settings['load_average_before'][0]:.1f} / {settings['load_average_after'][0]:.1f} "
        "(the machine was shared with other jobs: rows interleaved, medians).", "",
        f"## Accuracy: {facts['model']}, {facts['dim']} parameters, {facts['examples']} "
        "examples", "",
        f"Exact (float64 eigvalsh of `jax.hessian`): λ_max {facts['lambda_max']:.6g}, "
        f"λ_min {facts['lambda_min']:.4g}, tr H {facts['trace']:.6g}, "
        f"tr(H²)/d {facts['m2']:.4g}. Errors relative to the exact value; median and max "
        f"over {settings['seeds']} seeds (top 5: the max over the 5 eigenvalues). Residual: "
        "lmc's is ‖Hv−λv‖/|λ| (one HVP per pair), matfree's is the Lanczos estimate "
        "‖r‖·|s_last|/|λ| (no HVP; matfree returns only ‖r‖'s vector, no flag).", "",
        "| quantity | library | method | HVPs | rel err seed 0 | median \\|rel err\\| "
        "| max \\|rel err\\| | max rel residual | converged | max diff to lmc |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in accuracy:
        res = r.get("max_rel_residual")
        conv = r.get("converged_fraction")
        diff = r.get("max_rel_diff_to_lmc", r.get("max_rel_diff_top_node_to_lmc"))
        lines.append(
            f"| {r['quantity']} | {r['library']} | {r['method']} | {r['hvps']} "
            f"| {r['rel_error_seed0']:+.1e} | {r['median_abs_rel_error']:.1e} "
            f"| {r['max_abs_rel_error']:.1e} | {'' if res is None else f'{res:.1e}'} "
            f"| {'—' if conv is None else f'{conv:.0%}'} "
            f"| {'' if diff is None else f'{diff:.1e}'} |")
    lines += ["", f"## Speed ({settings['speed_examples']} examples, batches of "
              f"{min(BATCH_SIZE, settings['speed_examples'] // 2)}, "
              f"{settings['steps']} Lanczos steps, {settings['trace_budget']} HVPs per trace; "
              f"median of {settings['repeats']} interleaved repeats)", "",
              "| model | params | case | HVPs | first call s | steady s | HVPs/s "
              "| × one-HVP time |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    hvp_time = {r["model"]: r["median_seconds"] / r["hvps"] for r in speed
                if r["case"].startswith("HVP")}
    for r in speed:
        over = r["median_seconds"] / (r["hvps"] * hvp_time[r["model"]])
        lines.append(f"| {r['model']} | {r['dim']:,} | {r['case']} | {r['hvps']} "
                     f"| {r['first_call_seconds']:.2f} | {r['median_seconds']:.3f} "
                     f"| {r['hvps_per_second']:.0f} | {over:.2f} |")
    lines += ["", "× one-HVP time: steady seconds over HVPs × the time of one jitted `matvec` "
              "call (first row; 1.00 = the algorithm costs its HVPs only, < 1 where it "
              "batches probes or saves dispatches).", ""]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test, numbers meaningless")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 5)")
    parser.add_argument("--steps", type=int, default=None,
                        help="Lanczos steps in the speed table (default 30)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if package_version("matfree") is None:
        sys.exit("matfree is not installed: pip install matfree==0.6.3")
    repeats = args.repeats or (1 if args.quick else 5)
    seeds = args.seeds or (2 if args.quick else 5)
    steps = args.steps or (5 if args.quick else 30)
    lanczos_steps = (5, 10) if args.quick else (5, 10, 20, 30, 50)
    budgets = (30,) if args.quick else (30, 99, 300)
    examples = 2000
    speed_models = ((("mlp", {"widths": (16,)}), ("conv1d", {"channels": 4})) if args.quick
                    else (("mlp", {"widths": (100, 100)}), ("conv1d", {})))
    trace_budget = 12 if args.quick else 30
    slq_probes = 4
    start, load_before = time.perf_counter(), os.getloadavg()

    dataset = lmc.load_dataset("mnist1d")
    facts, accuracy = accuracy_rows(dataset, examples, seeds, lanczos_steps, budgets,
                                    10 if args.quick else 90, slq_probes)
    speed_facts, speed = [], []
    for model, options in speed_models:
        f, rows = speed_rows(dataset, model, options, 200 if args.quick else examples, steps,
                             repeats, trace_budget, slq_probes)
        speed_facts.append(f)
        speed += rows

    notes = [
        "Same probes: Lanczos rows start both libraries from the same vector, Hutchinson "
        "and SLQ rows use lmc's Rademacher probes in matfree (a sampler returning them); "
        "Hutch++ (lmc) and XTrace (matfree, Gaussian probes: its resphering needs a "
        "rotation-invariant law) are different algorithms, compared at equal HVPs over "
        "seeds.",
        "matfree 0.6.3 has no Hutch++ and no converged flag; `eigh_partial` returns all "
        "Ritz pairs (values, vectors) without residuals, SLQ integrands return zᵀf(H)z only "
        "(nodes and weights need `tridiag_sym` + eigh by hand, as in `mf_slq_nodes`). Its "
        "Lanczos has no breakdown guard (it divides by ‖r‖) and refuses more steps than the "
        "dimension; its Lanczos is always one `fori_loop` (no driven mode).",
        "Speed rows: every first call builds a new `HessianOperator` (new function, so "
        "nothing is cached); lmc rows marked fori_loop/driven use "
        "`ExecutionPolicy.for_model(convolutional=False/True)`; the HVP program is the "
        "same in both (batches unrolled). matfree rows run under the model's own policy's "
        "HVP.",
    ]
    info = machine_info(matfree=package_version("matfree"))
    settings = {"quick": args.quick, "repeats": repeats, "seeds": seeds, "steps": steps,
                "lanczos_steps": list(lanczos_steps), "trace_budgets": list(budgets),
                "trace_budget": trace_budget, "slq_probes": slq_probes,
                "speed_examples": 200 if args.quick else examples, "batch_size": BATCH_SIZE,
                "load_average_before": load_before, "load_average_after": os.getloadavg(),
                "wall_seconds": time.perf_counter() - start}
    table = markdown(info, settings, facts, accuracy, speed_facts, speed, notes)
    name = f"matfree_{jax.default_backend()}{'_quick' if args.quick else ''}"
    write_results(args.out, name, {"machine": info, "settings": settings, "accuracy_problem":
                                   facts, "accuracy": accuracy, "speed_problems": speed_facts,
                                   "speed": speed, "notes": notes}, table)


if __name__ == "__main__":
    main()
