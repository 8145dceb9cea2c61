"""Linear interpolation between two networks: loss and error curves and their barriers.

`w(α) = (1 − α)·w_a + α·w_b` on a grid of α including both ends (Frankle et al. 2020;
Ainsworth et al. 2022). The α of a chunk are evaluated in one vmapped program, or one by
one, as the execution policy says. The same pass can keep every example's loss and
correctness along the path, whose barriers say which examples the path connects (per-example
linear mode connectivity, Paul, Larsen et al. 2022). Works on any apply function and
parameter pytrees, not only lmc's models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmc.constants import EXAMPLE_LOSS_THRESHOLD
from lmc.core.evaluate import ApplyFn, Evaluator
from lmc.core.policy import ExecutionPolicy, default_policy
from lmc.errors import ConfigError, check_name

BARRIERS = ("mean", "chord", "midpoint")
BN_MODES = ("reset", "interpolate")
METRICS = ("loss", "error")
EXAMPLE_KEYS = ("example_loss", "example_correct")  # per example, from curves(per_example=True)

# Error barriers of single examples are 0 or at least the grid spacing; this absorbs the
# float rounding of the chord (1 − α)·1 + α·1.
_ZERO_BARRIER = 1e-9

TrainApplyFn = Callable[[Any, Any, jax.Array], Any]  # (params, state, x) -> new state, train mode


def alpha_grid(points: int = 25) -> np.ndarray:
    """`points` evenly spaced interpolation coefficients from 0 to 1, both included."""
    if points < 2:
        raise ConfigError(f"an interpolation grid needs at least 2 points, got {points}")
    return np.linspace(0.0, 1.0, points)


def check_same_structure(a: Any, b: Any, what: str = "parameter") -> None:
    """Raise a ConfigError naming the leaves in which two pytrees differ.

    Different architectures, shapes or dtypes cannot be interpolated.
    """
    def leaves(tree):
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {jax.tree_util.keystr(p): v for p, v in flat}

    def dtype(leaf):
        return leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)

    la, lb = leaves(a), leaves(b)
    problems = [f"{k} only in A" for k in la if k not in lb]
    problems += [f"{k} only in B" for k in lb if k not in la]
    for k in la.keys() & lb.keys():
        if np.shape(la[k]) != np.shape(lb[k]):
            problems.append(f"{k} shape {np.shape(la[k])} vs {np.shape(lb[k])}")
        elif dtype(la[k]) != dtype(lb[k]):
            problems.append(f"{k} dtype {dtype(la[k])} vs {dtype(lb[k])}")
    if problems:
        shown = "; ".join(sorted(problems)[:8])
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ConfigError(f"the two {what} trees differ: {shown}{more}")


def lerp(a: Any, b: Any, alpha: jax.Array, moving: Any = None) -> Any:
    """`(1 − α)·a + α·b`; with `moving` (a tree of bools, a prefix of `a`'s) only the
    leaves marked True move, the others stay at `a` (layer-wise interpolation,
    Vlaar & Frankle 2022)."""
    if moving is None:
        return jax.tree.map(lambda x, y: (1 - alpha) * x + alpha * y, a, b)
    return jax.tree.map(
        lambda m, x, y: jax.tree.map(lambda u, v: (1 - alpha) * u + alpha * v, x, y) if m else x,
        moving, a, b)


def barriers(values: Any, alphas: Any) -> dict[str, Any]:
    """The three barrier definitions of a curve `f(α)` on a grid including 0 and 1.

    mean: max f − ½(f(0) + f(1)) (Frankle et al. 2020; Ainsworth et al. 2022);
    chord: max [f(α) − ((1 − α)f(0) + αf(1))] (Entezari et al. 2022);
    midpoint: f(½) − ½(f(0) + f(1)) (Entezari et al.'s code); f(½) is read off the grid,
    linearly interpolated between its neighbours if ½ is not a grid point.

    `values` of shape (num_alphas,) give floats; of shape (num_alphas, ...), one curve per
    trailing index (e.g. per example), arrays of the trailing shape.
    """
    f, a = np.asarray(values, np.float64), np.asarray(alphas, np.float64)
    if a.ndim != 1 or f.shape[:1] != a.shape or a[0] != 0 or a[-1] != 1 or np.any(np.diff(a) <= 0):
        raise ConfigError("barriers need an increasing grid of alphas from 0 to 1, one per value")
    column = a.reshape(-1, *[1] * (f.ndim - 1))
    ends = 0.5 * (f[0] + f[-1])
    # f(½) is linear in f: the weights of the grid points are np.interp of the unit vectors
    half = np.array([np.interp(0.5, a, unit) for unit in np.eye(len(a))])
    out = {
        "mean": f.max(0) - ends,
        "chord": np.max(f - ((1 - column) * f[0] + column * f[-1]), 0),
        "midpoint": np.tensordot(half, f, axes=1) - ends,
    }
    return {k: float(v) for k, v in out.items()} if f.ndim == 1 else out


class PathEvaluator:
    """Loss and error along the straight path between two networks.

    apply_fn(params, state, x) -> logits evaluates in eval mode. For networks with
    BatchNorm, `bn="reset"` re-estimates the statistics of every interpolated network
    exactly — the cumulative average over a fixed set of training batches in train mode
    (the "reset BN" of SWA and REPAIR, Jordan et al. 2022) — which needs
    `train_apply(params, state, x) -> new_state` (the state update of an EMA-style
    BatchNorm, whatever its momentum). `bn="interpolate"` interpolates the statistics.
    `policy.alpha_chunk` α are evaluated in one vmapped program (1: α by α, unvmapped).
    """

    def __init__(
        self,
        apply_fn: ApplyFn,
        *,
        train_apply: TrainApplyFn | None = None,
        bn: str = "interpolate",
        moving: Any = None,
        batch_size: int = 1000,
        policy: ExecutionPolicy | None = None,
    ):
        check_name("BatchNorm mode", bn, BN_MODES)
        if bn == "reset" and train_apply is None:
            raise ConfigError('bn="reset" needs train_apply(params, state, x) -> new state')
        policy = policy or default_policy()
        vectorize = policy.vectorize_alphas
        self.bn, self.vectorize, self.chunk_size = bn, vectorize, policy.alpha_chunk

        def lerp_apply(p, s, x):
            a, b, alpha = p
            return apply_fn(lerp(a, b, alpha, moving), s, x)

        def reset_sum(a, b, alpha, zero, x):
            return train_apply(lerp(a, b, alpha, moving), zero, x)

        vmap = (lambda f, axes: jax.vmap(f, in_axes=axes)) if vectorize else (lambda f, _: f)
        axes = ((None, None, 0), 0) if vectorize else None
        self._evaluate = {per_example: Evaluator(lerp_apply, batch_size, axes, per_example)
                          for per_example in (False, True)}
        self._lerp_state = jax.jit(vmap(lambda sa, sb, al: lerp(sa, sb, al), (None, None, 0)))
        if train_apply is not None:
            self._reset_sum = jax.jit(vmap(reset_sum, (None, None, 0, None, None)))
            self._train_apply = jax.jit(train_apply)

    def curves(
        self,
        params_a: Any,
        params_b: Any,
        data: Mapping[str, tuple[jax.Array, jax.Array]],
        *,
        state_a: Any = None,
        state_b: Any = None,
        alphas: Any = 25,
        bn_batches: jax.Array | None = None,
        per_example: bool = False,
    ) -> dict[str, dict[str, np.ndarray]]:
        """{split: {"loss": array over α, "error": array over α}} for each data split.

        `bn_batches`, shape (num_batches, batch, ...), are the training inputs on which
        `bn="reset"` re-estimates the statistics. `per_example` adds, from the same
        evaluation, every example's loss ("example_loss", float32) and correctness
        ("example_correct", bool), both of shape (num_alphas, num_examples).
        """
        check_same_structure(params_a, params_b)
        state_a = {} if state_a is None else state_a
        state_b = state_a if state_b is None else state_b
        check_same_structure(state_a, state_b, "model state")
        alphas = alpha_grid(alphas) if isinstance(alphas, int) else np.asarray(alphas, float)
        has_state = bool(jax.tree.leaves(state_a))
        if has_state and self.bn == "reset" and bn_batches is None:
            raise ConfigError('bn="reset" needs bn_batches: training inputs to estimate on')
        chunk = (self.chunk_size or len(alphas)) if self.vectorize else 1
        reset = has_state and self.bn == "reset"
        decay = self._bn_decay(params_a, state_a, bn_batches[0]) if reset else None
        keys = METRICS + (EXAMPLE_KEYS if per_example else ())
        out = {split: {k: [] for k in keys} for split in data}
        for start in range(0, len(alphas), chunk):
            al = jnp.asarray(alphas[start : start + chunk], jnp.float32)
            al = al if self.vectorize else al[0]
            if reset:
                states = self._reset_states(params_a, params_b, al, state_a, bn_batches, decay)
            else:
                states = self._lerp_state(state_a, state_b, al)
            for split, (x, y) in data.items():
                m = self._evaluate[per_example]((params_a, params_b, al), states, x, y)
                for k in keys:  # a chunk of α when vmapped, else one α
                    values = np.asarray(m[k])
                    out[split][k].append(values if self.vectorize else values[None])
        return {split: {k: np.concatenate(v) for k, v in metrics.items()}
                for split, metrics in out.items()}

    def _bn_decay(self, params, template, x):
        """The momentum m of every statistic, read off one EMA update from ones and zeros."""
        one, zero = jax.tree.map(jnp.ones_like, template), jax.tree.map(jnp.zeros_like, template)
        return jax.tree.map(lambda u, z: u - z, self._train_apply(params, one, x),
                            self._train_apply(params, zero, x))

    def _reset_states(self, a, b, alpha, template, batches, decay):
        # An EMA update from zero is (1 − m)·batch statistic: sum those over the batches
        # and divide by (1 − m)·count.
        zero = jax.tree.map(jnp.zeros_like, template)
        total = None
        for x in batches:
            s = self._reset_sum(a, b, alpha, zero, x)
            total = s if total is None else jax.tree.map(jnp.add, total, s)
        n = len(batches)
        return jax.tree.map(lambda t, m: t / (n * (1 - m)), total, decay)


def example_barriers(example_loss: Any, example_correct: Any, alphas: Any
                     ) -> dict[str, np.ndarray]:
    """Every example's chord barriers of loss and of 0-1 error, shape (num_examples,).

    `example_loss` and `example_correct` have shape (num_alphas, num_examples)
    (`PathEvaluator.curves(per_example=True)`). An example's error barrier is 0 when it is
    never worse along the path than the chord between its ends: correct at every α if it
    is correct at both ends, never wrong before α = 1 if only B gets it right, always if
    neither end gets it right.
    """
    error = 1.0 - np.asarray(example_correct, np.float64)
    return {"loss": barriers(example_loss, alphas)["chord"],
            "error": barriers(error, alphas)["chord"]}


def connected_fractions(example_barriers: Mapping[str, Any],
                        loss_threshold: float = EXAMPLE_LOSS_THRESHOLD) -> dict[str, Any]:
    """The fractions of examples the path connects, as JSON: "loss_connected", those whose
    loss barrier is below `loss_threshold` (nats, default `EXAMPLE_LOSS_THRESHOLD`), and
    "error_connected", those whose error barrier is 0 (`example_barriers`' arrays)."""
    if not loss_threshold > 0:  # chord barriers are ≥ 0: no example is below 0
        raise ConfigError(f"the per-example loss threshold must be positive, got {loss_threshold}")
    loss, error = np.asarray(example_barriers["loss"]), np.asarray(example_barriers["error"])
    return {"examples": int(loss.size), "loss_threshold": float(loss_threshold),
            "loss_connected": float(np.mean(loss < loss_threshold)),
            "error_connected": float(np.mean(error <= _ZERO_BARRIER))}


def interpolation_record(curves: Mapping[str, Mapping[str, Any]], alphas: Any) -> dict:
    """Curves and all barriers (every definition, loss and error, every split) as JSON;
    per-example arrays in `curves` are left out."""
    alphas = np.asarray(alphas, float)
    return {
        "alphas": alphas.tolist(),
        "curves": {s: {k: np.asarray(c[k]).tolist() for k in METRICS} for s, c in curves.items()},
        "barriers": {s: {k: barriers(c[k], alphas) for k in METRICS} for s, c in curves.items()},
    }
