"""Pruning masks and criteria: magnitude (global or per layer), random, SNIP, GraSP, SynFlow.

A mask is a pytree of the structure of `params` with one boolean numpy array per leaf,
True = alive. Only prunable leaves (conv and dense kernels, `lmc.models.prunable`) are ever
False; layers named in `keep_dense` (e.g. ``("output",)``) are never pruned and do not count
among the alive weights.

Scores are "importance": pruning removes the lowest-scoring live weights. The order is
exact and shared with anything that predicts what a pruning step removes
(`removal_order`): ascending score, ties broken by position in the flat vector of all
prunable leaves concatenated in ``jax.tree.leaves`` order (`flat_prunable`), so a mask is
a deterministic function of the scores. A step removes ``ceil(fraction · alive)`` weights
(`prune_count`), never revives a pruned one, and scores and selects inside one compiled
program; iterative criteria (SynFlow's 100 rounds) run as a `lax.fori_loop` in it.

Criteria for pruning at initialisation follow Frankle et al. 2021 ("Missing the Mark"):
SNIP (Lee et al. 2019) ``|∂L/∂w ⊙ w|``; GraSP (Wang et al. 2020) ``w ⊙ Hg`` with logits
/ 200; SynFlow (Tanaka et al. 2020) ``|∂R/∂w ⊙ w|`` iterated with density_e =
density^((e+1)/E). Data-dependent criteria take ``apply_fn(params, state, x) -> logits`` in
evaluation mode (`lmc.train.eval_apply`) and ``batches = (xs, ys)`` shaped
(num_batches, batch, ...) as from `lmc.hessian.batches_of`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmc.errors import ConfigError, LmcError, check_name
from lmc.evaluate import cross_entropy
from lmc.hessian import batch_mean, make_hvp
from lmc.models import prunable
from lmc.train import apply_mask

ApplyFn = Callable[[Any, Any, jax.Array], jax.Array]  # (params, state, x) -> logits

CRITERIA = ("magnitude", "magnitude_layerwise", "random", "snip", "grasp", "synflow")
GRASP_TEMPERATURE = 200.0  # Wang et al.'s T: logits / T (their code and Missing the Mark)
SYNFLOW_ROUNDS = 100  # E of Tanaka et al. 2020

# What each criterion needs besides params and mask.
_NEEDS = {
    "magnitude": (),
    "magnitude_layerwise": (),
    "random": ("key",),
    "snip": ("apply_fn", "batches"),
    "grasp": ("apply_fn", "batches"),
    "synflow": ("apply_fn", "input_shape"),
}


# ---------------------------------------------------------------------------- masks


def _name(entry: Any) -> Any:
    return getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", None)))


def _check_params(params: Any) -> list[bool]:
    """The per-leaf prunable flags; a tree without any is an error (nothing to prune)."""
    flags = jax.tree.leaves(prunable(params))
    if not any(flags):
        raise ConfigError("no prunable weights: the parameter tree has no leaves named 'kernel'")
    return flags


def _check_keep_dense(tree: Any, keep_dense: Sequence[str]) -> tuple[str, ...]:
    if isinstance(keep_dense, str):
        keep_dense = (keep_dense,)
    keep_dense = tuple(keep_dense)
    if keep_dense:
        if not isinstance(tree, Mapping):
            raise ConfigError("keep_dense needs a parameter tree with named top-level layers")
        for name in keep_dense:
            check_name("layer", name, [str(k) for k in tree])
    return keep_dense


def _eligible(tree: Any, keep_dense: Sequence[str] = ()) -> list[bool]:
    """Per leaf (``jax.tree.leaves`` order): prunable and outside the `keep_dense` layers."""
    keep_dense = _check_keep_dense(tree, keep_dense)
    flags = _check_params(tree)
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    return [f and _name(path[0]) not in keep_dense for f, path in zip(flags, paths, strict=True)]


def _check_mask(mask: Any, params: Any) -> Any:
    """`mask` (None: dense) as numpy bools, checked against the structure of `params`."""
    if mask is None:
        return dense_mask(params)
    if jax.tree.structure(mask) != jax.tree.structure(params):
        raise ConfigError("the mask does not have the structure of the parameters")
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params), strict=True):
        if np.shape(m) != np.shape(p):
            raise ConfigError(f"mask leaf of shape {np.shape(m)} for a parameter of shape "
                              f"{np.shape(p)}")
    return jax.tree.map(lambda m: np.asarray(m, bool), mask)


def dense_mask(params: Any) -> Any:
    """All True: the mask of the unpruned network."""
    return jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)


def count_alive(mask: Any, keep_dense: Sequence[str] = ()) -> int:
    """Live prunable weights outside the `keep_dense` layers: what a pruning step sees."""
    leaves = jax.tree.leaves(mask)
    return sum(int(np.count_nonzero(m)) for m, e in zip(leaves, _eligible(mask, keep_dense),
                                                         strict=True) if e)


def density(mask: Any, keep_dense: Sequence[str] = ()) -> float:
    """Fraction of the prunable weights outside `keep_dense` that are alive."""
    eligible = _eligible(mask, keep_dense)
    total = sum(np.size(m) for m, e in zip(jax.tree.leaves(mask), eligible, strict=True) if e)
    if total == 0:
        raise ConfigError("no prunable weights outside the keep_dense layers")
    return count_alive(mask, keep_dense) / total


def layer_densities(mask: Any) -> dict[str, float]:
    """``{layer path: fraction alive}`` for every prunable leaf, e.g. ``'stage1_block0/conv1'``
    (the leaf name 'kernel' left out)."""
    flags = _check_params(mask)
    out = {}
    for (path, m), f in zip(jax.tree_util.tree_flatten_with_path(mask)[0], flags, strict=True):
        if f:
            names = [str(_name(p)) for p in path[:-1]] or [str(_name(path[-1]))]
            out["/".join(names)] = float(np.count_nonzero(m)) / max(np.size(m), 1)
    return out


def flat_prunable(tree: Any) -> np.ndarray:
    """The prunable leaves of `tree` (params, mask or scores) raveled and concatenated in
    ``jax.tree.leaves`` order, as one numpy vector of their dtype: the index space of
    `removal_order`."""
    flags = _check_params(tree)
    leaves = jax.tree.leaves(tree)
    return np.concatenate([np.ravel(leaf) for leaf, f in zip(leaves, flags, strict=True) if f])


def prune_count(fraction: float, alive: int) -> int:
    """``ceil(fraction · alive)``, with `fraction` taken as the decimal it prints as, so that
    e.g. 0.7 of 10 is 7 (in floating point 0.7 · 10 = 7.000000000000001)."""
    return math.ceil(Fraction(repr(float(fraction))) * alive)


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or not (
        0 < fraction < 1
    ):
        raise ConfigError(f"the pruning fraction must be in (0, 1), got {fraction!r}")
    return float(fraction)


# ------------------------------------------------------------------------ selection


def _x64(on: bool):
    """SynFlow's scores are float64 (see `_score_fn`); everything else keeps its dtype."""
    return jax.enable_x64(True) if on else contextlib.nullcontext()


def _is_float64(tree: Any) -> bool:
    return any(np.dtype(getattr(leaf, "dtype", np.float32)) == np.float64
               for leaf in jax.tree.leaves(tree))


def _order_key(scores: jax.Array, live: jax.Array, invert: bool) -> jax.Array:
    """Sort key: live weights by score (negated for `invert`), the rest after them."""
    key = -scores if invert else scores
    return jnp.where(live, key, jnp.inf)


def _lowest(key: jax.Array, live: jax.Array, count: jax.Array) -> jax.Array:
    """The `count` live entries that come first in the stable ascending order of `key`."""
    order = jnp.argsort(key, stable=True)  # equal keys keep position order; -0.0 == 0.0
    first = jnp.zeros(key.shape, bool).at[order].set(jnp.arange(key.size) < count)
    return first & live


def _removed(scores, live, counts, invert: bool, layerwise: bool):
    """Which entries of each prunable leaf a step removes, and whether all live scores were
    finite (an overflowed score makes the ranking meaningless). `scores`, `live`: lists of
    the eligible prunable leaves; `counts`: one count, or one per leaf for `layerwise`."""
    flat_live = [jnp.ravel(m) for m in live]
    keys = [_order_key(jnp.ravel(s), m, invert) for s, m in zip(scores, flat_live, strict=True)]
    finite = jnp.all(jnp.isfinite(jnp.concatenate(keys)) | ~jnp.concatenate(flat_live))
    if layerwise:
        removed = [_lowest(k, m, counts[i])
                   for i, (k, m) in enumerate(zip(keys, flat_live, strict=True))]
    else:
        sizes = np.cumsum([k.size for k in keys])[:-1]
        flat = _lowest(jnp.concatenate(keys), jnp.concatenate(flat_live), counts)
        removed = jnp.split(flat, sizes)
    return [r.reshape(np.shape(m)) for r, m in zip(removed, live, strict=True)], finite


def _raise_if_not_finite(finite: Any, criterion: str) -> None:
    if not bool(finite):
        hint = " (float64 overflow: the network is too deep for SynFlow's path sums)" if (
            criterion == "synflow") else ""
        raise LmcError(f"the {criterion} scores of some live weights are NaN or infinite{hint}")


@jax.jit
def _order(key: jax.Array) -> jax.Array:
    return jnp.argsort(key, stable=True)


def removal_order(
    scores: Any, mask: Any = None, keep_dense: Sequence[str] = (), *, invert: bool = False
) -> np.ndarray:
    """Flat indices (into `flat_prunable`) of the live eligible weights in the order pruning
    removes them: ascending score (descending with `invert`), ties by position. A step that
    removes n weights removes the first n of them: exactly what `prune_by_scores` does."""
    mask = _check_mask(mask, scores)
    eligible = _eligible(scores, keep_dense)
    live = jax.tree.unflatten(
        jax.tree.structure(mask),
        [m & e for m, e in zip(jax.tree.leaves(mask), eligible, strict=True)],
    )
    flat_live = flat_prunable(live)
    flat_scores = flat_prunable(scores)
    with _x64(flat_scores.dtype == np.float64):  # SynFlow's scores do not fit in float32
        key = _order_key(flat_scores, flat_live, invert)
        _raise_if_not_finite(jnp.all(jnp.isfinite(key) | ~flat_live), "given")
        order = np.asarray(_order(key))
    return order[: int(flat_live.sum())]


# ----------------------------------------------------------------------- criteria


def _abs_float(tree: Any, dtype: Any) -> Any:
    def one(a):
        a = jnp.asarray(a)
        return jnp.abs(a).astype(dtype) if jnp.issubdtype(a.dtype, jnp.inexact) else a

    return jax.tree.map(one, tree)


def _mean_grad(loss: Callable, params: Any, batches: tuple[jax.Array, jax.Array]) -> Any:
    """Gradient of the mean over equal-size batches of the per-batch mean loss."""
    return batch_mean(lambda x, y: jax.grad(loss)(params, x, y), batches)


# Compiled programs are cached on their static inputs (criterion, apply_fn, tree structure,
# ...), so that pruning level after level does not recompile (0.5 s for a ResNet-20).
_cache = functools.lru_cache(maxsize=32)


@_cache
def _score_fn(
    criterion: str,
    apply_fn: ApplyFn | None,
    input_shape: tuple[int, ...] | None,
    temperature: float,
) -> Callable:
    """``score(params, state, mask, batches, key) -> scores`` (all leaves) for `criterion`,
    traceable: the weights are masked (m ⊙ w) before scoring."""

    def magnitude(w, state, mask, batches, key):
        return jax.tree.map(jnp.abs, w)

    def random(w, state, mask, batches, key):
        leaves, treedef = jax.tree.flatten(w)
        return jax.tree.unflatten(treedef, [
            jax.random.uniform(jax.random.fold_in(key, i), jnp.shape(leaf))
            for i, leaf in enumerate(leaves)
        ])

    def loss_at(temp):
        return lambda p, state, x, y: cross_entropy(apply_fn(p, state, x) / temp, y)

    def snip(w, state, mask, batches, key):
        loss = loss_at(1.0)
        g = _mean_grad(lambda p, x, y: loss(p, state, x, y), w, batches)
        return jax.tree.map(lambda g, w: jnp.abs(g * w), g, w)

    def grasp(w, state, mask, batches, key):
        # Wang et al.'s reference code (alecwangcq/GraSP): g = ∇L and H of the loss of
        # logits / T; the Hessian-gradient product uses the gradient of the conv and dense
        # weights only (biases and norms get 0), i.e. H[:, kernels] g_kernels, and pruning
        # removes the highest −w ⊙ Hg. Our importance is w ⊙ Hg (remove the lowest), with g
        # also restricted to the live weights, the parameters of the subnetwork. Means over
        # batches instead of sums: a positive factor, the same ranking.
        loss = loss_at(temperature)

        def batch_loss(p, x, y):
            return loss(p, state, x, y)

        g = _mean_grad(batch_loss, w, batches)
        flags = prunable(w)
        v = jax.tree.map(lambda g, f, m: jnp.where(m, g, 0) if f else jnp.zeros_like(g),
                         g, flags, mask)
        hg = make_hvp(batch_loss)(w, batches, v)
        return jax.tree.map(jnp.multiply, w, hg)

    def synflow(w, state, mask, batches, key):
        # Tanaka et al.'s reference (ganguli-lab/Synaptic-Flow) takes |·| of the whole state
        # dict (weights, biases, norm parameters and running statistics) and sums the output
        # on one all-ones input, in evaluation mode: with running statistics BatchNorm is a
        # fixed positive affine map, so R stays a sum over paths of products of |θ|; batch
        # statistics of a single constant input would normalise the signal away. R grows
        # like the product of the layers' scales (a ResNet-56 at initialisation: 4e70), far
        # beyond float32 (3e38), so this runs in float64 (`prune` and `scores` trace it
        # under ``jax.enable_x64``), which the rankings need, not just the totals.
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        w, state = _abs_float(w, dtype), _abs_float(state, dtype)
        ones = jnp.ones((1, *input_shape), dtype)
        g = jax.grad(lambda p: jnp.sum(apply_fn(p, state, ones)))(w)
        return jax.tree.map(lambda g, w: jnp.abs(g * w), g, w)

    fns = {"magnitude": magnitude, "magnitude_layerwise": magnitude, "random": random,
           "snip": snip, "grasp": grasp, "synflow": synflow}
    fn = fns[criterion]

    def score(params, state, mask, batches, key):
        return fn(apply_mask(params, mask), state, mask, batches, key)

    return score


def _check_inputs(
    criterion: str,
    *,
    apply_fn: ApplyFn | None,
    batches: Any,
    input_shape: Sequence[int] | None,
    key: jax.Array | None,
) -> tuple[Any, tuple[int, ...] | None]:
    """Validate what `criterion` needs; returns the batches as arrays and the input shape
    (SynFlow's comes from the batches when not given)."""
    check_name("pruning criterion", criterion, CRITERIA, "pruning criteria")
    if batches is not None:
        if not (isinstance(batches, (tuple, list)) and len(batches) == 2):
            raise ConfigError("batches must be (xs, ys), e.g. from lmc.hessian.batches_of")
        xs, ys = jnp.asarray(batches[0]), jnp.asarray(batches[1])
        if xs.ndim < 2 or ys.ndim != 2 or xs.shape[:2] != ys.shape:
            raise ConfigError(
                "batches must be (xs, ys) shaped (num_batches, batch, ...) and "
                f"(num_batches, batch), got {xs.shape} and {ys.shape}")
        batches = (xs, ys)
    if criterion == "synflow" and input_shape is None and batches is not None:
        input_shape = batches[0].shape[2:]
    given = {"apply_fn": apply_fn, "batches": batches, "input_shape": input_shape, "key": key}
    missing = [name for name in _NEEDS[criterion] if given[name] is None]
    if missing:
        raise ConfigError(f"the {criterion} criterion needs {', '.join(_NEEDS[criterion])}; "
                          f"missing: {', '.join(missing)}")
    return batches, None if input_shape is None else tuple(int(n) for n in input_shape)


@_cache
def _compiled_scores(*args) -> Callable:
    return jax.jit(_score_fn(*args))


def scores(
    criterion: str,
    params: Any,
    mask: Any = None,
    *,
    apply_fn: ApplyFn | None = None,
    state: Any = None,
    batches: tuple[jax.Array, jax.Array] | None = None,
    input_shape: Sequence[int] | None = None,
    key: jax.Array | None = None,
    temperature: float = GRASP_TEMPERATURE,
) -> Any:
    """Importance of every weight of ``mask ⊙ params`` as numpy arrays in a tree like
    `params` (pruning uses only the prunable leaves), in one compiled call.

    magnitude(_layerwise) |w|; random U(0, 1) from `key`; snip |∂L/∂w ⊙ w| of the mean
    cross-entropy over `batches`; grasp w ⊙ Hg of the loss of logits / `temperature`;
    synflow |∂R/∂w ⊙ w| (float64), one evaluation: `prune` iterates it. `apply_fn(params,
    state, x) -> logits` runs the network in evaluation mode (`lmc.train.eval_apply`).
    """
    batches, input_shape = _check_inputs(criterion, apply_fn=apply_fn, batches=batches,
                                         input_shape=input_shape, key=key)
    _check_params(params)
    mask = _check_mask(mask, params)
    score = _compiled_scores(criterion, apply_fn, input_shape, temperature)
    with _x64(criterion == "synflow"):
        out = score(params, {} if state is None else state, mask, batches, key)
        return jax.tree.map(np.asarray, out)


# ------------------------------------------------------------------------ pruning


def _schedule(alive: np.ndarray, fraction: float, rounds: int) -> np.ndarray:
    """Weights removed in each round, (rounds, *alive.shape): the cumulative removals
    follow density_e = (1 − fraction)^((e+1)/E) (Tanaka et al.'s exponential schedule)
    and end at exactly `prune_count(fraction, alive)`."""
    final = np.array([prune_count(fraction, int(a)) for a in np.ravel(alive)]).reshape(
        alive.shape)
    e = np.arange(1, rounds + 1).reshape(-1, *([1] * alive.ndim)) / rounds
    target = np.ceil(alive * (1 - (1 - fraction) ** e) - 1e-9).astype(np.int64)
    target = np.maximum.accumulate(np.minimum(target, final), axis=0)
    target[-1] = final
    return np.diff(target, axis=0, prepend=0).astype(np.int32)


@_cache
def _step(eligible: tuple[bool, ...], invert: bool, layerwise: bool) -> Callable:
    """``step(live leaves, score leaves, count) -> (live leaves, finite)``: one pruning
    round on the leaves of a mask (traceable)."""
    idx = [i for i, e in enumerate(eligible) if e]

    def step(live, score_leaves, count):
        removed, finite = _removed([score_leaves[i] for i in idx], [live[i] for i in idx],
                                   count, invert, layerwise)
        live = list(live)
        for i, rm in zip(idx, removed, strict=True):
            live[i] = live[i] & ~rm
        return live, finite

    return step


@_cache
def _compiled_step(*args) -> Callable:
    return jax.jit(_step(*args))


def _alive_counts(leaves: list[Any], eligible: list[bool], layerwise: bool) -> np.ndarray:
    alive = np.array([np.count_nonzero(m) for m, e in zip(leaves, eligible, strict=True) if e])
    return alive if layerwise else np.array(alive.sum())


def prune_by_scores(
    scores: Any,
    mask: Any,
    fraction: float,
    *,
    keep_dense: Sequence[str] = (),
    layerwise: bool = False,
    invert: bool = False,
) -> Any:
    """The mask after removing the ``ceil(fraction · alive)`` lowest-scoring live weights
    outside `keep_dense` (``ceil`` in each layer separately with `layerwise`), for scores
    computed elsewhere: the selection of `prune` and `removal_order`."""
    fraction = _check_fraction(fraction)
    eligible = _eligible(scores, keep_dense)
    mask = _check_mask(mask, scores)
    leaves, treedef = jax.tree.flatten(mask)
    counts = _schedule(_alive_counts(leaves, eligible, layerwise), fraction, 1)[0]
    with _x64(_is_float64(scores)):
        live, finite = _compiled_step(tuple(eligible), invert, layerwise)(
            leaves, jax.tree.leaves(scores), counts)
    _raise_if_not_finite(finite, "given")
    return jax.tree.unflatten(treedef, [np.asarray(m, bool) for m in live])


@_cache
def _compiled_prune(criterion, apply_fn, input_shape, temperature, treedef, eligible, invert,
                    layerwise, rounds) -> Callable:
    """``run(params, state, mask leaves, batches, keys, counts) -> (mask leaves, finite)``:
    all rounds of scoring and selection, one compiled program."""
    score = _score_fn(criterion, apply_fn, input_shape, temperature)
    step = _step(eligible, invert, layerwise)

    def run(params, state, live, batches, keys, counts):
        def one_round(r, carry):
            live, finite = carry
            tree = jax.tree.unflatten(treedef, live)
            s = score(params, state, tree, batches, None if keys is None else keys[r])
            live, ok = step(live, jax.tree.leaves(s), counts[r])
            return live, finite & ok

        carry = (live, jnp.array(True))
        if rounds == 1:
            return one_round(0, carry)
        return jax.lax.fori_loop(0, rounds, one_round, carry)

    return jax.jit(run)


def prune(
    params: Any,
    mask: Any,
    fraction: float,
    criterion: str = "magnitude",
    *,
    keep_dense: Sequence[str] = (),
    invert: bool = False,
    rounds: int | None = None,
    key: jax.Array | None = None,
    apply_fn: ApplyFn | None = None,
    state: Any = None,
    batches: tuple[jax.Array, jax.Array] | None = None,
    input_shape: Sequence[int] | None = None,
    temperature: float = GRASP_TEMPERATURE,
) -> Any:
    """The mask after removing ``ceil(fraction · alive)`` of the live weights outside
    `keep_dense`, the lowest-scoring under `criterion` (see `scores`), over all layers at
    once, or in each layer separately for 'magnitude_layerwise'. Pruned weights stay
    pruned; `mask` None is the dense network.

    `rounds`: prune iteratively, re-scoring the pruned network each round, along density_e
    = density^((e+1)/E) (default: `SYNFLOW_ROUNDS` for synflow, 1 for the others), all in
    one compiled loop. `invert`: remove the highest-scoring weights instead (the
    inverted-scores ablation).
    """
    fraction = _check_fraction(fraction)
    batches, input_shape = _check_inputs(criterion, apply_fn=apply_fn, batches=batches,
                                         input_shape=input_shape, key=key)
    if rounds is None:
        rounds = SYNFLOW_ROUNDS if criterion == "synflow" else 1
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
    eligible = _eligible(params, keep_dense)
    mask = _check_mask(mask, params)
    layerwise = criterion == "magnitude_layerwise"
    leaves, treedef = jax.tree.flatten(mask)
    counts = _schedule(_alive_counts(leaves, eligible, layerwise), fraction, rounds)
    # Round r draws from keys[r]; one round uses `key` itself, as `scores` does.
    keys = None if key is None else (key[None] if rounds == 1 else jax.random.split(key, rounds))
    run = _compiled_prune(criterion, apply_fn, input_shape, temperature, treedef,
                          tuple(eligible), invert, layerwise, rounds)
    with _x64(criterion == "synflow"):
        live, finite = run(params, {} if state is None else state, leaves, batches, keys,
                           counts)
    _raise_if_not_finite(finite, criterion)
    return jax.tree.unflatten(treedef, [np.asarray(m, bool) for m in live])


# ----------------------------------------------------------------------- checkpoints


@functools.lru_cache(maxsize=8)
def _network_apply(model: str) -> ApplyFn:
    """One apply function per model description, so compiled criteria are reused across
    checkpoints of the same network (the compile caches key on it)."""
    from lmc.train import eval_apply, network_from_meta

    return eval_apply(network_from_meta({"model": json.loads(model)}))


def checkpoint_inputs(ckpt: Any, dataset: Any = None, *, examples: int = 1000,
                      batch_size: int = 500, key: jax.Array | None = None) -> dict[str, Any]:
    """The keyword arguments `scores` and `prune` need for any criterion on a checkpoint's
    network: its apply function in evaluation mode, its state and input shape, and (given
    the data set) a fixed subset of `examples` training examples in equal batches."""
    from lmc.hessian import batches_of
    from lmc.interpolate import fixed_subset

    model = ckpt.meta["model"]
    inputs = {"apply_fn": _network_apply(json.dumps(model, sort_keys=True)),
              "state": ckpt.state, "input_shape": tuple(model["input_shape"]), "key": key}
    if dataset is not None:
        idx = fixed_subset(len(dataset.y_train), examples)
        inputs["batches"] = batches_of(dataset.x_train[idx], dataset.y_train[idx],
                                       min(batch_size, len(idx)))
    return inputs


# ----------------------------------------------------------------------- ablations


def shuffle_mask(mask: Any, key: jax.Array, keep_dense: Sequence[str] = ()) -> Any:
    """`mask` with the alive and pruned positions of each prunable layer outside
    `keep_dense` randomly permuted: the per-layer densities stay exactly, the positions
    are random (the layerwise-shuffle ablation of Frankle et al. 2021)."""
    eligible = _eligible(mask, keep_dense)
    mask = _check_mask(mask, mask)
    leaves, treedef = jax.tree.flatten(mask)
    out = []
    for i, (m, e) in enumerate(zip(leaves, eligible, strict=True)):
        if e:
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), m.size))
            m = m.ravel()[perm].reshape(m.shape)
        out.append(m)
    return jax.tree.unflatten(treedef, out)


def reinitialize(mask: Any, fresh_params: Any) -> Any:
    """The pruned network with every parameter from a fresh initialisation (`fresh_params`,
    e.g. `lmc.init_model` with another key) and the pruned weights zero (the reinitialise
    ablation: the mask kept, the values forgotten; biases and norms are fresh too, as the
    reference re-runs the whole initialisation)."""
    mask = _check_mask(mask, fresh_params)
    return apply_mask(fresh_params, mask)


__all__ = [
    "CRITERIA",
    "GRASP_TEMPERATURE",
    "SYNFLOW_ROUNDS",
    "checkpoint_inputs",
    "count_alive",
    "dense_mask",
    "density",
    "flat_prunable",
    "layer_densities",
    "prune",
    "prune_by_scores",
    "prune_count",
    "reinitialize",
    "removal_order",
    "scores",
    "shuffle_mask",
]
