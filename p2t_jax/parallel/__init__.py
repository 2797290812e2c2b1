"""Scaling out with JAX's own machinery: a device mesh, logical-axis rules, multi-process start-up.

* :mod:`~p2t_jax.parallel.mesh`          ``parallel.mesh_shape`` -> ``jax.sharding.Mesh`` over (data, fsdp, tensor).
* :mod:`~p2t_jax.parallel.partitioning`  logical names -> shardings; sharded state, steps and batches.
* :mod:`~p2t_jax.parallel.distributed`   ``jax.distributed.initialize`` from the config or environment.
* :mod:`~p2t_jax.parallel.footprint`     parameters and bytes per device from the shardings; mesh axes that shard nothing.

The training loop uses them when the config has a ``parallel`` group; see the README, "Scaling out".
This package sits below :mod:`p2t_jax.training` and imports nothing from it; the older ``pmap``
data-parallel step, kept to compare, is :mod:`p2t_jax.training.pmap_step`.
"""
