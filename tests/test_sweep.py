"""`p2t sweep`: members trained in one compiled step equal the runs trained alone; a sweep
resumes bit-identically; bad sweep specs are refused in one sentence; the table and figure."""

import json
import struct

import chex
import jax
import numpy as np
import pytest
from conftest import PASSAGE, REPO

from p2t_jax.cli import main
from p2t_jax.configuration import ConfigError, load_config
from p2t_jax.tasks import language_model
from p2t_jax.training.checkpoint import Checkpoints
from p2t_jax.training.loop import train_and_evaluate
from p2t_jax.training.metrics import read_metrics
from p2t_jax.training.sweep import build_sweep, member_config, parse_axis

SMOKE = f"{REPO}/configs/shakespeare.py:smoke"
SHORT = ["--config.train.num_steps=12", "--config.train.log_every=3", "--config.train.eval_every=6",
         "--config.train.checkpoint_every=6", "--config.train.eval_batches=1", "--config.model.dropout_rate=0.1",
         "--config.model.use_bias=False"]  # a key bias has no true gradient: Adam would magnify its rounding noise
AXES = ["optim.learning_rate=1e-2,3e-3", "optim.weight_decay=0.1,0.0", "seed=0,1"]  # 8 members


@pytest.fixture(scope="module")
def corpus():
    from p2t_jax.data import shakespeare

    texts = {"train": PASSAGE * 40, "validation": PASSAGE * 4}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shakespeare, "load_texts", lambda source="auto", data_dir=None: (dict(texts), "test:passage"))
        yield texts


def _config():
    config = load_config(SMOKE)
    from p2t_jax.configuration import apply_overrides

    apply_overrides(config, [o.removeprefix("--config.") for o in SHORT])
    return config


def _sweep(config, chunk=0):
    axes = [parse_axis(spec, config) for spec in AXES]
    return build_sweep(language_model.build, language_model.validate, config, axes, chunk=chunk)


def _final_state(workdir, members):
    abstract = jax.eval_shape(members.create_state)
    checkpoints = Checkpoints(workdir, write=False)
    try:
        return abstract.replace_items(checkpoints.restore(abstract.checkpoint_items()).items)
    finally:
        checkpoints.close()


def _tensorboard_tags(folder):
    """The scalar tags in the TensorBoard event files of ``folder`` (TFRecord: length, CRC, event, CRC)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in folder.iterdir():
        data, at = path.read_bytes(), 0
        while at < len(data):
            size = struct.unpack("<Q", data[at:at + 8])[0]
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + size])
            tags |= {value.tag for value in event.summary.value}
            at += 16 + size
    return tags


@pytest.fixture(scope="module")
def swept(corpus, tmp_path_factory):
    """The CLI's sweep of 8 members (2 learning rates x 2 weight decays x 2 seeds), 12 steps."""
    workdir = tmp_path_factory.mktemp("sweep")
    argv = ["sweep", "--config", SMOKE, "--workdir", str(workdir), "--no-progress", "--chunk", "4"]
    assert main(argv + [a for spec in AXES for a in ("--sweep", spec)] + SHORT) == 0
    return workdir


def test_each_member_equals_its_run_trained_alone(swept, tmp_path):
    _, config, members = _sweep(_config())
    stacked = _final_state(swept, members)
    assert members.count == 8 and members.labels[5] == {"optim.learning_rate": 3e-3, "optim.weight_decay": 0.1,
                                                         "seed": 1}
    for i in (7,):  # lr 3e-3, weight decay 0, seed 1: differs from the base config in every swept value
        alone_config = member_config(_config(), members.labels[i])
        alone, summary = train_and_evaluate(language_model.make_task(alone_config), alone_config, tmp_path / str(i),
                                            progress=False)
        member = jax.tree.map(lambda x, i=i: x[i], stacked)
        chex.assert_trees_all_close(member.params, alone.params, rtol=2e-5, atol=2e-6)
        chex.assert_trees_all_close(member.opt_state, alone.opt_state, rtol=2e-5, atol=2e-6)
        evals = [r for r in read_metrics(swept, "eval") if r["member"] == i]
        assert evals[-1]["step"] == 12
        np.testing.assert_allclose(evals[-1]["loss"], summary["eval"]["loss"], rtol=1e-5)
        lone_lr = [r["learning_rate"] for r in read_metrics(tmp_path / str(i), "train")]
        np.testing.assert_allclose([r["learning_rate"] for r in read_metrics(swept, "train") if r["member"] == i],
                                   lone_lr, rtol=1e-6)
    first, second = jax.tree.map(lambda x: x[0], stacked.params), jax.tree.map(lambda x: x[1], stacked.params)
    assert not np.allclose(jax.tree.leaves(first)[0], jax.tree.leaves(second)[0])  # seeds differ


def test_sweep_records_table_and_figure(swept):
    labels = json.loads((swept / "members.json").read_text())
    assert [m["member"] for m in labels] == list(range(8)) and labels[7]["seed"] == 1
    evals = read_metrics(swept, "eval")
    assert sorted({(r["step"], r["member"]) for r in evals}) == [(s, m) for s in (6, 12) for m in range(8)]
    table = (swept / "sweep.md").read_text().splitlines()
    assert table[0] == "| member | optim.learning_rate | optim.weight_decay | seed | validation loss | train loss |"
    final = {r["member"]: r["loss"] for r in evals if r["step"] == 12}
    assert len(table) == 2 + 8 and table[2 + 3].split("|")[5].strip() == f"{final[3]:.4f}"
    assert (swept / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {f"eval/loss/member_{m}" for m in range(8)} <= _tensorboard_tags(swept / "tb")
    config = json.loads((swept / "config.json").read_text())
    assert config["sweep"]["axes"][2] == ["seed", [0, 1]]


@pytest.mark.slow
def test_interrupted_sweep_resumes_bit_identically(swept, corpus, tmp_path):
    """8 members, interrupted after step 7 and resumed to 12 == the uninterrupted sweep, bit for bit."""
    task, config, members = _sweep(_config(), chunk=4)  # the fixture's command, interrupted
    original = task.train_batch

    def interrupt_at_7(step):
        if step == 7:
            raise KeyboardInterrupt
        return original(step)

    task.train_batch = interrupt_at_7
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(task, config, tmp_path, progress=False, members=members)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["6", "7"]
    task.train_batch = original
    _, summary = train_and_evaluate(task, config, tmp_path, progress=False, members=members)
    assert summary["resumed_from"] == 7
    resumed, full = _final_state(tmp_path, members), _final_state(swept, members)
    chex.assert_trees_all_equal(full.params, resumed.params)
    chex.assert_trees_all_equal(full.opt_state, resumed.opt_state)
    assert [r["loss"] for r in read_metrics(tmp_path, "eval")] == [r["loss"] for r in read_metrics(swept, "eval")]


@pytest.mark.parametrize("spec, says", [
    ("model.emb_dim=32,64", "--sweep key 'model.emb_dim' cannot vary inside one compiled step: the model is built "
                            "from its values (a width or depth changes the parameters' shapes)"),
    ("optim.grad_clip_norm=0.5,1.0", "--sweep optim.grad_clip_norm: the optimiser decides on its value in Python"),
    ("optim.learning_rate=1e-3,fast", "--sweep optim.learning_rate: 'fast' is not a number."),
    ("optim.nothing=1,2", "--sweep key 'optim.nothing' is not a config key of this task."),
    ("optim.learning_rate", "--sweep 'optim.learning_rate' must read KEY=V1,V2,..."),
    ("seed=0,1.5", "--sweep seed: '1.5' is not an integer."),
    ("optim.learning_rate=1e-3,1e-3", "--sweep optim.learning_rate lists a value twice"),
    ("optim.b2=0.9,1.5", "sweep member 1 (optim.b2=1.5): config key"),
])
def test_bad_sweeps_are_refused_in_one_sentence(corpus, tmp_path, capsys, spec, says):
    workdir = tmp_path / "never"
    assert main(["sweep", "--config", SMOKE, "--workdir", str(workdir), "--sweep", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and len(err.strip().splitlines()) == 1, err
    assert not workdir.exists()


def test_bad_chunk_and_settings_are_refused(corpus, tmp_path, capsys):
    workdir = tmp_path / "never"
    base = ["sweep", "--config", SMOKE, "--workdir", str(workdir), "--sweep", "seed=0,1,2"]
    assert main(base + ["--chunk", "2"]) == 2
    assert "--chunk must divide the 3 members (1..3), got 2." in capsys.readouterr().err
    assert main(base + ["--config.train.on_nonfinite=skip"]) == 2
    assert "config key 'train.on_nonfinite' must be 'stop' in a sweep" in capsys.readouterr().err
    assert main(base + ["--sweep", "seed=3,4"]) == 2
    assert "--sweep names 'seed' twice" in capsys.readouterr().err
    assert not workdir.exists()
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text(json.dumps({"seed": 0}))
    assert main(["sweep", "--config", SMOKE, "--workdir", str(single), "--sweep", "seed=0,1"]) == 2
    assert f"workdir '{single}' holds a run of `p2t train`, not a sweep" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="sweep"):  # a resume must name the same sweep
        config = _config()
        axes = [parse_axis("seed=0,1", config)]
        task, config, members = build_sweep(language_model.build, language_model.validate, config, axes)
        (tmp_path / "other" / "checkpoints").mkdir(parents=True)
        (tmp_path / "other" / "config.json").write_text(json.dumps(dict(json.loads(config.to_json()),
                                                                        sweep={"axes": [["seed", [0, 2]]]})))
        train_and_evaluate(task, config, tmp_path / "other", progress=False, members=members)


@pytest.mark.slow
def test_sweep_stopped_by_a_real_sigint_resumes_bit_identically(tmp_path):
    """A real `p2t sweep` process, SIGINT once it has logged, run again: the same final stacked
    state and the same eval lines as a sweep that was never stopped."""
    import os
    import signal
    import subprocess
    import sys
    import time

    worker = REPO / "tests" / "fault_worker.py"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", TQDM_DISABLE="1")
    argv = ["sweep", "--config", "shakespeare:smoke", "--no-progress", "--sweep", "optim.learning_rate=1e-2,3e-3",
            "--sweep", "seed=0,1", "--config.train.num_steps=200", "--config.train.log_every=5",
            "--config.train.eval_every=100", "--config.train.checkpoint_every=50"]

    def run(workdir):
        return subprocess.run([sys.executable, str(worker), *argv, "--workdir", str(workdir)], env=env,
                              capture_output=True, text=True, timeout=600)

    assert run(tmp_path / "full").returncode == 0
    proc = subprocess.Popen([sys.executable, str(worker), *argv, "--workdir", str(tmp_path / "split")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "split" / "metrics.jsonl"
    deadline = time.time() + 600
    while not (metrics.exists() and metrics.read_text().strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130 and "interrupted at step" in err, err
    stopped_at = int(err.split("interrupted at step ")[1].split(":")[0])
    assert 0 < stopped_at < 200
    again = run(tmp_path / "split")
    assert again.returncode == 0, again.stderr
    _, _, members = _sweep_of(argv)
    chex.assert_trees_all_equal(_final_state(tmp_path / "full", members).checkpoint_items(),
                                _final_state(tmp_path / "split", members).checkpoint_items())
    evals = [[(r["step"], r["member"], r["loss"]) for r in read_metrics(tmp_path / d, "eval")] for d in ("full", "split")]
    assert evals[0] == evals[1] and len(evals[0]) == 2 * 4


def _sweep_of(argv):
    """The (task, config, members) a `p2t sweep` argv builds (on the test passage)."""
    from p2t_jax.configuration import apply_overrides, split_overrides
    from p2t_jax.data import shakespeare

    rest, overrides = split_overrides(argv)
    config = apply_overrides(load_config(rest[rest.index("--config") + 1]), overrides)
    axes = [parse_axis(rest[i + 1], config) for i, a in enumerate(rest) if a == "--sweep"]
    texts = {"train": PASSAGE * 40, "validation": PASSAGE * 4}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shakespeare, "load_texts", lambda source="auto", data_dir=None: (dict(texts), "test:passage"))
        return build_sweep(language_model.build, language_model.validate, config, axes)


# ---- traced model/loss keys, the chunk chosen by memory, sweep folders elsewhere, the horizon ----

TINY = ["--config.train.num_steps=4", "--config.train.log_every=1", "--config.train.eval_every=4",
        "--config.train.checkpoint_every=4", "--config.train.eval_batches=1", "--config.model.use_bias=False"]


def _tiny(*extra):
    from p2t_jax.configuration import apply_overrides

    return apply_overrides(load_config(SMOKE), [o.removeprefix("--config.") for o in TINY + list(extra)])


def test_traced_dropout_is_flax_dropout_and_zero_is_the_identity():
    from flax import linen as nn

    from p2t_jax.models.dropout import Dropout

    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 7))
    rngs = {"dropout": jax.random.PRNGKey(2)}

    def traced(rate):
        return jax.jit(lambda r: Dropout(r).apply({}, x, deterministic=False, rngs=rngs))(rate)

    for rate in (0.25, 0.1):
        flax_out = jax.jit(lambda x, rate=rate: nn.Dropout(rate).apply({}, x, deterministic=False, rngs=rngs))(x)
        chex.assert_trees_all_equal(traced(np.float32(rate)), flax_out)
        chex.assert_trees_all_equal(Dropout(rate).apply({}, x, deterministic=False, rngs=rngs), flax_out)
    chex.assert_trees_all_equal(traced(np.float32(0.0)), x)  # every unit kept, divided by exactly 1
    assert 0.15 < float(np.mean(traced(np.float32(0.25)) == 0)) < 0.35


def test_member_with_swept_dropout_equals_its_run_trained_alone(corpus, tmp_path):
    """model.dropout_rate reaches the compiled step as a traced per-member value: member 1
    (rate 0.1) follows the lone run with that rate; member 0 (rate 0) trains without dropout."""
    config = _tiny()
    axes = [parse_axis("model.dropout_rate=0.0,0.1", config)]
    task, run_config, members = build_sweep(language_model.build, language_model.validate, config, axes)
    assert members.chunks == (2, 1)
    _, summary = train_and_evaluate(task, run_config, tmp_path / "sweep", progress=False, members=members)
    stacked = _final_state(tmp_path / "sweep", members)
    alone_config = member_config(_tiny(), members.labels[1])
    assert alone_config.model.dropout_rate == 0.1
    alone, alone_summary = train_and_evaluate(language_model.make_task(alone_config), alone_config,
                                              tmp_path / "alone", progress=False)
    member = jax.tree.map(lambda x: x[1], stacked)
    chex.assert_trees_all_close(member.params, alone.params, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(summary["train"][1]["loss"], alone_summary["train"]["loss"], rtol=1e-5)
    no_dropout = task.hyper_loss_fn({"model.dropout_rate": 0.0})  # rate 0: training loss == evaluation loss
    params0, batch0 = jax.tree.map(lambda x: x[0], stacked.params), jax.tree.map(lambda x: x[0], task.train_batch(0))
    trained, evaluated = (no_dropout(params0, {}, batch0, jax.random.PRNGKey(0), train)[0] for train in (True, False))
    assert float(trained) == float(evaluated)


def test_shape_keys_stay_refused_naming_what_the_task_sweeps(corpus, tmp_path, capsys):
    workdir = tmp_path / "never"
    assert main(["sweep", "--config", SMOKE, "--workdir", str(workdir), "--sweep", "model.num_layers=1,2"]) == 2
    err = capsys.readouterr().err
    assert ("--sweep key 'model.num_layers' cannot vary inside one compiled step: the model is built from its "
            "values (a width or depth changes the parameters' shapes); this task sweeps model.dropout_rate among "
            "them.") in err and len(err.strip().splitlines()) == 1, err
    assert main(["sweep", "--config", SMOKE, "--workdir", str(workdir), "--sweep", "train.batch_size=8,16"]) == 2
    assert "--sweep key 'train.batch_size' cannot vary inside one compiled step" in capsys.readouterr().err
    assert not workdir.exists()


def test_chunk_is_the_most_members_whose_step_fits_the_free_memory(corpus, tmp_path, monkeypatch, capsys):
    """Without --chunk the loop compiles the step for 2 members, then 1, and keeps the first that
    fits the (patched) free memory; when none fits, the run is refused and nothing is written."""
    from p2t_jax import resources

    config = _tiny("--config.train.num_steps=1", "--config.train.eval_every=1", "--config.train.checkpoint_every=1")
    axes = [parse_axis("seed=0,1", config)]
    task, run_config, members = build_sweep(language_model.build, language_model.validate, config, axes)
    _, summary = train_and_evaluate(task, run_config, tmp_path / "roomy", progress=False, members=members)
    assert summary["chunk"] == 2 and list(summary["chunk_bytes"]) == [2]
    whole = summary["chunk_bytes"][2]
    monkeypatch.setattr(resources, "available_memory", lambda device=None: whole - 1)
    _, summary = train_and_evaluate(task, run_config, tmp_path / "tight", progress=False, members=members)
    assert summary["chunk"] == 1 and summary["chunk_bytes"][2] == whole
    assert summary["chunk_bytes"][1] <= whole - 1  # one member at a time needs less scratch memory
    assert "sweep: 2 members, 1 at a time in one compiled step (the most that fit" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(tmp_path / "tight", "eval")] == [1, 1]
    monkeypatch.setattr(resources, "available_memory", lambda device=None: summary["chunk_bytes"][1] - 1)
    with pytest.raises(ConfigError, match=r"one training step of the sweep \(1 of its 2 members at a time\) needs"):
        train_and_evaluate(task, run_config, tmp_path / "none", progress=False, members=members)
    assert not (tmp_path / "none" / "checkpoints").exists()


def test_eval_and_sample_refuse_a_sweep_folder(swept, capsys):
    for argv in (["eval", "--workdir", str(swept)], ["sample", "--workdir", str(swept), "--prompt", "ROMEO:"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: workdir '{swept}' holds a sweep of `p2t sweep`") and \
            f"`p2t {argv[0]}` reads a run of `p2t train`" in err and len(err.strip().splitlines()) == 1, err


def test_resumed_sweep_keeps_the_schedule_horizon_of_its_first_start(corpus, tmp_path):
    """4 steps, then resumed with train.num_steps=6: each member's learning rate at steps 5 and 6
    continues the 4-step schedule of the first start, as a lone run's does."""
    from p2t_jax.optim.chains import make_schedule

    def run(*extra):
        config = _tiny("--config.optim.warmup_steps=2", *extra)
        axes = [parse_axis("optim.learning_rate=1e-2,3e-3", config)]
        task, run_config, members = build_sweep(language_model.build, language_model.validate, config, axes)
        return train_and_evaluate(task, run_config, tmp_path, progress=False, members=members)[1], run_config

    run()
    summary, config = run("--config.train.num_steps=6")
    assert summary["resumed_from"] == 4 and summary["schedule_steps"] == 4
    for member, lr in enumerate((1e-2, 3e-3)):
        optim = member_config(config, {"optim.learning_rate": lr}).optim
        logged = {r["step"]: r["learning_rate"] for r in read_metrics(tmp_path, "train") if r["member"] == member}
        np.testing.assert_allclose([logged[5], logged[6]], [make_schedule(optim, 4)(s) for s in (4, 5)], rtol=1e-6)
        assert not np.isclose(logged[5], make_schedule(optim, 6)(4), rtol=1e-3)


def test_image_member_with_swept_loss_keys_equals_its_run_trained_alone(tmp_path):
    """loss.label_smoothing and loss.l2 reach the image task's loss as traced per-member values."""
    from p2t_jax.configuration import apply_overrides
    from p2t_jax.tasks import image_classification

    def config():
        return apply_overrides(load_config(f"{REPO}/configs/mnist_regularisation.py:smoke"),
                               ["train.num_epochs=0", "train.num_steps=4", "train.log_every=2", "train.eval_every=4",
                                "train.checkpoint_every=4", "data.train_size=64", "model.dropout_rate=0.2"])

    base = config()
    axes = [parse_axis("loss.label_smoothing=0.0,0.2", base), parse_axis("loss.l2=0.0,0.01", base)]
    task, run_config, members = build_sweep(image_classification.build, image_classification.validate, base, axes,
                                            chunk=4)
    _, summary = train_and_evaluate(task, run_config, tmp_path / "sweep", progress=False, members=members)
    stacked = _final_state(tmp_path / "sweep", members)
    assert members.labels[3] == {"loss.label_smoothing": 0.2, "loss.l2": 0.01}
    alone_task, alone_config = image_classification.build(member_config(config(), members.labels[3]))
    alone, alone_summary = train_and_evaluate(alone_task, alone_config, tmp_path / "alone", progress=False)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[3], stacked.params), alone.params, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(summary["train"][3]["loss"], alone_summary["train"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(summary["eval"][3]["loss"], alone_summary["eval"]["loss"], rtol=1e-5)
    assert summary["train"][0]["l2_penalty"] > 0  # measured for every member (l2 = 0 adds 0 times it)
