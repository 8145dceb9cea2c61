"""Per-example data scores: EL2N and GraNd (Paul, Ganguli & Dziugaite, NeurIPS 2021, "Deep
Learning on a Data Diet: Finding Important Examples Early in Training").

For a network f with weights w and an example (x, y), e_y the one-hot label and ℓ the
softmax cross-entropy:

    EL2N(x, y)  = ‖softmax(f(x; w)) − e_y‖₂        the norm of the error vector
    GraNd(x, y) = ‖∇_w ℓ(f(x; w), y)‖₂              the norm of the example's loss gradient

Paul et al. average both over a few independent runs a few epochs into training and keep
the highest-scoring examples (`lmc.workflows.scores` does the runs); here one network.
`apply_fn(params, state, x) -> logits` runs in evaluation mode (BatchNorm with its running
statistics), so an example's scores do not depend on the others it is computed with.

Per-example gradients are `jax.vmap` over examples of `jax.grad`: a chunk of B examples
holds B gradients at once (B × the parameter count floats), so `chunk_size` bounds the
memory. Every chunk has the same shape (the last one is padded by repeating its final
example and cut back), so one compiled program serves a whole data set. With a mask,
GraNd is the norm of the gradient of the live weights: pruned coordinates stay zero in
training and are left out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmc.core.evaluate import ApplyFn
from lmc.core.masks import apply_mask
from lmc.errors import ConfigError, check_name

SCORES: tuple[str, ...] = ("el2n", "grand")
CHUNK_SIZE = 256  # examples per vmapped per-example-gradient program


def el2n(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """‖softmax(logits) − onehot(labels)‖₂ per example: `(N, C), (N,) -> (N,)`."""
    probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.linalg.norm(probabilities - jax.nn.one_hot(labels, logits.shape[-1]), axis=-1)


@functools.lru_cache(maxsize=16)
def _chunk_scores(apply_fn: ApplyFn, names: tuple[str, ...]) -> Callable:
    """`(params, state, mask, x, y) -> {name: (B,)}` compiled once per apply function and
    set of scores (the checkpoints of one network share it)."""
    if "grand" not in names:  # the forward pass of the chunk as one batch suffices
        return jax.jit(lambda p, s, mask, x, y: {"el2n": el2n(apply_fn(p, s, x), y)})

    def one(p, s, mask, x, y):
        def loss(q):
            logits = apply_fn(q, s, x[None])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[None])[0], logits

        grads, logits = jax.grad(loss, has_aux=True)(p)
        values = {"el2n": el2n(logits, y[None])[0],
                  "grand": optax.global_norm(apply_mask(grads, mask))}
        return {name: values[name] for name in names}

    return jax.jit(jax.vmap(one, in_axes=(None, None, None, 0, 0)))


def example_scores(apply_fn: ApplyFn, params: Any, state: Any, x: jax.Array, y: jax.Array,
                   *, scores: Sequence[str] = SCORES, mask: Any = None,
                   chunk_size: int = CHUNK_SIZE) -> dict[str, jax.Array]:
    """The scores named in `scores` (of `SCORES`) of every example, in the order of `x`.

    Args:
      apply_fn: `(params, state, x) -> logits` in evaluation mode.
      params, state: the network's parameters and model state (e.g. BatchNorm statistics).
      x, y: inputs `(N, ...)` and integer labels `(N,)`.
      mask: a mask of the structure of `params` (True = alive; `lmc.core.masks`): GraNd
        counts the gradient of the live weights only. None: every parameter.
      chunk_size: examples per compiled call; GraNd holds this many gradients at once.

    Returns:
      {name: float32 array (N,)}, in the order of `scores`.

    References:
      Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data Diet", NeurIPS.
    """
    names = tuple(dict.fromkeys(check_name("data score", s, SCORES) for s in scores))
    if not names:
        raise ConfigError(f"name at least one data score of {', '.join(SCORES)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk size must be a positive integer, got {chunk_size!r}")
    n = int(x.shape[0])
    if n == 0 or int(y.shape[0]) != n:
        raise ConfigError(f"need one label per example and at least one example; got {n} "
                          f"inputs and {int(y.shape[0])} labels")
    fn, b = _chunk_scores(apply_fn, names), min(chunk_size, n)
    parts: dict[str, list[jax.Array]] = {name: [] for name in names}
    for start in range(0, n, b):
        idx = np.minimum(np.arange(start, start + b), n - 1)  # the last chunk padded
        out = fn(params, state, mask, x[idx], y[idx])
        for name in names:
            parts[name].append(out[name][: min(b, n - start)])
    return {name: jnp.concatenate(parts[name]) for name in names}


def el2n_scores(apply_fn: ApplyFn, params: Any, state: Any, x: jax.Array, y: jax.Array,
                *, chunk_size: int = CHUNK_SIZE) -> jax.Array:
    """EL2N of every example, `(N,)`: `example_scores` with `scores=("el2n",)`."""
    return example_scores(apply_fn, params, state, x, y, scores=("el2n",),
                          chunk_size=chunk_size)["el2n"]


def grand_scores(apply_fn: ApplyFn, params: Any, state: Any, x: jax.Array, y: jax.Array,
                 *, mask: Any = None, chunk_size: int = CHUNK_SIZE) -> jax.Array:
    """GraNd of every example, `(N,)`: `example_scores` with `scores=("grand",)`."""
    return example_scores(apply_fn, params, state, x, y, scores=("grand",), mask=mask,
                          chunk_size=chunk_size)["grand"]
