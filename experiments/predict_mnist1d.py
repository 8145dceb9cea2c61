"""Validation of the safe-pruning-ratio prediction (Paul et al. 2023, §3.3; Larsen et al.
2022; Zhang et al. 2024) against measured pruning on
MNIST-1D: does the "valley too steep" prediction say how far one pruning step, and IMP as a
whole, can go?

For a setting of experiments/imp_mnist1d.py (same config, rewind step and fraction, so its
IMP levels are reused from the run store):

1. IMP with rewinding to step 100, 20% of the live weights per level (`lmc.run_imp`).
2. Prediction, at every level L (or every `--predict-every`-th): `lmc.prune_ratio_record`
   on level L's final checkpoint w_L, magnitude and random; ε = std of the per-example
   training loss on the Hessian's 2000 examples. Records λ_max, trace, the safe ratios of
   estimators A (λ_max bound), B (quadratic model) and C (Gaussian width), and the Rayleigh
   quotients of the magnitude and random displacements.
3. One-shot loss, no retraining (what A and B literally predict): the training loss on the
   same 2000 examples of the pruned w_L, m' ⊙ w_L with m' = prune(w_L, m_L, p), for p on a
   grid of 1/100; its safe ratio is the largest p before L(m' ⊙ w_L) − L(w_L) first exceeds ε.
4. Measurement, at every `--measure-every`-th level: m' = prune(w_L, m_L, p) by magnitude
   for p on MEASURE_GRID, m' ⊙ w_k retrained from the rewind step as a child of the trunk
   (p = 0.2 is IMP's level L+1: the same run id, reused). A point is "ok" if the retrained
   network is matching (test accuracy >= dense − 1 pt) and linearly connected to w_L (test
   error barrier, mean definition, 11 α, < 2 pts). Measured safe ratio = the largest p of
   the grid such that it and every smaller p are ok. A second, relative variant replaces
   "matching the dense network" by "within 1 pt of w_L" (the level's own accuracy), which
   is what the prediction is about once the levels stop matching.
5. Predicted maximum IMP sparsity: the first level whose predicted ratio falls below the
   per-level fraction 0.2 (the next 20% step is predicted to leave the valley) vs the
   measured ones (smallest matching density; first successive-level barrier > 2 pts).

    python experiments/predict_mnist1d.py --setting mlp --levels 18
    python experiments/predict_mnist1d.py --setting conv1d --levels 12 --measure-every 3

Writes ``<out>/predict_mnist1d_<setting>.json`` and the figures
``predict_mnist1d_<setting>{,_sharpness,_rayleigh,_measured}.{png,pdf}`` (redrawn from the
JSON by ``--replot``). See experiments/predict_mnist1d.md for the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imp_mnist1d import SETTINGS  # noqa: E402  (same configs: the IMP levels are reused)

from lmc.core import masks, prune  # noqa: E402
from lmc.core.batching import batches_of, fixed_subset  # noqa: E402
from lmc.core.evaluate import cross_entropy  # noqa: E402
from lmc.files import write_json  # noqa: E402
from lmc.plots import save_figure  # noqa: E402
from lmc.plots.style import (  # noqa: E402
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    STYLE,
    VERMILLION,
    density_axis,
)
from lmc.training.checkpoint import load_checkpoint  # noqa: E402
from lmc.training.data import load_dataset  # noqa: E402
from lmc.training.models import eval_apply, model_from_description  # noqa: E402
from lmc.training.runs import Run, RunSpec, mask_id, train_runs  # noqa: E402
from lmc.workflows.imp import run_imp  # noqa: E402
from lmc.workflows.interpolation import interpolate_checkpoints  # noqa: E402
from lmc.workflows.prune_ratio import prune_ratio_record  # noqa: E402
from lmc.workflows.records import ImpRecord  # noqa: E402

FRACTION = 0.2  # per IMP level, as in imp_mnist1d.py
REWIND = "100it"
TOLERANCE = 0.01  # matching: test accuracy >= dense - 1 pt (imp_mnist1d.py's default)
CONNECTED = 0.02  # linearly connected: test error barrier < 2 pts
EXAMPLES = 2000  # Hessian / gradient / ε / one-shot loss examples (training set)
MEASURE_GRID = (0.05, 0.1, 0.2, 0.36, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
ONESHOT_GRID = np.arange(1, 100) / 100
RAYLEIGH_AT = (0.05, 0.1, 0.2, 0.36, 0.5, 0.7, 0.9)
ESTIMATORS = {"lambda_max": "A: λ_max bound", "quadratic": "B: quadratic model",
              "gaussian_width": "C: Gaussian width"}
ESTIMATOR_STYLE = {"lambda_max": (GREY, "s"), "quadratic": (ORANGE, "D"),
                   "gaussian_width": (BLUE, "o")}


# ----------------------------------------------------------------------------- prediction


def predict_level(path: str, dataset, grid: np.ndarray, lanczos_steps: int, slq_probes: int,
                  slq_steps: int) -> dict:
    """`prune_ratio_record` of one checkpoint, reduced to what the study uses (curves
    thinned to a grid of 1/100 for the JSON)."""
    t = time.perf_counter()
    rec = prune_ratio_record(path, criterion="magnitude", grid=grid, examples=EXAMPLES,
                             lanczos_steps=lanczos_steps, slq_probes=slq_probes,
                             slq_steps=slq_steps, dataset=dataset).to_json()
    wall = time.perf_counter() - t
    g = np.asarray(rec["grid"])
    keep = np.flatnonzero(np.isclose((g * 100) % 1, 0) | np.isclose((g * 100) % 1, 1))
    out = {k: rec[k] for k in ("dim", "num_prunable", "loss", "gradient_norm", "epsilon",
                               "epsilon_source", "lambda_max", "trace", "diagnostics")}
    out["wall_seconds"] = wall  # everything: loading, compiling, scores, spectrum, curves
    out["criteria"] = {}
    for name, c in rec["criteria"].items():
        at = {str(p): c["rayleigh"][int(np.argmin(np.abs(g - p)))] for p in RAYLEIGH_AT}
        out["criteria"][name] = {
            "safe": c["safe"], "rayleigh_at": at,
            "curves": {"grid": g[keep].tolist(),
                       **{k: [c[k][i] for i in keep]
                          for k in ("radius", "rayleigh", "quadratic", "p_theory")}},
        }
    return out


def oneshot_losses(ckpt, dataset, grid: np.ndarray) -> dict:
    """Training loss on the Hessian's examples of m' ⊙ w_L for m' = prune(w_L, m_L, p), no
    retraining: what estimators A and B model."""
    apply = eval_apply(model_from_description(ckpt.meta["model"]))
    idx = fixed_subset(len(dataset.y_train), EXAMPLES)
    xs, ys = batches_of(dataset.x_train[idx], dataset.y_train[idx], min(500, len(idx)))

    @jax.jit
    def loss_acc(params):
        logits = jax.vmap(lambda x: apply(params, ckpt.state, x))(xs)
        loss = jax.vmap(cross_entropy)(logits, ys).mean()
        return loss, (jnp.argmax(logits, -1) == ys).mean()

    base, base_acc = (float(v) for v in loss_acc(ckpt.params))
    losses, accs = [], []
    for p in grid:
        mask = prune.prune(ckpt.params, ckpt.mask, float(p), "magnitude")
        loss, acc = loss_acc(jax.tree.map(lambda w, m: w * m, ckpt.params, mask))
        losses.append(float(loss))
        accs.append(float(acc))
    return {"grid": [float(p) for p in grid], "loss": base, "train_accuracy": base_acc,
            "pruned_loss": losses, "pruned_train_accuracy": accs}


def first_fail_ratio(grid, ok) -> float:
    """Largest grid point such that it and all smaller ones are ok (0 if the first fails)."""
    best = 0.0
    for p, good in zip(grid, ok, strict=True):
        if not good:
            break
        best = float(p)
    return best


# ----------------------------------------------------------------------------- measurement


class Measurer:
    def __init__(self, config, record: ImpRecord, root: Path, dataset):
        self.config, self.root, self.dataset = config, root, dataset
        self.trunk, self.k = record.trunk, record.rewind_step
        self.dense = record.dense_test_accuracy
        self.train_seconds: list[float] = []

    def point(self, ckpt, path: str, level_acc: float, p: float) -> dict:
        mask = prune.prune(ckpt.params, ckpt.mask, p, "magnitude")
        spec = RunSpec(self.config, parent=self.trunk, start_step=self.k, mask=mask_id(mask))
        run = Run(self.root, spec)
        reused = run.finished
        t = time.perf_counter()
        train_runs([spec], self.root, dataset=self.dataset, mask=mask, progress=False)
        seconds = None if reused else time.perf_counter() - t
        if seconds is not None:
            self.train_seconds.append(seconds)
        final = run.result()["final"]
        inter = interpolate_checkpoints(path, str(run.final_checkpoint()), alphas=11,
                                        splits=("test",), dataset=self.dataset)
        barrier = inter.barriers["test"]["error"]["mean"]
        acc = final["test_accuracy"]
        matching = acc >= self.dense - TOLERANCE
        connected = barrier < CONNECTED
        return {"p": p, "run_id": spec.run_id, "reused": reused, "train_seconds": seconds,
                "density": masks.density(mask), "test_accuracy": acc,
                "train_accuracy": final["train_accuracy"], "test_loss": final["test_loss"],
                "barrier": barrier, "matching": matching, "connected": connected,
                "ok": matching and connected,
                "ok_relative": connected and acc >= level_acc - TOLERANCE}

    def level(self, level: dict, full_grid: bool) -> dict:
        """Measure the one-step safe ratio at an IMP level. Without `full_grid`: p = 0.2
        first, upwards until both criteria have failed once, and below 0.2 only if it
        fails there (smaller ratios are then assumed ok: noted as "assumed")."""
        path = level["checkpoint"]
        ckpt = load_checkpoint(path)
        acc_l = level["test_accuracy"]
        points = {}
        upper = [p for p in MEASURE_GRID if p >= FRACTION]
        lower = [p for p in MEASURE_GRID if p < FRACTION]
        for p in upper:
            points[p] = self.point(ckpt, path, acc_l, p)
            failed = [not points[q]["ok"] for q in points], [not points[q]["ok_relative"]
                                                               for q in points]
            if not full_grid and any(failed[0]) and any(failed[1]):
                break
        at = points[FRACTION]
        need_lower = full_grid or not at["ok_relative"] or (not at["ok"] and level["matching"])
        for p in (lower if need_lower else []):
            points[p] = self.point(ckpt, path, acc_l, p)
        return {"level": level["level"], "density": level["density"],
                "test_accuracy": acc_l, "matching": level["matching"],
                "points": [points[p] for p in sorted(points)],
                "not_measured": [p for p in MEASURE_GRID if p not in points]}


# ----------------------------------------------------------------------------- summary

# Criteria of a measured point (retrained m' ⊙ w_k): name -> (test accuracy floor relative
# to "dense" or "level", tolerance or None, also linearly connected to w_L).
VARIANTS = {
    "matching_lmc": ("dense", TOLERANCE),  # the definition asked for: matching and LMC
    "relative_lmc": ("level", TOLERANCE),  # within 1 pt of w_L and LMC
    "matching3_lmc": ("dense", 0.03),  # ≈ 2σ of the binomial noise of 1000 test examples
    "lmc": (None, None),  # linearly connected to w_L only
}


def point_ok(q: dict, variant: str, dense: float, level_acc: float) -> bool:
    ref, tol = VARIANTS[variant]
    ok = q["barrier"] < CONNECTED
    if ref is not None:
        ok = ok and q["test_accuracy"] >= (dense if ref == "dense" else level_acc) - tol
    return ok


def measured_ratio(m: dict, variant: str, dense: float) -> dict:
    """Largest p of MEASURE_GRID such that it and every smaller p are ok. Ratios below 0.2
    that were not trained count as ok when 0.2 is (they were skipped because it was), else
    as unknown; status: "crossing" (a failure was seen), "censored" (none: the ratio is a
    lower bound, the measurement stopped or the grid ended) or "below_0.2_unknown"."""
    pts = {q["p"]: point_ok(q, variant, dense, m["test_accuracy"]) for q in m["points"]}
    skipped = [p for p in m["not_measured"] if p < FRACTION]
    if skipped and not pts[FRACTION]:
        return {"ratio": 0.0, "first_fail": FRACTION, "status": "below_0.2_unknown"}
    grid = sorted(set(pts) | set(skipped))
    ok = [pts.get(p, True) for p in grid]
    ratio = first_fail_ratio(grid, ok)
    fails = [p for p, good in zip(grid, ok, strict=True) if not good]
    return {"ratio": ratio, "first_fail": fails[0] if fails else None,
            "status": "crossing" if fails else "censored"}


def summarise(data: dict) -> dict:
    """The measured ratios of every variant and the predicted vs measured IMP limits,
    derived from the stored points (so `--replot` recomputes them)."""
    dense = data["imp"]["dense_test_accuracy"]
    for m in data["measured"]["levels"]:
        done = {q["p"] for q in m["points"]}
        m.setdefault("not_measured", [p for p in MEASURE_GRID if p not in done])
        for old in ("assumed_ok", "safe_relative"):  # a first version's fields
            m.pop(old, None)
        m["safe"] = {v: measured_ratio(m, v, dense) for v in VARIANTS}
    data["max_sparsity"] = max_sparsity(data)
    data["fixed_epsilon"] = fixed_epsilon(data)
    return data


def fixed_epsilon(data: dict) -> dict:
    """Sensitivity to ε: A, B and the one-shot ratio recomputed at every level with ε held
    at the dense network's value (from the stored curves, on their 1/100 grid; C needs the
    spectrum, which is not stored)."""
    preds = data["prediction"]["levels"]
    eps = preds[0]["epsilon"]
    one = {o["level"]: o for o in data["oneshot"]["levels"]}
    rows = []
    for p in preds:
        c = p["criteria"]["magnitude"]["curves"]
        grid = np.asarray(c["grid"])
        quad = np.array([np.nan if v is None else v for v in c["quadratic"]])
        radius = np.asarray(c["radius"])
        o = one[p["level"]]
        rows.append({
            "level": p["level"], "density": p["density"],
            "lambda_max": first_fail_ratio(grid, 0.5 * max(p["lambda_max"], 0) * radius ** 2
                                           <= eps),
            "quadratic": first_fail_ratio(grid, quad <= eps),
            "oneshot": first_fail_ratio(o["grid"], np.array(o["pruned_loss"]) - o["loss"]
                                        <= eps),
        })
    return {"epsilon": eps, "levels": rows}


def max_sparsity(data: dict) -> dict:
    """Predicted (first level whose predicted ratio < FRACTION: the next 20% step is
    predicted to leave the valley) vs measured limits of IMP."""
    levels = data["imp"]["levels"]
    by_level = {lv["level"]: lv for lv in levels}
    preds = data["prediction"]["levels"]
    out = {"predicted": {}, "measured": {}}
    for est in ESTIMATORS:
        below = [p["level"] for p in preds
                 if p["criteria"]["magnitude"]["safe"][est]["interpolated"] < FRACTION]
        first = below[0] if below else None
        out["predicted"][est] = {
            "first_level_below_fraction": first, "levels_below_fraction": below,
            "min_density": by_level[first]["density"] if first is not None else None,
        }
    meas = out["measured"]
    meas["min_matching_density"] = data["imp"]["summary"]["min_matching_density"]
    meas["min_density_matching_throughout"] = data["imp"]["summary"].get(
        "min_density_matching_throughout")
    contiguous = levels[0]
    for lv in levels:
        if not lv["matching"]:
            break
        contiguous = lv
    meas["last_matching_level_contiguous"] = contiguous["level"]
    meas["last_matching_density_contiguous"] = contiguous["density"]
    jump = next((lv for lv in levels[1:] if lv["successive_barrier"]["error"] >= CONNECTED),
                None)
    meas["first_barrier_level"] = None if jump is None else jump["level"]
    meas["barrier_min_density"] = (None if jump is None
                                   else by_level[jump["level"] - 1]["density"])
    for v in VARIANTS:
        first = next((m for m in data["measured"]["levels"] if m["safe"][v]["ratio"] < FRACTION),
                     None)
        meas[f"one_step_{v}_first_level_below_fraction"] = None if first is None else first["level"]
    return out


# ----------------------------------------------------------------------------- figures


def plot_all(data: dict, out: Path) -> list[Path]:
    setting = data["setting"]
    stem = out / f"predict_mnist1d_{setting}"
    preds = data["prediction"]["levels"]
    meas = data["measured"]["levels"]
    oneshot = data["oneshot"]["levels"]
    title = f"{data['config']['model']} on MNIST-1D"
    dens_all = [lv["density"] for lv in data["imp"]["levels"]]
    written = []
    floor = 5e-4

    # (a) predicted vs measured safe ratio against density.
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
        x = [100 * p["density"] for p in preds]
        for est, label in ESTIMATORS.items():
            colour, marker = ESTIMATOR_STYLE[est]
            y = [max(p["criteria"]["magnitude"]["safe"][est]["interpolated"], floor)
                 for p in preds]
            ax.plot(x, y, color=colour, marker=marker, ms=4, label=f"predicted {label}")
        y = [max(o["safe_ratio"], floor) for o in oneshot]
        ax.plot([100 * o["density"] for o in oneshot], y, color=GREEN, ls=":", marker="v",
                ms=4, label="measured: one-shot loss ≤ ε (no retraining)")
        for i, (v, colour, marker, fill, label) in enumerate((
                ("matching_lmc", VERMILLION, "o", "full", "matching (1 pt) & LMC"),
                ("relative_lmc", "black", "^", "none", "within 1 pt of w_L & LMC"),
                ("lmc", GREEN, "s", "none", "LMC to w_L only"))):
            xs = np.array([100 * m["density"] for m in meas]) * (1 - 0.03 * i)
            lo = np.array([max(m["safe"][v]["ratio"], floor) for m in meas])
            # Bracket up to the first failing p where one was seen; none where the ratio is
            # a lower bound (censored) or unknown below 0.2.
            hi = np.array([m["safe"][v]["first_fail"] if m["safe"][v]["status"] == "crossing"
                           and m["safe"][v]["ratio"] > 0 else max(m["safe"][v]["ratio"], floor)
                           for m in meas])
            ax.errorbar(xs, lo, yerr=[np.zeros_like(lo), hi - lo], fmt=marker, color=colour,
                        fillstyle=fill, ms=5, capsize=2, lw=0.8,
                        label=f"measured (retrained): {label}", zorder=4)
        ax.axhline(FRACTION, color=GREY, ls="--", lw=1.2, label="IMP step 0.2")
        density_axis(ax, dens_all)
        ax.set_yscale("log")
        ax.set_ylim(floor * 0.8, 1.05)
        ax.set_ylabel("safe one-step pruning ratio p\n(bar: up to the first failing p;"
                      " bottom row = 0)")
        ax.legend(loc="lower left", fontsize=7.5)
        fig.suptitle(f"Predicted vs measured safe pruning ratio: {title}")
        written += save_figure(fig, stem)

    # (b) sharpness against density.
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(11, 3.4), layout="constrained")
        axes = fig.subplots(1, 3)
        x = [100 * p["density"] for p in preds]
        for a, key, colour, marker, label in (
                (axes[0], "lambda_max", BLUE, "o", "λ_max (top Hessian eigenvalue)"),
                (axes[1], "trace", VERMILLION, "s", "Hessian trace (SLQ)"),
                (axes[2], "epsilon", GREEN, "^", "ε = std of per-example train loss")):
            a.plot(x, [p[key] for p in preds], color=colour, marker=marker)
            a.set_ylabel(label)
            density_axis(a, dens_all)
            a.set_yscale("log")
        fig.suptitle(f"Sharpness of the IMP solutions w_L: {title}")
        written += save_figure(fig, f"{stem}_sharpness")

    # (c) Rayleigh quotients magnitude vs random at a few levels; C and B by criterion.
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10, 3.8), layout="constrained")
        a1, a2 = fig.subplots(1, 2)
        chosen = data["rayleigh_levels"]
        cmap = matplotlib.colormaps["viridis"]
        for i, L in enumerate(chosen):
            p = next(q for q in preds if q["level"] == L)
            colour = cmap(i / max(1, len(chosen) - 1) * 0.85)
            for name, ls in (("magnitude", "-"), ("random", "--")):
                c = p["criteria"][name]["curves"]
                a1.plot(c["grid"], [np.nan if v is None else v for v in c["rayleigh"]],
                        color=colour, ls=ls,
                        label=f"L{L} ({100 * p['density']:.3g}%) {name}")
        a1.set_yscale("log")
        shown = np.array([y for line in a1.get_lines() for y in line.get_ydata()], float)
        shown = shown[np.isfinite(shown) & (shown > 0)]
        if shown.size:  # a Δ in dead units has ~0 curvature: do not let it set the scale
            a1.set_ylim(np.percentile(shown, 2) / 2, shown.max() * 1.5)
        a1.set_xlabel("pruning ratio p")
        a1.set_ylabel("Rayleigh quotient ΔᵀHΔ / ‖Δ‖²")
        a1.set_title("steepness of the removed direction")
        a1.legend(loc="best", fontsize=7)
        x = [100 * p["density"] for p in preds]
        for est in ("quadratic", "gaussian_width"):
            colour, marker = ESTIMATOR_STYLE[est]
            for name, ls in (("magnitude", "-"), ("random", "--")):
                a2.plot(x, [max(p["criteria"][name]["safe"][est]["interpolated"], floor)
                            for p in preds], color=colour, ls=ls, marker=marker, ms=3,
                        label=f"{ESTIMATORS[est]}, {name}")
        a2.axhline(FRACTION, color=GREY, ls=":", lw=1)
        density_axis(a2, dens_all)
        a2.set_yscale("log")
        a2.set_ylabel("predicted safe ratio")
        a2.set_title("magnitude vs random pruning")
        a2.legend(loc="lower left", fontsize=7)
        fig.suptitle(f"Does magnitude pruning remove flatter directions? {title}")
        written += save_figure(fig, f"{stem}_rayleigh")

    # (d) the measurement itself: accuracy and barrier of the retrained m' against p.
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10, 3.8), layout="constrained")
        a1, a2 = fig.subplots(1, 2)
        cmap = matplotlib.colormaps["viridis"]
        dense = 100 * data["imp"]["dense_test_accuracy"]
        for i, m in enumerate(meas):
            colour = cmap(i / max(1, len(meas) - 1) * 0.9)
            ps = [q["p"] for q in m["points"]]
            label = f"L{m['level']} ({100 * m['density']:.3g}%)"
            a1.plot(ps, [100 * q["test_accuracy"] for q in m["points"]], color=colour,
                    marker="o", ms=3, label=label)
            a2.plot(ps, [100 * q["barrier"] for q in m["points"]], color=colour, marker="o",
                    ms=3, label=label)
        a1.axhspan(dense - 100 * TOLERANCE, dense, color=GREY, alpha=0.15, lw=0)
        a1.axhline(dense, color=GREY, ls="--", lw=1)
        a1.set_ylabel("test accuracy after retraining (%)")
        a2.axhline(100 * CONNECTED, color=GREY, ls="--", lw=1)
        a2.set_ylabel("test error barrier to w_L (pts)")
        a2.set_ylim(bottom=0)
        for a in (a1, a2):
            a.set_xlabel("one-shot magnitude pruning ratio p (from level L)")
        a1.legend(loc="lower left", fontsize=7, ncol=2)
        fig.suptitle(f"Measured one-step pruning from IMP level L, rewound and retrained: "
                     f"{title}")
        written += save_figure(fig, f"{stem}_measured")
    return written


# ----------------------------------------------------------------------------- main


def fixed_epsilon_study(data: dict, levels: list[int], args) -> None:
    """A, B and C with ε held at the dense network's value (a sensitivity check: the
    default ε, the std of the per-example loss, grows as the sparse networks stop fitting
    the training set). Grid of 1/100."""
    eps = data["prediction"]["levels"][0]["epsilon"]
    dataset = load_dataset("mnist1d")
    by_level = {lv["level"]: lv for lv in data["imp"]["levels"]}
    rows = []
    for L in levels:
        lv = by_level[L]
        path = args.root / lv["run_id"] / "result.json"
        ckpt = json.loads(path.read_text())["checkpoint"]
        t = time.perf_counter()
        rec = prune_ratio_record(ckpt, grid=ONESHOT_GRID, epsilon=eps, examples=EXAMPLES,
                                 lanczos_steps=args.lanczos_steps, slq_probes=args.slq_probes,
                                 slq_steps=args.slq_steps, dataset=dataset)
        safe = rec.criteria["magnitude"]["safe"]
        rows.append({"level": L, "density": lv["density"], "epsilon": eps,
                     **{k: v["interpolated"] for k, v in safe.items()},
                     "seconds": time.perf_counter() - t})
        print(rows[-1], flush=True)
    write_json(args.out / f"predict_mnist1d_{args.setting}_fixed_epsilon.json", {
        "kind": "predict_mnist1d_fixed_epsilon", "setting": args.setting, "epsilon": eps,
        "epsilon_source": "level 0's std of the per-example training loss",
        "grid_step": 0.01, "levels": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="mlp")
    parser.add_argument("--levels", type=int, default=18, help="IMP levels (20%% each)")
    parser.add_argument("--predict-every", type=int, default=1,
                        help="predict at every n-th level (and always the last)")
    parser.add_argument("--measure-every", type=int, default=2,
                        help="measure the one-step ratio at every n-th level")
    parser.add_argument("--measure-max-level", type=int, default=None,
                        help="measure only up to this level")
    parser.add_argument("--full-grid", action="store_true",
                        help="measure every p of the grid (default: stop once failing)")
    parser.add_argument("--grid-step", type=float, default=0.005,
                        help="spacing of the prediction's grid of ratios")
    parser.add_argument("--lanczos-steps", type=int, default=100)
    parser.add_argument("--slq-probes", type=int, default=4)
    parser.add_argument("--slq-steps", type=int, default=90)
    parser.add_argument("--root", type=Path, default=Path("lmc_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the figures from the JSON")
    parser.add_argument("--fixed-epsilon", default=None, metavar="LEVELS",
                        help="only recompute A, B, C at these comma-separated levels with ε "
                             "fixed at level 0's value (needs the JSON; writes "
                             "predict_mnist1d_<setting>_fixed_epsilon.json)")
    args = parser.parse_args()
    json_path = args.out / f"predict_mnist1d_{args.setting}.json"
    if args.fixed_epsilon:
        fixed_epsilon_study(json.loads(json_path.read_text()),
                            [int(x) for x in args.fixed_epsilon.split(",")], args)
        return
    if args.replot:
        data = summarise(json.loads(json_path.read_text()))
        write_json(json_path, data)
        for w in plot_all(data, args.out):
            print(f"figure {w}")
        return

    start = time.perf_counter()
    config = SETTINGS[args.setting]
    dataset = load_dataset("mnist1d")
    t = time.perf_counter()
    record = run_imp(config, levels=args.levels, fraction=FRACTION, rewind=REWIND,
                     tolerance=TOLERANCE, root=args.root, dataset=dataset,
                     progress=False)
    imp_seconds = time.perf_counter() - t
    levels = record.methods["imp"]
    print(f"IMP: {len(levels) - 1} levels in {imp_seconds:.0f} s; dense test accuracy "
          f"{record.dense_test_accuracy:.2%}", flush=True)

    n = len(levels) - 1
    predict_at = sorted({*range(0, n + 1, args.predict_every), n})
    top = n if args.measure_max_level is None else min(n, args.measure_max_level)
    measure_at = list(range(0, top + 1, args.measure_every))
    grid = np.round(np.arange(1, round(1 / args.grid_step)) * args.grid_step, 6)

    predictions, oneshot = {}, []
    for L in predict_at:
        lv = levels[L]
        p = predict_level(lv["checkpoint"], dataset, grid, args.lanczos_steps,
                          args.slq_probes, args.slq_steps)
        p.update(level=L, density=lv["density"], test_accuracy=lv["test_accuracy"])
        predictions[L] = p
        ckpt = load_checkpoint(lv["checkpoint"])
        o = oneshot_losses(ckpt, dataset, ONESHOT_GRID)
        increase = np.array(o["pruned_loss"]) - o["loss"]
        o.update(level=L, density=lv["density"], epsilon=p["epsilon"],
                 safe_ratio=first_fail_ratio(o["grid"], increase <= p["epsilon"]))
        oneshot.append(o)
        s = p["criteria"]["magnitude"]["safe"]
        print(f"  predict L{L:>2} {lv['density']:7.2%} λmax {p['lambda_max']:8.3g} "
              f"tr {p['trace']:8.3g} ε {p['epsilon']:.3g}  A {s['lambda_max']['interpolated']:.4f}"
              f" B {s['quadratic']['interpolated']:.3f} C {s['gaussian_width']['interpolated']:.3f}"
              f"  one-shot {o['safe_ratio']:.2f}  ({p['wall_seconds']:.1f} s)", flush=True)

    measurer = Measurer(config, record, args.root, dataset)
    measured = []
    for L in measure_at:
        t = time.perf_counter()
        m = measurer.level(levels[L], args.full_grid)
        m["wall_seconds"] = time.perf_counter() - t
        measured.append(m)
        pts = " ".join(f"{q['p']:g}:{100 * q['test_accuracy']:.1f}/{100 * q['barrier']:.1f}"
                       + ("" if q["ok"] else ("~" if q["ok_relative"] else "x"))
                       for q in m["points"])
        print(f"  measure L{L:>2} {m['density']:7.2%}  [{pts}]  "
              f"({m['wall_seconds']:.0f} s)", flush=True)

    trained = [lv["train_seconds"] for lv in levels[1:] if lv["train_seconds"]]
    per_level = trained + measurer.train_seconds
    chosen = sorted({0, predict_at[len(predict_at) // 2], predict_at[-1]})
    data = {
        "kind": "predict_mnist1d", "setting": args.setting, "config": config.to_dict(),
        "definitions": {
            "fraction": FRACTION, "rewind": REWIND, "tolerance": TOLERANCE,
            "connected_threshold": CONNECTED, "examples": EXAMPLES,
            "epsilon": "std of the per-example training loss on the Hessian's examples",
            "prediction_grid_step": args.grid_step,
            "measure_grid": list(MEASURE_GRID), "full_grid": args.full_grid,
            "measured_safe": "largest p of measure_grid such that it and every smaller p "
                             "are ok; variants: matching_lmc = test acc >= dense - 1 pt and "
                             "test error barrier to w_L < 2 pts (11 alphas, mean definition); "
                             "relative_lmc = within 1 pt of w_L's test acc and LMC; "
                             "matching3_lmc = within 3 pts of dense and LMC; lmc = barrier "
                             "only. p < 0.2 not trained (when 0.2 passes both matching_lmc "
                             "and relative_lmc) count as ok where 0.2 is ok",
            "oneshot_safe": "largest p of a 1/100 grid before the training loss of the "
                            "one-shot pruned w_L (no retraining) first exceeds L(w_L) + ε",
        },
        "imp": {"trunk": record.trunk, "rewind_step": record.rewind_step,
                "dense_test_accuracy": record.dense_test_accuracy,
                "summary": record.summary["imp"],
                "levels": [{k: lv.get(k) for k in ("level", "density", "test_accuracy",
                                                    "train_accuracy", "matching",
                                                    "successive_barrier", "run_id",
                                                    "train_seconds")} for lv in levels]},
        "prediction": {"levels": [predictions[L] for L in predict_at],
                       "lanczos_steps": args.lanczos_steps, "slq_probes": args.slq_probes,
                       "slq_steps": args.slq_steps},
        "oneshot": {"levels": oneshot},
        "measured": {"levels": measured},
        "rayleigh_levels": chosen,
        "timing": {
            "imp_seconds": imp_seconds,
            "train_seconds_per_run_mean": float(np.mean(per_level)) if per_level else None,
            "train_runs_timed": len(per_level),
            "predict_seconds_per_checkpoint_mean": float(np.mean(
                [predictions[L]["wall_seconds"] for L in predict_at])),
            "predict_seconds_per_checkpoint": {L: predictions[L]["wall_seconds"]
                                               for L in predict_at},
            "measure_seconds": sum(m["wall_seconds"] for m in measured),
            "total_seconds": time.perf_counter() - start,
        },
    }
    summarise(data)
    write_json(json_path, data)
    print(f"wrote {json_path}")
    for w in plot_all(data, args.out):
        print(f"figure {w}")
    print(json.dumps(data["max_sparsity"], indent=1))
    print(json.dumps({k: v for k, v in data["timing"].items()
                      if k != "predict_seconds_per_checkpoint"}, indent=1))


if __name__ == "__main__":
    main()
