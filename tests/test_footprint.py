"""The start-up line on memory and sharding: parameters, bytes per device of parameters and optimiser
state from the shardings (exact, on a hand-sized model on the 8-device mesh), and the warning for a
mesh axis that shards no parameter."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from p2t_jax.parallel import footprint
from p2t_jax.parallel.mesh import make_mesh
from p2t_jax.parallel.partitioning import Partitioner, bytes_per_device
from p2t_jax.training.loop import Task, train_and_evaluate
from p2t_jax.training.state import TrainState

# kernel [16, 32] (embed, mlp), bias [32] (mlp), scale [4] never sharded: 512 + 32 + 4 = 548 parameters
NAMES = {"params": {"kernel": P("embed", "mlp"), "bias": P("mlp"), "scale": P(None)}}


def _create():
    params = {"kernel": jnp.ones((16, 32)), "bias": jnp.ones((32,)), "scale": jnp.ones((4,))}
    return TrainState.create(variables={"params": params}, tx=optax.adam(1e-3), rng=jax.random.PRNGKey(0))


def test_bytes_per_device_are_exact_on_fsdp_x_tensor():
    """Mesh 1 x 2 x 4: the kernel is cut into 2 x 4 blocks of 8 x 8 (256 bytes), the bias into 4 pieces of
    8 (32 bytes), the scale stays whole (16 bytes): 304 bytes of parameters per device; Adam's mu and
    nu follow their parameters (2 x 304) and its int32 count is replicated (4): 612 bytes."""
    partitioner = Partitioner(make_mesh((1, 2, 4)), variable_axes=NAMES)
    abstract = partitioner.abstract_state(_create)
    fp = footprint.measure(abstract.params, abstract.opt_state, partitioner.batch_axes)
    assert (fp.parameters, fp.param_bytes, fp.opt_bytes, fp.state_bytes, fp.devices) == (548, 304, 612, 916, 8)
    assert fp.mesh == {"data": 1, "fsdp": 2, "tensor": 4} and fp.unsharded_axes == ()
    assert footprint.describe(fp) == ("state: 548 parameters; per device 304 B parameters + 612 B optimiser state "
                                      "(the fullest of 8 devices)")
    assert footprint.warnings(fp) == []
    # the arrays themselves: the same figures, and what each device really holds
    state = partitioner.init_state(_create)
    held = bytes_per_device(state.checkpoint_items())
    measured = {}
    for x in jax.tree.leaves(state.checkpoint_items()):
        for shard in x.addressable_shards:
            measured[shard.device] = measured.get(shard.device, 0) + shard.data.nbytes
    assert held == measured == bytes_per_device(abstract.checkpoint_items())
    assert footprint.measure(state.params, state.opt_state) == footprint.measure(
        abstract.params, abstract.opt_state)


def test_one_device_holds_everything():
    state = _create()
    fp = footprint.measure(state.params, state.opt_state)
    assert (fp.parameters, fp.param_bytes, fp.opt_bytes, fp.devices, fp.mesh) == (548, 548 * 4, 2 * 548 * 4 + 4,
                                                                                  1, None)
    assert footprint.describe(fp).endswith("(one device)") and footprint.warnings(fp) == []


def test_an_axis_that_shards_no_parameter_is_named():
    """No logical names: every parameter replicated. FSDP of 8 then splits only the batch; a tensor axis
    makes its devices repeat the work; the data axis replicates by design and is never named."""
    fsdp = Partitioner(make_mesh((1, 8, 1)))  # no variable_axes: every parameter P()
    abstract = fsdp.abstract_state(_create)
    fp = footprint.measure(abstract.params, abstract.opt_state, fsdp.batch_axes)
    assert fp.unsharded_axes == (("fsdp", 8),) and fp.param_bytes == 548 * 4
    (text,) = footprint.warnings(fp)
    assert text.startswith("mesh axis 'fsdp' (size 8) shards no parameter: every parameter is whole on each of its "
                           "8 devices") and "splits only the batch" in text

    data_tensor = Partitioner(make_mesh((2, 1, 4)))
    abstract = data_tensor.abstract_state(_create)
    fp = footprint.measure(abstract.params, abstract.opt_state, data_tensor.batch_axes)
    assert fp.unsharded_axes == (("tensor", 4),)
    assert "repeat the same work" in footprint.warnings(fp)[0]

    named = Partitioner(make_mesh((2, 4, 1)), variable_axes=NAMES)  # fsdp shards the kernel: nothing to say
    abstract = named.abstract_state(_create)
    assert footprint.measure(abstract.params, abstract.opt_state).unsharded_axes == ()


def test_the_loop_prints_the_line_and_the_warning(tmp_path, capsys):
    """A model without logical names trained one step under 8-way FSDP: the start-up line, the warning, and
    the figures in summary.json."""
    def loss_fn(params, model_state, batch, rng, train):
        loss = jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
        return loss, ({}, model_state)

    x = np.ones((8, 4), np.float32)
    task = Task(init_variables=lambda rng: {"params": {"w": jnp.zeros((4, 2))}}, loss_fn=loss_fn,
                train_batch=lambda step: {"x": x, "y": np.ones((8, 2), np.float32)},
                eval_batches=lambda: [{"x": x, "y": np.ones((8, 2), np.float32)}], items_per_batch=8,
                items_name="examples")
    config = ml_collections.ConfigDict({
        "seed": 0, "train": {"num_steps": 1, "log_every": 1, "eval_every": 1, "checkpoint_every": 1,
                             "keep_checkpoints": 1, "batch_size": 8},
        "parallel": {"mesh_shape": (1, 8, 1)}})
    _, summary = train_and_evaluate(task, config, tmp_path, progress=False, tx=optax.sgd(0.1))
    out, err = capsys.readouterr()
    assert "state: 8 parameters; per device 32 B parameters + 0 B optimiser state (the fullest of 8 devices)" in out
    assert "warning: mesh axis 'fsdp' (size 8) shards no parameter" in err
    assert summary["state"] == {"parameters": 8, "param_bytes_per_device": 32, "opt_state_bytes_per_device": 0,
                                "unsharded_mesh_axes": ["fsdp"]}
