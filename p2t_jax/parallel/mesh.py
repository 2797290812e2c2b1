"""The device mesh: ``parallel.mesh_shape`` over the axes ``(data, fsdp, tensor)``.

* ``data``   copies of the model, each on its own slice of the batch (data parallel).
* ``fsdp``   also splits the batch, and shards parameters and optimiser state as well
             (fully sharded data parallel; the weights are gathered layer by layer).
* ``tensor`` splits the MLP width and the attention heads inside each layer.

``-1`` in ``mesh_shape`` means "the rest": ``(-1, 1, 1)`` is pure data parallel over every
device, ``(1, -1, 1)`` pure FSDP, ``(2, 1, -1)`` data x tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import AxisType, Mesh

from p2t_jax.configuration import ConfigError, require

AXES = ("data", "fsdp", "tensor")


def check_mesh_shape(mesh_shape: Any) -> tuple[int, ...]:
    """``mesh_shape`` as a tuple, if it has the form of one (the devices are not looked at).

    Raises:
      ConfigError: not one integer per axis of :data:`AXES`, each positive or one ``-1``.
    """
    shape = tuple(mesh_shape) if isinstance(mesh_shape, (tuple, list)) else (mesh_shape,)
    key = f"config key 'parallel.mesh_shape' {shape}"
    require(len(shape) == len(AXES) and all(isinstance(s, int) and not isinstance(s, bool) for s in shape),
            f"{key} must hold {len(AXES)} integers, one per axis {', '.join(AXES)}.")
    require(all(s >= 1 or s == -1 for s in shape) and shape.count(-1) <= 1,
            f"{key} may hold positive sizes and at most one -1 (\"the rest\"), nothing else.")
    return shape


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int, *, use_all: bool = False) -> tuple[int, ...]:
    """The mesh shape with ``-1`` filled in.

    Args:
      mesh_shape: one size per axis of :data:`AXES`; at most one ``-1``.
      num_devices: devices available.
      use_all: the product must equal ``num_devices`` (multi-process runs); otherwise it must
        divide it and the mesh uses the first devices.

    Raises:
      ConfigError: a malformed shape, or sizes that do not fit the devices.
    """
    shape = check_mesh_shape(mesh_shape)
    key = f"config key 'parallel.mesh_shape' {shape}"
    fixed = math.prod(s for s in shape if s != -1)
    require(num_devices % fixed == 0,
            f"{key} needs {fixed} devices, which does not divide the {num_devices} available; choose axis sizes "
            f"whose product divides {num_devices} (-1 takes the rest).")
    if -1 in shape:
        shape = tuple(num_devices // fixed if s == -1 else s for s in shape)
    require(not use_all or math.prod(shape) == num_devices,
            f"{key} uses {math.prod(shape)} of the {num_devices} devices, but a multi-process run must use them all.")
    return shape


def make_mesh(mesh_shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``Mesh`` with axes :data:`AXES` over ``devices`` (default: every device of every process).

    A single-process run may use fewer devices than it has (the first ones, e.g. ``(1, 1, 1)``
    for one device); a multi-process run must use them all.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_shape, len(devices), use_all=jax.process_count() > 1)
    n = math.prod(shape)
    try:
        return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices[:n])
    except (ValueError, NotImplementedError) as e:  # a topology that cannot be cut this way
        raise ConfigError(f"config key 'parallel.mesh_shape' {tuple(mesh_shape)} does not fit these devices "
                          f"({str(e).splitlines()[0][:160]}).") from e


def describe(mesh: Mesh) -> str:
    """One line: axis sizes, devices used, platform and processes."""
    sizes = " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
    platform = mesh.devices.flat[0].platform
    return (f"{sizes} on {mesh.size} of {jax.device_count()} {platform} devices, "
            f"{jax.process_count()} process{'es' if jax.process_count() > 1 else ''}")
