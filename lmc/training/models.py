"""Flax (linen) models and the small functional interface the rest of lmc uses.

Every model is called as ``module.apply(variables, x, train=train)`` on a batch ``x`` with
channels last: MNIST-1D as (N, 40, 1), images as (N, H, W, C). Fully connected models flatten
whatever they get. The final dense layer of every model is named ``"output"``
(`OUTPUT_LAYER`), so pruning can keep it dense.

A user's own flax model works with `init_model`, `apply_model`, `eval_apply`, `train_apply`
and `count_params` if its ``__call__`` accepts a ``train`` keyword.

Initialisation: convolution kernels are Kaiming-normal (He et al. 2015) with fan-in and
gain sqrt(2), untruncated, as PyTorch's ``kaiming_normal_`` used by open_lth; dense layers use
flax's default (LeCun normal). BatchNorm scales start at 1 (open_lth's default draws them
from U(0, 1) instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from lmc.core.policy import ExecutionPolicy
from lmc.errors import ConfigError, check_name

Params = dict[str, Any]
State = dict[str, Any]

OUTPUT_LAYER = "output"
NORMS = ("batch", "layer", "none")

# PyTorch's BatchNorm momentum 0.1 is flax's 0.9 (weight of the old running average).
_BN_MOMENTUM = 0.9
_NORM_EPSILON = 1e-5
_conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _conv(features: int, size: int, strides: int, use_bias: bool, name: str) -> nn.Conv:
    """A size x size convolution padded by size // 2 on every side, as PyTorch's padding=1.

    (flax's 'SAME' pads a stride-2 3x3 convolution on one side only, which would shift the
    residual branch by a pixel against a 1x1 stride-2 shortcut.)
    """
    pad = size // 2
    return nn.Conv(
        features,
        (size, size),
        strides=strides,
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        kernel_init=_conv_init,
        name=name,
    )


def _norm_layer(norm: str, train: bool, name: str) -> Callable[[jax.Array], jax.Array]:
    """BatchNorm, LayerNorm over the channel axis, or the identity."""
    check_name("norm", norm, NORMS)
    if norm == "batch":
        return nn.BatchNorm(
            use_running_average=not train,
            momentum=_BN_MOMENTUM,
            epsilon=_NORM_EPSILON,
            name=name,
        )
    if norm == "layer":
        return nn.LayerNorm(epsilon=_NORM_EPSILON, name=name)
    return lambda x: x


class MLP(nn.Module):
    """Fully connected ReLU network on the flattened input.

    ``widths=(300, 100)`` on MNIST is LeNet-300-100 (LeCun et al. 1998; Frankle & Carbin 2019).
    """

    num_classes: int
    widths: tuple[int, ...] = (256, 256)
    convolutional: ClassVar[bool] = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
        return nn.Dense(self.num_classes, name=OUTPUT_LAYER)(x)


class Conv1D(nn.Module):
    """The MNIST-1D convnet of Greydanus 2020 ("ConvBase"), input (N, L, C).

    Three ReLU convolutions of ``channels`` filters, kernel sizes 5, 3, 3, stride 2,
    padding 1, then a linear layer on the flattened features. On (40, 1) inputs with 25
    channels it has 5,210 parameters.
    """

    num_classes: int
    channels: int = 25
    convolutional: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, size in enumerate((5, 3, 3)):
            conv = nn.Conv(
                self.channels,
                (size,),
                strides=2,
                padding=((1, 1),),
                kernel_init=_conv_init,
                name=f"conv{i}",
            )
            x = nn.relu(conv(x))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, name=OUTPUT_LAYER)(x)


class ConvNet(nn.Module):
    """Conv-2/4/6 of Frankle & Carbin 2019 (a scaled-down VGG for CIFAR-10).

    3x3 'same' convolutions with bias and ReLU, a 2x2 max-pool after every pair, then dense
    ReLU layers (256, 256) and the output layer. ``plan`` lists the convolution widths.
    """

    num_classes: int
    plan: tuple[int, ...]
    dense: tuple[int, ...] = (256, 256)
    convolutional: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, features in enumerate(self.plan):
            x = nn.relu(_conv(features, 3, 1, True, f"conv{i}")(x))
            if i % 2 == 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.dense):
            x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
        return nn.Dense(self.num_classes, name=OUTPUT_LAYER)(x)


class BasicBlock(nn.Module):
    """Residual block of two 3x3 convolutions (He et al. 2016).

    The shortcut is a strided 1x1 convolution plus norm when the shape changes (open_lth).
    """

    features: int
    strides: int
    norm: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bias = self.norm == "none"  # a bias before a norm cancels
        y = _conv(self.features, 3, self.strides, bias, "conv1")(x)
        y = nn.relu(_norm_layer(self.norm, train, "norm1")(y))
        y = _conv(self.features, 3, 1, bias, "conv2")(y)
        y = _norm_layer(self.norm, train, "norm2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = _conv(self.features, 1, self.strides, bias, "shortcut_conv")(x)
            x = _norm_layer(self.norm, train, "shortcut_norm")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """CIFAR ResNet-(6n+2) of He et al. 2016, as open_lth's ``cifar_resnet_{depth}``.

    A 3x3 stem of 16·width filters, three stages of n basic blocks with 16/32/64 (·width)
    filters and stride 2 at the start of stages 2 and 3, global average pooling, and the
    output layer. With BatchNorm ResNet-20 has 272,474 parameters, ResNet-56 855,770.
    """

    num_classes: int
    depth: int
    norm: str = "batch"
    width: int = 1
    convolutional: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if (self.depth - 2) % 6:
            raise ConfigError(f"ResNet depth must be 6n + 2, got {self.depth}")
        blocks = (self.depth - 2) // 6
        base = 16 * self.width
        x = _conv(base, 3, 1, self.norm == "none", "stem_conv")(x)
        x = nn.relu(_norm_layer(self.norm, train, "stem_norm")(x))
        for stage in range(3):
            for i in range(blocks):
                strides = 2 if stage > 0 and i == 0 else 1
                x = BasicBlock(
                    base * 2**stage, strides, self.norm, name=f"stage{stage + 1}_block{i}"
                )(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name=OUTPUT_LAYER)(x)


class VGG(nn.Module):
    """CIFAR VGG (Simonyan & Zisserman 2015) as open_lth's ``cifar_vgg_{11,16}``.

    3x3 convolutions with norm and ReLU, 2x2 max-pools at the "M" entries of ``plan``, global
    average pooling (open_lth's final 2x2 average pool on 32x32 inputs), one dense output
    layer. Unlike open_lth the convolutions have no bias when a norm follows (the bias
    cancels in the norm): VGG-16 with BatchNorm has 14,724,042 parameters, 4,224 fewer.
    """

    num_classes: int
    plan: tuple[int | str, ...]
    norm: str = "batch"
    convolutional: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layer = 0
        for entry in self.plan:
            if entry == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            x = _conv(int(entry), 3, 1, self.norm == "none", f"conv{layer}")(x)
            x = nn.relu(_norm_layer(self.norm, train, f"norm{layer}")(x))
            layer += 1
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name=OUTPUT_LAYER)(x)


_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512)
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)

# name -> (module class, fixed fields, options a user may set)
_REGISTRY: dict[str, tuple[type[nn.Module], dict[str, Any], tuple[str, ...]]] = {
    "mlp": (MLP, {}, ("widths",)),
    "lenet_300_100": (MLP, {"widths": (300, 100)}, ()),
    "conv1d": (Conv1D, {}, ("channels",)),
    "conv2": (ConvNet, {"plan": (64, 64)}, ()),
    "conv4": (ConvNet, {"plan": (64, 64, 128, 128)}, ()),
    "conv6": (ConvNet, {"plan": (64, 64, 128, 128, 256, 256)}, ()),
    "resnet20": (ResNet, {"depth": 20}, ("norm", "width")),
    "resnet56": (ResNet, {"depth": 56}, ("norm", "width")),
    "vgg11": (VGG, {"plan": _VGG11}, ("norm",)),
    "vgg16": (VGG, {"plan": _VGG16}, ("norm",)),
}
MODELS: tuple[str, ...] = tuple(sorted(_REGISTRY))


def _positive_int(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be a positive integer, got {value!r}")
    return value


def _check_option(option: str, value: Any) -> Any:
    """Validate one option value and return it in the form the module stores."""
    if option == "norm":
        return check_name("norm", value, NORMS)
    if option == "widths":
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value,)  # one hidden layer
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"widths must be a sequence of positive integers, got {value!r}")
        return tuple(_positive_int("each of widths", w) for w in value)
    return _positive_int(option, value)


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """The registered model `name` (one of `MODELS`) with `num_classes` outputs.

    Raises ConfigError for an unknown name (listing `MODELS`), an option the model does not
    have (listing its options), or an invalid option value.
    """
    check_name("model", name, MODELS)
    cls, fixed, valid = _REGISTRY[name]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for model {name!r}; "
            f"valid options: {', '.join(valid) or 'none'}"
        )
    checked = {option: _check_option(option, value) for option, value in options.items()}
    return cls(num_classes=_positive_int("num_classes", num_classes), **fixed, **checked)


def init_model(
    module: nn.Module, key: jax.Array, input_shape: tuple[int, ...]
) -> tuple[Params, State]:
    """Initial ``(params, state)`` for inputs of shape `input_shape` (no batch axis).

    `params` is the 'params' collection, `state` all other collections (e.g.
    ``{'batch_stats': ...}``, or ``{}``), both plain nested dicts.
    """
    x = jnp.zeros((1, *input_shape), jnp.float32)
    # One compilation instead of one per operation: about 2x faster for a ResNet on CPU.
    variables = jax.jit(lambda key: module.init(key, x, train=False))(key)
    variables = flax.core.unfreeze(variables)
    params = variables.pop("params", {})
    return params, variables


def apply_model(
    module: nn.Module,
    params: Params,
    state: State,
    x: jax.Array,
    *,
    train: bool,
    dropout_key: jax.Array | None = None,
) -> tuple[jax.Array, State]:
    """Logits for the batch `x` and the new state; pure, so it works under jit and vmap.

    ``train=True``: BatchNorm normalises with batch statistics and the updated running
    averages come back in the new state. ``train=False``: running averages are used and
    `state` is returned unchanged. `dropout_key`, if given, is the 'dropout' PRNG stream.
    """
    variables = {"params": params, **state}
    rngs = None if dropout_key is None else {"dropout": dropout_key}
    if train and state:
        logits, updates = module.apply(variables, x, train=True, rngs=rngs, mutable=list(state))
        return logits, {**state, **flax.core.unfreeze(updates)}
    return module.apply(variables, x, train=train, rngs=rngs), state


def eval_apply(module: nn.Module) -> Callable:
    """`(params, state, x) -> logits` in evaluation mode: what `Evaluator`, the Hessian, the
    pruning criteria and the interpolation take."""
    return lambda params, state, x: apply_model(module, params, state, x, train=False)[0]


def train_apply(module: nn.Module) -> Callable:
    """`(params, state, x) -> new state` in train mode (BatchNorm statistics update): what
    the BatchNorm reset of interpolated networks takes."""
    return lambda params, state, x: apply_model(module, params, state, x, train=True)[1]


def model_from_description(description: dict[str, Any]) -> nn.Module:
    """The module a checkpoint's model description (name, num_classes, options) names."""
    return build_model(description["name"], description["num_classes"],
                       **description["options"])


def uses_convolutions(module: nn.Module) -> bool:
    """Whether `module` convolves (XLA's CPU convolutions are slow under vmap/scan).

    Models of this module declare it; for any other module the answer is True, the choice
    that is safe for batching.
    """
    return getattr(type(module), "convolutional", True)


def policy_for(module: nn.Module) -> ExecutionPolicy:
    """The execution policy for `module` on the default backend."""
    return ExecutionPolicy.for_model(uses_convolutions(module))


def count_params(params: Any) -> int:
    """Total number of scalars in `params` (arrays or `jax.ShapeDtypeStruct` leaves)."""
    return sum(math.prod(getattr(leaf, "shape", ())) for leaf in jax.tree_util.tree_leaves(params))


__all__ = [
    "MODELS",
    "NORMS",
    "OUTPUT_LAYER",
    "apply_model",
    "build_model",
    "count_params",
    "eval_apply",
    "init_model",
    "model_from_description",
    "policy_for",
    "train_apply",
    "uses_convolutions",
]
