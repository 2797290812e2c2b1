"""Every task's config has the same groups, so an override that works for one task works for all.

Each test applies one override to every task config in ``configs/`` and checks it is accepted
by the task's own checks (and, for ``parallel``, by the mesh the loop builds), and that a bad
value of the same key is refused in one sentence naming it.
"""

import jax
import numpy as np
import pytest

from p2t_jax import tasks
from p2t_jax.configuration import REPO_ROOT, ConfigError, apply_overrides, load_config
from p2t_jax.parallel.partitioning import make_partitioner
from p2t_jax.training import config_groups
from p2t_jax.training.loop import Task, train_and_evaluate
from p2t_jax.training.metrics import read_metrics

# Config files of experiments that train no task of their own (each reads another config or none).
EXPERIMENT_ONLY = {"backprop.py", "perceptron.py", "xor_mlp.py", "transformer_compare.py", "transformer_sharded.py"}
CONFIGS = sorted(p.name for p in (REPO_ROOT / "configs").glob("*.py"))
TASK_CONFIGS = [name for name in CONFIGS if name not in EXPERIMENT_ONLY]
IMAGE_BUDGET = ["train.num_epochs=0", "train.num_steps=3", "train.log_every=1", "data.train_size=96"]
SHARED = {"train": config_groups.default_train(), "optim": config_groups.default_optim(),
          "parallel": config_groups.default_parallel()}


def _load(name: str, overrides=()):
    config = load_config(str(REPO_ROOT / "configs" / name))
    apply_overrides(config, overrides)
    return config


def _validate(config):
    tasks.module(tasks.task_name(config)).validate(config)


def _refused(config, override: str, match: str) -> str:
    apply_overrides(config, [override])
    with pytest.raises(ConfigError, match=match) as e:
        _validate(config)
    message = str(e.value)
    assert message.endswith(".") and "\n" not in message, message
    return message


def test_every_config_file_is_a_task_config_or_named_as_an_experiments_own():
    for name in EXPERIMENT_ONLY:
        assert "task" not in _load(name), name
    for name in TASK_CONFIGS:
        assert _load(name).task in tasks.REGISTRY, name


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_every_task_config_has_the_same_groups_with_the_shared_fields(name):
    config = _load(name)
    groups = {key for key, value in config.items() if hasattr(value, "keys")}
    assert {"train", "optim", "parallel", "data", "model"} <= groups
    assert groups - {"train", "optim", "parallel", "data", "model"} <= {"loss", "decode", "experiment", "precision"}
    for group, fields in SHARED.items():
        assert set(fields.keys()) <= set(config[group].keys()), (group, set(fields.keys()) - set(config[group].keys()))


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_train_group_override_works_for_every_task(name):
    config = _load(name, ["train.early_stop_patience=3", "train.on_nonfinite=skip", "train.keep_checkpoints=2"])
    _validate(config)
    assert (config.train.early_stop_patience, config.train.on_nonfinite, config.train.keep_checkpoints) == (3, "skip", 2)
    message = _refused(config, "train.on_nonfinite=explode", "config key 'train.on_nonfinite' must be one of")
    assert "'explode'" in message


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_optim_group_override_works_for_every_task(name):
    config = _load(name, ["optim.name=adamw", "optim.schedule=constant", "optim.grad_clip_norm=0.5"])
    _validate(config)
    assert (config.optim.name, config.optim.schedule, config.optim.grad_clip_norm) == ("adamw", "constant", 0.5)
    _refused(config, "optim.name=adagradd", "config key 'optim.name' must be one of .*got 'adagradd'")


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_parallel_group_override_works_for_every_task(name):
    config = _load(name, ["parallel.mesh_shape=(1,-1,1)"])
    _validate(config)
    if config.train.batch_size % jax.device_count() == 0:  # the mesh the loop builds takes it as well
        partitioner = make_partitioner(config)
        assert dict(partitioner.mesh.shape) == {"data": 1, "fsdp": jax.device_count(), "tensor": 1}
        assert partitioner.batch_shards == jax.device_count()
    _refused(config, "parallel.mesh_shape=(0,1,1)", r"config key 'parallel.mesh_shape' \(0, 1, 1\) may hold positive")


@pytest.mark.parametrize("group", ["data", "model"])
@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_data_and_model_are_groups_whose_unknown_keys_are_refused(name, group):
    config = _load(name)
    with pytest.raises(ConfigError, match=f"unknown config key '{group}.no_such_field'"):
        apply_overrides(config, [f"{group}.no_such_field=1"])


def test_a_shared_group_refuses_a_field_it_does_not_have():
    assert config_groups.default_train(batch_size=8).batch_size == 8
    with pytest.raises(TypeError, match="default_optim\\(\\) has no field\\(s\\) lr"):
        config_groups.default_optim(lr=0.1)


def _toy_task(train_rows: int, eval_rows: int) -> Task:
    def loss_fn(params, model_state, batch, rng, train):
        loss = ((batch["x"] * params["w"]).sum(-1) ** 2).mean()
        return loss, ({}, model_state)

    return Task(init_variables=lambda rng: {"params": {"w": jax.numpy.ones((3,))}}, loss_fn=loss_fn,
                train_batch=lambda step: {"x": np.full((train_rows, 3), 0.1, np.float32)},
                eval_batches=lambda: [{"x": np.ones((eval_rows, 3), np.float32)}],
                items_per_batch=train_rows, items_name="examples")


def _toy_config(mesh_shape):
    import ml_collections

    c = ml_collections.ConfigDict()
    c.seed = 0
    c.train = config_groups.default_train(batch_size=8, num_steps=4, log_every=2, eval_every=4, checkpoint_every=4)
    c.optim = config_groups.default_optim(learning_rate=0.1)
    c.parallel = config_groups.default_parallel(mesh_shape=mesh_shape)
    return c


def test_an_evaluation_batch_that_does_not_divide_over_the_mesh_is_refused_before_anything_is_written(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match="an evaluation batch of 4 rows cannot be split into the 8 batch shards"):
        train_and_evaluate(_toy_task(8, 4), _toy_config((-1, 1, 1)), workdir, progress=False)
    assert not workdir.exists()
    _, summary = train_and_evaluate(_toy_task(8, 16), _toy_config((-1, 1, 1)), workdir, progress=False)
    assert summary["final_step"] == 4 and summary["mesh"].startswith("data=8 x fsdp=1 x tensor=1")


def test_an_image_evaluation_batch_that_does_not_divide_is_refused_before_the_run_starts(tmp_path):
    """configs/mnist_optimizers.py:smoke with its batch over 8 devices (fsdp): its evaluation batch of 250
    does not split 8 ways."""
    config = load_config(str(REPO_ROOT / "configs" / "mnist_optimizers.py") + ":smoke")
    apply_overrides(config, ["parallel.mesh_shape=(1,-1,1)", *IMAGE_BUDGET])
    task, config = tasks.build(config)
    with pytest.raises(ConfigError, match="an evaluation batch of 250 rows cannot be split into the 8 batch shards"):
        train_and_evaluate(task, config, tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_an_image_task_is_sharded_through_the_loop_with_the_same_numbers(tmp_path):
    """configs/mnist_optimizers.py:smoke on one device and with its batch over 8 (fsdp): the same losses."""
    curves = {}
    for mesh in ("(1,1,1)", "(1,-1,1)"):
        config = load_config(str(REPO_ROOT / "configs" / "mnist_optimizers.py") + ":smoke")
        apply_overrides(config, [f"parallel.mesh_shape={mesh}", "train.eval_batch_size=200", *IMAGE_BUDGET])
        task, config = tasks.build(config)
        _, summary = train_and_evaluate(task, config, tmp_path / mesh, progress=False)
        curves[mesh] = ([r["loss"] for r in read_metrics(tmp_path / mesh, "train")], summary["eval"]["loss"])
    assert summary["mesh"].startswith("data=1 x fsdp=8 x tensor=1") and len(curves["(1,1,1)"][0]) == 3
    np.testing.assert_allclose(curves["(1,-1,1)"][0], curves["(1,1,1)"][0], rtol=1e-5)
    np.testing.assert_allclose(curves["(1,-1,1)"][1], curves["(1,1,1)"][1], rtol=1e-5)
