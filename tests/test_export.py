"""Compiled for accelerators without one: every task's train and eval step, and the sharded
language-model step on the 8-device mesh, lowered for ``cuda`` and ``tpu`` with ``jax.export``
on this CPU machine; what matters in each lowered module is checked.

* Every step lowers for both platforms (lowering only: nothing is compiled here).
* No host callback inside a step: no ``custom_call`` to a callback target, no host
  send/recv, no effects.
* The sharded step's arguments carry, in the module itself (``sdy.sharding``), the shardings
  the logical-axis rules ask for, and the ``Exported`` object's in/out shardings are the
  partitioner's; the activations' constraints (``sdy.sharding_constraint``) are there too.
* ``model.attention_impl=auto`` (the ``gpu`` recipe's) puts cuDNN's fused attention into the
  step lowered for ``cuda`` and XLA's into the step lowered for ``tpu`` or ``cpu``, from the
  same traced function.

Configs: every file in ``configs/`` whose ``smoke`` variant names a task, on synthetic data
of the real shapes (images) or the test passage (Shakespeare).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PASSAGE, REPO
from jax import export
from jax.sharding import PartitionSpec

from p2t_jax import tasks
from p2t_jax.configuration import apply_overrides, load_config
from p2t_jax.data import image_datasets, shakespeare
from p2t_jax.data.images import ImageRecords
from p2t_jax.optim.chains import make_optimizer
from p2t_jax.parallel.partitioning import make_partitioner
from p2t_jax.training.loop import create_state
from p2t_jax.training.steps import make_eval_step, make_train_step

PLATFORMS = ("cuda", "tpu")
TASK_CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py")
                      if "task" in load_config(str(p) + ":smoke"))
# the test_parallel meshes: one block of eight heads of width 4 divides every axis
SHARDED_TINY = ["model.num_layers=1", "model.num_heads=8"]
MESHES = {"data": (8, 1, 1), "fsdp": (1, 8, 1), "tensor": (1, 1, 8), "fsdp x tensor": (1, 2, 4)}
CALLBACK = re.compile(r"callback|host_transfer|outside_compilation", re.IGNORECASE)
CUDNN_ATTENTION = ("__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward")


def custom_call_targets(text: str) -> set[str]:
    """The targets of every ``stablehlo.custom_call`` in a module's text."""
    return set(re.findall(r"custom_call @([\w.$]+)", text))


def callbacks_in(text: str) -> list[str]:
    """What in a module's text would reach the host: callback custom calls, host send/recv."""
    found = sorted(t for t in custom_call_targets(text) if CALLBACK.search(t))
    return found + [op for op in ("stablehlo.send", "stablehlo.recv") if op in text]


def host_callbacks(exported: export.Exported) -> list[str]:
    """:func:`callbacks_in` the lowered step, and its effects (a callback's, an ordered print's)."""
    return callbacks_in(exported.mlir_module()) + [f"effect {e}" for e in (*exported.ordered_effects,
                                                                           *exported.unordered_effects)]


def argument_shardings(text: str) -> dict[int, str]:
    """``{argument index: the dims of its sdy.sharding}`` of the module's ``main`` (e.g. ``{"fsdp"}, {}``)."""
    main = text[text.index("func.func public @main("):]
    main = main[:main.index("\n")]
    return {int(i): dims for i, dims in
            re.findall(r"%arg(\d+): tensor<[^>]*> \{[^}]*?sdy\.sharding = #sdy\.sharding<@mesh, \[(.*?)\]>", main)}


def sdy_dims(spec: PartitionSpec, ndim: int) -> str:
    """How the module writes ``spec`` on an array of ``ndim`` axes: ``P("fsdp")`` on 2 axes -> ``{"fsdp"}, {}``."""
    dims = list(spec) + [None] * (ndim - len(spec))
    named = [() if d is None else (d,) if isinstance(d, str) else tuple(d) for d in dims]
    return ", ".join("{" + ", ".join(f'"{a}"' for a in axes) + "}" for axes in named)


def _abstract(tree, sharding=None):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sharding), tree)


def _fake_image_splits(source="auto", name="mnist", data_dir=None):
    """Images of the dataset's real shape, nothing loaded (lowering needs shapes only)."""
    rng = np.random.default_rng(0)
    shape = image_datasets.IMAGE_SHAPES[name]
    make = lambda n: ImageRecords(rng.integers(0, 256, (n, *shape), dtype=np.uint8),  # noqa: E731
                                  np.arange(n) % image_datasets.NUM_CLASSES)
    return {"train": make(512), "test": make(128)}, f"synthetic:{name}"


@pytest.fixture(scope="module")
def no_data():
    """Every task builds without reading a dataset: the test passage, synthetic images."""
    with pytest.MonkeyPatch.context() as mp:
        texts = {"train": PASSAGE * 40, "validation": PASSAGE * 4}
        mp.setattr(shakespeare, "load_texts", lambda source="auto", data_dir=None: (dict(texts), "test:passage"))
        mp.setattr(image_datasets, "load_splits", _fake_image_splits)
        yield


def _steps(config):
    """(task, config, jitted train step, jitted eval step, abstract state, train batch, eval batch), as the loop
    builds them on one device."""
    task, config = tasks.build(config)
    tx, schedule = make_optimizer(config.optim, config.train.num_steps)
    state = jax.eval_shape(lambda: create_state(task.init_variables, config, tx))
    train = jax.jit(make_train_step(task.loss_fn, schedule, grad_metrics=task.grad_metrics), donate_argnums=0)
    return (train, jax.jit(make_eval_step(task.loss_fn)), state, _abstract(task.train_batch(0)),
            _abstract(next(iter(task.eval_batches()))))


@pytest.fixture(scope="module")
def exported_tasks(no_data):
    """``(config name, platform) -> {"train": Exported, "eval": Exported}``, each lowered once."""
    steps, cache = {}, {}

    def get(name, platform):
        if name not in steps:
            steps[name] = _steps(load_config(f"{REPO}/configs/{name}.py:smoke"))
        if (name, platform) not in cache:
            train, evaluate, state, batch, eval_batch = steps[name]
            cache[name, platform] = {
                "train": export.export(train, platforms=[platform])(state, batch),
                "eval": export.export(evaluate, platforms=[platform])(state, eval_batch)}
        return cache[name, platform]

    return get


def test_every_task_config_is_here():
    assert {"shakespeare", "mnist_cnn", "cifar10_resnet", "rnn_memory", "reorder", "pointer"} <= set(TASK_CONFIGS)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_task_steps_lower_for_accelerators_without_host_callbacks(exported_tasks, name, platform):
    lowered = exported_tasks(name, platform)
    for kind, exported in lowered.items():
        assert exported.platforms == (platform,)
        assert host_callbacks(exported) == [], (name, kind)
        text = exported.mlir_module()
        assert "stablehlo.dot_general" in text or "stablehlo.convolution" in text, (name, kind)
    train = lowered["train"]
    # the state is donated: every state array aliases an output of the step
    state_leaves = train.in_tree.children()[0].children()[0].num_leaves
    assert train.mlir_module().count("tf.aliasing_output") == state_leaves > 0


def test_the_host_callback_check_finds_one():
    """A step that prints from inside (a host callback): the check finds it in the CPU lowering's text, and
    jax.export refuses such a step outright, for the CPU and for each accelerator."""
    def step(x):
        jax.debug.print("x {x}", x=x.sum())
        return x * 2

    x = jax.ShapeDtypeStruct((4,), jnp.float32)
    assert any("callback" in found for found in callbacks_in(jax.jit(step).lower(x).as_text()))
    assert callbacks_in(jax.jit(lambda x: x * 2).lower(x).as_text()) == []
    for platform in ("cpu", *PLATFORMS):
        with pytest.raises((NotImplementedError, ValueError)):
            export.export(jax.jit(step), platforms=[platform])(x)


@pytest.fixture(scope="module")
def sharded(no_data):
    """``mesh name -> (partitioner, abstract state, abstract batch, {platform: Exported train step},
    {platform: Exported eval step})``."""
    cache = {}

    def get(mesh_name):
        if mesh_name not in cache:
            config = apply_overrides(load_config(f"{REPO}/configs/shakespeare.py:smoke"),
                                     SHARDED_TINY + [f"parallel.mesh_shape={MESHES[mesh_name]}"])
            task, config = tasks.build(config)
            tx, schedule = make_optimizer(config.optim, config.train.num_steps)
            partitioner = make_partitioner(config, task.init_variables)
            state = partitioner.abstract_state(lambda: create_state(task.init_variables, config, tx))
            step = partitioner.jit_train_step(make_train_step(task.loss_fn, schedule), state)
            step = getattr(step, "step", step)  # the jitted step inside the CPU mesh's in-flight bound
            evaluate = partitioner.jit_eval_step(make_eval_step(task.loss_fn), state)
            batch = _abstract(task.train_batch(0), partitioner.batch_sharding)
            cache[mesh_name] = (partitioner, state, batch,
                                {p: export.export(step, platforms=[p])(state, batch) for p in PLATFORMS},
                                {p: export.export(evaluate, platforms=[p])(state, batch) for p in PLATFORMS})
        return cache[mesh_name]

    return get


def _spec(sharding, ndim):
    spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
    while spec and spec[-1] is None:
        spec = spec[:-1]
    return spec


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
def test_sharded_steps_lower_with_the_shardings_the_rules_ask_for(sharded, mesh_name):
    partitioner, state, batch, by_platform, eval_by_platform = sharded(mesh_name)
    leaves = jax.tree.leaves((state, batch))
    expected = [_spec(x.sharding, x.ndim) for x in leaves]
    if mesh_name != "data":  # parameters really are split: the rules reach the module
        assert any(s for s, x in zip(expected, jax.tree.leaves(state.params)) if x.ndim)
    for platform, exported in by_platform.items():
        assert exported.nr_devices == 8 and host_callbacks(exported) == []
        text = exported.mlir_module()
        # what the module says about each argument
        in_module = argument_shardings(text)
        kept = exported.module_kept_var_idx
        assert len(in_module) == len(kept) == len(leaves)
        for arg, i in enumerate(kept):
            assert in_module[arg] == sdy_dims(leaves[i].sharding.spec, leaves[i].ndim), (platform, arg)
        # and what the rules table says, read off the module: embed -> fsdp, mlp -> tensor, vocab whole
        paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path((state, batch))[0]]
        arg_of = {path: kept.index(i) for i, path in enumerate(paths)}
        assert in_module[arg_of["[0].params['block_0']['mlp']['fc']['kernel']"]] == '{"fsdp"}, {"tensor"}'
        assert in_module[arg_of["[0].params['token_embed']['embedding']"]] == '{}, {"fsdp"}'
        assert in_module[arg_of["[1]['inputs']"]] == '{"data", "fsdp"}, {}'
        # what the Exported object says, in and out: the state's own shardings, metrics replicated
        got_in = [_spec(s, x.ndim) for s, x in zip(exported.in_shardings_jax(partitioner.mesh), leaves)]
        assert got_in == expected
        out_state = len(jax.tree.leaves(state))
        got_out = [_spec(s, a.ndim) for s, a in zip(exported.out_shardings_jax(partitioner.mesh), exported.out_avals)]
        assert got_out[:out_state] == expected[:out_state]
        assert all(s == () for s in got_out[out_state:])
        # the activations are constrained as their names ask: [B, T, H, K] over the batch and head axes
        bthk = sdy_dims(partitioner.mesh_spec(("activation_batch", "activation_length", "activation_heads",
                                               "activation_kv")), 4)
        assert "sdy.sharding_constraint" in text and f"[{bthk}]" in text, platform
        # the eval step: the same shardings in, its metrics replicated out
        evaluated = eval_by_platform[platform]
        assert host_callbacks(evaluated) == [] and evaluated.nr_devices == 8
        kept = evaluated.module_kept_var_idx  # the optimiser state is not an input of the eval step's module
        assert len(kept) < len(leaves)
        got_in = evaluated.in_shardings_jax(partitioner.mesh)
        assert [_spec(got_in[i], leaves[i].ndim) for i in kept] == [expected[i] for i in kept]
        assert all(_spec(s, a.ndim) == () for s, a in zip(evaluated.out_shardings_jax(partitioner.mesh),
                                                          evaluated.out_avals))


def _gpu_recipe(**overrides):
    """The gpu recipe's model settings (bfloat16, head width 64, no biases, tied embeddings, dropout 0.2) at
    one block, context 64, batch 2."""
    config = load_config(f"{REPO}/configs/shakespeare.py:gpu")
    extra = [f"{'precision.compute' if k == 'dtype' else 'model.' + k}={v}" for k, v in overrides.items()]
    return apply_overrides(config, ["model.num_layers=1", "model.max_len=64", "train.batch_size=2",
                                    "parallel.mesh_shape=(1,1,1)", *extra])


@pytest.fixture
def cudnn_present(monkeypatch):
    """jaxlib without its CUDA plugin has no cuDNN, and JAX's cuDNN attention refuses to trace; a GPU
    machine's jaxlib reports its version. Stated here (9.8), so the cuDNN branch traces as it would there."""
    from jax._src.cudnn import fused_attention_stablehlo

    monkeypatch.setattr(fused_attention_stablehlo, "check_cudnn_version", lambda: 90800)


def _cudnn_export(step, platform, *args):
    allowed = [export.DisabledSafetyCheck.custom_call(t) for t in CUDNN_ATTENTION]  # no compatibility guarantee
    return custom_call_targets(export.export(step, platforms=[platform], disabled_checks=allowed)(*args)
                               .mlir_module())


def test_gpu_recipe_attention_is_cudnns_in_the_cuda_lowering(no_data, cudnn_present):
    """One traced step, three lowerings: cuDNN's fused attention for cuda (forward in the eval step, forward and
    backward in a train step without attention dropout), XLA's for tpu and cpu. With the recipe's dropout
    0.2 the train step's attention is written out (dropout falls on the probabilities): cuDNN's in
    evaluation only."""
    config = _gpu_recipe()
    assert config.model.attention_impl == "auto" and config.precision.compute == "bfloat16"
    train, evaluate, state, batch, eval_batch = _steps(config)
    assert _cudnn_export(evaluate, "cuda", state, eval_batch) >= {"__cudnn$fmhaSoftmax"}
    for platform in ("tpu", "cpu"):
        assert not _cudnn_export(evaluate, platform, state, eval_batch) & set(CUDNN_ATTENTION)
    assert not _cudnn_export(train, "cuda", state, batch) & set(CUDNN_ATTENTION)

    train, _, state, batch, _ = _steps(_gpu_recipe(dropout_rate=0.0))
    assert _cudnn_export(train, "cuda", state, batch) >= set(CUDNN_ATTENTION)
    assert not _cudnn_export(train, "tpu", state, batch) & set(CUDNN_ATTENTION)


def test_attention_impl_xla_and_float32_never_ask_for_cudnn(no_data, cudnn_present):
    for overrides in ({"attention_impl": "xla"}, {"dtype": "float32"}):
        _, evaluate, state, _, eval_batch = _steps(_gpu_recipe(**overrides))
        assert not _cudnn_export(evaluate, "cuda", state, eval_batch) & set(CUDNN_ATTENTION), overrides


def test_attention_impl_is_checked(no_data):
    from p2t_jax.configuration import ConfigError

    with pytest.raises(ConfigError, match="'model.attention_impl' must be one of auto, xla, cudnn, blocked, got 'flash'"):
        tasks.build(_gpu_recipe(attention_impl="flash"))
    with pytest.raises(ConfigError, match="'model.attention_impl' is 'cudnn', which needs a GPU with cuDNN, and "
                                          "JAX runs on cpu here"):
        tasks.build(_gpu_recipe(attention_impl="cudnn"))
