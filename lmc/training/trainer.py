"""JIT-compiled training on device-resident data, with a sibling axis.

S siblings that share a starting point but not their SGD-noise keys train together:
either vmapped in one compiled program (sharded over the devices when there are
several), or as a loop of per-sibling compiled steps, with one or many steps per
dispatch, as the execution policy of the model and backend says (`lmc.core.policy`).
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from lmc.core.evaluate import Evaluator, cross_entropy
from lmc.core.masks import apply_mask, path_name
from lmc.core.policy import ExecutionPolicy
from lmc.errors import ConfigError, TrainingDiverged
from lmc.training.config import Duration, TrainConfig
from lmc.training.data import Dataset, augment, load_dataset, steps_batch_indices, steps_per_epoch
from lmc.training.models import apply_model, build_model, eval_apply, init_model, policy_for
from lmc.training.rng import NoiseKeys, noise_keys, stream_key
from lmc.training.subsets import select_examples

CHECK_EVERY = 64  # dispatches between host reads of the loss (NaN check, progress bar)
# Most bytes of training examples a dispatch gathers up front (else each step gathers its own).
PREFETCH_BYTES = 64 << 20


class TrainState(NamedTuple):
    params: Any
    state: Any  # model state, e.g. {"batch_stats": ...}
    opt_state: Any
    step: jax.Array  # int32 scalar: the number of steps taken


# ----------------------------------------------------------------------------- schedules


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the step (constant, step, cosine or cyclic).

    Linear warmup multiplies the schedule by `min(1, (step + 1) / warmup)` (as open_lth
    does). The cyclic schedule is cosine annealing with warm restarts (Loshchilov & Hutter
    2017; Portes et al. 2022): cycle i lasts `ceil(cycle * cycle_mult**i)` steps.
    """
    lr, total = config.lr, config.total_steps(steps_per_epoch)
    warmup = Duration.parse(config.warmup).steps(steps_per_epoch)
    if config.schedule == "constant":
        base = optax.constant_schedule(lr)
    elif config.schedule == "step":
        # A milestone given twice multiplies by gamma twice (optax takes a dict).
        bounds = collections.Counter(Duration.parse(m).steps(steps_per_epoch)
                                     for m in config.milestones)
        base = optax.piecewise_constant_schedule(
            lr, {b: config.gamma ** n for b, n in bounds.items()})
    elif config.schedule == "cosine":
        base = optax.cosine_decay_schedule(lr, total)
    else:
        # SGDR without per-cycle warmup: one cosine decay per cycle, joined at the
        # restarts; past the last cycle the rate stays at 0.
        first = Duration.parse(config.cycle).steps(steps_per_epoch)
        lengths = [first]
        while sum(lengths) < total:
            lengths.append(math.ceil(first * config.cycle_mult ** len(lengths)))
        base = optax.sgdr_schedule([dict(init_value=lr, peak_value=lr, warmup_steps=0,
                                         decay_steps=n) for n in lengths])
    if warmup <= 1:  # min(1, (step + 1) / 1) is 1 from the first step
        return base
    # optax's warmups add a ramp before the schedule instead of multiplying it, and
    # linear_schedule(1/w, 1, w - 1) loses precision at the first steps (it computes
    # 1 - (1 - x)); piecewise_interpolate_schedule is accurate to an ulp there, but
    # (1/w) * w may round below 1, so the factor is exactly 1 from step w - 1 on.
    # optax has no product of schedules, hence the lambda.
    factor = optax.join_schedules(
        [optax.piecewise_interpolate_schedule("linear", 1 / warmup, {warmup - 1: warmup}),
         optax.constant_schedule(1.0)], [warmup - 1])
    return lambda step: base(step) * factor(step)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD (plain, momentum, Nesterov), Adam or AdamW; weight decay is L2 (added to the
    gradient, as in PyTorch's SGD) except for AdamW, where it is decoupled."""
    lr = learning_rate_schedule(config, steps_per_epoch)
    if config.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        opt = optax.adam(lr)
    else:
        momentum = None if config.optimizer == "sgd" else config.momentum
        opt = optax.sgd(lr, momentum=momentum, nesterov=config.optimizer == "nesterov")
    if config.weight_decay:
        return optax.chain(optax.add_decayed_weights(config.weight_decay), opt)
    return opt


# ----------------------------------------------------------------------------- network


def model_for(config: TrainConfig, dataset: Dataset):
    return build_model(config.model, dataset.num_classes, **config.model_options)


def l1_penalised(params: Any) -> Any:
    """Python bools of the structure of `params`: True for the leaves the L1 penalty
    covers, the weights and biases of the conv and dense layers ('kernel' leaves and the
    'bias' beside a 'kernel'); norm scales and offsets (a 'bias' beside a 'scale') are not
    covered, nor is the model state (running statistics)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    names = [path_name(p).rsplit("/", 1) for p, _ in flat]
    with_kernel = {n[0] for n in names if len(n) == 2 and n[1] == "kernel"}
    flags = [n[-1] == "kernel" or (len(n) == 2 and n[1] == "bias" and n[0] in with_kernel)
             for n in names]
    return jax.tree.unflatten(jax.tree.structure(params), flags)


def l1_norm(params: Any) -> jax.Array:
    """The sum of |theta| over the leaves `l1_penalised` covers."""
    leaves = [jnp.sum(jnp.abs(x)) for x, on in
              zip(jax.tree.leaves(params), jax.tree.leaves(l1_penalised(params)), strict=True)
              if on]
    return sum(leaves, jnp.zeros((), jnp.float32))


def training_loss(config: TrainConfig, logits: jax.Array, labels: jax.Array,
                  params: Any) -> jax.Array:
    """The loss SGD minimises: the mean cross-entropy, plus `config.l1` * `l1_norm`."""
    loss = cross_entropy(logits, labels)
    if config.l1:
        loss = loss + config.l1 * l1_norm(params)
    return loss


def init_train_state(config: TrainConfig, module, dataset: Dataset, tx, mask=None) -> TrainState:
    params, state = init_model(module, stream_key(config, "init"), dataset.input_shape)
    params = apply_mask(params, mask)
    return TrainState(params, state, tx.init(params), jnp.zeros((), jnp.int32))


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: Any, n: int) -> list[Any]:
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


@dataclass
class TrainResult:
    """What `Trainer.run` returns: final states and, per sibling, the evaluation history."""

    states: list[TrainState]
    history: list[list[dict[str, Any]]]

# Compiled programs per (config, data set shape, layout): trainers of one config (the levels
# of IMP, the children of a spawn) reuse them instead of compiling again (~0.7-1 s each
# on the CPU for an MLP); masks, data and states are arguments, not constants.
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 16


def _programs(config: TrainConfig, dataset: Dataset, num_examples: int, strategy: str,
              members: int, eval_batch_size: int) -> tuple[Any, Any, Callable, Evaluator]:
    """(module, optimizer, compiled steps, evaluator) of a config on a data set's shape,
    training on `num_examples` examples."""
    key = (json.dumps(config.identity(), sort_keys=True, default=list), dataset.num_classes,
           num_examples, tuple(dataset.input_shape), str(dataset.x_train.dtype),
           dataset.augmentation, strategy, members, eval_batch_size)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = _build_programs(config, dataset, num_examples, strategy, members,
                                         eval_batch_size)
        if len(_PROGRAMS) > _MAX_PROGRAMS:
            _PROGRAMS.popitem(last=False)
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key]


def _build_programs(config: TrainConfig, dataset: Dataset, num_train: int, strategy: str,
                    members: int, eval_batch_size: int) -> tuple[Any, Any, Callable, Evaluator]:
    module = model_for(config, dataset)
    tx = make_optimizer(config, steps_per_epoch(num_train, config.batch_size))
    augmentation = dataset.augmentation if config.augment else "none"
    batch_size = config.batch_size
    example_bytes = math.prod(dataset.input_shape) * dataset.x_train.dtype.itemsize

    def step(ts: TrainState, keys: NoiseKeys, xb, yb, mask):
        xb = augment(keys.augment, ts.step, xb, augmentation)
        dropout_key = jax.random.fold_in(keys.dropout, ts.step)

        def loss_fn(params):
            logits, new_state = apply_model(module, params, ts.state, xb, train=True,
                                            dropout_key=dropout_key)
            return training_loss(config, logits, yb, params), new_state

        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params)
        grads = apply_mask(grads, mask)  # pruned weights get no update and no momentum
        updates, opt_state = tx.update(grads, ts.opt_state, ts.params)
        params = apply_mask(optax.apply_updates(ts.params, updates), mask)
        return TrainState(params, new_state, opt_state, ts.step + 1), loss

    def steps(ts, keys, x, y, mask, n: int):
        # The batches of all n steps (`get_batch`'s, un-augmented) are drawn up front:
        # their indices in one computation, and, unless that copy would be large,
        # their examples in one gather, so that a step only slices its batch.
        idx = steps_batch_indices(keys.data, ts.step, n, num_train, batch_size)
        gathered = members * n * batch_size * example_bytes <= PREFETCH_BYTES
        batches = (x[idx], y[idx]) if gathered else idx

        def body(t, batch):
            xb, yb = batch if gathered else (x[batch], y[batch])
            return step(t, keys, xb, yb, mask)

        if n == 1:
            ts, loss = body(ts, jax.tree.map(lambda b: b[0], batches))
            return ts, loss[None]
        return jax.lax.scan(body, ts, batches)

    if strategy == "vmap":
        steps = jax.vmap(steps, in_axes=(0, 0, None, None, None, None))
    evaluator = Evaluator(eval_apply(module), eval_batch_size,
                          network_axes=(0, 0) if strategy == "vmap" else None)
    return module, tx, jax.jit(steps, static_argnums=5), evaluator


def training_examples(config: TrainConfig, dataset: Dataset) -> np.ndarray | None:
    """Sorted int32 indices of the training examples `config` trains on; None: all of them.

    A subset (`config.subset`) is chosen once, from its scores file or, for a random one,
    from the config's data stream before a sibling index is folded in: siblings train on
    the same examples.
    """
    if config.subset is None:
        return None
    return select_examples(config.subset, dataset.name, np.asarray(dataset.y_train),
                           stream_key(config, "data"))


class Trainer:
    """Compiled training of S >= 1 siblings of one config on one data set.

    With a subset in the config, training and the training metrics use the kept
    examples only (`examples`, gathered once into `x_train`/`y_train`), an epoch is a
    pass over them and the steps per epoch are counted on their number; the test split
    is evaluated whole.
    """

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset,
        *,
        mask: Any = None,
        siblings: int = 1,
        policy: ExecutionPolicy | None = None,
        eval_batch_size: int = 1000,
    ):
        self.config, self.dataset, self.mask, self.siblings = config, dataset, mask, siblings
        self.examples = training_examples(config, dataset)
        self.x_train, self.y_train = dataset.x_train, dataset.y_train
        if self.examples is not None:
            if self.examples.size < config.batch_size:
                raise ConfigError(f"the subset {config.subset} keeps {self.examples.size} "
                                  f"examples, fewer than the batch size {config.batch_size}")
            index = jnp.asarray(self.examples)
            self.x_train, self.y_train = self.x_train[index], self.y_train[index]
        num_train = int(self.x_train.shape[0])
        self.steps_per_epoch = steps_per_epoch(num_train, config.batch_size)
        self.total_steps = config.total_steps(self.steps_per_epoch)
        self.policy = policy or policy_for(model_for(config, dataset))
        self.strategy = "vmap" if self.policy.vmap_siblings and siblings > 1 else "loop"
        self.steps_per_dispatch = self.policy.steps_per_dispatch
        self.module, self.tx, self._steps, self._evaluate = _programs(
            config, dataset, num_train, self.strategy,
            siblings if self.strategy == "vmap" else 1, eval_batch_size)
        self._sharding = self._sibling_sharding()

    def _sibling_sharding(self) -> NamedSharding | None:
        """Shard the sibling axis over the devices when there are several."""
        devices = jax.devices()
        if self.strategy != "vmap" or len(devices) == 1 or self.siblings % len(devices):
            return None
        return NamedSharding(Mesh(np.array(devices), ("sibling",)), PartitionSpec("sibling"))

    def init_state(self) -> TrainState:
        return init_train_state(self.config, self.module, self.dataset, self.tx, self.mask)

    def evaluate(self, states: list[TrainState]) -> list[dict[str, float]]:
        """Train (on the examples trained on) and test loss/accuracy of each sibling."""
        ds, x_train, y_train = self.dataset, self.x_train, self.y_train
        if self.strategy == "vmap":
            params, state = _stack([s.params for s in states]), _stack([s.state for s in states])
            train = self._evaluate(params, state, x_train, y_train)
            test = self._evaluate(params, state, ds.x_test, ds.y_test)
            per = [({k: float(v[i]) for k, v in train.items()},
                    {k: float(v[i]) for k, v in test.items()}) for i in range(len(states))]
        else:
            per = [(self._evaluate(s.params, s.state, x_train, y_train),
                    self._evaluate(s.params, s.state, ds.x_test, ds.y_test)) for s in states]
        return [
            {"step": int(s.step), "train_loss": float(tr["loss"]),
             "train_accuracy": float(tr["accuracy"]), "test_loss": float(te["loss"]),
             "test_accuracy": float(te["accuracy"])}
            for s, (tr, te) in zip(states, per, strict=True)
        ]

    def run(
        self,
        states: list[TrainState],
        keys: list[NoiseKeys],
        *,
        stop: int | None = None,
        eval_every: int | None = None,
        event_steps: Sequence[int] = (),
        on_event: Callable[[int, list[TrainState], list[dict] | None], None] | None = None,
        progress: bool = True,
    ) -> TrainResult:
        """Train all siblings from their common step to `stop` (default: the end).

        Evaluates every `eval_every` steps (and at the start of training and at `stop`)
        and calls `on_event(step, states, records)` at every evaluation and every step in
        `event_steps` (records is None where no evaluation ran). Dispatch boundaries fall
        on these steps and on multiples of `steps_per_dispatch`, so the same call resumed
        from any event step takes the same path (and, between them, power-of-two lengths:
        a handful of compiled programs whatever the schedule, the same numbers bit for bit).
        """
        if len(states) != self.siblings or len(keys) != self.siblings:
            raise ValueError(f"expected {self.siblings} states and keys")
        start = int(states[0].step)
        stop = self.total_steps if stop is None else stop
        history: list[list[dict]] = [[] for _ in states]
        evals = set(range(0, stop + 1, eval_every)) if eval_every else set()
        evals |= {stop} | ({0} if start == 0 else set())
        events = sorted(s for s in evals | set(event_steps) if start <= s <= stop)
        k = self.steps_per_dispatch
        bounds = sorted(set(events) | set(range((start // k + 1) * k, stop, k)))

        current = self._place(states, keys)
        bar, postfix = _progress_bar(start, stop, enabled=progress), {}
        # Losses stay on the device and are checked every CHECK_EVERY dispatches and before
        # every event, so that dispatches overlap with computation and no checkpoint is
        # written after a non-finite loss.
        pending: list[tuple[int, list[jax.Array]]] = []

        def check_losses() -> None:
            for first, chunks in pending:
                losses = np.concatenate([np.asarray(c) for c in chunks], axis=-1)
                if not np.all(np.isfinite(losses)):
                    at = first + int(np.argwhere(~np.isfinite(losses))[0][-1])
                    raise TrainingDiverged(
                        f"loss became {losses[~np.isfinite(losses)][0]} at step {at}; "
                        "training stopped")
            if pending:
                postfix["loss"] = f"{float(np.mean(np.asarray(pending[-1][1][-1])[..., -1])):.4f}"
                bar.set_postfix(postfix)
            pending.clear()

        try:
            step = start
            for target in bounds:
                if target > step:
                    current, losses = self._advance(current, target - step)
                    pending.append((step, losses))
                    if len(pending) >= CHECK_EVERY:
                        check_losses()
                    bar.update(target - step)
                    step = target
                if target in events:
                    check_losses()
                    out = self._states(current)
                    records = None
                    if target in evals:
                        records = self.evaluate(out)
                        for h, r in zip(history, records, strict=True):
                            h.append(r)
                        acc = np.mean([r["test_accuracy"] for r in records])
                        postfix["test_acc"] = f"{acc:.3f}"
                        bar.set_postfix(postfix)
                    if on_event:
                        on_event(target, out, records)
        finally:
            bar.close()
        return TrainResult(self._states(current), history)

    # The running representation: one stacked state for "vmap", a list for "loop".
    def _place(self, states, keys):
        mask = self.mask
        if self.strategy == "loop":
            return [(s, k) for s, k in zip(states, keys, strict=True)], mask
        stacked = (_stack(states), _stack(keys))
        if self._sharding is not None:
            stacked = jax.device_put(stacked, self._sharding)
        return stacked, mask

    def _advance(self, current, n: int):
        # n steps as dispatches of steps_per_dispatch and then of power-of-two lengths: the
        # step count is a static argument, so arbitrary gaps between events (epochs,
        # checkpoints) would each compile a program of their own; this way a run compiles
        # at most log2(steps_per_dispatch) + 2 of them.
        # The losses stay a list of device arrays: joining them on the device would compile
        # a concatenation per combination of lengths.
        chunks = []
        for size in dispatch_lengths(n, self.steps_per_dispatch):
            current, losses = self._advance_compiled(current, size)
            chunks.append(losses)
        return current, chunks

    def _advance_compiled(self, current, n: int):
        members, mask = current
        x, y = self.x_train, self.y_train
        if self.strategy == "loop":
            out = [self._steps(s, k, x, y, mask, n) for s, k in members]
            losses = jnp.stack([loss for _, loss in out])
            return ([(s, k) for (s, _), (_, k) in zip(out, members, strict=True)], mask), losses
        states, keys = members
        states, losses = self._steps(states, keys, x, y, mask, n)
        return ((states, keys), mask), losses

    def _states(self, current) -> list[TrainState]:
        members, _ = current
        if self.strategy == "loop":
            return [s for s, _ in members]
        return _unstack(members[0], self.siblings)


def dispatch_lengths(n: int, full: int) -> list[int]:
    """n steps as dispatches of `full` steps, then distinct powers of two, largest first
    (n=250, full=100 -> [100, 100, 32, 16, 2])."""
    rest = n % full
    return [full] * (n // full) + [1 << i for i in reversed(range(rest.bit_length()))
                                   if rest >> i & 1]


def _progress_bar(start: int, stop: int, enabled: bool):
    return tqdm(total=stop, initial=start, disable=not enabled, unit="step", leave=False,
                dynamic_ncols=True)


def train(
    config: TrainConfig,
    dataset: Dataset | None = None,
    *,
    eval_every: str | int | None = None,
    progress: bool = True,
    mask: Any = None,
    data_dir: str | None = None,
) -> TrainResult:
    """Train one network from its initialisation to the end, in memory (no run store)."""
    dataset = dataset or load_dataset(config.dataset, data_dir)
    trainer = Trainer(config, dataset, mask=mask)
    every = Duration.parse(eval_every).steps(trainer.steps_per_epoch) if eval_every else None
    return trainer.run([trainer.init_state()], [noise_keys(config)], eval_every=every,
                       progress=progress)


__all__ = [
    "TrainResult", "TrainState", "Trainer", "init_train_state", "l1_norm", "l1_penalised",
    "learning_rate_schedule", "make_optimizer", "model_for", "train", "training_examples",
    "training_loss",
]
