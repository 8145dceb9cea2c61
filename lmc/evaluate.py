"""The one evaluation function: mean cross-entropy and accuracy over a data set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

ApplyFn = Callable[[Any, Any, jax.Array], jax.Array]  # (params, state, x) -> logits, eval mode


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _batch_sums(apply_fn: ApplyFn, params, state, x, y) -> tuple[jax.Array, jax.Array]:
    logits = apply_fn(params, state, x)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return losses.sum(), (jnp.argmax(logits, -1) == y).sum()


class Evaluator:
    """Loss, accuracy and error of a network (or a stack of networks) on a data set.

    `apply_fn(params, state, x) -> logits` runs the network in evaluation mode. With
    `network_axes`, params and state carry a leading axis of networks (siblings,
    interpolation points) that is evaluated in one vmapped program per batch: it is the
    `in_axes` of params and state for `jax.vmap`, e.g. `(0, 0)`, or `((0, None), 0)` for
    params given as `(stacked, shared)`. Batches are dispatched from Python without host
    synchronisation; the sums stay on the device until the end.
    """

    def __init__(self, apply_fn: ApplyFn, batch_size: int = 1000,
                 network_axes: tuple[Any, Any] | None = None):
        sums = lambda p, s, x, y: _batch_sums(apply_fn, p, s, x, y)  # noqa: E731
        if network_axes is not None:
            sums = jax.vmap(sums, in_axes=(*network_axes, None, None))
        self._sums = jax.jit(sums)
        self.batch_size = batch_size

    def __call__(self, params, state, x: jax.Array, y: jax.Array) -> dict[str, Any]:
        n = x.shape[0]
        loss_sum, correct = 0.0, 0
        for start in range(0, n, self.batch_size):
            end = start + self.batch_size
            batch_loss, batch_correct = self._sums(params, state, x[start:end], y[start:end])
            loss_sum, correct = loss_sum + batch_loss, correct + batch_correct
        loss, accuracy = jax.device_get((loss_sum / n, correct / n))
        return {"loss": loss, "accuracy": accuracy, "error": 1.0 - accuracy}
