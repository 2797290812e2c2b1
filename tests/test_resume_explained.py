"""Resume that explains itself: config differences named with both values, --allow-change,
the schedule's horizon fixed at the first start, checkpoints that do not fit named by path."""

import json
import re

import numpy as np
import pytest

from p2t_jax.configuration import ConfigError, apply_overrides
from p2t_jax.optim.chains import make_schedule
from p2t_jax.tasks import language_model
from p2t_jax.training.checkpoint import ConfigMismatch
from p2t_jax.training.loop import train_and_evaluate
from p2t_jax.training.metrics import read_metrics


def _run(config, workdir, **kw):
    return train_and_evaluate(language_model.make_task(config), config, workdir, progress=False, **kw)


@pytest.fixture
def short(smoke_config):
    """The smoke config for 4 steps, every step logged, a save at the end only."""
    apply_overrides(smoke_config, ["train.num_steps=4", "train.log_every=1", "train.eval_every=1000",
                                   "train.checkpoint_every=1000", "optim.warmup_steps=1"])
    return smoke_config


def _listing(workdir):
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if "tb" not in p.parts)


def test_resume_names_differences_allows_chosen_ones_and_keeps_the_schedule(tiny_corpus, short, tmp_path):
    _run(short, tmp_path)
    before = _listing(tmp_path)

    # Refusals: each difference named with both values, in one sentence; nothing written.
    apply_overrides(short, ["train.num_steps=8", "optim.learning_rate=0.02", "optim.b2=0.95"])
    with pytest.raises(ConfigError) as e:
        _run(short, tmp_path)
    message = str(e.value)
    assert "optim.b2 was 0.99, now 0.95; optim.learning_rate was 0.01, now 0.02" in message, message
    assert "--allow-change optim.b2 --allow-change optim.learning_rate" in message
    assert "train.num_steps" not in message and len(re.findall(r"\.( |$)", message)) == 1
    with pytest.raises(ConfigError, match=r"differs: optim.learning_rate was 0.01, now 0.02; resume"):
        _run(short, tmp_path, allow_change=["optim.b2"])
    with pytest.raises(ConfigError, match="--allow-change 'optim.lr' is not a config key"):
        _run(short, tmp_path, allow_change=["optim.lr"])

    # A checkpoint that does not fit: the first mismatching path and both shapes (found before compiling).
    apply_overrides(short, ["optim.learning_rate=0.01", "model.mlp_dim=48"])
    with pytest.raises(ConfigMismatch, match=r"'params/block_0/\S+/bias' is saved with shape \(64,\) and built "
                                              r"with shape \(48,\)"):
        _run(short, tmp_path, allow_change=["model.mlp_dim", "optim.b2"])
    apply_overrides(short, ["model.mlp_dim=64", "optim.name=lion"])
    with pytest.raises(ConfigMismatch, match=r"'opt_state/1/0/nu/\S+' is saved but the config builds no such array"):
        _run(short, tmp_path, allow_change=["optim"])
    assert _listing(tmp_path) == before  # no refusal wrote anything, nothing was set aside

    # An allowed change: recorded as an event line; 4 more steps continue the first start's schedule.
    apply_overrides(short, ["optim.name=adamw"])
    _, summary = _run(short, tmp_path, allow_change=["optim.b2"])
    assert summary["resumed_from"] == 4 and summary["final_step"] == 8 and summary["schedule_steps"] == 4
    events = read_metrics(tmp_path, "event")
    assert [(e["step"], e["event"], e["changes"]) for e in events] == [
        (4, "config_change", {"optim.b2": {"saved": 0.99, "now": 0.95}})]
    logged = [r["learning_rate"] for r in read_metrics(tmp_path, "train")]
    np.testing.assert_allclose(logged, [float(make_schedule(short.optim, 4)(s)) for s in range(8)], rtol=1e-6)
    assert abs(float(make_schedule(short.optim, 8)(5)) - logged[5]) > 1e-4  # a re-stretched cosine differs
    assert json.loads((tmp_path / "config.json").read_text())["optim"]["b2"] == 0.95


@pytest.mark.slow
def test_a_longer_schedule_is_asked_for_with_decay_steps(tiny_corpus, short, tmp_path):
    _run(short, tmp_path)
    apply_overrides(short, ["train.num_steps=6", "optim.decay_steps=6"])
    _, summary = _run(short, tmp_path, allow_change=["optim.decay_steps"])
    logged = [r["learning_rate"] for r in read_metrics(tmp_path, "train")]
    np.testing.assert_allclose(logged[4:], [float(make_schedule(short.optim, 6)(s)) for s in (4, 5)], rtol=1e-6)
