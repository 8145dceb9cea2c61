"""The one evaluation function: mean cross-entropy and accuracy over a data set, and
optionally every example's loss and correctness from the same pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

ApplyFn = Callable[[Any, Any, jax.Array], jax.Array]  # (params, state, x) -> logits, eval mode


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _batch_metrics(apply_fn: ApplyFn, params, state, x, y):
    """The batch's loss and correct-prediction sums and its per-example losses and
    correctness."""
    logits = apply_fn(params, state, x)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = jnp.argmax(logits, -1) == y
    return (losses.sum(), correct.sum()), (losses, correct)


class Evaluator:
    """Loss, accuracy and error of a network (or a stack of networks) on a data set.

    `apply_fn(params, state, x) -> logits` runs the network in evaluation mode. With
    `network_axes`, params and state carry a leading axis of networks (siblings,
    interpolation points) that is evaluated in one vmapped program per batch: it is the
    `in_axes` of params and state for `jax.vmap`, e.g. `(0, 0)`, or `((0, None), 0)` for
    params given as `(stacked, shared)`. Batches are dispatched from Python without host
    synchronisation; the sums stay on the device until the end. With `per_example`, the
    same compiled calls also return every example's loss and correctness ("example_loss",
    float32, and "example_correct", bool, of shape ([networks,] examples)); the mean loss
    and accuracy are the same running sums either way.
    """

    def __init__(self, apply_fn: ApplyFn, batch_size: int = 1000,
                 network_axes: tuple[Any, Any] | None = None, per_example: bool = False):
        def first(p, s, x, y):
            sums, examples = _batch_metrics(apply_fn, p, s, x, y)
            return (sums, examples) if per_example else sums

        def more(p, s, x, y, total):
            (loss, correct), examples = _batch_metrics(apply_fn, p, s, x, y)
            sums = total[0] + loss, total[1] + correct
            return (sums, examples) if per_example else sums

        if network_axes is not None:
            first = jax.vmap(first, in_axes=(*network_axes, None, None))
            more = jax.vmap(more, in_axes=(*network_axes, None, None, 0))
        # The running sums are carried through the compiled calls: one dispatch per batch.
        self._first, self._more = jax.jit(first), jax.jit(more)
        self.batch_size, self.per_example = batch_size, per_example

    def __call__(self, params, state, x: jax.Array, y: jax.Array) -> dict[str, Any]:
        n, b = x.shape[0], self.batch_size
        total, examples = self._first(params, state, x[:b], y[:b]), []
        for start in range(b, n + b, b):
            if self.per_example:  # (sums, this batch's examples): keep the examples
                total, batch = total
                examples.append(batch)
            if start < n:
                total = self._more(params, state, x[start : start + b], y[start : start + b],
                                   total)
        loss_sum, correct = jax.device_get(total)
        loss, accuracy = loss_sum / n, correct / n
        out = {"loss": loss, "accuracy": accuracy, "error": 1.0 - accuracy}
        if self.per_example:
            losses, right = (np.concatenate(jax.device_get(parts), axis=-1)
                             for parts in zip(*examples, strict=True))
            out.update(example_loss=losses, example_correct=right)
        return out
