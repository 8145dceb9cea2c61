"""The run store: content-addressed run directories that resume and are reused.

A run directory is named by a hash of everything that changes its result (training
config, parent run and start step, sibling index, mask), as in open_lth. Training the
same spec again finds the finished run; an interrupted run resumes from its last
checkpoint and ends bit-identical to an uninterrupted one on the same device. Layout:

    <root>/<model>-<dataset>-<hash>/spec.json
                                   /checkpoints/step_00000100.npz
                                   /result.json        (written last: the run is finished)
                                   /.lock              (while a process trains the run)

One run has one trainer: `train_runs` claims each run directory with a lock file before
training it; a second process asked for the same run waits, then reuses the result.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmc._version import __version__
from lmc.core.masks import apply_mask
from lmc.core.policy import ExecutionPolicy
from lmc.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from lmc.files import read_json, write_json
from lmc.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from lmc.training.config import Duration, TrainConfig
from lmc.training.data import Dataset, load_dataset, same_data
from lmc.training.models import init_model
from lmc.training.rng import STREAMS, noise_keys
from lmc.training.run_lock import notice, run_locks
from lmc.training.trainer import Trainer, TrainState

KEEP_RECENT = 2  # rolling checkpoints kept besides the requested ones
EVALUATIONS = 20  # evaluations (and rolling checkpoints) per run unless eval_every is given


def default_root() -> Path:
    return Path(os.environ.get("LMC_RUNS", "lmc_runs"))


def mask_id(mask: Any) -> str:
    """A short digest of a mask pytree (part of a run's identity)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(mask)[0]:
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.packbits(np.asarray(leaf, bool)).tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    """What identifies a run: its config and where it started.

    `parent`/`start_step`: the run and step whose checkpoint this run continues from
    (None/0: from the initialisation). `sibling`: index folded into the data-order and
    augmentation streams of a child. `mask`: `mask_id` of the fixed pruning mask.
    `reinit`: seed of a fresh initialisation that replaces the parent's weights at the
    start step (the reinitialisation ablation of pruning).

    The run id hashes `to_dict` but for the path of a subset's scores file (the config's
    `identity`): the scores are named by their digest, so a copy of the file elsewhere
    finds the same run, and `spec.json` records the path the run last trained from.
    """

    config: TrainConfig
    parent: str | None = None
    start_step: int = 0
    sibling: int | None = None
    mask: str | None = None
    reinit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"config": self.config.to_dict(), "parent": self.parent,
             "start_step": self.start_step, "sibling": self.sibling, "mask": self.mask}
        if self.reinit is not None:  # absent otherwise, so older run ids stay valid
            d["reinit"] = self.reinit
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        return cls(TrainConfig.from_dict(d["config"]), d.get("parent"), d.get("start_step", 0),
                   d.get("sibling"), d.get("mask"), d.get("reinit"))

    @property
    def run_id(self) -> str:
        identity = {**self.to_dict(), "config": self.config.identity()}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"{self.config.model}-{self.config.dataset}-{digest[:12]}"


class Run:
    """A run directory in the store."""

    def __init__(self, root: str | Path, spec: RunSpec):
        self.root, self.spec = Path(root), spec
        self.dir = self.root / spec.run_id

    @classmethod
    def open(cls, path: str | Path) -> Run:
        path = Path(path)
        if not (path / "spec.json").is_file():
            raise CheckpointError(f"{path} is not an lmc run directory (no spec.json)")
        return cls(path.parent, RunSpec.from_dict(read_json(path / "spec.json")))

    def checkpoint_path(self, step: int) -> Path:
        return self.dir / "checkpoints" / f"step_{step:08d}.npz"

    def saved_steps(self) -> list[int]:
        folder = self.dir / "checkpoints"
        if not folder.is_dir():
            return []
        return sorted(int(p.stem[5:]) for p in folder.glob("step_*.npz"))

    @property
    def finished(self) -> bool:
        return (self.dir / "result.json").is_file()

    def result(self) -> dict[str, Any]:
        return read_json(self.dir / "result.json")

    def final_checkpoint(self) -> Path:
        """The checkpoint at the end of a finished run."""
        return Path(self.result()["checkpoint"])

    def load(self, step: int | None = None, opt_state_template: Any = None) -> Checkpoint:
        """The checkpoint at `step` (default: the last one)."""
        steps = self.saved_steps()
        if step is None and steps:
            step = steps[-1]
        if step not in steps:
            raise CheckpointError(
                f"run {self.dir} has no checkpoint at step {step}; saved steps: "
                f"{', '.join(map(str, steps)) or 'none'}"
            )
        return load_checkpoint(self.checkpoint_path(step), opt_state_template)


def checkpoint_meta(spec: RunSpec, trainer: Trainer, history: list[dict]) -> dict[str, Any]:
    """The description stored in every checkpoint: enough to rebuild its network."""
    ds = trainer.dataset
    return {
        "lmc_version": __version__,
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "model": {"name": spec.config.model, "options": spec.config.model_options,
                  "num_classes": ds.num_classes, "input_shape": list(ds.input_shape)},
        "data": {"name": ds.name, "num_train": ds.num_train,
                 "num_test": int(ds.x_test.shape[0])},
        "seeds": {s: spec.config.seed_of(s) for s in STREAMS},
        "history": history,
    }


def train_runs(
    specs: Sequence[RunSpec],
    root: str | Path | None = None,
    *,
    dataset: Dataset | None = None,
    mask: Any = None,
    save_at: Sequence[str | int] = (),
    eval_every: str | int | None = None,
    policy: ExecutionPolicy | None = None,
    progress: bool = True,
    data_dir: str | None = None,
) -> list[Run]:
    """Train runs that share a config and starting point (siblings) together.

    Finished runs are reused; unfinished ones resume from the latest step every one of
    them has a checkpoint for. Checkpoints are written at the start, at `save_at`, at
    every evaluation (every `eval_every`, default 1/20 of the run; rolling: the last two
    are kept) and at the end. Each run directory is locked while its run trains: a process
    asked for a run that another one is training waits for it, then reuses the result
    (or resumes, if that process died); a lock left by a dead process is taken over.
    """
    first = specs[0]
    shared = (first.config, first.parent, first.start_step, first.mask, first.reinit)
    if any((s.config, s.parent, s.start_step, s.mask, s.reinit) != shared for s in specs):
        raise ConfigError("runs trained together must share config, parent, start step, mask "
                          "and reinitialisation")
    if len({s.sibling for s in specs}) != len(specs):
        raise ConfigError("runs trained together need distinct sibling indices")
    if (mask is None) != (first.mask is None) or (mask is not None and mask_id(mask) != first.mask):
        raise ConfigError("the mask given does not match the runs' mask id")
    root = Path(root) if root is not None else default_root()
    runs = [Run(root, s) for s in specs]
    if all(r.finished for r in runs):
        return _same_data(runs, dataset)
    with run_locks([r.dir for r in runs]) as waited:
        if all(r.finished for r in runs):  # trained by the process we waited for
            if waited:
                notice(f"reusing {', '.join(r.dir.name for r in runs)}, trained by another "
                        "process")
            return _same_data(runs, dataset)
        _train(runs, mask, dataset, save_at, eval_every, policy, progress, data_dir)
    return runs


DATA_FILE = "data.json"  # in a run directory: the signature of the data it trains on


def _same_data(runs: list[Run], dataset: Dataset | None) -> list[Run]:
    """`runs`, after checking that each was trained on `dataset` (when one is given and
    the run recorded its data: runs from before lmc recorded it are not checked). A data
    set of the same name with other contents (an edited .npz, another test split) would
    otherwise be answered with results computed on the old one."""
    if dataset is None:
        return runs
    for run in runs:
        path = run.dir / DATA_FILE
        if path.exists() and not same_data(read_json(path)["signature"], dataset.signature):
            raise DataError(
                f"run {run.dir} was trained on other data than the data set {dataset.name!r} "
                f"given now (see {path}); use another run root, or delete the run to retrain")
    return runs


def _train(runs: list[Run], mask: Any, dataset: Dataset | None, save_at: Sequence[str | int],
           eval_every: str | int | None, policy: ExecutionPolicy | None, progress: bool,
           data_dir: str | None) -> None:
    """Train runs whose locks this process holds (see `train_runs`)."""
    specs = [r.spec for r in runs]
    first = specs[0]
    config = first.config
    dataset = dataset or load_dataset(config.dataset, data_dir)
    trainer = Trainer(config, dataset, mask=mask, siblings=len(specs), policy=policy)
    spe = trainer.steps_per_epoch
    requested = {Duration.parse(s).steps(spe) for s in save_at} | {trainer.total_steps}
    requested.add(first.start_step)  # the initialisation or the spawn point: rewind targets
    if first.start_step > trainer.total_steps:
        raise ConfigError(f"start step {first.start_step} is past the end ({trainer.total_steps})")
    _same_data(runs, dataset)  # a run resumed on other data would mix the two
    for run in runs:
        write_json(run.dir / "spec.json", run.spec.to_dict())
        write_json(run.dir / DATA_FILE, {"name": dataset.name,
                                         "signature": dataset.signature})
        for stale in (run.dir / "checkpoints").glob(".*.tmp"):  # left by a killed write
            stale.unlink()

    states, history = _resume_point(runs, trainer, mask)
    keys = [noise_keys(config, s.sibling) for s in specs]

    def on_event(step: int, current: list[TrainState], records) -> None:
        for i, (run, ts) in enumerate(zip(runs, current, strict=True)):
            if records is not None:
                history[i].append(records[i])
            _save(run, trainer, ts, mask, history[i])
            recent = [s for s in run.saved_steps() if s not in requested][:-KEEP_RECENT]
            for old in recent:
                run.checkpoint_path(old).unlink(missing_ok=True)

    every = (Duration.parse(eval_every).steps(spe) if eval_every is not None
             else max(1, trainer.total_steps // EVALUATIONS))
    try:
        trainer.run(states, keys, eval_every=every, event_steps=sorted(requested),
                    on_event=on_event, progress=progress)
    except TrainingDiverged as e:
        kept = max(runs[0].saved_steps(), default=None)
        where = f"the last good checkpoint is {runs[0].checkpoint_path(kept)}" if kept is not None \
            else "no checkpoint was written"
        raise TrainingDiverged(f"{e}; {where}") from None
    for i, run in enumerate(runs):
        final = history[i][-1]
        write_json(run.dir / "result.json", {
            "run_id": run.spec.run_id, "spec": run.spec.to_dict(), "final": final,
            "checkpoint": str(run.checkpoint_path(trainer.total_steps)), "history": history[i],
        })


def _save(run: Run, trainer: Trainer, ts: TrainState, mask: Any, history: list[dict]) -> None:
    step = int(ts.step)
    save_checkpoint(run.checkpoint_path(step), params=ts.params, state=ts.state,
                    opt_state=ts.opt_state, mask=mask, step=step,
                    meta=checkpoint_meta(run.spec, trainer, history))


def ensure_checkpoint(
    run: Run, step: int, *, dataset: Dataset | None = None, data_dir: str | None = None,
    progress: bool = True,
) -> Path:
    """The checkpoint of `run` at `step`, recreated if it was not saved.

    Training is deterministic, so the missing step is reached again by training from the
    latest saved checkpoint before it (or by training the run, if it never started).
    """
    if step in run.saved_steps():
        return run.checkpoint_path(step)
    with run_locks([run.dir]):  # after another process training the run, if there is one
        return _recreate_checkpoint(run, step, dataset, data_dir, progress)


def _recreate_checkpoint(run: Run, step: int, dataset: Dataset | None, data_dir: str | None,
                         progress: bool) -> Path:
    if step in run.saved_steps():
        return run.checkpoint_path(step)
    earlier = [s for s in run.saved_steps() if s <= step]
    if not earlier:  # the run never started
        if run.spec.mask is not None:
            raise CheckpointError(f"run {run.dir} has not started; train it with its mask first")
        train_runs([run.spec], run.root, dataset=dataset, save_at=[step], progress=progress,
                   data_dir=data_dir)
        return run.checkpoint_path(step)
    config = run.spec.config
    dataset = dataset or load_dataset(config.dataset, data_dir)
    _same_data([run], dataset)  # the recreated checkpoint must come from the same data
    ckpt = run.load(max(earlier))
    trainer = Trainer(config, dataset, mask=ckpt.mask)
    template = trainer.init_state()
    ckpt = run.load(max(earlier), template.opt_state)
    if step > trainer.total_steps:
        raise ConfigError(f"step {step} is past the end of run {run.dir} ({trainer.total_steps})")
    start = TrainState(ckpt.params, ckpt.state, ckpt.opt_state, jnp.asarray(ckpt.step, jnp.int32))
    history = [h for h in ckpt.meta["history"] if h["step"] <= ckpt.step]
    trainer.run([start], [noise_keys(config, run.spec.sibling)], stop=step, event_steps=[step],
                on_event=lambda s, states, _: _save(run, trainer, states[0], ckpt.mask, history)
                if s == step else None, progress=progress)
    return run.checkpoint_path(step)


def _resume_point(
    runs: list[Run], trainer: Trainer, mask: Any
) -> tuple[list[TrainState], list[list[dict]]]:
    """Latest common checkpoint of the runs, else their shared starting state."""
    template = trainer.init_state()
    common = set.intersection(*(set(r.saved_steps()) for r in runs))
    if common:
        step = max(common)
        ckpts = [r.load(step, template.opt_state) for r in runs]
        states = [TrainState(c.params, c.state, c.opt_state, jnp.asarray(step, jnp.int32))
                  for c in ckpts]
        # Drop the evaluations after the resume point; they will be redone.
        return states, [[h for h in c.meta["history"] if h["step"] < step] for c in ckpts]
    spec = runs[0].spec
    if spec.parent is None:
        return [template] * len(runs), [[] for _ in runs]
    parent = Run.open(runs[0].root / spec.parent)
    c = parent.load(spec.start_step, template.opt_state)
    params, opt_state = c.params, c.opt_state
    if spec.reinit is not None:
        fresh = init_model(trainer.module, jax.random.key(spec.reinit),
                           trainer.dataset.input_shape)[0]
        params = fresh  # the reinitialisation ablation: the mask below zeroes the pruned
    if mask is not None:
        # A mask given to a child of a dense run prunes the parent's weights (m ⊙ w_k)
        # and their optimizer state (momentum): pruned weights carry nothing over.
        params = apply_mask(params, mask)
        opt_state = optax.tree_map_params(trainer.tx, lambda s, m: apply_mask(s, m),
                                          opt_state, mask)
    start = TrainState(params, c.state, opt_state, jnp.asarray(spec.start_step, jnp.int32))
    return [start] * len(runs), [[] for _ in runs]


def train_run(spec: RunSpec | TrainConfig, root: str | Path | None = None, **kwargs) -> Run:
    """Train (or resume, or reuse) one run; see `train_runs` for the options."""
    if isinstance(spec, TrainConfig):
        spec = RunSpec(spec)
    return train_runs([spec], root, **kwargs)[0]
