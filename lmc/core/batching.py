"""Equal-size batches of a data set and means over them, the input of HVPs and gradients.

`batches = (xs, ys)` shaped (num_batches, batch, ...) and (num_batches, batch) is the form
the Hessian operator, the gradient-based pruning criteria and the safe-ratio prediction
take, so that a compiled program sees the data as an argument and averages over all of it
rather than over one noisy batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmc.core.policy import ExecutionPolicy, default_policy
from lmc.errors import ConfigError

Batches = tuple[jax.Array, jax.Array]


def batches_of(x: jax.Array, y: jax.Array, batch_size: int) -> Batches:
    """Reshape a data set into (num_batches, batch_size, ...) equal-size batches; the last
    incomplete batch is dropped (say so with a smaller `batch_size` if that matters)."""
    n = x.shape[0] // batch_size * batch_size
    if n == 0:
        raise ConfigError(f"batch size {batch_size} is larger than the {x.shape[0]} examples")
    return (x[:n].reshape(-1, batch_size, *x.shape[1:]), y[:n].reshape(-1, batch_size))


def fixed_subset(num_examples: int, size: int | None, seed: int = 0) -> np.ndarray:
    """A fixed random subset of indices (all of them, in order, when size is None)."""
    if size is None or size >= num_examples:
        return np.arange(num_examples)
    return np.sort(np.random.default_rng(seed).permutation(num_examples)[:size])


def batch_mean(fn: Callable[[jax.Array, jax.Array], Any], batches: Batches,
               policy: ExecutionPolicy | None = None) -> Any:
    """The mean over equal-size batches of `fn(x, y)` (any pytree), traceable: a Python
    loop over the batches when there are at most `policy.unroll_batches`, else
    `lax.scan`."""
    xs, ys = batches
    count = xs.shape[0]
    if count <= (policy or default_policy()).unroll_batches:
        total = fn(xs[0], ys[0])
        for i in range(1, count):
            total = jax.tree.map(jnp.add, total, fn(xs[i], ys[i]))
    else:
        first = fn(xs[0], ys[0])  # the scan's carry starts from the first batch

        def body(total, batch):
            return jax.tree.map(jnp.add, total, fn(*batch)), None

        total, _ = jax.lax.scan(body, first, (xs[1:], ys[1:]))
    return jax.tree.map(lambda t: t / count, total)


def mean_gradient(loss_fn: Callable, params: Any, batches: Batches,
                  policy: ExecutionPolicy | None = None) -> Any:
    """∇ of the mean over equal-size batches of `loss_fn(params, x, y)`, traceable."""
    return batch_mean(lambda x, y: jax.grad(loss_fn)(params, x, y), batches, policy)
