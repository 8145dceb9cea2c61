"""Interpolation from the initialisation to the solution, whole network and layer by layer:
Goodfellow, Vinyals & Saxe 2015; Frankle 2020 ("Revisiting 'qualitatively characterizing
neural network optimization problems'"); Vlaar & Frankle 2022 ("What can linear
interpolation of neural network loss landscapes tell us?"), on MNIST-1D, 3 seeds.

For each seed, the path w(α) = (1 − α)·w_0 + α·w_T between the initialisation and the
trained network (25 α), train and test loss and error; and, per layer, the path on which
only that layer moves from its initial to its trained value (the others stay at w_0) and
the one on which every layer but it moves. Reported per path:

- `bump`: the largest increase of the train loss along the path, max over α_i < α_j of
  L(α_j) − L(α_i); 0 when the loss decreases monotonically (the "monotonic linear
  interpolation" property Goodfellow et al. found and Frankle 2020 re-examined);
- `alpha_half`: the first α at which the train loss has fallen half of the way from L(0)
  to L(1) (Goodfellow et al.: the loss stays near its initial value, then falls late);
- the train loss at the end of each layer's "only" path, i.e. how much training that one
  layer achieves on its own (Vlaar & Frankle: some layers matter far more than others).

    python experiments/init_interpolation_mnist1d.py --setting mlp
    python experiments/init_interpolation_mnist1d.py --setting conv1d
    python experiments/init_interpolation_mnist1d.py --setting mlp --plot-only

Writes ``<out>/init_interpolation_mnist1d_<setting>.json`` and its figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import lmc
from lmc.files import write_json
from lmc.training.data import load_dataset
from lmc.training.runs import ensure_checkpoint
from lmc.workflows.interpolation import interpolate_checkpoints

sys.path.insert(0, str(Path(__file__).parent))
from imp_mnist1d import SETTINGS  # noqa: E402  (the IMP study's recipes: same run ids)
from predict_validation_mnist1d import t_interval  # noqa: E402

ALPHAS = 25


def bump(values) -> float:
    """The largest increase along the path: max over i < j of v_j − v_i (0 if monotone
    non-increasing)."""
    v = np.asarray(values, float)
    return float(max(0.0, np.max(v - np.minimum.accumulate(v))))


def alpha_half(alphas, values) -> float:
    v = np.asarray(values, float)
    half = v[0] - 0.5 * (v[0] - v[-1])
    return float(alphas[int(np.argmax(v <= half))])


def path_summary(alphas, curves) -> dict:
    train = curves["train"]["loss"]
    return {"bump": bump(train), "alpha_half": alpha_half(alphas, train),
            "train_loss_start": float(train[0]), "train_loss_end": float(train[-1]),
            "test_error_end": float(curves["test"]["error"][-1]),
            "test_error_bump": bump(curves["test"]["error"]),
            "test_loss_bump": bump(curves["test"]["loss"])}


def seed_row(config, seed: int, root: Path, dataset) -> dict:
    run = lmc.train_run(config.replace(seed=seed), root, dataset=dataset, progress=False)
    ensure_checkpoint(run, 0, dataset=dataset, progress=False)
    record = interpolate_checkpoints(run.checkpoint_path(0), run.final_checkpoint(),
                                     alphas=ALPHAS, splits=("train", "test"),
                                     layerwise=True, dataset=dataset)
    layers = [{"block": row["block"],
               "only": path_summary(record.alphas, row["only_curves"]),
               "all_but": path_summary(record.alphas, row["all_but_curves"]),
               "only_curves": row["only_curves"], "all_but_curves": row["all_but_curves"]}
              for row in record.layerwise]
    return {"seed": seed, "run_id": run.spec.run_id, "alphas": record.alphas,
            "curves": record.curves, "whole": path_summary(record.alphas, record.curves),
            "layers": layers}


def summarise(record: dict) -> dict:
    seeds = record["seeds"]
    keys = ("bump", "alpha_half", "train_loss_end", "test_error_end", "test_error_bump",
            "test_loss_bump")
    out = {"whole": {k: t_interval([s["whole"][k] for s in seeds]) for k in keys},
           "monotone_seeds": sum(s["whole"]["bump"] == 0 for s in seeds), "layers": []}
    for i, layer in enumerate(seeds[0]["layers"]):
        out["layers"].append({"block": layer["block"], **{
            mode: {k: t_interval([s["layers"][i][mode][k] for s in seeds]) for k in keys}
            for mode in ("only", "all_but")}})
    return out


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from lmc.plots.style import STYLE

    record = json.loads(path.read_text())
    seeds = record["seeds"]
    alphas = seeds[0]["alphas"]
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(13, 4.2), layout="constrained")
        whole_ax, only_ax, but_ax = fig.subplots(1, 3, sharey=True)
        for i, s in enumerate(seeds):
            whole_ax.plot(alphas, s["curves"]["train"]["loss"], color="k", lw=1,
                          alpha=0.5 + 0.2 * i, label=f"train, seed {s['seed']}")
            whole_ax.plot(alphas, s["curves"]["test"]["loss"], color="C0", lw=1, ls="--",
                          alpha=0.5 + 0.2 * i, label=f"test, seed {s['seed']}")
        for ax, mode, title in ((only_ax, "only", "only this layer moves (others at init)"),
                                (but_ax, "all_but", "every layer but this one moves")):
            for j, layer in enumerate(seeds[0]["layers"]):
                curves = np.array([s["layers"][j][f"{mode}_curves"]["train"]["loss"]
                                   for s in seeds])
                ax.plot(alphas, curves.mean(0), color=f"C{j}", label=layer["block"])
                ax.fill_between(alphas, curves.min(0), curves.max(0), color=f"C{j}",
                                alpha=0.2, lw=0)
            ax.set_title(title + "\n(train loss; band: range over seeds)")
            ax.legend(fontsize="small")
        whole_ax.set_title("whole network, init → solution")
        whole_ax.set_ylabel("cross-entropy loss")
        whole_ax.legend(fontsize="x-small", ncol=2)
        for ax in (whole_ax, only_ax, but_ax):
            ax.set_xlabel("α (0: initialisation, 1: trained)")
            ax.set_yscale("log")
        w = record["summary"]["whole"]
        fig.suptitle(f"{record['setting']} on MNIST-1D, {len(seeds)} seeds: train loss "
                     f"monotone on {record['summary']['monotone_seeds']} of {len(seeds)} "
                     f"whole-network paths (largest bump {w['bump']['mean']:.3g} nats), "
                     f"half-way at α = {w['alpha_half']['mean']:.2f}")
    return lmc.save_figure(fig, path.with_suffix(""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="mlp")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_validation_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    path = args.out / f"init_interpolation_mnist1d_{args.setting}.json"
    if not args.plot_only:
        start = time.perf_counter()
        config, dataset = SETTINGS[args.setting], load_dataset("mnist1d")
        record = {"study": "init_interpolation_mnist1d", "setting": args.setting,
                  "config": config.to_dict(),
                  "seeds": [seed_row(config, int(s), args.root, dataset)
                            for s in args.seeds.split(",")]}
        record["summary"] = summarise(record)
        record["wall_seconds"] = time.perf_counter() - start
        write_json(path, record)
    for written in plot(path):
        print(f"figure {written}")


if __name__ == "__main__":
    main()
