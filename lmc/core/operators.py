"""Linear operators for the curvature algorithms: the protocol, a dense matrix, and the
Hessian of a loss over a data set.

An operator is a symmetric linear map on a space of dimension `dim` (as in
hessian-eigenthings). Its vectors have length `size` (`vector_size`; `dim` unless the
operator says otherwise): a `HessianOperator` acts on the full flat parameter vector and
its space is the vectors supported on `support` (the selected coordinates), `dim` of them.
Besides `matvec`/`matmat` it exposes its matvec in pure form, `function(operands, v)` with
`operands` a pytree of arrays, so that an algorithm compiles `function` once and takes the
operands (parameters, data, support, model state) as arguments rather than as constants
baked into its program; operators that share `function` share the compiled algorithms: a
Hessian moved to other parameters with `at`, and every Hessian of one network (loss
function, parameter layout, policy), whatever its checkpoint, mask or selection.

HVPs are forward-over-reverse, `jvp(grad(L), (w,), (v,))` (Pearlmutter 1994), averaged
over a fixed set of equal-size batches inside one compiled program, so that the result is
the Hessian of the loss on the whole set rather than of one noisy batch.
"""

from __future__ import annotations

import dataclasses
import functools
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
        self.size = self.dim
        self.policy = policy or default_policy()

    def matvec(self, v: jax.Array) -> jax.Array:
        return self.operands @ v

    def matmat(self, vs: jax.Array) -> jax.Array:
        return vs @ self.operands.T


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


@dataclasses.dataclass(frozen=True, eq=False)
class StatefulLoss:
    """`(params, x, y) -> mean loss` as `fn(params, state, x, y)` with its `state` (e.g.
    BatchNorm statistics) kept apart. A `HessianOperator` takes `state` as an operand and
    keys its compiled programs on `fn`, so checkpoints of one network (same `fn`, other
    state) share them; a closure over the state would be a new function, hence new
    programs, per checkpoint."""

    fn: Callable[[Any, Any, jax.Array, jax.Array], jax.Array]
    state: Any = ()

    def __call__(self, params, x, y):
        return self.fn(params, self.state, x, y)


@functools.lru_cache(maxsize=64)
def _stateless(loss_fn: LossFn) -> Callable:
    """`fn(params, state, x, y)` of a plain loss (the same object per loss function)."""
    def fn(params, state, x, y):
        return loss_fn(params, x, y)

    return fn


def split_loss(loss_fn: LossFn) -> tuple[Callable, Any]:
    """(fn(params, state, x, y), state) of a loss: a `StatefulLoss`'s parts, or a plain
    loss with an empty state. `fn` is stable across checkpoints of one network when the
    loss is a `StatefulLoss` of a cached `fn` (`OpenedCheckpoint.loss_fn`)."""
    if isinstance(loss_fn, StatefulLoss):
        return loss_fn.fn, loss_fn.state
    return _stateless(loss_fn), ()


def make_hvp(loss_fn: LossFn, policy: ExecutionPolicy | None = None) -> Callable:
    """`hvp(params, batches, v_tree) -> H v` (trees) of the mean loss over all batches,
    `batches` = (xs, ys) shaped (num_batches, batch, ...). The batches are an argument,
    not a closure, so a compiled HVP takes them as input instead of baking them into the
    program. `policy` decides whether the loop over batches is unrolled."""
    fn, state = split_loss(loss_fn)
    stateful = _stateful_hvp(fn, policy or default_policy())
    return lambda params, batches, v: stateful(params, state, batches, v)


@functools.lru_cache(maxsize=64)
def _stateful_hvp(fn: Callable, policy: ExecutionPolicy) -> Callable:
    def hvp(params, state, batches, v):
        def one(x, y):
            return jax.jvp(lambda p: jax.grad(fn)(p, state, x, y), (params,), (v,))[1]

        return batch_mean(one, batches, policy)

    return hvp


def _layout(params: Any) -> tuple:
    """What the flat vector of a parameter tree depends on: structure, shapes, dtypes."""
    leaves, treedef = jax.tree.flatten(params)
    return treedef, tuple((tuple(np.shape(a)), jnp.result_type(a).name) for a in leaves)


@functools.lru_cache(maxsize=64)
def _hessian_function(fn: Callable, layout: tuple, policy: ExecutionPolicy) -> Callable:
    """The pure matvec `(operands, v) -> s ⊙ H(s ⊙ v)`, operands `(params, batches,
    support, state)`: one Python object per loss function, parameter layout and policy, so
    that every operator of one network (other parameters, data, mask, selection, state)
    shares every program compiled from it (`lmc.core.curvature`, `lmc.core.prune_ratio`,
    `lmc.core.compensation` cache theirs on it)."""
    treedef, shapes = layout
    zeros = jax.tree.unflatten(treedef, [np.zeros(shape, dtype) for shape, dtype in shapes])
    unravel = ravel_pytree(zeros)[1]
    hvp_tree = _stateful_hvp(fn, policy)

    def hvp(operands, v):
        params, batches, support, state = operands
        u = unravel(support * v)
        return support * ravel_pytree(hvp_tree(params, state, batches, u))[0]

    return hvp


@functools.lru_cache(maxsize=64)
def _jitted(function: Callable) -> tuple[Callable, Callable]:
    return jax.jit(function), jax.jit(jax.vmap(function, in_axes=(None, 0)))


def vector_size(op: Any) -> int:
    """The length of an operator's vectors: `op.size` (a `HessianOperator`: the full
    parameter vector), else `op.dim`."""
    return int(getattr(op, "size", op.dim))


def support_of(op: Any) -> jax.Array | None:
    """The 0/1 vector of the coordinates an operator's space holds (None: all of them)."""
    return getattr(op, "support", None)


def space_vectors(op: Any, draws: Any) -> jax.Array:
    """Vectors of an operator's space from draws of its `dim` coordinates (rows of
    `draws`, shape (..., dim)): embedded into the operator's vectors (length `size`, zeros
    outside the support) when it acts on a support. Draw-then-embed keeps the random
    streams of a space of dimension dim, whatever the support, and needs no compiled
    scatter (the embedding is a host-side index)."""
    embed = getattr(op, "embed", None)
    return jnp.asarray(draws, op.dtype) if embed is None else embed(draws)


class HessianOperator:
    """`v -> H v` on the selected parameters (see `Subspace.of`): all parameters, only the
    live weights of a pruned network (`m ⊙ H(m ⊙ v)` restricted to the mask), one block of
    the parameter tree, or a `select`ed set of leaves (the prunable kernels: the block of
    H a pruning step moves in).

    Vectors are FULL flat parameter vectors (length `size`) that vanish outside the
    support s (the 0/1 vector of the selected coordinates, an operand); `matvec(v) =
    s ⊙ H(s ⊙ v)`. The space's dimension is `dim` = the support count: what SLQ averages
    over, what steps are capped at, what records report. `dense()` is the restricted
    dim × dim matrix; `embed`/`restrict` convert between the support's coordinates and
    the operator's vectors.

    Why the full vector with the support as an operand, rather than vectors of the
    support's coordinates: the pure matvec `function(operands, v)` (operands `(params,
    batches, support, state)`) is then the same object, with the same shapes, for every
    operator of one network (`_hessian_function`), whatever its mask, live count,
    selection or checkpoint, so the compiled Lanczos, SLQ, curvature and compensation
    programs are built once per network shape. Support-coordinate vectors would change
    shape with every live count (an IMP level) and recompile everything.

    loss_fn(params, x, y) -> mean loss of a batch (use evaluation mode for BatchNorm
    networks: fixed statistics); a `StatefulLoss` puts its state among the operands, so
    that checkpoints with other statistics share programs too. `batches` = (xs, ys) with
    shape (num_batches, batch, ...).
    """

    def __init__(self, loss_fn: LossFn, params: Any, batches: Batches, *,
                 mask: Any = None, block: Sequence[str] | None = None,
                 select: Any = None, policy: ExecutionPolicy | None = None):
        batches, params = data_parallel(batches, params)
        self.loss_fn, self.policy = loss_fn, policy or default_policy()
        self.num_examples = int(batches[0].shape[0] * batches[0].shape[1])
        self.subspace = Subspace.of(params, mask, block, select)
        flat, self._unravel = ravel_pytree(params)
        self.dtype, self.size = flat.dtype, int(flat.size)
        support = np.zeros(self.size, flat.dtype)
        support[self.subspace.index] = 1
        fn, state = split_loss(loss_fn)
        self.operands = (params, batches, jnp.asarray(support), state)
        self.function = _hessian_function(fn, _layout(params), self.policy)
        self._matvec, self._matmat = _jitted(self.function)

    @property
    def params(self) -> Any:
        return self.operands[0]

    @property
    def batches(self) -> Batches:
        return self.operands[1]

    @property
    def support(self) -> jax.Array:
        """The 0/1 vector (dtype of the parameters) of the selected coordinates."""
        return self.operands[2]

    @property
    def dim(self) -> int:
        return self.subspace.dim

    def at(self, params: Any) -> HessianOperator:
        """The same operator (data, subspace, compiled programs) at other parameters."""
        moved = object.__new__(HessianOperator)
        moved.__dict__.update(self.__dict__)
        moved.operands = (jax.device_put(params, jax.tree.map(lambda t: t.sharding,
                                                              self.params)),
                          *self.operands[1:])
        return moved

    def matvec(self, v: jax.Array) -> jax.Array:
        return self._matvec(self.operands, v)

    def matmat(self, vs: jax.Array) -> jax.Array:
        """H v for every row v of `vs` (one vmapped program)."""
        return self._matmat(self.operands, vs)

    def embed(self, v: Any) -> jax.Array:
        """Vectors of the support's dim coordinates (last axis) as the operator's vectors
        (length size, zeros outside the support); host-side, no compiled scatter."""
        v = np.asarray(v, self.dtype)
        out = np.zeros((*v.shape[:-1], self.size), self.dtype)
        out[..., self.subspace.index] = v
        return jnp.asarray(out)

    def restrict(self, w: Any) -> np.ndarray:
        """The support's coordinates of the operator's vectors (last axis)."""
        return np.asarray(w)[..., self.subspace.index]

    def to_tree(self, v: jax.Array) -> Any:
        """A vector of this space as a parameter pytree (zeros outside the support): the
        operator's vector (length size) or the support's coordinates (length dim)."""
        v = jnp.asarray(v, self.dtype)
        if v.shape[-1] != self.size:
            v = self.embed(v)
        return self._unravel(v * self.support)

    def from_tree(self, tree: Any) -> jax.Array:
        """A parameter pytree as the operator's vector: s ⊙ ravel(tree)."""
        return ravel_pytree(tree)[0] * self.support

    def dense(self) -> np.ndarray:
        """The matrix restricted to the support (dim × dim), one HVP per column: for
        tests and tiny models only."""
        columns = self.matmat(self.embed(np.eye(self.dim, dtype=self.dtype)))
        return self.restrict(np.asarray(columns)).T
