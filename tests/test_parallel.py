"""Sharding on 8 forced CPU devices: every strategy matches one device, state lands as declared,
pmap equals jit, checkpoints move between meshes, bad mesh configs get one sentence."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import PASSAGE
from flax import linen as nn

from p2t_jax.cli import main
from p2t_jax.configuration import ConfigError, apply_overrides, load_config
from p2t_jax.data import shakespeare
from p2t_jax.data.lm import LMBatches
from p2t_jax.optim.chains import make_optimizer
from p2t_jax.parallel.mesh import make_mesh, resolve_mesh_shape
from p2t_jax.parallel.partitioning import BoundedInFlight, Partitioner, bytes_per_device, make_partitioner
from p2t_jax.tasks import language_model
from p2t_jax.training import pmap_step
from p2t_jax.training.loop import RESUME_MAY_CHANGE, create_state, restore_state, train_and_evaluate
from p2t_jax.training.metrics import read_metrics
from p2t_jax.training.state import TrainState
from p2t_jax.training.steps import make_train_step

STEPS = 6
# One block, eight heads of width 4: small enough to compile fast, divisible by every mesh axis used here.
TINY = ["model.num_layers=1", "model.num_heads=8", f"train.num_steps={STEPS}", "train.log_every=1",
        "train.eval_every=1000", "train.checkpoint_every=1000"]
STRATEGIES = {"data": (8, 1, 1), "fsdp": (1, 8, 1), "tensor": (1, 1, 8), "2d": (2, 2, 2)}


def tiny_config(mesh_shape=(-1, 1, 1)):
    config = load_config("shakespeare:smoke")
    return apply_overrides(config, TINY + [f"parallel.mesh_shape={tuple(mesh_shape)}"])


@pytest.fixture(scope="module")
def runs():
    """``runs(mesh_shape or None) -> (losses, final state)``, each computed once per module."""
    cache = {}
    with pytest.MonkeyPatch.context() as mp:
        texts = {"train": PASSAGE * 40, "validation": PASSAGE * 4}
        mp.setattr(shakespeare, "load_texts", lambda source="auto", data_dir=None: (dict(texts), "test:passage"))

        def run(mesh_shape):
            if mesh_shape not in cache:
                cache[mesh_shape] = _train_steps(tiny_config(mesh_shape or (1, 1, 1)), mesh_shape)
            return cache[mesh_shape]

        yield run


def _train_steps(config, mesh_shape):
    """STEPS steps of the loop's own step: plain ``jax.jit`` on one device when ``mesh_shape`` is None."""
    task = language_model.make_task(config)
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    step = make_train_step(task.loss_fn, schedule)
    create = lambda: create_state(task.init_variables, config)  # noqa: E731
    if mesh_shape is None:
        state, jitted, read = create(), jax.jit(step, donate_argnums=0), task.train_batch
    else:
        partitioner = make_partitioner(config, task.init_variables)
        state = partitioner.init_state(create)
        jitted, read = partitioner.jit_train_step(step, state), partitioner.batch_readers(task)[0]
    losses = []
    for i in range(STEPS):
        state, metrics = jitted(state, read(i))
        losses.append(float(metrics["loss"]))
    return losses, state


def assert_params_match(params, ref_params, atol=1e-5):
    """Parameters equal to ``atol``, except the key bias, whose exact gradient is zero.

    A bias added to every key shifts each query's logits by a constant, which softmax
    ignores: its gradient is rounding noise, which differs with the reduction order of each
    mesh and which Adam scales up to a full step of size ~lr. So it is held only to the
    bound of Adam's steps (at most lr per step).
    """
    params, ref_params = jax.device_get(params), jax.device_get(ref_params)
    key_bias = lambda p: p["block_0"]["attn"]["qkv"]["bias"][1]  # noqa: E731  [H, K]; 0 q, 1 k, 2 v
    np.testing.assert_allclose(key_bias(params), key_bias(ref_params), rtol=0,
                               atol=STEPS * tiny_config().optim.learning_rate)
    for tree in (params, ref_params):
        tree["block_0"]["attn"]["qkv"]["bias"] = tree["block_0"]["attn"]["qkv"]["bias"][[0, 2]]
    chex.assert_trees_all_close(params, ref_params, atol=atol)


def _shard_shape(x):
    return x.addressable_shards[0].data.shape


def test_mesh_shapes_resolve_and_refuse_clearly():
    assert resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
    assert resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
    assert resolve_mesh_shape((1, 1, 1), 8) == (1, 1, 1)
    for shape, message in [((3, 1, 1), "does not divide the 8 available"), ((-1, -1, 1), "at most one -1"),
                           ((0, 1, 1), "at most one -1"), ((1, 8), "must hold 3 integers"),
                           ((1, 1, 4), "uses 4 of the 8 devices")]:
        with pytest.raises(ConfigError, match=message):
            resolve_mesh_shape(shape, 8, use_all=True)


@pytest.mark.parametrize("strategy", [pytest.param(s, marks=pytest.mark.slow) if s in ("data", "tensor") else s
                                      for s in sorted(STRATEGIES)])  # 2d holds data x tensor; fsdp the sharded state
def test_strategy_matches_one_device_and_shards_as_declared(runs, strategy):
    mesh_shape = STRATEGIES[strategy]
    ref_losses, ref_state = runs(None)
    losses, state = runs(mesh_shape)
    np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=1e-5)
    assert losses[-1] < losses[0]
    assert_params_match(state.params, ref_state.params)

    data, fsdp, tensor = mesh_shape
    p = state.params
    embedding, fc = p["token_embed"]["embedding"], p["block_0"]["mlp"]["fc"]["kernel"]
    qkv = p["block_0"]["attn"]["qkv"]["kernel"]
    assert embedding.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")
    assert fc.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert qkv.sharding.spec == jax.sharding.PartitionSpec("fsdp", None, "tensor", None)
    assert _shard_shape(embedding) == (65, 32 // fsdp)
    assert _shard_shape(fc) == (32 // fsdp, 64 // tensor)
    assert _shard_shape(qkv) == (32 // fsdp, 3, 8 // tensor, 4)
    fc_path = ("block_0", "mlp", "fc", "kernel")
    moments = [x for path, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
               if tuple(getattr(k, "key", None) for k in path[-4:]) == fc_path]
    assert len(moments) == 2 and all(m.sharding == fc.sharding for m in moments)  # Adam's mu and nu follow

    items = state.checkpoint_items()
    held = bytes_per_device(items)
    total = sum(x.nbytes for x in jax.tree.leaves(items))
    expected = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(items))
    assert len(held) == 8 and set(held.values()) == {expected}
    if strategy == "data":
        assert expected == total
    if strategy == "fsdp":
        assert expected < total / 6  # parameters and Adam moments split eight ways


def test_one_device_mesh_is_the_plain_path_to_the_bit(runs):
    ref_losses, ref_state = runs(None)
    losses, state = runs((1, 1, 1))
    assert losses == ref_losses
    chex.assert_trees_all_equal(jax.device_get(state.checkpoint_items()), jax.device_get(ref_state.checkpoint_items()))


def test_pmap_step_equals_the_jit_data_parallel_step(runs, tiny_corpus):
    jit_losses, jit_state = runs((8, 1, 1))
    config = tiny_config()
    task = language_model.make_task(config)
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    step = pmap_step.make_pmap_train_step(task.loss_fn, schedule)
    state = pmap_step.replicate(create_state(task.init_variables, config))
    losses = []
    for i in range(STEPS):
        state, metrics = step(state, pmap_step.split_batch(task.train_batch(i), jax.local_device_count()))
        losses.append(float(metrics["loss"][0]))
    np.testing.assert_allclose(losses, jit_losses, rtol=0, atol=1e-5)
    assert_params_match(pmap_step.unreplicate(state).params, jit_state.params)


def test_pmap_devices_draw_their_own_step_keys():
    """Each device's key is fold_in(fold_in(rng, step), device index): different dropout masks per shard."""
    def loss_fn(params, model_state, batch, rng, train):
        return (params["w"] * batch["x"]).sum(), ({"u": jax.random.uniform(rng)}, {})

    n = jax.local_device_count()
    rng = jax.random.PRNGKey(3)
    state = TrainState.create(variables={"params": {"w": jnp.zeros(())}}, tx=optax.sgd(0.0), rng=rng)
    step = pmap_step.make_pmap_train_step(loss_fn)
    state = pmap_step.replicate(state)
    for i in range(2):
        state, metrics = step(state, pmap_step.split_batch({"x": np.ones((n,), np.float32)}, n))
        expected = np.mean([jax.random.uniform(jax.random.fold_in(jax.random.fold_in(rng, i), d)) for d in range(n)])
        np.testing.assert_allclose(np.asarray(metrics["u"]), expected, rtol=1e-6)


def test_checkpoint_saved_on_fsdp_resumes_on_data_x_tensor_and_restores_on_one_device(runs, tiny_corpus, tmp_path):
    """8-way FSDP for half the run, interrupted; resumed on a 2x4 data x tensor mesh: as if never stopped."""
    ref_losses, ref_state = runs((1, 8, 1))
    config = tiny_config((1, 8, 1))
    task = language_model.make_task(config)
    original = task.train_batch

    def interrupt_halfway(step, **kw):
        if step == STEPS // 2:
            raise KeyboardInterrupt
        return original(step, **kw)

    task.train_batch = interrupt_halfway
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(task, config, tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [str(STEPS // 2)]

    apply_overrides(config, ["parallel.mesh_shape=(2,1,4)"])
    state, summary = train_and_evaluate(language_model.make_task(config), config, tmp_path, progress=False)
    assert summary["resumed_from"] == STEPS // 2 and summary["mesh"].startswith("data=2 x fsdp=1 x tensor=4")
    assert state.params["block_0"]["mlp"]["fc"]["kernel"].sharding.mesh.shape == {"data": 2, "fsdp": 1, "tensor": 4}
    losses = [r["loss"] for r in read_metrics(tmp_path, "train")]
    np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=1e-5)
    assert_params_match(state.params, ref_state.params)

    model = language_model.make_model(config)
    one, _ = restore_state(lambda rng: language_model.init_params(model, rng), config, tmp_path)
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(one.checkpoint_items()))
    chex.assert_trees_all_equal(jax.device_get(one.checkpoint_items()), jax.device_get(state.checkpoint_items()))


def test_many_steps_in_flight_do_not_deadlock_a_cpu_mesh():
    """XLA's CPU client deadlocks beyond 32 queued multi-device steps; the jitted step bounds them."""
    partitioner = Partitioner(make_mesh((8, 1, 1)))
    state = {"w": jax.device_put(np.ones((8, 64), np.float32), partitioner.batch_sharding)}
    step = partitioner.jit_train_step(
        lambda s, b: ({"w": s["w"] * 0.5 + b["x"].sum() * 1e-3}, {"loss": b["x"].mean()}), state)
    assert isinstance(step, BoundedInFlight)
    batch = partitioner.place({"x": np.ones((8, 16), np.float32)})
    for _ in range(100):  # never waited on by the caller
        state, metrics = step(state, batch)
    assert float(metrics["loss"]) == 1.0 and np.allclose(np.asarray(state["w"]), 0.256)


def test_each_process_reads_only_its_rows():
    ids = np.arange(500, dtype=np.int32)
    batches = LMBatches({"train": ids, "validation": ids}, batch_size=8, seq_len=4, seed=0)
    full = batches.train_batch(3)
    part = batches.train_batch(3, rows=slice(4, 8))
    np.testing.assert_array_equal(part["inputs"], full["inputs"][4:8])
    first = next(batches.eval_batches(1, rows=slice(0, 2)))
    np.testing.assert_array_equal(first["targets"], next(batches.eval_batches(1))["targets"][:2])


def test_config_json_keeps_the_mesh_but_resume_ignores_it(tiny_corpus, tmp_path):
    config = tiny_config((1, 8, 1))
    assert "parallel" in RESUME_MAY_CHANGE
    partitioner = make_partitioner(config, language_model.make_task(config).init_variables)
    assert partitioner.local_rows(8) == slice(0, 8) and partitioner.batch_shards == 8
    assert json.loads(config.to_json())["parallel"]["mesh_shape"] == [1, 8, 1]


def _error(capsys, argv):
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_bad_mesh_configs_get_one_sentence_and_exit_2(tiny_corpus, capsys, repo_root, tmp_path):
    workdir = tmp_path / "never"
    base = ["train", "--config", f"{repo_root}/configs/shakespeare.py:smoke", "--workdir", str(workdir)]
    cases = [
        (["--config.parallel.mesh_shape=(3,1,1)"], "does not divide the 8 available"),
        (["--config.parallel.mesh_shape=(1,8)"], "must hold 3 integers"),
        (["--config.parallel.mesh_shape=(1,-1,1)", "--config.train.batch_size=12"],
         "'train.batch_size' (12) must be divisible by the 8 batch shards"),
        (["--config.parallel.mesh_shape=(2,1,4)"], "'heads' axis (size 2 in params/block_0/attn/"),
        (["--config.parallel.logical_axis_rules=(('mlp','model'),)"], "mesh axes are data, fsdp, tensor"),
        (["--config.parallel.coordinator_address=127.0.0.1:1"], "needs 'parallel.num_processes'"),
    ]
    for extra, message in cases:
        code, err = _error(capsys, base + extra)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (extra, err)
    assert not workdir.exists()


@pytest.mark.parametrize("optimizer", ["adamw_masked", "adafactor"])
def test_optimizer_state_follows_its_parameters_under_fsdp(tiny_corpus, optimizer):
    """Specs come from Optax's own map of its state onto the parameters: Adam's mu and nu take
    their parameter's spec, Adafactor's factored row/column statistics the spec of the axes
    they keep; every optimiser's state per device shrinks under 8-way FSDP."""
    config = tiny_config((1, 8, 1))
    task = language_model.make_task(config)
    tx = (make_optimizer(config.optim, config.train.num_steps)[0] if optimizer == "adamw_masked"
          else optax.adafactor(1e-3, min_dim_size_to_factor=8))
    partitioner = make_partitioner(config, task.init_variables)
    state = partitioner.init_state(lambda: create_state(task.init_variables, config, tx))
    param_specs = jax.tree.map(lambda p: p.sharding.spec, state.params)
    fc = ("block_0", "mlp", "fc", "kernel")

    def at(tree, path):
        for key in path:
            tree = tree[key]
        return tree

    if optimizer == "adamw_masked":
        adam = state.opt_state[1][0]  # chain(clip, adamw(...)): adamw = chain(scale_by_adam, decay, lr)
        for moments in (adam.mu, adam.nu):
            assert jax.tree.map(lambda x: x.sharding.spec, moments) == param_specs
    else:
        factored = state.opt_state[0]
        kernel_spec = at(param_specs, fc)  # P("fsdp", "tensor") for [embed, mlp]
        assert at(factored.v_row, fc).sharding.spec == jax.sharding.PartitionSpec(kernel_spec[0])
        assert at(factored.v_col, fc).sharding.spec == jax.sharding.PartitionSpec(kernel_spec[1])
        assert at(factored.v_row, fc).shape == (32,) and at(factored.v_col, fc).shape == (64,)
    total = sum(x.nbytes for x in jax.tree.leaves(state.opt_state))
    # Adam's moments are parameter-shaped, so they shrink like the parameters; Adafactor's
    # factored statistics are small vectors, many of them (and its (1,) placeholders) too
    # small to split, so its state shrinks less.
    shrink = {"adamw_masked": 1 / 4, "adafactor": 3 / 4}[optimizer]
    assert max(bytes_per_device(state.opt_state).values()) < shrink * total


def test_activations_have_names_of_their_own():
    """A parameter's embed axis shards over fsdp; the [B, T, D] activations keep D whole and put
    their batch over data and fsdp, whatever order the rules come in. Rules written before the
    activations had their own names still shard as they did."""
    from jax.sharding import PartitionSpec as P

    from p2t_jax.models import logical
    from p2t_jax.parallel.partitioning import DEFAULT_RULES, check_rules

    partitioner = Partitioner(make_mesh((2, 2, 2)))
    assert partitioner.mesh_spec(logical.BTD) == P(("data", "fsdp"), None, None)
    assert partitioner.mesh_spec(logical.BTF) == P(("data", "fsdp"), None, "tensor")
    assert partitioner.mesh_spec(logical.BTHK) == P(("data", "fsdp"), None, "tensor", None)
    assert partitioner.mesh_spec(("embed", "mlp")) == P("fsdp", "tensor")
    reordered = tuple(reversed(DEFAULT_RULES))  # parameters' rules first: nothing they say reaches activations
    assert Partitioner(make_mesh((2, 2, 2)), reordered).mesh_spec(logical.BTD) == P(("data", "fsdp"), None, None)
    names = {name for name, _ in DEFAULT_RULES}
    assert set(logical.BTD + logical.BTF + logical.BTHK + logical.BTV) <= names
    old = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("kv", None),
           ("vocab", None), ("length", None))
    derived = Partitioner(make_mesh((2, 2, 2)), old)
    assert check_rules(old)[-len(old):] == old
    for acts in (logical.BTD, logical.BTF, logical.BTHK, logical.BTV):
        shared = tuple(n.removeprefix("activation_") for n in acts)
        assert derived.mesh_spec(acts) == derived.mesh_spec(shared) == partitioner.mesh_spec(acts)


def test_every_transformer_parameter_has_logical_names():
    """Every parameter initialiser goes through models.logical.param: each leaf has one name (or
    None) per axis, and only parameter names."""
    from p2t_jax.models import logical

    c = tiny_config()
    model = language_model.make_model(c)
    boxed = jax.eval_shape(lambda: language_model.init_params(model, jax.random.PRNGKey(0), unbox=False))["params"]
    specs = jax.tree.leaves(nn.get_partition_spec(boxed), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    shapes = [x.shape for x in jax.tree.leaves(nn.meta.unbox(boxed))]
    assert len(specs) == len(shapes) > 10
    activation_names = set(logical.ACTIVATION_OF.values())
    for spec, shape in zip(specs, shapes):
        assert isinstance(spec, jax.sharding.PartitionSpec) and len(spec) == len(shape)
        assert not set(spec) & activation_names
