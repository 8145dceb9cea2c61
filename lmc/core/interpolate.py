"""Linear interpolation between two networks: loss and error curves and their barriers.

`w(α) = (1 − α)·w_a + α·w_b` on a grid of α including both ends (Frankle et al. 2020;
Ainsworth et al. 2022). The α of a chunk are evaluated in one vmapped program, or one by
one, as the execution policy says. Works on any apply function and parameter pytrees, not
only lmc's models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmc.core.evaluate import ApplyFn, Evaluator
from lmc.core.policy import ExecutionPolicy, default_policy
from lmc.errors import ConfigError, check_name

BARRIERS = ("mean", "chord", "midpoint")
BN_MODES = ("reset", "interpolate")
METRICS = ("loss", "error")

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


def barriers(values: Any, alphas: Any) -> dict[str, float]:
    """The three barrier definitions of a curve `f(α)` on a grid including 0 and 1.

    mean: max f − ½(f(0) + f(1)) (Frankle et al. 2020; Ainsworth et al. 2022);
    chord: max [f(α) − ((1 − α)f(0) + αf(1))] (Entezari et al. 2022);
    midpoint: f(½) − ½(f(0) + f(1)) (Entezari et al.'s code); f(½) is read off the grid,
    linearly interpolated between its neighbours if ½ is not a grid point.
    """
    f, a = np.asarray(values, np.float64), np.asarray(alphas, np.float64)
    if a.ndim != 1 or a.shape != f.shape or a[0] != 0 or a[-1] != 1 or np.any(np.diff(a) <= 0):
        raise ConfigError("barriers need an increasing grid of alphas from 0 to 1, one per value")
    ends = 0.5 * (f[0] + f[-1])
    return {
        "mean": float(f.max() - ends),
        "chord": float(np.max(f - ((1 - a) * f[0] + a * f[-1]))),
        "midpoint": float(np.interp(0.5, a, f) - ends),
    }


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
        self._evaluate = Evaluator(lerp_apply, batch_size,
                                   network_axes=((None, None, 0), 0) if vectorize else None)
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
    ) -> dict[str, dict[str, np.ndarray]]:
        """{split: {"loss": array over α, "error": array over α}} for each data split.

        `bn_batches`, shape (num_batches, batch, ...), are the training inputs on which
        `bn="reset"` re-estimates the statistics.
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
        out = {split: {"loss": [], "error": []} for split in data}
        for start in range(0, len(alphas), chunk):
            al = jnp.asarray(alphas[start : start + chunk], jnp.float32)
            al = al if self.vectorize else al[0]
            if reset:
                states = self._reset_states(params_a, params_b, al, state_a, bn_batches, decay)
            else:
                states = self._lerp_state(state_a, state_b, al)
            for split, (x, y) in data.items():
                m = self._evaluate((params_a, params_b, al), states, x, y)
                out[split]["loss"].append(np.atleast_1d(m["loss"]))
                out[split]["error"].append(np.atleast_1d(m["error"]))
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


def interpolation_record(curves: Mapping[str, Mapping[str, Any]], alphas: Any) -> dict:
    """Curves and all barriers (every definition, loss and error, every split) as JSON."""
    alphas = np.asarray(alphas, float)
    return {
        "alphas": alphas.tolist(),
        "curves": {s: {k: np.asarray(v).tolist() for k, v in c.items()} for s, c in curves.items()},
        "barriers": {s: {k: barriers(c[k], alphas) for k in METRICS} for s, c in curves.items()},
    }
