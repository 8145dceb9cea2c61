"""Training throughput of lmc's `Trainer` against a plain JAX loop and PyTorch.

Batch 128, SGD with momentum 0.9. Rows, per model:

- **lmc**: `lmc.Trainer` with S siblings, strategy "vmap" or "loop" and K steps per
  dispatch. Timed through `Trainer._advance`, the hot loop of `Trainer.run` (dispatches
  of K steps whose losses stay on the device), so no evaluation is included.
- **jax scan (fixed batch)**: the ceiling. The same model, loss and optimizer as lmc's
  step, one fixed batch and no data pipeline, K steps in one `lax.scan` per dispatch, K
  as lmc's policy picks for the model (100 for dense models; 1 for convolutional ones on
  the CPU, where a scan of convolutions is slower): the fastest this step runs. Every
  row's `x ceiling` is its ratio to it.
- **jax loop**: the reference. The same flax model and optax optimizer, one `jax.jit`
  step per call, batches gathered on the host with numpy (a permutation per epoch) and
  fed to every step; augmentation (ResNet-20 only) runs inside the step with `lmc.augment`.
- **pytorch**: the same architecture and `torch.optim.SGD(momentum=0.9)` (constant
  learning rate) on the CPU, data as in-memory tensors, batches by `torch.randperm`;
  with as many threads as cores and with one (its OpenMP threads stall 20-40x when
  another process occupies a core, one thread does not). Only on the CPU backend, and
  only where torch is installed.

Models: the MLP 40-256-256-10 and the conv1d net on MNIST-1D; on a GPU also ResNet-20 on
CIFAR-10-shaped random data (skipped on the CPU, where XLA's convolutions are too slow).
Throughput is in sibling-steps per second (one step of S siblings counts S). All
rows of a model are measured interleaved in one process: after a warm-up that compiles
and calibrates the step count, each repeat times every row once; the best repeat counts.

    python benchmarks/train_throughput.py [--quick] [--steps N] [--seconds T] [--repeats R]
        [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
import optax
from _common import machine_info, package_version, write_results

import lmc
from lmc.training.data import augment
from lmc.training.rng import noise_keys, stream_key
from lmc.training.trainer import make_optimizer

BATCH_SIZE = 128
# Longer than any measurement: the (cosine) schedule never reaches its end.
DURATION = "10000000it"
CALIBRATION_SECONDS = 0.5
RESNET_SHAPE = (50_000, 32, 32, 3)  # CIFAR-10's training set
RESNET_TEST_EXAMPLES = 10_000


class Runner(Protocol):
    def advance(self, n: int) -> None:
        """Take `n` more training steps (a multiple of the runner's quantum) and wait for them."""


@dataclass(frozen=True)
class Grid:
    """Which lmc configurations to measure."""

    dispatch: tuple[int, ...]  # K for one network
    siblings: tuple[int, ...]  # S compared with strategy "vmap" and "loop"
    sibling_dispatch: tuple[int, ...]  # K for S > 1


FULL = Grid(dispatch=(1, 10, 100), siblings=(2, 4), sibling_dispatch=(1, 100))
QUICK = Grid(dispatch=(1, 2), siblings=(2,), sibling_dispatch=(1, 2))
# A smoke test of ResNet-20 on the CPU: conv steps inside `lax.scan` take minutes there.
QUICK_CPU_RESNET = Grid(dispatch=(1,), siblings=(2,), sibling_dispatch=(1,))


@dataclass(frozen=True)
class Case:
    """One row: an implementation and its settings, and how to build its runner."""

    model: str
    implementation: str  # "lmc", "jax loop" or "pytorch"
    make: Callable[[], Runner]
    siblings: int = 1
    strategy: str | None = None
    dispatch: int | None = None  # K, lmc only
    auto: bool = False  # lmc's automatic choice of strategy and K for this S
    threads: int | None = None  # PyTorch only

    @property
    def quantum(self) -> int:
        return self.dispatch or 1


CEILING = "jax scan (fixed batch)"


# ----------------------------------------------------------------------------- runners


class LmcRunner:
    """`lmc.Trainer` with S siblings sharing their initialisation."""

    def __init__(self, config: lmc.TrainConfig, dataset: lmc.Dataset, siblings: int,
                 strategy: str, dispatch: int):
        policy = lmc.ExecutionPolicy(vmap_siblings=strategy == "vmap", steps_per_dispatch=dispatch)
        self.trainer = lmc.Trainer(config, dataset, siblings=siblings, policy=policy)
        keys = [noise_keys(config, i) for i in range(siblings)]
        self.current = self.trainer._place([self.trainer.init_state()] * siblings, keys)
        self.dispatch = dispatch

    def advance(self, n: int) -> None:
        # As in `Trainer.run`: losses stay on the device and are read back at the end.
        losses = [None] * (n // self.dispatch)
        for i in range(len(losses)):
            self.current, losses[i] = self.trainer._advance(self.current, self.dispatch)
        jax.block_until_ready((self.current, losses))


class FixedBatchScan:
    """lmc's training step (same model, loss, optimizer) on one fixed batch, K per dispatch."""

    def __init__(self, config: lmc.TrainConfig, dataset: lmc.Dataset, dispatch: int):
        trainer = lmc.Trainer(config, dataset)  # for its module, optimizer and initial state
        module, tx = trainer.module, trainer.tx
        self.state = trainer.init_state()
        xb, yb = dataset.x_train[:config.batch_size], dataset.y_train[:config.batch_size]

        def step(ts, _):
            def loss_fn(params):
                logits, new_state = lmc.apply_model(module, params, ts.state, xb, train=True)
                return lmc.cross_entropy(logits, yb), new_state

            (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params)
            updates, opt_state = tx.update(grads, ts.opt_state, ts.params)
            return ts._replace(params=optax.apply_updates(ts.params, updates), state=state,
                               opt_state=opt_state, step=ts.step + 1), loss

        if dispatch == 1:  # no scan: XLA's CPU convolutions are slower inside one
            self.steps = jax.jit(lambda ts: step(ts, None))
        else:
            self.steps = jax.jit(lambda ts: jax.lax.scan(step, ts, None, length=dispatch))
        self.dispatch = dispatch

    def advance(self, n: int) -> None:
        losses = [None] * (n // self.dispatch)
        for i in range(len(losses)):
            self.state, losses[i] = self.steps(self.state)
        jax.block_until_ready((self.state, losses))


class JaxLoop:
    """One jitted step per call on a batch gathered on the host: how it is usually written."""

    def __init__(self, config: lmc.TrainConfig, dataset: lmc.Dataset):
        module = lmc.build_model(config.model, dataset.num_classes, **config.model_options)
        params, state = lmc.init_model(module, stream_key(config, "init"),
                                       dataset.input_shape)
        self.steps_per_epoch = dataset.num_train // config.batch_size
        tx = make_optimizer(config, self.steps_per_epoch)
        self.train_state = (params, state, tx.init(params))
        self.x, self.y = np.asarray(dataset.x_train), np.asarray(dataset.y_train)
        self.batch_size, self.step_count = config.batch_size, 0
        self.rng = np.random.default_rng(config.seed)
        self.order = self.rng.permutation(dataset.num_train)
        aug_key = stream_key(config, "augment")
        augmentation = dataset.augmentation if config.augment else "none"

        @jax.jit
        def step(train_state, x, y, step_count):
            params, state, opt_state = train_state
            x = augment(aug_key, step_count, x, augmentation)

            def loss_fn(params):
                logits, new_state = lmc.apply_model(module, params, state, x, train=True)
                return lmc.cross_entropy(logits, y), new_state

            (_, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), state, opt_state

        self.step = step

    def advance(self, n: int) -> None:
        for _ in range(n):
            position = self.step_count % self.steps_per_epoch
            if position == 0 and self.step_count:
                self.order = self.rng.permutation(len(self.order))
            idx = self.order[position * self.batch_size:(position + 1) * self.batch_size]
            self.train_state = self.step(self.train_state, self.x[idx], self.y[idx],
                                         self.step_count)
            self.step_count += 1
        jax.block_until_ready(self.train_state)


class TorchLoop:
    """The same architecture in PyTorch on the CPU, batches from in-memory tensors."""

    def __init__(self, config: lmc.TrainConfig, dataset: lmc.Dataset, threads: int):
        import torch

        torch.manual_seed(config.seed)
        self.torch, self.threads = torch, threads
        self.net = _torch_model(config.model, dataset)
        module = lmc.build_model(config.model, dataset.num_classes, **config.model_options)
        params, _ = lmc.init_model(module, stream_key(config, "init"), dataset.input_shape)
        torch_params = sum(p.numel() for p in self.net.parameters())
        if torch_params != lmc.count_params(params):
            raise AssertionError(f"the PyTorch {config.model} has {torch_params} parameters, "
                                 f"lmc's {lmc.count_params(params)}")
        self.opt = torch.optim.SGD(self.net.parameters(), lr=config.lr, momentum=config.momentum)
        x = torch.tensor(np.asarray(dataset.x_train))  # a copy: jax's arrays are read-only
        # PyTorch convolves channels-first: (N, L, C) -> (N, C, L).
        self.x = x.permute(0, 2, 1).contiguous() if config.model == "conv1d" else x
        self.y = torch.tensor(np.asarray(dataset.y_train), dtype=torch.long)
        self.batch_size, self.step_count = config.batch_size, 0
        self.steps_per_epoch = dataset.num_train // config.batch_size
        self.order = torch.randperm(dataset.num_train)

    def advance(self, n: int) -> None:
        functional = self.torch.nn.functional
        self.torch.set_num_threads(self.threads)  # process-wide; rows differ in it
        for _ in range(n):
            position = self.step_count % self.steps_per_epoch
            if position == 0 and self.step_count:
                self.order = self.torch.randperm(len(self.order))
            idx = self.order[position * self.batch_size:(position + 1) * self.batch_size]
            self.opt.zero_grad(set_to_none=True)
            functional.cross_entropy(self.net(self.x[idx]), self.y[idx]).backward()
            self.opt.step()
            self.step_count += 1


def _torch_model(name: str, dataset: lmc.Dataset) -> Any:
    """lmc's "mlp" (40-256-256-10) or "conv1d" (Greydanus 2020) as a torch module."""
    from torch import nn

    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(dataset.input_shape), 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, dataset.num_classes),
        )
    if name == "conv1d":
        length, channels = dataset.input_shape
        layers: list[nn.Module] = []
        for size in (5, 3, 3):
            layers += [nn.Conv1d(channels, 25, size, stride=2, padding=1), nn.ReLU()]
            channels, length = 25, (length + 2 - size) // 2 + 1
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(25 * length, dataset.num_classes))
    raise ValueError(f"no PyTorch version of {name!r}")


# ----------------------------------------------------------------------------- cases


def cases_for(config: lmc.TrainConfig, dataset: lmc.Dataset, grid: Grid,
              with_torch: bool) -> list[Case]:
    """The rows of one model: lmc over the grid, the plain JAX loop, PyTorch if asked."""
    model = config.model

    def lmc_case(siblings: int, strategy: str, dispatch: int) -> Case:
        auto = lmc.Trainer(config, dataset, siblings=siblings)  # compiles nothing
        return Case(
            model, "lmc",
            lambda: LmcRunner(config, dataset, siblings, strategy, dispatch),
            siblings, strategy, dispatch,
            auto=(auto.strategy, auto.steps_per_dispatch) == (strategy, dispatch),
        )

    cases = [lmc_case(1, "loop", k) for k in grid.dispatch]
    cases += [lmc_case(s, strategy, k) for s in grid.siblings for strategy in ("vmap", "loop")
              for k in grid.sibling_dispatch]
    ceiling_k = lmc.Trainer(config, dataset).steps_per_dispatch  # the policy's K
    cases.append(Case(model, CEILING, lambda: FixedBatchScan(config, dataset, ceiling_k),
                      dispatch=ceiling_k))
    cases.append(Case(model, "jax loop", lambda: JaxLoop(config, dataset)))
    if with_torch:
        cases += [Case(model, "pytorch", lambda t=t: TorchLoop(config, dataset, t), threads=t)
                  for t in sorted({1, os.cpu_count() or 1})]
    return cases


def resnet_dataset(num_classes: int = 10) -> lmc.Dataset:
    """CIFAR-10-shaped standard-normal images with random labels, on the device."""
    keys = jax.random.split(jax.random.key(0), 4)
    n_test = RESNET_TEST_EXAMPLES
    return lmc.Dataset(
        name="random_cifar10",
        x_train=jax.random.normal(keys[0], RESNET_SHAPE),
        y_train=jax.random.randint(keys[1], RESNET_SHAPE[:1], 0, num_classes),
        x_test=jax.random.normal(keys[2], (n_test, *RESNET_SHAPE[1:])),
        y_test=jax.random.randint(keys[3], (n_test,), 0, num_classes),
        num_classes=num_classes,
        augmentation="crop_flip",
    )


# ----------------------------------------------------------------------------- measuring


def calibrate(runner: Runner, case: Case, steps: int, seconds: float) -> int:
    """Compile and warm up `runner`; return its step count per repeat.

    `steps` rounded up to a multiple of K, fewer where that would take over `seconds`.
    """
    q = case.quantum
    runner.advance(q)  # compiles
    done, chunk, start = 0, q, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < CALIBRATION_SECONDS:
        runner.advance(chunk)
        done, chunk = done + chunk, 2 * chunk
    affordable = int(done / elapsed * seconds) // q * q
    return max(q, min(math.ceil(steps / q) * q, affordable))


def measure(cases: list[Case], steps: int, seconds: float, repeats: int) -> list[dict]:
    """Time every case `repeats` times, interleaved; one result row per case."""
    runners = [case.make() for case in cases]
    counts = []
    for case, runner in zip(cases, runners, strict=True):
        counts.append(calibrate(runner, case, steps, seconds))
        print(f"  warmed up {describe(case)}: {counts[-1]} steps per repeat", file=sys.stderr,
              flush=True)
    rates: list[list[float]] = [[] for _ in cases]
    for _ in range(repeats):
        for case, runner, n, case_rates in zip(cases, runners, counts, rates, strict=True):
            start = time.perf_counter()
            runner.advance(n)
            case_rates.append(case.siblings * n / (time.perf_counter() - start))
    implementations = [c.implementation for c in cases]
    reference = max(rates[implementations.index("jax loop")])
    ceiling = max(rates[implementations.index(CEILING)])
    return [
        {"model": case.model, "implementation": case.implementation, "siblings": case.siblings,
         "strategy": case.strategy, "steps_per_dispatch": case.dispatch, "auto": case.auto,
         "threads": case.threads,
         "steps_per_repeat": n, "steps_per_second": max(r),
         "ratio_to_jax_loop": max(r) / reference, "ratio_to_ceiling": max(r) / ceiling,
         "repeats_steps_per_second": r}
        for case, n, r in zip(cases, counts, rates, strict=True)
    ]


def describe(case: Case) -> str:
    if case.implementation != "lmc":
        return f"{case.model} {label(case.implementation, case.threads)}"
    return f"{case.model} lmc S={case.siblings} {case.strategy} K={case.dispatch}"


def label(implementation: str, threads: int | None) -> str:
    """The implementation, with PyTorch's thread count."""
    if threads is None:
        return implementation
    return f"{implementation} ({threads} thread{'s' if threads > 1 else ''})"


def markdown(info: dict[str, Any], settings: dict[str, Any], rows: list[dict],
             notes: list[str]) -> str:
    """The results as a markdown table with a header describing the machine."""
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    lines = [
        f"# Training throughput ({info['backend']})", "",
        f"{machine}. Load average (1 min) before/after: "
        f"{' / '.join(map(str, settings['load_average_1min']))}. "
        f"Batch {settings['batch_size']}, SGD momentum 0.9; best of "
        f"{settings['repeats']} interleaved repeats. Steps/s counts sibling-steps (one step of "
        f"S siblings counts S); x ceiling is the ratio to the fixed-batch scanned step "
        f"(the fastest this step runs; K as lmc's policy picks); x jax loop to the plain "
        f"JAX loop; "
        f"auto marks lmc's automatic choice of strategy and K for that S.", "",
        "| model | implementation | S | strategy | K | auto | steps/s | x ceiling | x jax loop |",
        "|---|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {label(r['implementation'], r['threads'])} | {r['siblings']} "
            f"| {r['strategy'] or ''} "
            f"| {r['steps_per_dispatch'] or ''} | {'yes' if r['auto'] else ''} "
            f"| {r['steps_per_second']:,.1f} | {r['ratio_to_ceiling']:.2f} "
            f"| {r['ratio_to_jax_loop']:.2f} |"
        )
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per sibling per timed repeat (default 2000; 10 with --quick)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="fewer steps where a repeat would take longer than this")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per row, the best counts (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test of every row, ResNet-20 included (timings meaningless)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                        help="directory for the .json and .md results")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]  # other processes distort CPU timings, PyTorch's most
    steps = args.steps or (10 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    grid = QUICK if args.quick else FULL
    backend = jax.default_backend()
    with_torch = backend == "cpu" and (package_version("torch") is not None)

    notes = []
    if backend != "cpu":
        notes.append("PyTorch runs on the CPU only; its rows are left out on this backend.")
    elif not with_torch:
        notes.append("PyTorch is not installed; its rows are left out.")
    mnist1d = lmc.load_dataset("mnist1d")
    work = [(lmc.TrainConfig(model=model, duration=DURATION, batch_size=BATCH_SIZE), mnist1d, grid)
            for model in ("mlp", "conv1d")]
    resnet = lmc.TrainConfig(model="resnet20", dataset="cifar10", duration=DURATION,
                             batch_size=BATCH_SIZE)
    if backend == "gpu":
        work.append((resnet, resnet_dataset(), grid))
    elif args.quick:
        work.append((resnet, resnet_dataset(), QUICK_CPU_RESNET))
        notes.append("ResNet-20 ran as a smoke test only (--quick on the CPU).")
    else:
        notes.append("ResNet-20 (CIFAR-10-shaped random data) is measured on a GPU only: "
                     "XLA's CPU convolutions are too slow.")

    rows = []
    for config, dataset, model_grid in work:
        print(f"{config.model}:", file=sys.stderr, flush=True)
        cases = cases_for(config, dataset, model_grid,
                          with_torch and config.model in ("mlp", "conv1d"))
        rows += measure(cases, steps, args.seconds, repeats)

    info = machine_info(torch=package_version("torch"))
    settings = {"batch_size": BATCH_SIZE, "steps": steps, "seconds": args.seconds,
                "repeats": repeats, "quick": args.quick,
                "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    table = markdown(info, settings, rows, notes)
    name = f"train_throughput_{backend}{'_quick' if args.quick else ''}"
    write_results(args.out, name,
                  {"machine": info, "settings": settings, "rows": rows, "notes": notes}, table)


if __name__ == "__main__":
    main()
