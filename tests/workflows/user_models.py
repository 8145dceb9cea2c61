"""Networks of "a user's own", importable as ``tests.workflows.user_models:<factory>`` by
`lmc interpolate --model ...` (tests/workflows/test_interop.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
from flax import nnx


class LinenMLP(nn.Module):
    """A linen MLP whose ``__call__`` takes no ``train`` argument."""

    width: int = 16
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width)(x.reshape(len(x), -1)))
        return nn.Dense(self.num_classes, name="output")(x)


class LinenBN(nn.Module):
    """A linen MLP with BatchNorm, called with ``train=``."""

    width: int = 16

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(self.width)(x.reshape(len(x), -1))
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        return nn.Dense(10, name="output")(x)


def linen_mlp(width: int = 16) -> LinenMLP:
    return LinenMLP(width=width)


class NnxMLP(nnx.Module):
    def __init__(self, width: int, inputs: int, batch_norm: bool, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(inputs, width, rngs=rngs)
        self.norm = nnx.BatchNorm(width, momentum=0.9, rngs=rngs) if batch_norm else None
        self.output = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.hidden(x.reshape(len(x), -1))
        if self.norm is not None:
            x = self.norm(x)
        return self.output(nnx.relu(x))


def nnx_mlp(width: int = 16, inputs: int = 40, seed: int = 0) -> NnxMLP:
    """An NNX MLP for MNIST-1D (40 inputs); `seed` draws its initial values."""
    return NnxMLP(width, inputs, False, nnx.Rngs(seed))


def nnx_bn_mlp(width: int = 16, inputs: int = 40, seed: int = 0) -> NnxMLP:
    """The NNX MLP with BatchNorm after the hidden layer."""
    return NnxMLP(width, inputs, True, nnx.Rngs(seed))


def not_a_module() -> dict:
    return {}
