"""Linear operators for the curvature algorithms: the protocol, a dense matrix, and the
Hessian of a loss over a data set.

An operator is a symmetric linear map on flat vectors of dimension `dim` (as in
hessian-eigenthings). Besides `matvec`/`matmat` it exposes its matvec in pure form,
`function(operands, v)` with `operands` a pytree of arrays, so that an algorithm compiles
`function` once and takes the operands (parameters, data) as arguments rather than as
constants baked into its program; operators that share `function` (a Hessian moved to other
parameters with `at`) share the compiled algorithms.

HVPs are forward-over-reverse, `jvp(grad(L), (w,), (v,))` (Pearlmutter 1994), averaged
over a fixed set of equal-size batches inside one compiled program, so that the result is
the Hessian of the loss on the whole set rather than of one noisy batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmc.core.batching import Batches, batch_mean
from lmc.core.policy import ExecutionPolicy, default_policy
from lmc.errors import ConfigError

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, x, y) -> mean loss


@runtime_checkable
class LinearOperator(Protocol):
    """What the curvature algorithms need: `matvec(v) == function(operands, v)`."""

    dim: int
    dtype: Any
    function: Callable[[Any, jax.Array], jax.Array]
    operands: Any
    policy: ExecutionPolicy

    def matvec(self, v: jax.Array) -> jax.Array: ...

    def matmat(self, vs: jax.Array) -> jax.Array: ...


def _dense_matvec(matrix: jax.Array, v: jax.Array) -> jax.Array:
    return matrix @ v


class DenseOperator:
    """A symmetric matrix as an operator: for tests against exact eigendecompositions and
    for small problems."""

    function = staticmethod(_dense_matvec)

    def __init__(self, matrix: Any, policy: ExecutionPolicy | None = None):
        matrix = jnp.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ConfigError(f"a dense operator needs a square matrix, got {matrix.shape}")
        self.operands, self.dim, self.dtype = matrix, int(matrix.shape[0]), matrix.dtype
        self.policy = policy or default_policy()

    def matvec(self, v: jax.Array) -> jax.Array:
        return self.operands @ v

    def matmat(self, vs: jax.Array) -> jax.Array:
        return vs @ self.operands.T


def make_hvp(loss_fn: LossFn, policy: ExecutionPolicy | None = None) -> Callable:
    """`hvp(params, batches, v_tree) -> H v` (trees) of the mean loss over all batches,
    `batches` = (xs, ys) shaped (num_batches, batch, ...). The batches are an argument,
    not a closure, so a compiled HVP takes them as input instead of baking them into the
    program. `policy` decides whether the loop over batches is unrolled."""

    def hvp(params, batches, v):
        def one(x, y):
            return jax.jvp(lambda p: jax.grad(loss_fn)(p, x, y), (params,), (v,))[1]

        return batch_mean(one, batches, policy)

    return hvp


def data_parallel(batches: Batches, params: Any) -> tuple[Any, Any]:
    """With several devices, split every batch over them (the HVP's mean over the batch
    becomes a cross-device reduction) and replicate the parameters; else unchanged."""
    devices = jax.devices()
    if len(devices) == 1 or batches[0].shape[1] % len(devices):
        return batches, jax.tree.map(jnp.asarray, params)
    mesh = Mesh(np.array(devices), ("data",))
    return (jax.device_put(batches, NamedSharding(mesh, PartitionSpec(None, "data"))),
            jax.device_put(params, NamedSharding(mesh, PartitionSpec())))


@dataclasses.dataclass(frozen=True)
class Subspace:
    """The coordinates an operator acts on: indices into the flat parameter vector."""

    index: np.ndarray  # int, sorted
    size_full: int

    @classmethod
    def of(cls, params: Any, mask: Any = None, block: Sequence[str] | None = None,
           select: Any = None) -> Subspace:
        """All parameters, restricted to `mask` (live weights: True), to the top-level
        entries `block` of the parameter tree, and to `select`: a params-shaped tree of
        bools (a Python bool per leaf or an array per leaf), e.g. only the prunable
        kernels, so that a spectrum is over the same coordinates a pruning ratio counts."""
        keep = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)
        if isinstance(block, str):
            block = [block]
        if block is not None:
            unknown = sorted(set(block) - set(params))
            if unknown:
                raise ConfigError(f"unknown block(s) {', '.join(unknown)}; "
                                  f"valid blocks: {', '.join(sorted(params))}")
            keep = {k: jax.tree.map(lambda b, k=k: b & (k in block), v) for k, v in keep.items()}
        if mask is not None:
            keep = jax.tree.map(lambda k, m: k & np.asarray(m, bool), keep, mask)
        if select is not None:
            if jax.tree.structure(select) != jax.tree.structure(keep):
                raise ConfigError("the selection must be a tree shaped like the parameters")
            keep = jax.tree.map(lambda k, m: k & np.asarray(m, bool), keep, select)
        flat = np.concatenate([np.ravel(k) for k in jax.tree.leaves(keep)])
        if not flat.any():
            raise ConfigError("the selected parameters are empty (everything masked or no block)")
        return cls(np.flatnonzero(flat), flat.size)

    @property
    def dim(self) -> int:
        return int(self.index.size)

    def embed(self, v: jax.Array) -> jax.Array:
        return jnp.zeros(self.size_full, v.dtype).at[self.index].set(v)

    def restrict(self, w: jax.Array) -> jax.Array:
        return w[self.index]


class HessianOperator:
    """`v -> H v` for flat vectors of the selected parameters (see `Subspace.of`): all
    parameters, only the live weights of a pruned network (`m ⊙ H(m ⊙ v)` restricted to the
    mask), one block of the parameter tree, or a `select`ed set of leaves (the prunable
    kernels: the block of H a pruning step moves in).

    loss_fn(params, x, y) -> mean loss of a batch (use evaluation mode for BatchNorm
    networks: fixed statistics). `batches` = (xs, ys) with shape (num_batches, batch, ...).
    The operands are `(params, batches)`; `function(operands, v)` is the pure HVP.
    """

    def __init__(self, loss_fn: LossFn, params: Any, batches: Batches, *,
                 mask: Any = None, block: Sequence[str] | None = None,
                 select: Any = None, policy: ExecutionPolicy | None = None):
        batches, params = data_parallel(batches, params)
        self.loss_fn, self.policy = loss_fn, policy or default_policy()
        self.num_examples = int(batches[0].shape[0] * batches[0].shape[1])
        self.subspace = Subspace.of(params, mask, block, select)
        flat, self._unravel = ravel_pytree(params)
        self.dtype = flat.dtype
        self.operands = (params, batches)
        hvp_tree = make_hvp(loss_fn, self.policy)
        sub, unravel = self.subspace, self._unravel

        def hvp(operands, v):
            p, b = operands
            return sub.restrict(ravel_pytree(hvp_tree(p, b, unravel(sub.embed(v))))[0])

        self.function = hvp
        self._matvec = jax.jit(hvp)
        self._matmat = jax.jit(jax.vmap(hvp, in_axes=(None, 0)))

    @property
    def params(self) -> Any:
        return self.operands[0]

    @property
    def batches(self) -> Batches:
        return self.operands[1]

    @property
    def dim(self) -> int:
        return self.subspace.dim

    def at(self, params: Any) -> HessianOperator:
        """The same operator (data, subspace, compiled programs) at other parameters."""
        moved = object.__new__(HessianOperator)
        moved.__dict__.update(self.__dict__)
        moved.operands = (jax.device_put(params, jax.tree.map(lambda t: t.sharding,
                                                              self.params)), self.batches)
        return moved

    def matvec(self, v: jax.Array) -> jax.Array:
        return self._matvec(self.operands, v)

    def matmat(self, vs: jax.Array) -> jax.Array:
        """H v for every row v of `vs` (one vmapped program)."""
        return self._matmat(self.operands, vs)

    def to_tree(self, v: jax.Array) -> Any:
        """A flat vector of this space as a parameter pytree (zeros outside it)."""
        return self._unravel(self.subspace.embed(jnp.asarray(v, self.dtype)))

    def from_tree(self, tree: Any) -> jax.Array:
        return self.subspace.restrict(ravel_pytree(tree)[0])

    def dense(self) -> np.ndarray:
        """The full matrix, one HVP per column: for tests and tiny models only."""
        return np.asarray(self.matmat(jnp.eye(self.dim, dtype=self.dtype))).T
