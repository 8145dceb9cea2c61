"""How many examples does a Hessian measurement need? λ_max and trace vs sample size.

A network is trained on MNIST-1D (lmc's default recipe, 2000 iterations), then the Hessian
of the mean training loss is measured on random subsets of n training examples (drawn
without replacement), for n from 32 to all 4000: λ_max by Lanczos (`top_eigenpairs`,
30 steps, residuals recorded) and the trace by Hutchinson (`hutchinson_trace`, independent
Rademacher probes per subset, standard error recorded). Values are reported relative to
the same measurement on all 4000 examples (the trace with more probes).

The subset Hessian H_S = (1/n) Σ_{i∈S} H_i is an unbiased estimate of the full-data one,
so the trace (linear) is unbiased and only noisy, while λ_max (convex in H) is biased
upwards at small n (Jensen).

One model per run; results are merged into `<out>/sharpness_sample_size.json` (one entry
per model) and the figure `<out>/sharpness_sample_size.{png,pdf}` is drawn from it.
See experiments/sharpness_sample_size.md for the results.

    python experiments/sharpness_sample_size.py                      # MLP, ~4-5 min
    python experiments/sharpness_sample_size.py --model conv1d --sizes 32 64 128 256 512 1000 \\
        --subsets 5 --probes 100 --reference-probes 200              # conv1d, ~5 min
    python experiments/sharpness_sample_size.py --plot-only          # redraw the figure
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import jax
import matplotlib
import numpy as np
from matplotlib.figure import Figure

import lmc
from lmc.core.batching import batches_of
from lmc.core.curvature import hutchinson_trace, top_eigenpairs
from lmc.core.operators import HessianOperator
from lmc.files import atomic_write, read_json, write_json

SIZES = (32, 64, 128, 256, 512, 1000, 2000, 4000)
MAX_BATCH = 500  # examples per batch of the HVP (all subset sizes are multiples or below)
NAME = "sharpness_sample_size"
COLOURS = {"mlp": "#0072B2", "conv1d": "#D55E00"}  # Okabe-Ito blue, vermillion
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "legend.fontsize": 9, "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
         "legend.frameon": False, "pdf.fonttype": 42, "ps.fonttype": 42}


def train_network(model: str, duration: str, dataset: lmc.Dataset) -> tuple[Any, Any, dict]:
    """(params, loss_fn, description) of `model` trained with lmc's default recipe."""
    config = lmc.TrainConfig(model=model, duration=duration)
    start = time.perf_counter()
    result = lmc.train(config, dataset, progress=False)
    final = result.history[0][-1]
    module = lmc.build_model(model, dataset.num_classes)
    params, state = result.states[0].params, result.states[0].state
    apply_fn = lmc.eval_apply(module)

    def loss(p: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return lmc.cross_entropy(apply_fn(p, state, x), y)

    losses = np.asarray(jax.jit(lambda x, y: jax.vmap(
        lambda xi, yi: loss(params, xi[None], yi[None]))(x, y))(dataset.x_train,
                                                                dataset.y_train))
    description = {
        "model": model, "params": lmc.count_params(params), "duration": duration,
        "recipe": "lmc default: SGD momentum 0.9, lr 0.05 cosine, batch 128",
        "train_loss": float(final["train_loss"]), "train_accuracy": float(final["train_accuracy"]),
        "test_accuracy": float(final["test_accuracy"]),
        "train_seconds": time.perf_counter() - start,
        # The Hessian of a well-fit example is small: how concentrated is the loss?
        "loss_share_of_top_1pct_examples": float(np.sort(losses)[-len(losses) // 100:].sum()
                                                 / losses.sum()),
        "fraction_examples_loss_above_0.1": float(np.mean(losses > 0.1)),
    }
    return params, loss, description


def measure(loss: Any, params: Any, x: jax.Array, y: jax.Array, *, steps: int, probes: int,
            probe_batch: int, seed: int) -> dict[str, Any]:
    """λ_max (Lanczos) and trace (Hutchinson) of the mean loss on (x, y)."""
    n = int(y.shape[0])
    op = HessianOperator(loss, params, batches_of(x, y, min(n, MAX_BATCH)))
    start = time.perf_counter()
    eig = top_eigenpairs(op, 1, steps=steps, seed=seed)
    trace = hutchinson_trace(op, probes, probe_batch=probe_batch, seed=seed)
    return {"lambda_max": float(eig.eigenvalues[0]),
            "lanczos_rel_residual": float(eig.residuals[0] / abs(eig.eigenvalues[0])),
            "lanczos_converged": bool(eig.converged[0]), "trace": trace.trace,
            "trace_se": trace.standard_error, "probes": trace.num_matvecs,
            "seconds": time.perf_counter() - start}


def summarise(subsets: list[dict], reference: dict) -> dict[str, Any]:
    """Ratios to the full-data values: mean, std, worst; and the noise budget of the trace."""
    lam = np.asarray([s["lambda_max"] for s in subsets]) / reference["lambda_max"]
    tr = np.asarray([s["trace"] for s in subsets]) / reference["trace"]
    probe_se = np.asarray([s["trace_se"] for s in subsets]) / reference["trace"]
    ddof = 1 if len(subsets) > 1 else 0
    tr_std = float(tr.std(ddof=ddof))
    return {
        "subsets": len(subsets),
        "lambda_ratio_mean": float(lam.mean()), "lambda_ratio_std": float(lam.std(ddof=ddof)),
        "lambda_ratio_min": float(lam.min()), "lambda_ratio_max": float(lam.max()),
        "lambda_mean_abs_rel_error": float(np.mean(np.abs(lam - 1))),
        "lambda_max_abs_rel_error": float(np.max(np.abs(lam - 1))),
        "trace_ratio_mean": float(tr.mean()), "trace_ratio_std": tr_std,
        "trace_ratio_min": float(tr.min()), "trace_ratio_max": float(tr.max()),
        "trace_mean_abs_rel_error": float(np.mean(np.abs(tr - 1))),
        "trace_max_abs_rel_error": float(np.max(np.abs(tr - 1))),
        # Standard errors relative to the full-data trace: of one subset's Hutchinson
        # estimate (probe noise), and the spread over subsets with the probe noise removed.
        "trace_probe_se_rel": float(np.sqrt(np.mean(probe_se ** 2))),
        "trace_subset_std_rel": float(math.sqrt(max(0.0, tr_std ** 2
                                                    - float(np.mean(probe_se ** 2))))),
    }


def run_model(args: argparse.Namespace, dataset: lmc.Dataset) -> dict[str, Any]:
    """Train `args.model`, measure the full data set and the subsets of every size."""
    params, loss, description = train_network(args.model, args.duration, dataset)
    print(f"{args.model}: {description['params']} params, train acc "
          f"{100 * description['train_accuracy']:.1f}%, test acc "
          f"{100 * description['test_accuracy']:.1f}%", flush=True)
    probe_batch = 1 if jax.default_backend() == "cpu" else 10  # vmapped HVPs are slower on CPU
    n_all = int(dataset.y_train.shape[0])
    kw = {"steps": args.steps, "probe_batch": probe_batch}
    reference = measure(loss, params, dataset.x_train, dataset.y_train,
                        probes=args.reference_probes, seed=10_000, **kw)
    print(f"  all {n_all}: λ_max {reference['lambda_max']:.4f}, trace {reference['trace']:.3f} "
          f"± {reference['trace_se']:.3f} ({reference['seconds']:.0f} s)", flush=True)
    rng = np.random.default_rng(args.seed)
    points = []
    for n in args.sizes:
        if n >= n_all:  # the full set itself: a second, independent measurement
            subsets = [measure(loss, params, dataset.x_train, dataset.y_train,
                               probes=args.probes, seed=0, **kw)]
        else:
            count = args.subsets if n <= args.many_below else args.subsets_large
            subsets = []
            for j in range(count):
                idx = np.sort(rng.choice(n_all, n, replace=False))
                subsets.append(measure(loss, params, dataset.x_train[idx],
                                       dataset.y_train[idx], probes=args.probes,
                                       seed=1000 * n + j, **kw) | {"indices_seed": args.seed})
        s = summarise(subsets, reference)
        points.append({"n": min(n, n_all), "subsets": subsets, "summary": s})
        print(f"  n={n:5d} ({s['subsets']:2d} subsets): λ_max ratio {s['lambda_ratio_mean']:.3f}"
              f" ± {s['lambda_ratio_std']:.3f} [{s['lambda_ratio_min']:.2f}, "
              f"{s['lambda_ratio_max']:.2f}], trace ratio {s['trace_ratio_mean']:.3f} ± "
              f"{s['trace_ratio_std']:.3f} (probe SE {s['trace_probe_se_rel']:.3f}) "
              f"{sum(x['seconds'] for x in subsets):.0f} s", flush=True)
    return {"network": description, "reference": reference | {"n": n_all},
            "settings": {"lanczos_steps": args.steps, "probes": args.probes,
                         "reference_probes": args.reference_probes,
                         "probe_batch": probe_batch, "max_batch": MAX_BATCH,
                         "subsets": args.subsets, "subsets_large": args.subsets_large,
                         "many_below": args.many_below, "seed": args.seed,
                         "backend": jax.default_backend(), "jax": jax.__version__,
                         "lmc": lmc.__version__},
            "points": points}


# ----------------------------------------------------------------------------- figure


def plot(record: dict, out: Path) -> list[Path]:
    """Relative λ_max and trace vs n (log axes), mean ± std over subsets and every subset."""
    models = record["models"]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(9.0, 3.8), layout="constrained")
        axes = fig.subplots(1, 2)
        panels = (("lambda", "λ_max(subset) / λ_max(all)", "top eigenvalue (Lanczos)"),
                  ("trace", "trace(subset) / trace(all)", "trace (Hutchinson)"))
        for ax, (key, ylabel, title) in zip(axes, panels, strict=True):
            ax.axhspan(0.95, 1.05, color="#999999", alpha=0.2, lw=0, label="±5%")
            ax.axhline(1.0, color="#555555", lw=0.8)
            for i, (label, result) in enumerate(models.items()):
                colour = COLOURS.get(result["network"]["model"], "#009E73")
                ref = result["reference"]["lambda_max" if key == "lambda" else "trace"]
                field = "lambda_max" if key == "lambda" else "trace"
                shift = 1.0 + 0.06 * (i - (len(models) - 1) / 2)  # side by side on a log axis
                ns = np.asarray([p["n"] for p in result["points"]], float) * shift
                for n, p in zip(ns, result["points"], strict=True):
                    values = [s[field] / ref for s in p["subsets"]]
                    ax.scatter(np.full(len(values), n), values, s=9, color=colour, alpha=0.35,
                               lw=0)
                mean = [p["summary"][f"{key}_ratio_mean"] for p in result["points"]]
                std = [p["summary"][f"{key}_ratio_std"] for p in result["points"]]
                ax.errorbar(ns, mean, yerr=std, color=colour, marker="o", capsize=3,
                            label=f"{label}: mean ± std over subsets")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            sizes = [p["n"] for p in next(iter(models.values()))["points"]]
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.minorticks_off()
            ax.set_xlabel("examples the Hessian is computed on (n)")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
        low, high = _limits(models)
        for ax in axes:
            ax.set_ylim(low, high)
            ticks = [t for t in (0.25, 0.5, 0.8, 1, 1.25, 1.5, 2, 3, 4, 8, 16) if low <= t <= high]
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        axes[1].legend(loc="upper right")
        fig.suptitle(record["title"])
        return _save(fig, out)


def _limits(models: dict) -> tuple[float, float]:
    values = []
    for result in models.values():
        for p in result["points"]:
            for s in p["subsets"]:
                values += [s["lambda_max"] / result["reference"]["lambda_max"],
                           s["trace"] / result["reference"]["trace"]]
    values = [v for v in values if v > 0]
    return min(min(values), 0.9) / 1.1, max(max(values), 1.1) * 1.1


def _save(fig: Figure, out: Path) -> list[Path]:
    paths = []
    for fmt, metadata in (("png", None), ("pdf", {"CreationDate": None})):
        path = out.with_suffix(f".{fmt}")
        atomic_write(path, lambda f, fmt=fmt, m=metadata: fig.savefig(f, format=fmt, dpi=200,
                                                                         metadata=m))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp", choices=("mlp", "conv1d"))
    parser.add_argument("--duration", default="2000it")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--subsets", type=int, default=10,
                        help="random subsets per size up to --many-below examples")
    parser.add_argument("--subsets-large", type=int, default=5,
                        help="random subsets per larger size")
    parser.add_argument("--many-below", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30, help="Lanczos steps")
    parser.add_argument("--probes", type=int, default=200, help="Hutchinson probes per subset")
    parser.add_argument("--reference-probes", type=int, default=800,
                        help="Hutchinson probes on the full data set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset draws")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the figure from the JSON without computing")
    args = parser.parse_args()
    path = args.out / f"{NAME}.json"
    record = read_json(path) if path.exists() else {
        "kind": NAME, "dataset": "mnist1d",
        "title": "Hessian on n random MNIST-1D training examples vs all 4000", "models": {}}
    if not args.plot_only:
        start = time.perf_counter()
        dataset = lmc.load_dataset("mnist1d")
        result = run_model(args, dataset)
        result["wall_seconds"] = time.perf_counter() - start
        label = f"{args.model} ({result['network']['params']:,} params)"
        record["models"] = {k: v for k, v in record["models"].items()
                            if v["network"]["model"] != args.model} | {label: result}
        write_json(path, record)
        print(f"{result['wall_seconds']:.0f} s; wrote {path}")
    for p in plot(record, args.out / NAME):
        print("wrote", p)


if __name__ == "__main__":
    main()
