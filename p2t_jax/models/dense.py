"""A dense layer whose backward pass runs as plain (untransposed) matmuls.

``contract(x, kernel, n)`` computes ``x[N, *C] . kernel[*C, *F] -> [N, *F]`` (the ``n``
trailing axes of ``x`` are contracted with the ``n`` leading axes of ``kernel``), like
``nn.Dense`` / ``nn.DenseGeneral`` on rows ``N``. Its hand-written backward pass computes
the kernel's gradient as ``x^T . g`` from a *materialised* transpose ``x^T[*C, N]``. The
result is the same; the difference is speed on XLA-CPU: left alone, XLA folds the
transpose into the matmul, and a matmul with a transposed left operand falls outside
XNNPACK to a slower path. Copying ``x^T`` (behind ``lax.optimization_barrier``, so the copy
is not folded away) costs a few microseconds and makes the weight gradients plain
matmuls: the nanoGPT CPU step is ~7% faster (``bench/NOTES.md``, change 11).

:class:`Dense` is the linen layer: the same parameters (``kernel``, ``bias``; shapes,
initialisers, logical axis names) as ``nn.Dense`` / ``nn.DenseGeneral``, so checkpoints
and sharding rules are unchanged. :func:`project` picks between it (on rows ``[B*T, D]``:
a CPU kernel choice) and ``nn.DenseGeneral`` on ``[B, T, D]`` (for GPUs and TPUs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def contract(x: jax.Array, kernel: jax.Array, n: int) -> jax.Array:
    """``x[N, *C] . kernel[*C, *F] -> [N, *F]``, contracting the ``n`` axes ``C``."""
    return _forward(x, kernel, n)


def _forward(x, kernel, n):
    dims = (tuple(range(x.ndim - n, x.ndim)), tuple(range(n)))
    return jax.lax.dot_general(x, kernel, (dims, ((), ())))


def _contract_fwd(x, kernel, n):
    return _forward(x, kernel, n), (x, kernel)


def _contract_bwd(n, residuals, g):
    x, kernel = residuals  # x [N, *C], kernel [*C, *F], g [N, *F]
    f = kernel.ndim - n
    # dx[N, *C] = g . kernel^T, contracting F (a plain matmul with a transposed right operand).
    dx = jax.lax.dot_general(g, kernel, ((tuple(range(1, 1 + f)), tuple(range(n, n + f))), ((), ())))
    # dkernel[*C, *F] = x^T . g, contracting N, from a real transposed copy of x.
    x_t = jax.lax.optimization_barrier(jnp.moveaxis(x, 0, -1))  # [*C, N]
    dkernel = jax.lax.dot_general(x_t, g, (((x_t.ndim - 1,), (0,)), ((), ())))
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


contract.defvjp(_contract_fwd, _contract_bwd)


class Dense(nn.Module):
    """``[N, *C] -> [N, *F]``: ``contract(x, kernel, len(C)) + bias``, on 2-D-or-more rows N.

    Attributes:
      features: ``F``, an int or a tuple of ints.
      contract_axes: how many trailing axes of the input are contracted (``len(C)``).
      use_bias, dtype, kernel_init, bias_init: as in ``nn.Dense`` (``dtype``: compute dtype;
        parameters stay float32).
    """

    features: int | tuple[int, ...]
    contract_axes: int = 1
    use_bias: bool = True
    dtype: Any = None
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        n = self.contract_axes
        if x.ndim != n + 1:
            raise ValueError(f"Dense takes rows [N, *C] with {n} contracted axes; got shape {x.shape}.")
        kernel = self.param("kernel", self.kernel_init, x.shape[1:] + features, jnp.float32)
        bias = self.param("bias", self.bias_init, features, jnp.float32) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = contract(x, kernel, n)
        return y if bias is None else y + bias


def project(x: jax.Array, features: int | tuple[int, ...], *, contract_axes: int = 1, rows: bool, name: str,
            **kwargs) -> jax.Array:
    """``x[*L, *C] -> [*L, *F]``: a dense projection of the ``contract_axes`` trailing axes, as a
    submodule called ``name`` of the module whose compact method calls it.

    ``rows=True`` folds the leading axes into rows ``[N, *C]`` (N = prod(L)) and uses
    :class:`Dense` (plain-matmul weight gradients: the faster kernels on XLA-CPU);
    ``rows=False`` is ``nn.DenseGeneral`` on ``x`` as it is (what GPUs and TPUs want). Both
    create the same parameters (``kernel`` ``[*C, *F]``, ``bias`` ``[*F]``) from the same
    keys, so a checkpoint moves between them. ``kwargs``: ``use_bias``, ``dtype``,
    ``kernel_init``, ``bias_init``.
    """
    if rows:
        lead = x.shape[:x.ndim - contract_axes]
        y = Dense(features, contract_axes=contract_axes, name=name, **kwargs)(x.reshape((-1,) + x.shape[len(lead):]))
        return y.reshape(lead + y.shape[1:])
    return nn.DenseGeneral(features, axis=tuple(range(-contract_axes, 0)), name=name, **kwargs)(x)
