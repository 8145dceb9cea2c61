"""Models (lmc.training.models): parameter counts against the papers, the functional
interface, the registry and the execution policy of each model kind."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmc.core.masks import prunable
from lmc.core.policy import ExecutionPolicy
from lmc.errors import ConfigError
from lmc.training.models import (
    MODELS,
    OUTPUT_LAYER,
    apply_model,
    build_model,
    count_params,
    eval_apply,
    init_model,
    model_from_description,
    policy_for,
    train_apply,
    uses_convolutions,
)

CIFAR = (32, 32, 3)


def abstract_init(name: str, input_shape: tuple[int, ...], **options):
    """Params and state as shapes only: no big convolution is compiled."""
    module = build_model(name, 10, **options)
    return jax.eval_shape(lambda key: init_model(module, key, input_shape), jax.random.key(0))


def path_name(path) -> str:
    return "/".join(str(entry.key) for entry in path)


@pytest.mark.parametrize(
    "name, input_shape, expected",
    [
        # 784·300+300 + 300·100+100 + 100·10+10 (Frankle & Carbin 2019, Table 1: 266K).
        ("lenet_300_100", (28, 28, 1), 266_610),
        # Exactly open_lth's cifar_resnet_20 (convs without bias, BN scale+offset, fc).
        ("resnet20", CIFAR, 272_474),
        ("resnet56", CIFAR, 855_770),
        # Frankle & Carbin 2019: Conv-2 4.3M, Conv-4 2.4M. Their Conv-6 entry (1.7M) does not
        # follow from the architecture they give (conv 1.14M + dense 4·4·256·256+... 1.12M).
        ("conv2", CIFAR, 4_301_642),
        ("conv4", CIFAR, 2_425_930),
        ("conv6", CIFAR, 2_262_602),
        # open_lth's cifar_vgg_16 (14,728,266) minus its 4,224 conv biases that precede BN.
        ("vgg16", CIFAR, 14_724_042),
        ("vgg11", CIFAR, 9_228_362),
        # Greydanus 2020 ConvBase: 1·25·5+25 + 2·(25·25·3+25) + 125·10+10.
        ("conv1d", (40, 1), 5_210),
    ],
)
def test_param_counts(name, input_shape, expected):
    params, _ = abstract_init(name, input_shape)
    assert count_params(params) == expected


@pytest.mark.parametrize("widths", [(256, 256), (100,), (64, 32, 16)])
def test_mlp_count_closed_form(widths):
    params, state = abstract_init("mlp", (40, 1), widths=widths)
    sizes = (40, *widths, 10)
    assert count_params(params) == sum(
        a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    )
    assert state == {}


def test_batch_stats_are_state_not_params():
    params, state = abstract_init("resnet20", CIFAR)
    assert set(state) == {"batch_stats"}
    leaves = jax.tree.leaves(params)
    kernels = sum(
        x.size for x, flag in zip(leaves, jax.tree.leaves(prunable(params)), strict=True) if flag
    )
    norm_params = count_params(params) - kernels - 10  # 10: the output bias
    assert count_params(state) == norm_params  # a running mean and variance per scale, offset


@pytest.mark.parametrize("norm", ["layer", "none"])
def test_resnet_other_norms_have_no_state(norm):
    params, state = abstract_init("resnet20", CIFAR, norm=norm)
    assert state == {}
    # "none" adds conv biases where BN's offsets were; LayerNorm keeps BN's parameter count.
    assert count_params(params) == (272_474 if norm == "layer" else 271_690)


def test_width_multiplier():
    params, _ = abstract_init("resnet20", CIFAR, width=2)
    assert params["stem_conv"]["kernel"].shape == (3, 3, 3, 32)
    assert params[OUTPUT_LAYER]["kernel"].shape == (128, 10)


@pytest.mark.parametrize("name", MODELS)
def test_prunable_marks_exactly_the_kernels_and_output_is_named(name):
    input_shape = {"mlp": (40, 1), "conv1d": (40, 1), "lenet_300_100": (28, 28, 1)}
    params, _ = abstract_init(name, input_shape.get(name, CIFAR))
    flags = jax.tree_util.tree_flatten_with_path(prunable(params))[0]
    assert all(type(flag) is bool for _, flag in flags)
    for path, flag in flags:
        assert flag == path_name(path).endswith("kernel"), path_name(path)
    assert OUTPUT_LAYER in params
    assert set(params[OUTPUT_LAYER]) == {"kernel", "bias"}
    assert params[OUTPUT_LAYER]["kernel"].shape[-1] == 10


def test_resnet20_state_updates_in_train_mode_only():
    module = build_model("resnet20", 10)
    params, state = init_model(module, jax.random.key(0), (8, 8, 3))
    assert isinstance(params, dict) and isinstance(state, dict)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) + 3.0

    logits, new_state = apply_model(module, params, state, x, train=True)
    assert logits.shape == (4, 10)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    old_mean = state["batch_stats"]["stem_norm"]["mean"]
    new_mean = new_state["batch_stats"]["stem_norm"]["mean"]
    assert not np.allclose(old_mean, new_mean)

    logits, same_state = apply_model(module, params, state, x, train=False)
    assert logits.shape == (4, 10)
    assert same_state is state


def test_mlp_jit_and_vmap_over_params():
    module = build_model("mlp", 10, widths=[32])
    keys = jax.random.split(jax.random.key(0), 3)
    params, state = jax.vmap(lambda key: init_model(module, key, (40, 1)))(keys)
    assert state == {}
    x = jax.random.normal(jax.random.key(1), (5, 40, 1))

    @jax.jit
    def logits_of(params):
        return jax.vmap(lambda p: apply_model(module, p, {}, x, train=False)[0])(params)

    stacked = logits_of(params)
    assert stacked.shape == (3, 5, 10)
    first = jax.tree.map(lambda leaf: leaf[0], params)
    np.testing.assert_allclose(
        stacked[0], apply_model(module, first, {}, x, train=False)[0], rtol=1e-5, atol=1e-6
    )


def test_small_conv_models_run():
    for name, shape in [("conv1d", (40, 1)), ("conv2", (8, 8, 3))]:
        module = build_model(name, 7)
        params, state = init_model(module, jax.random.key(0), shape)
        logits, _ = apply_model(module, params, state, jnp.ones((2, *shape)), train=True)
        assert logits.shape == (2, 7)
        assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", ["conv6", "resnet56", "vgg11", "vgg16"])
def test_large_models_output_shapes(name, train):
    module = build_model(name, 7)
    params, state = jax.eval_shape(lambda key: init_model(module, key, CIFAR), jax.random.key(0))
    x = jax.ShapeDtypeStruct((2, *CIFAR), jnp.float32)
    logits, new_state = jax.eval_shape(
        lambda p, s, x: apply_model(module, p, s, x, train=train), params, state, x
    )
    assert logits.shape == (2, 7)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_dropout_key_reaches_user_models():
    class Dropper(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dropout(0.5, deterministic=not train)(nn.Dense(8)(x))

    module = Dropper()
    params, state = init_model(module, jax.random.key(0), (4,))
    assert state == {}
    x = jnp.ones((3, 4))
    a, _ = apply_model(module, params, state, x, train=True, dropout_key=jax.random.key(1))
    b, _ = apply_model(module, params, state, x, train=True, dropout_key=jax.random.key(2))
    assert not np.allclose(a, b)
    assert uses_convolutions(module)  # unknown modules: the batching-safe answer


def test_uses_convolutions_and_the_policy_it_picks():
    dense = {"mlp", "lenet_300_100"}
    for name in MODELS:
        module = build_model(name, 10)
        assert uses_convolutions(module) == (name not in dense)
        assert policy_for(module) == ExecutionPolicy.for_model(name not in dense)
    cpu_conv = ExecutionPolicy.for_model(True, "cpu")
    assert not cpu_conv.vmap_siblings and cpu_conv.alpha_chunk == 1  # XLA CPU convolutions
    assert ExecutionPolicy.for_model(False, "cpu").vmap_siblings
    assert ExecutionPolicy.for_model(True, "gpu") == ExecutionPolicy()  # everything vmapped


@pytest.mark.parametrize("name", MODELS)
def test_every_registered_name_builds_and_runs_from_its_description(name):
    input_shape = {"mlp": (40, 1), "conv1d": (40, 1), "lenet_300_100": (28, 28, 1)}
    shape = input_shape.get(name, CIFAR)
    module = build_model(name, 10)
    assert isinstance(module, nn.Module)
    rebuilt = model_from_description({"name": name, "num_classes": 10, "options": {}})
    assert rebuilt == module  # a checkpoint's description names the same network
    params, state = jax.eval_shape(lambda key: init_model(module, key, shape), jax.random.key(0))
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    logits = jax.eval_shape(eval_apply(module), params, state, x)
    assert logits.shape == (2, 10)
    new_state = jax.eval_shape(train_apply(module), params, state, x)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_lmc_list_names_exactly_the_registry(capsys):
    from lmc.cli import main

    assert main(["list"]) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    models = next(line for line in lines if line.startswith("models:"))
    assert models.split(":", 1)[1].strip().split(", ") == list(MODELS)
    assert {"mlp", "lenet_300_100", "conv1d", "resnet20", "vgg16"} <= set(MODELS)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError) as error:
        build_model("resnet18", 10)
    assert all(name in str(error.value) for name in MODELS)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError, match="valid options: norm, width"):
        build_model("resnet20", 10, depth=32)
    with pytest.raises(ConfigError, match="valid options: none"):
        build_model("lenet_300_100", 10, widths=(10,))


@pytest.mark.parametrize(
    "name, options",
    [
        ("resnet20", {"norm": "group"}),
        ("mlp", {"widths": (10, 0)}),
        ("mlp", {"widths": "10"}),
        ("conv1d", {"channels": 2.5}),
        ("resnet56", {"width": True}),
    ],
)
def test_bad_option_values(name, options):
    with pytest.raises(ConfigError):
        build_model(name, 10, **options)
