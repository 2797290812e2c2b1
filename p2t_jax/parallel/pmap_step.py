"""The older data-parallel style: ``jax.pmap`` with gradients averaged by ``lax.pmean``.

Kept beside the main path (``jax.jit`` + ``NamedSharding``, see
:mod:`p2t_jax.parallel.partitioning`) to show what it replaced: the state is copied onto
every device, each device takes ``batch / n`` rows, and the step averages gradients,
loss and metrics across devices before the (identical) update on each copy. Each device
folds its index into the step key, so its rows get their own dropout masks (not the
masks the ``jit`` path draws for the same rows).
On a simulated multi-device CPU, wait for a step's metrics now and then: XLA's CPU client
deadlocks with more than 32 such steps in flight (the ``jit`` path bounds this itself).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from p2t_jax.training.steps import LossFn, make_train_step

AXIS = "devices"


def make_pmap_train_step(loss_fn: LossFn, schedule: optax.Schedule | None = None,
                         devices: Sequence[jax.Device] | None = None) -> Callable:
    """``step(replicated_state, split_batch) -> (replicated_state, replicated_metrics)``, pmapped, state donated."""
    return jax.pmap(make_train_step(loss_fn, schedule, axis_name=AXIS), axis_name=AXIS, devices=devices,
                    donate_argnums=0)


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
