"""The older data-parallel style: ``jax.pmap`` with gradients averaged by ``lax.pmean``.

Kept beside the main path (``jax.jit`` + ``NamedSharding``, see
:mod:`p2t_jax.parallel.partitioning`) to show what it replaced: the state is copied onto
every device, each device takes ``batch / n`` rows, and the step averages gradients,
loss and metrics across devices before the (identical) update on each copy. It is the
loop's own step (:func:`p2t_jax.training.steps.make_train_step`), given a loss whose key
is folded with the device index (each device's rows get their own dropout masks, not the
masks the ``jit`` path draws for the same rows) and a ``reduce`` that averages gradients,
loss, metrics and the floating-point leaves of the new model state (batch norm's running
statistics) over the device axis.
On a simulated multi-device CPU, wait for a step's metrics now and then: XLA's CPU client
deadlocks with more than 32 such steps in flight (the ``jit`` path bounds this itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from p2t_jax.training.steps import LossFn, make_train_step

AXIS = "devices"


def per_device_loss(loss_fn: LossFn, axis_name: str = AXIS) -> LossFn:
    """``loss_fn`` with the device's index along ``axis_name`` folded into its key."""
    def loss(params, model_state, batch, rng, train):
        return loss_fn(params, model_state, batch, jax.random.fold_in(rng, jax.lax.axis_index(axis_name)), train)
    return loss


def average_over(axis_name: str = AXIS) -> Callable:
    """``(grads, loss, metrics, model_state) -> their means over the devices along axis_name``
    (integer leaves of the model state, e.g. counters, are left as they are)."""

    def reduce(grads, loss, metrics, model_state):
        grads, loss, metrics = jax.lax.pmean((grads, loss, metrics), axis_name)
        model_state = jax.tree.map(
            lambda x: jax.lax.pmean(x, axis_name) if jnp.issubdtype(x.dtype, jnp.floating) else x, model_state)
        return grads, loss, metrics, model_state

    return reduce


def make_pmap_train_step(loss_fn: LossFn, schedule: optax.Schedule | None = None,
                         devices: Sequence[jax.Device] | None = None) -> Callable:
    """``step(replicated_state, split_batch) -> (replicated_state, replicated_metrics)``, pmapped, state donated."""
    step = make_train_step(per_device_loss(loss_fn), schedule, reduce=average_over())
    return jax.pmap(step, axis_name=AXIS, devices=devices, donate_argnums=0)


def replicate(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
    """One copy of ``tree`` per device: each array gets a leading axis of length ``len(devices)``."""
    devices = list(jax.local_devices() if devices is None else devices)
    sharding = NamedSharding(Mesh(np.array(devices), (AXIS,)), PartitionSpec(AXIS))
    return jax.tree.map(lambda x: jax.device_put(np.stack([np.asarray(x)] * len(devices)), sharding), tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy."""
    return jax.tree.map(lambda x: x[0], tree)


def split_batch(batch: dict, num_devices: int) -> dict:
    """``[B, ...] -> [num_devices, B / num_devices, ...]`` for each array of ``batch``."""
    def split(x):
        if x.shape[0] % num_devices:
            raise ValueError(f"a batch of {x.shape[0]} rows cannot be split over {num_devices} devices.")
        return np.asarray(x).reshape(num_devices, x.shape[0] // num_devices, *x.shape[1:])
    return jax.tree.map(split, batch)
