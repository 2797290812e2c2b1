"""The training loop: loss falls, exact resume after an interruption, checkpoints, metrics."""

import json

import chex
import jax
import numpy as np
import optax
import pytest

from p2t_jax.configuration import ConfigError, apply_overrides
from p2t_jax.optim.chains import make_optimizer
from p2t_jax.tasks import language_model
from p2t_jax.training.checkpoint import CheckpointError
from p2t_jax.training.loop import restore_state, train_and_evaluate
from p2t_jax.training.metrics import read_metrics


def _run(config, workdir, **kw):
    """``(state, summary)`` of the loop on the language-model task."""
    return train_and_evaluate(language_model.make_task(config), config, workdir, progress=False, **kw)


def test_smoke_run_learns_and_writes_its_records(tiny_corpus, smoke_config, tmp_path):
    _, summary = _run(smoke_config, tmp_path)
    train = read_metrics(tmp_path, "train")
    assert train[-1]["loss"] < 0.75 * train[0]["loss"]
    assert summary["eval"]["loss"] < np.log(65) - 1.0
    for key in ("grad_norm", "param_norm", "update_norm", "learning_rate", "tokens_per_s"):
        assert np.isfinite(train[-1][key]), key
    assert json.loads((tmp_path / "config.json").read_text())["variant"] == "smoke"
    assert (tmp_path / "tokenizer.json").exists() and list((tmp_path / "tb").iterdir())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["20", "40"]
    assert json.loads((tmp_path / "summary.json").read_text())["final_step"] == 40
    _, again = _run(smoke_config, tmp_path)  # a finished run: nothing to train, its summary stands
    assert again["resumed_from"] == 40 and again["eval"] == summary["eval"]
    assert json.loads((tmp_path / "summary.json").read_text())["eval"] == summary["eval"]


def _interrupt_at_20(config, workdir):
    """Trains ``config`` in ``workdir`` until a Ctrl-C at step 20 (the loop saves a checkpoint there)."""
    task = language_model.make_task(config)
    original = task.train_batch

    def interrupt_at_20(step):
        if step == 20:
            raise KeyboardInterrupt
        return original(step)

    task.train_batch = interrupt_at_20
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(task, config, workdir, progress=False)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["20"]


def test_resume_after_interruption_equals_an_uninterrupted_run(tiny_corpus, smoke_config, tmp_path):
    """Train 2N steps, versus N steps + interruption + restart to 2N: identical state."""
    apply_overrides(smoke_config, ["model.dropout_rate=0.1", "train.checkpoint_every=1000", "train.eval_every=1000"])
    full, _ = _run(smoke_config, tmp_path / "full")

    _interrupt_at_20(smoke_config, tmp_path / "split")
    resumed, summary = _run(smoke_config, tmp_path / "split")
    assert summary["resumed_from"] == 20
    chex.assert_trees_all_equal(full.params, resumed.params)
    chex.assert_trees_all_equal(full.opt_state, resumed.opt_state)
    assert int(full.step) == int(resumed.step) == 40


def test_resuming_on_a_gpu_without_deterministic_ops_says_what_that_means(tiny_corpus, smoke_config, tmp_path,
                                                                           monkeypatch, capsys):
    """On a GPU (measured on an H200) two uninterrupted runs differ in the last bits unless XLA's deterministic
    operations are on; a resumed run there says so once, and says nothing when they are on or on a CPU."""
    apply_overrides(smoke_config, ["train.checkpoint_every=1000", "train.eval_every=1000"])
    _interrupt_at_20(smoke_config, tmp_path / "run")
    capsys.readouterr()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # what the loop asks; the steps still run on the CPU
    monkeypatch.setenv("XLA_FLAGS", "")
    _run(smoke_config, tmp_path / "run")
    said = [line for line in capsys.readouterr().out.splitlines() if "on a GPU" in line]
    assert said == ["resuming from step 20 on a GPU: the state is restored exactly, but XLA's GPU reductions add in no "
                    "fixed order, so the steps from here match an uninterrupted run's only to rounding (--deterministic "
                    "makes them bit-for-bit, for a slower step)."]
    _interrupt_at_20(smoke_config, tmp_path / "deterministic")
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")  # read by the loop, not by this CPU backend
    _, summary = _run(smoke_config, tmp_path / "deterministic")
    assert "on a GPU" not in capsys.readouterr().out and summary["deterministic_gpu"] is True


def test_resume_refuses_a_different_model(tiny_corpus, smoke_config, tmp_path):
    apply_overrides(smoke_config, ["train.num_steps=10"])
    _run(smoke_config, tmp_path)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    apply_overrides(smoke_config, ["model.emb_dim=48"])
    with pytest.raises(ConfigError, match="model.emb_dim was 32, now 48"):
        _run(smoke_config, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    assert json.loads((tmp_path / "config.json").read_text())["model"]["emb_dim"] == 32


def test_restore_errors_are_clear(tiny_corpus, smoke_config, tmp_path):
    model = language_model.make_model(smoke_config)
    init = lambda rng: language_model.init_params(model, rng)  # noqa: E731
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        restore_state(init, smoke_config, tmp_path)
    apply_overrides(smoke_config, ["train.num_steps=10"])
    _run(smoke_config, tmp_path)
    state, meta = restore_state(init, smoke_config, tmp_path)
    assert int(state.step) == 10 and meta["data_source"] == "test:passage"
    for f in (tmp_path / "checkpoints" / "10" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        restore_state(init, smoke_config, tmp_path)


def test_optimizer_is_clip_then_adamw_on_warmup_cosine(smoke_config):
    """The config-built chain equals optax's own chain, update for update."""
    o = smoke_config.optim
    tx, schedule = make_optimizer(o, 40)
    assert float(schedule(0)) == 0.0 and np.isclose(float(schedule(o.warmup_steps)), o.learning_rate)
    assert np.isclose(float(schedule(40)), o.end_learning_rate)
    reference = optax.chain(
        optax.clip_by_global_norm(o.grad_clip_norm),
        optax.adamw(optax.warmup_cosine_decay_schedule(0.0, o.learning_rate, o.warmup_steps, 40, o.end_learning_rate),
                    b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                    mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
    params = {"w": np.ones((3, 2), np.float32), "b": np.ones((2,), np.float32)}
    s1, s2 = tx.init(params), reference.init(params)
    for i in range(5):
        grads = jax.tree.map(lambda x, scale=(i + 1) * 0.7: scale * x, params)
        u1, s1 = tx.update(grads, s1, params)
        u2, s2 = reference.update(grads, s2, params)
        chex.assert_trees_all_close(u1, u2, rtol=1e-6)
    assert not np.allclose(u1["b"], u1["w"][0])  # decay reaches matrices only


def test_evaluation_weighs_each_batch_by_its_rows():
    """A mean of batch means would give (2 + 10) / 2 = 6; per example it is (3 * 2 + 1 * 10) / 4 = 4."""
    from p2t_jax.training.loop import evaluate

    def eval_step(state, batch):
        return {"loss": batch["x"].mean()}

    batches = [{"x": np.full((3,), 2.0)}, {"x": np.full((1,), 10.0)}]
    assert evaluate(eval_step, None, batches) == {"loss": 4.0}
    assert evaluate(eval_step, None, []) == {}
