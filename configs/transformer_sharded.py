"""Chapter 10, scaled out: the Shakespeare Transformer under each sharding strategy.

Each entry of ``strategies`` names a ``parallel.mesh_shape`` over (data, fsdp, tensor); a
mesh that does not fit the devices present (or the model) is skipped with its reason.
Simulate 8 devices on a CPU by setting, before Python starts,
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (see
``experiments/10_transformer_sharded.py``).
"""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.shakespeare_config = "configs/shakespeare.py"  # the config file of the model
    c.variant = "small"  # its variant: the model, optimiser and batch every strategy trains
    c.data_source = "auto"  # data.source: auto, embedded or tfds
    c.num_steps = 40  # timed steps per strategy (after one compiled warm-up step)
    c.eval_batches = 4  # validation batches for the final loss of each strategy
    c.loss_tolerance = 1e-4  # the strategies' train losses must agree with one device's within this
    c.strategies = (  # (name, mesh_shape over data, fsdp, tensor; -1 takes the rest)
        ("one device", (1, 1, 1)),
        ("data", (-1, 1, 1)),
        ("fsdp", (1, -1, 1)),
        ("tensor", (1, 1, 4)),
        ("data x tensor", (-1, 1, 2)),
        ("fsdp x tensor", (1, -1, 2)),
    )
    if arg == "smoke":
        c.variant, c.num_steps, c.eval_batches = "smoke", 3, 1
        c.strategies = (("one device", (1, 1, 1)), ("data", (-1, 1, 1)), ("fsdp", (1, -1, 1)), ("tensor", (1, 1, 2)))
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant '{arg}'; choose the default or smoke")
    return c
