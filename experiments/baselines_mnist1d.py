"""Dense baselines on MNIST-1D against the reference accuracies of Greydanus 2020 ("Scaling
down deep learning", the MNIST-1D paper: MLP 68%, CNN 94% test accuracy), 3 seeds.

The studies of this directory train with a cheap recipe (SGD with momentum 0.9, lr 0.05,
cosine schedule, batch 128, 3000 iterations) so that IMP's many levels run on 2 CPU cores.
This study trains the same architectures (the 40-100-100-10 MLP of the studies, the
MNIST-1D paper's 40-256-256-10 MLP, and its ConvBase with 25 channels, which is lmc's
conv1d) with the studies' recipe and with the MNIST-1D paper's recipe (Adam, lr 1e-2, no
weight decay, batch 100, 8000 iterations, constant learning rate), and reports test and
train accuracy as mean and 95% interval over seeds.

    python experiments/baselines_mnist1d.py
    python experiments/baselines_mnist1d.py --plot-only

Writes ``<out>/baselines_mnist1d.json`` and its figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import lmc
from lmc.files import write_json
from lmc.training.data import load_dataset

sys.path.insert(0, str(Path(__file__).parent))
from imp_mnist1d import BASE  # noqa: E402  (the studies' recipe)
from predict_validation_mnist1d import t_interval  # noqa: E402

PAPER = {"mlp (100, 100)": 68.0, "mlp (256, 256)": 68.0, "conv1d (25 channels)": 94.0}
MODELS = {"mlp (100, 100)": ("mlp", {"widths": (100, 100)}),
          "mlp (256, 256)": ("mlp", {"widths": (256, 256)}),
          "conv1d (25 channels)": ("conv1d", {"channels": 25})}
RECIPES = {
    "studies (SGD momentum, cosine, 3000 it)": BASE,
    "MNIST-1D paper (Adam 1e-2, constant, 8000 it)": dict(
        dataset="mnist1d", optimizer="adam", lr=1e-2, batch_size=100, schedule="constant",
        duration="8000it", seed=0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--root", type=Path, default=Path("/tmp/lmc_validation_runs"))
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    path = args.out / "baselines_mnist1d.json"
    if not args.plot_only:
        start, dataset = time.perf_counter(), load_dataset("mnist1d")
        seeds = [int(s) for s in args.seeds.split(",")]
        rows = []
        for recipe, base in RECIPES.items():
            for name, (model, options) in MODELS.items():
                config = lmc.TrainConfig(model=model, model_options=options, **base)
                finals = [lmc.train_run(config.replace(seed=s), args.root, dataset=dataset,
                                        progress=False).result()["final"] for s in seeds]
                rows.append({"recipe": recipe, "model": name, "config": config.to_dict(),
                             "paper_test_accuracy": PAPER[name] / 100,
                             "test_accuracy": t_interval([f["test_accuracy"] for f in finals]),
                             "train_accuracy": t_interval([f["train_accuracy"] for f in finals]),
                             "per_seed": finals})
                t = rows[-1]["test_accuracy"]
                print(f"{recipe:46} {name:22} test {100 * t['mean']:.1f} "
                      f"[{100 * t['lo']:.1f}, {100 * t['hi']:.1f}] (paper {PAPER[name]:g})",
                      flush=True)
        write_json(path, {"study": "baselines_mnist1d", "seeds": seeds, "rows": rows,
                          "wall_seconds": time.perf_counter() - start})
    for written in plot(path):
        print(f"figure {written}")


def plot(path: Path) -> list[Path]:
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from lmc.plots.style import STYLE

    record = json.loads(path.read_text())
    rows = record["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(9, 4), layout="constrained")
        ax = fig.subplots()
        width = 0.8 / len(recipes)
        for j, recipe in enumerate(recipes):
            for i, model in enumerate(models):
                r = next(r for r in rows if r["recipe"] == recipe and r["model"] == model)
                t = r["test_accuracy"]
                x = i + (j - (len(recipes) - 1) / 2) * width
                ax.errorbar(x, 100 * t["mean"], yerr=[[100 * (t["mean"] - t["lo"])],
                                                      [100 * (t["hi"] - t["mean"])]],
                            fmt="o", ms=6, color=f"C{j}", capsize=4,
                            label=recipe if i == 0 else None)
                ax.scatter([x + width / 4] * len(r["per_seed"]),
                           [100 * f["test_accuracy"] for f in r["per_seed"]], s=10,
                           color=f"C{j}", marker="x", zorder=3)
        for i, model in enumerate(models):
            ax.hlines(PAPER[model], i - 0.45, i + 0.45, color="red", ls="--", lw=1.2,
                      label="MNIST-1D paper" if i == 0 else None)
        ax.set_xticks(range(len(models)), models)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(55, 100)
        ax.legend(loc="upper left", fontsize="small")
        ax.set_title(f"dense baselines on MNIST-1D, mean and 95% interval over "
                     f"{len(record['seeds'])} seeds (x: each seed)")
    return lmc.save_figure(fig, path.with_suffix(""))


if __name__ == "__main__":
    main()
