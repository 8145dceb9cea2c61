"""Pruning criteria and the selection of what a step removes: magnitude (global or per
layer), random, SNIP, GraSP, SynFlow. Masks and the prunable predicate are `lmc.core.masks`.

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
evaluation mode (`lmc.eval_apply`) and ``batches = (xs, ys)`` shaped
(num_batches, batch, ...) as from `lmc.batches_of`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmc.core.batching import mean_gradient
from lmc.core.evaluate import ApplyFn, cross_entropy
from lmc.core.masks import (
    Predicate,
    apply_mask,
    check_mask,
    eligible,
    flat_prunable,
    prunable,
    prune_count,
)
from lmc.core.operators import make_hvp
from lmc.errors import ConfigError, LmcError, check_name


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or not (
        0 < fraction < 1
    ):
        raise ConfigError(f"the pruning fraction must be in (0, 1), got {fraction!r}")
    return float(fraction)


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
    scores: Any, mask: Any = None, keep_dense: Sequence[str] = (), *, invert: bool = False,
    predicate: Predicate | None = None,
) -> np.ndarray:
    """Flat indices (into `flat_prunable`) of the live eligible weights in the order pruning
    removes them: ascending score (descending with `invert`), ties by position. A step that
    removes n weights removes the first n of them: exactly what `prune_by_scores` does."""
    mask = check_mask(mask, scores)
    flags = eligible(scores, keep_dense, predicate)
    live = jax.tree.unflatten(
        jax.tree.structure(mask),
        [m & e for m, e in zip(jax.tree.leaves(mask), flags, strict=True)],
    )
    flat_live = flat_prunable(live, predicate)
    flat_scores = flat_prunable(scores, predicate)
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
        g = mean_gradient(lambda p, x, y: loss(p, state, x, y), w, batches)
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

        g = mean_gradient(batch_loss, w, batches)
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
            raise ConfigError("batches must be (xs, ys), e.g. from lmc.batches_of")
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
    eligible(params)  # fails on a tree with nothing prunable
    mask = check_mask(mask, params)
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
def _step(flags: tuple[bool, ...], invert: bool, layerwise: bool) -> Callable:
    """``step(live leaves, score leaves, count) -> (live leaves, finite)``: one pruning
    round on the leaves of a mask (traceable)."""
    idx = [i for i, e in enumerate(flags) if e]

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


def _alive_counts(leaves: list[Any], flags: list[bool], layerwise: bool) -> np.ndarray:
    alive = np.array([np.count_nonzero(m) for m, e in zip(leaves, flags, strict=True) if e])
    return alive if layerwise else np.array(alive.sum())


def prune_by_scores(
    scores: Any,
    mask: Any,
    fraction: float,
    *,
    keep_dense: Sequence[str] = (),
    layerwise: bool = False,
    invert: bool = False,
    predicate: Predicate | None = None,
) -> Any:
    """The mask after removing the ``ceil(fraction · alive)`` lowest-scoring live weights
    outside `keep_dense` (``ceil`` in each layer separately with `layerwise`), for scores
    computed elsewhere: the selection of `prune` and `removal_order`."""
    fraction = _check_fraction(fraction)
    flags = eligible(scores, keep_dense, predicate)
    mask = check_mask(mask, scores)
    leaves, treedef = jax.tree.flatten(mask)
    counts = _schedule(_alive_counts(leaves, flags, layerwise), fraction, 1)[0]
    with _x64(_is_float64(scores)):
        live, finite = _compiled_step(tuple(flags), invert, layerwise)(
            leaves, jax.tree.leaves(scores), counts)
    _raise_if_not_finite(finite, "given")
    return jax.tree.unflatten(treedef, [np.asarray(m, bool) for m in live])


@_cache
def _compiled_prune(criterion, apply_fn, input_shape, temperature, treedef, flags, invert,
                    layerwise, rounds) -> Callable:
    """``run(params, state, mask leaves, batches, keys, counts) -> (mask leaves, finite)``:
    all rounds of scoring and selection, one compiled program."""
    score = _score_fn(criterion, apply_fn, input_shape, temperature)
    step = _step(flags, invert, layerwise)

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
    predicate: Predicate | None = None,
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
    flags = eligible(params, keep_dense, predicate)
    mask = check_mask(mask, params)
    layerwise = criterion == "magnitude_layerwise"
    leaves, treedef = jax.tree.flatten(mask)
    counts = _schedule(_alive_counts(leaves, flags, layerwise), fraction, rounds)
    # Round r draws from keys[r]; one round uses `key` itself, as `scores` does.
    keys = None if key is None else (key[None] if rounds == 1 else jax.random.split(key, rounds))
    run = _compiled_prune(criterion, apply_fn, input_shape, temperature, treedef,
                          tuple(flags), invert, layerwise, rounds)
    with _x64(criterion == "synflow"):
        live, finite = run(params, {} if state is None else state, leaves, batches, keys,
                           counts)
    _raise_if_not_finite(finite, criterion)
    return jax.tree.unflatten(treedef, [np.asarray(m, bool) for m in live])


__all__ = [
    "CRITERIA",
    "GRASP_TEMPERATURE",
    "SYNFLOW_ROUNDS",
    "prune",
    "prune_by_scores",
    "removal_order",
    "scores",
]
