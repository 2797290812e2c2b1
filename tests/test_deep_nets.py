"""Chapter 7's deep nets: exact parameter counts, forward passes against NumPy, the residual branch
scale, the CIFAR ResNet, per-layer gradient norms and ReLU-input statistics as metrics, bad
configs, and the experiment end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment, run_experiment_smoke

from p2t_jax.chapters import deep_nets
from p2t_jax.configuration import ConfigError, apply_overrides, load_config
from p2t_jax.data.images import ImageRecords
from p2t_jax.models.resnet import DeepMLP, ResNet, shortcut_a
from p2t_jax.tasks import image_classification as ic
from p2t_jax.tasks import image_models
from p2t_jax.training.loop import train_and_evaluate
from p2t_jax.training.metrics import read_metrics

EPS = 1e-5


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_deep_mlp_parameters_are_counted_exactly(batch_norm):
    L, W = 30, 128
    model = DeepMLP(depth=L, width=W, residual=True, batch_norm=batch_norm)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    dense = (784 * W + W) + (L - 1) * (W * W + W) + (W * 10 + 10)
    assert _count(variables["params"]) == dense + (2 * W * L if batch_norm else 0) == (
        588_298 if batch_norm else 580_618)
    assert ("batch_stats" in variables) == batch_norm
    expected = {f"dense_{i:02d}" for i in range(1, L + 1)} | {"head"}
    assert set(variables["params"]) == expected | ({f"bn_{i:02d}" for i in range(1, L + 1)} if batch_norm else set())


def _numpy_deep_mlp(params, x, depth, residual, batch_norm):
    """The forward pass of DeepMLP in NumPy (batch norm in evaluation mode at its initial statistics)."""
    def bn(h, i):
        if not batch_norm:
            return h
        p = params[f"bn_{i:02d}"]
        return (h - 0.0) / np.sqrt(1.0 + EPS) * p["scale"] + p["bias"]

    def dense(h, name):
        return h @ params[name]["kernel"] + params[name]["bias"]

    h = dense(x.reshape(x.shape[0], -1), "dense_01")
    for layer in range(2, depth + 1):
        branch = dense(np.maximum(bn(h, layer - 1), 0), f"dense_{layer:02d}")
        h = h + branch if residual else branch
    return dense(np.maximum(bn(h, depth), 0), "head")


@pytest.mark.parametrize("residual, batch_norm", [(False, False), (True, False), (True, True)])
def test_deep_mlp_forward_equals_numpy(residual, batch_norm):
    model = DeepMLP(depth=4, width=8, num_classes=3, residual=residual, batch_norm=batch_norm)
    x = jax.random.uniform(jax.random.PRNGKey(1), (5, 4, 4, 1))
    variables = jax.jit(model.init)(jax.random.PRNGKey(2), x)
    params = jax.tree.map(np.asarray, variables["params"])
    expected = _numpy_deep_mlp(params, np.asarray(x, np.float64), 4, residual, batch_norm)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, x), expected, rtol=1e-4, atol=1e-5)


def test_residual_branches_start_one_over_sqrt_depth_smaller():
    x = jnp.zeros((1, 64))
    stds = {}
    for residual, scaled in [(False, True), (True, True), (True, False)]:
        model = DeepMLP(depth=4, width=256, residual=residual, scale_residual_init=scaled)
        params = model.init(jax.random.PRNGKey(0), x)["params"]  # eager: the three share compiled ops
        stds[(residual, scaled)] = float(np.std(params["dense_03"]["kernel"]))
    plain = stds[(False, True)]
    assert plain == pytest.approx(1 / np.sqrt(256), rel=0.03)  # LeCun normal: variance 1 / fan_in
    assert stds[(True, False)] == pytest.approx(plain, rel=0.03)
    assert stds[(True, True)] == pytest.approx(plain / np.sqrt(4), rel=0.03)


def test_resnet20_has_the_papers_parameter_count():
    shapes = {}
    for residual, batch_norm in [(True, True), (False, True), (True, False)]:
        variables = jax.eval_shape(ResNet(20, residual=residual, batch_norm=batch_norm).init, jax.random.PRNGKey(0),
                                   jnp.zeros((1, 32, 32, 3)))
        shapes[(residual, batch_norm)] = variables
    channels = 16 + 6 * 16 + 6 * 32 + 6 * 64  # every conv's output channels: 688
    assert _count(shapes[(True, True)]["params"]) == 269_722  # He et al.: "0.27M"
    assert _count(shapes[(True, True)]["batch_stats"]) == 2 * channels
    assert _count(shapes[(False, True)]["params"]) == 269_722  # option A shortcuts hold no parameters
    assert _count(shapes[(True, False)]["params"]) == 269_722 - 2 * channels + channels  # conv biases, no BN
    stages = [k for k in shapes[(True, True)]["params"] if k.startswith("stage")]
    assert len(stages) == 9 and stages[0] == "stage1_block1"
    with pytest.raises(ValueError, match="6n \\+ 2"):
        ResNet(21).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    out = np.asarray(shortcut_a(jnp.asarray(x), channels=8, stride=2))
    assert out.shape == (2, 2, 2, 8)
    np.testing.assert_array_equal(out[..., 2:5], x[:, ::2, ::2, :])  # 5 extra channels: 2 before, 3 after
    assert not out[..., :2].any() and not out[..., 5:].any()
    np.testing.assert_array_equal(shortcut_a(jnp.asarray(x), 3, 1), x)


def _digits(n=128, seed=0):
    rng = np.random.default_rng(seed)
    return {s: ImageRecords(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, n))
            for s in ("train", "test")}


def _config(*overrides):
    config = load_config("configs/deep_nets.py:smoke")
    apply_overrides(config, ["data.train_size=0", "model.depth=4", "model.width=16", "train.batch_size=32",
                             "train.eval_batch_size=64", "train.num_epochs=0", "train.num_steps=1",
                             "train.log_every=1"] + list(overrides))
    return config


def test_per_layer_metrics_equal_jax_grad_and_the_forward_pass(tmp_path):
    task, batches, config = ic.build_with_batches(_config("model.batch_norm=true"), splits=_digits())
    assert task.grad_metrics is image_models.kernel_grad_norms
    metrics = deep_nets.first_step_metrics(task, config)
    # the logged first step is that very step, and the loop keeps its metrics in the summary
    _, summary = train_and_evaluate(task, config, tmp_path, progress=False)
    logged = read_metrics(tmp_path, "train")[0]
    assert logged["step"] == 1
    for key, value in metrics.items():
        if "/" in key or key in ("loss", "grad_norm"):
            assert logged[key] == pytest.approx(value, rel=1e-6), key
    assert set(summary["first_step"]) == set(metrics)
    for key, value in metrics.items():
        assert summary["first_step"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert deep_nets.layer_names(metrics, "grad_norm") == ["dense_01", "dense_02", "dense_03", "dense_04", "head"]
    assert deep_nets.layer_names(metrics, "preact_std") == ["relu_01", "relu_02", "relu_03", "relu_04"]

    from p2t_jax.training.loop import create_state

    state = create_state(task.init_variables, config)
    batch = batches.train_batch(0)
    step_rng = jax.random.fold_in(state.rng, 0)
    grads = jax.jit(jax.grad(lambda p: task.loss_fn(p, state.model_state, batch, step_rng, True)[0]))(state.params)
    for name in ("dense_01", "dense_03", "head"):
        assert metrics[f"grad_norm/{name}"] == pytest.approx(float(jnp.linalg.norm(grads[name]["kernel"])), rel=1e-5)
    model = ic.make_model(config)
    _, sown = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["intermediates", "batch_stats"]))(
        {"params": state.params, **state.model_state}, batch["image"])
    relu2 = np.asarray(sown["intermediates"]["relu_02"][0])
    assert metrics["preact_mean/relu_02"] == pytest.approx(float(relu2.mean()), abs=1e-6)
    assert metrics["preact_std/relu_02"] == pytest.approx(float(relu2.std()), rel=1e-5)


def test_band_and_series_helpers():
    records = [{"preact_mean/relu_02": 0.1, "preact_mean/relu_01": 0.0, "preact_std/relu_01": 1.0,
                "preact_std/relu_02": 3.0},
               {"preact_mean/relu_02": -0.5, "preact_mean/relu_01": 0.2, "preact_std/relu_01": 0.9,
                "preact_std/relu_02": 1.1}]
    means, stds = deep_nets.layer_series(records, "preact_mean"), deep_nets.layer_series(records, "preact_std")
    np.testing.assert_array_equal(means, [[0.0, 0.1], [0.2, -0.5]])
    np.testing.assert_array_equal(deep_nets.out_of_band(means, stds, 0.25, (0.75, 1.33)),
                                  [[False, True], [False, True]])


@pytest.mark.slow
def test_resnet_trains_a_step_with_batch_stats_on_tiny_images():
    config = load_config("configs/cifar10_resnet.py:smoke")
    apply_overrides(config, ["data.train_size=0", "train.batch_size=8", "train.eval_batch_size=8"])
    rng = np.random.default_rng(0)
    splits = {s: ImageRecords(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 16))
              for s in ("train", "test")}
    task, batches, config = ic.build_with_batches(config, splits=splits)
    metrics = deep_nets.first_step_metrics(task, config)
    assert np.isfinite(metrics["loss"]) and metrics["l2_penalty"] > 0
    names = deep_nets.layer_names(metrics, "grad_norm")
    assert len(names) == 8 and names[0] == "conv_stem" and names[-1] == "head"  # ResNet-8: 1 + 6 + 1 layers
    assert "preact_std/stage3_block1/relu_b" in metrics


@pytest.mark.parametrize("override, message", [
    ("model.depth=0", "'model.depth' must be an integer >= 1 for deep_mlp, got 0"),
    ("model.width=0", "'model.width' must be a positive integer"),
])
def test_bad_depths_get_one_sentence(override, message):
    with pytest.raises(ConfigError, match=message):
        ic.validate(_config(override))
    config = load_config("configs/cifar10_resnet.py")
    apply_overrides(config, ["model.depth=21"])
    with pytest.raises(ConfigError, match="6n \\+ 2 with n >= 1"):
        ic.validate(config)


@pytest.mark.parametrize("argv, message", [
    (["--config.model.depth=0"], "'model.depth' must be an integer >= 1"),
    (["--config.experiment.depths=(0, 8)"], "two or more increasing depths >= 1"),
    (["--config.experiment.claim_depth=5"], "must be one of experiment.depths"),
])
def test_experiment_bad_input_is_one_sentence_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    status = load_experiment("07_batchnorm_residual.py").cli(
        ["--workdir", str(workdir), "--config", "configs/deep_nets.py:smoke"] + argv)
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1
    assert not workdir.exists()


@pytest.mark.slow
def test_experiment_smoke(tmp_path, capsys):
    results = run_experiment_smoke("07_batchnorm_residual.py", "configs/deep_nets.py:smoke", tmp_path, capsys)
    assert {"grad_norms.png", "preactivations.png", "loss_by_depth.png"} <= set(results["figures"])
    assert len(results["runs"]) == 4 * 2
    pre = results["preactivations"]
    assert pre["plain+BN"]["out_of_band"] == 0 and pre["plain"]["out_of_band"] > 0
    assert len(pre["plain"]["std"][0]) == 8  # one column per layer


@pytest.mark.parametrize("save_on_eval, patience, saved", [(False, 0, [6]), (False, 9, [2, 4, 6])])
def test_saves_at_evaluations_only_when_asked_or_when_early_stopping_needs_the_best(tmp_path, save_on_eval, patience,
                                                                                     saved):
    from p2t_jax.training.checkpoint import Checkpoints

    config = _config("train.num_steps=6", "train.eval_every=2", "train.checkpoint_every=100",
                     "train.keep_checkpoints=5", f"train.early_stop_patience={patience}")
    with config.train.unlocked():
        config.train.save_on_eval = save_on_eval
    task, _, config = ic.build_with_batches(config, splits=_digits())
    train_and_evaluate(task, config, tmp_path, progress=False)
    checkpoints = Checkpoints(tmp_path, write=False)
    try:
        assert checkpoints.steps() == saved
    finally:
        checkpoints.close()


def test_bad_save_on_eval_is_refused_in_one_sentence(tmp_path):
    from p2t_jax.configuration import ConfigError as Refused

    config = _config()
    with config.train.unlocked():
        config.train.save_on_eval = "no"
    task, _, config = ic.build_with_batches(config, splits=_digits())
    with pytest.raises(Refused, match="'train.save_on_eval' must be true or false, got 'no'"):
        train_and_evaluate(task, config, tmp_path, progress=False)
    assert not tmp_path.joinpath("config.json").exists()


@pytest.mark.slow
def test_runs_side_by_side_in_worker_processes_equal_the_runs_one_after_another(tmp_path):
    """experiment.workers: the same results (and first-step metrics) from 2 worker processes."""
    splits = _digits()
    configs = [ic.run_config(_config(f"model.depth={d}", "train.num_steps=3", f"seed={d}")) for d in (2, 3)]
    alone = list(ic.train_each_or_reuse([(c, tmp_path / "alone" / str(i)) for i, c in enumerate(configs)], splits,
                                        "given", workers=1))
    side = list(ic.train_each_or_reuse([(c, tmp_path / "side" / str(i)) for i, c in enumerate(configs)], splits,
                                       "given", workers=2))
    for a, b in zip(alone, side):
        assert a["splits"] == b["splits"] and a["curves"]["train_loss"] == b["curves"]["train_loss"]
        assert a["first_step"] == b["first_step"] and a["config"] == b["config"]


def test_no_more_workers_than_the_cores_this_process_may_use(monkeypatch, tmp_path):
    """One usable core (e.g. a `p2t reproduce` lane): the runs train here, one after another, with no pool."""
    trained = []
    monkeypatch.setattr(ic, "usable_cores", lambda: 1)
    monkeypatch.setattr(ic, "train_or_reuse", lambda config, run_dir, *a, **k: trained.append(run_dir) or {"run": run_dir})
    monkeypatch.setattr(ic.concurrent.futures, "ProcessPoolExecutor", None)  # a pool would fail to start
    jobs = [(None, tmp_path / "a"), (None, tmp_path / "b")]
    assert [r["run"] for r in ic.train_each_or_reuse(jobs, {}, "given", workers=2)] == [tmp_path / "a", tmp_path / "b"]
    assert trained == [tmp_path / "a", tmp_path / "b"]


def test_state_shapes_from_the_partitioners_variables_equal_the_traced_state():
    """The loop's one abstract initialisation: the state's shapes, dtypes and shardings built from
    the variables ``make_partitioner`` traced equal ``jax.eval_shape`` of the whole creation."""
    from p2t_jax.optim.chains import make_optimizer
    from p2t_jax.parallel.partitioning import make_partitioner
    from p2t_jax.training.loop import create_state, state_shapes

    task, _, config = ic.build_with_batches(_config("model.batch_norm=true"), splits=_digits())
    tx, _ = make_optimizer(config.optim, config.train.num_steps, config=config)
    partitioner = make_partitioner(config, task.init_variables)
    make = lambda: create_state(task.init_variables, config, tx)  # noqa: E731
    shapes = state_shapes(partitioner.abstract_variables, config, tx)
    traced, reused = partitioner.abstract_state(make), partitioner.abstract_state(make, shapes)
    a, b = traced.checkpoint_items(), reused.checkpoint_items()
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert (x.shape, x.dtype, x.sharding) == (y.shape, y.dtype, y.sharding)
    assert "batch_stats" in b["model_state"] and len(jax.tree.leaves(a)) == len(jax.tree.leaves(b)) > 10
    # created from those shapes: the same values, to the bit, as without a mesh
    made, plain = partitioner.init_state(make, shapes).checkpoint_items(), make().checkpoint_items()
    for x, y in zip(jax.tree.leaves(made), jax.tree.leaves(plain)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_final_evaluation_with_the_loops_evaluation_step_gives_the_same_numbers(tmp_path):
    """The loop hands out its evaluation step (``steps``); the chapters' final evaluation reuses it
    instead of compiling another, with exactly the numbers a fresh one gives."""
    from p2t_jax.training.steps import make_eval_step

    task, batches, config = ic.build_with_batches(_config("model.batch_norm=true", "train.num_steps=2"),
                                                  splits=_digits())
    steps = {}
    state, _ = train_and_evaluate(task, config, tmp_path, progress=False, steps=steps)
    fresh = jax.jit(make_eval_step(task.loss_fn))
    for split in batches.splits:
        assert (ic.evaluate_split(task, state, batches, split, steps["eval"])
                == ic.evaluate_split(task, state, batches, split, fresh))
