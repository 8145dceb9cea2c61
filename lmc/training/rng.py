"""The one place that names lmc's PRNG streams.

Separate streams let sibling runs share everything but SGD noise (Frankle et al. 2020):
a child folds its index into the data-order and augmentation streams only.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from lmc.training.config import TrainConfig

STREAMS = ("init", "data", "augment", "dropout")


def stream_key(config: TrainConfig, stream: str) -> jax.Array:
    return jax.random.fold_in(jax.random.key(config.seed_of(stream)), STREAMS.index(stream))


class NoiseKeys(NamedTuple):
    """The keys of the SGD-noise streams a training step consumes."""

    data: jax.Array
    augment: jax.Array
    dropout: jax.Array


def noise_keys(config: TrainConfig, sibling: int | None = None) -> NoiseKeys:
    """Keys for a run; a sibling index is folded into data order and augmentation only."""
    data, augment = stream_key(config, "data"), stream_key(config, "augment")
    if sibling is not None:
        data, augment = jax.random.fold_in(data, sibling), jax.random.fold_in(augment, sibling)
    return NoiseKeys(data, augment, stream_key(config, "dropout"))
