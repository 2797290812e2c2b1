"""What a model's state costs each device under its mesh, and mesh axes that shard no parameter.

:func:`measure` reads the shardings of the parameters and the optimiser state (arrays, or
abstract ``jax.ShapeDtypeStruct`` with shardings: nothing is allocated) and returns the
parameter count and the bytes the fullest device holds of each; :func:`describe` is the
loop's start-up line and :func:`warnings` what it warns about. Only shardings are read, so the
figures are what the mesh and the logical-axis rules decide, before XLA adds its own buffers
(activations, gradients, temporaries: ``compiled.memory_analysis()``).

A mesh axis larger than 1 that shards no parameter is almost always a mistake: FSDP over a
model whose parameters carry no logical names keeps every parameter whole on every device
(it splits only the batch, as ``data`` would), and a ``tensor`` axis over such a model makes
its devices repeat the same work. The ``data`` axis copies the parameters by design and is
never warned about.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from p2t_jax.parallel.partitioning import bytes_per_device

REPLICATING_AXES = ("data",)  # mesh axes whose purpose is to copy the parameters


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Attributes:
      parameters: scalars in the parameters.
      param_bytes / opt_bytes / state_bytes: bytes of the parameters, of the optimiser state, and
        of both together, on the device that holds the most (each maximum taken on its own).
      devices: devices holding a part of the state.
      mesh: the mesh's axis sizes (``{"data": 1, "fsdp": 8, ...}``), or None when nothing is on a mesh.
      unsharded_axes: ``(axis, size)`` of every mesh axis larger than 1, other than ``data``, that
        shards no parameter.
      batch_axes: mesh axes the batch is split over (for the warning's wording).
    """

    parameters: int
    param_bytes: int
    opt_bytes: int
    state_bytes: int
    devices: int
    mesh: dict | None
    unsharded_axes: tuple[tuple[str, int], ...]
    batch_axes: tuple[str, ...] = ()


def _mesh_of(tree: Any):
    for x in jax.tree.leaves(tree):
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return sharding.mesh
    return None


def _axes(spec_entry: Any) -> tuple[str, ...]:
    if spec_entry is None:
        return ()
    return (spec_entry,) if isinstance(spec_entry, str) else tuple(spec_entry)


def sharding_axes(tree: Any) -> set[str]:
    """The mesh axes that split at least one array of ``tree`` (by its ``NamedSharding``)."""
    used = set()
    for x in jax.tree.leaves(tree):
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding):
            used.update(a for entry in sharding.spec for a in _axes(entry) if sharding.mesh.shape[a] > 1)
    return used


def measure(params: Any, opt_state: Any = None, batch_axes: tuple[str, ...] = ()) -> Footprint:
    """The :class:`Footprint` of ``params`` and ``opt_state`` from their shardings.

    Args:
      params: the parameters (arrays or abstract leaves with shardings).
      opt_state: the optimiser state (None: none).
      batch_axes: the mesh axes the batch is split over.
    """
    held_params, held_opt = bytes_per_device(params), bytes_per_device(opt_state or {})
    devices = set(held_params) | set(held_opt)
    mesh = _mesh_of(params) or _mesh_of(opt_state or {})
    unsharded = ()
    if mesh is not None:
        used = sharding_axes(params)
        unsharded = tuple((a, n) for a, n in mesh.shape.items() if n > 1 and a not in used
                          and a not in REPLICATING_AXES)
    return Footprint(parameters=int(sum(np.prod(np.shape(x), dtype=np.int64) for x in jax.tree.leaves(params))),
                     param_bytes=max(held_params.values(), default=0), opt_bytes=max(held_opt.values(), default=0),
                     state_bytes=max((held_params.get(d, 0) + held_opt.get(d, 0) for d in devices), default=0),
                     devices=len(devices), mesh=dict(mesh.shape) if mesh is not None else None,
                     unsharded_axes=unsharded, batch_axes=tuple(batch_axes))


def human_bytes(n: float) -> str:
    """``1536 -> "1.5 KiB"``: binary units, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def describe(fp: Footprint) -> str:
    """The start-up line: ``state: 112,449 parameters; per device 54.9 KiB parameters + 109.9 KiB optimiser
    state (the fullest of 8 devices)``."""
    where = (f"the fullest of {fp.devices} devices" if fp.devices > 1 else "one device")
    return (f"state: {fp.parameters:,} parameters; per device {human_bytes(fp.param_bytes)} parameters + "
            f"{human_bytes(fp.opt_bytes)} optimiser state ({where})")


def warnings(fp: Footprint) -> list[str]:
    """One sentence per mesh axis larger than 1 (other than ``data``) that shards no parameter."""
    out = []
    for axis, size in fp.unsharded_axes:
        consequence = ("it splits only the batch, as the 'data' axis would" if axis in fp.batch_axes
                       else "its devices all repeat the same work")
        out.append(f"mesh axis '{axis}' (size {size}) shards no parameter: every parameter is whole on each of its "
                   f"{size} devices, because the model's parameters carry no logical axis names or "
                   f"'parallel.logical_axis_rules' maps none of them onto '{axis}'; {consequence}.")
    return out
