"""XLA flags set before JAX starts: added once, the user's choice kept; ``--deterministic`` in a real process."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from p2t_jax import xla_flags

HERE = pathlib.Path(__file__).resolve().parent
FLAG = xla_flags.DETERMINISTIC_GPU


@pytest.mark.parametrize("before, after, added", [
    ("", f"{FLAG}=true", True),
    ("--xla_a=1", f"--xla_a=1 {FLAG}=true", True),
    (f"{FLAG}=false", f"{FLAG}=false", False),   # the user's choice stands
    (f"{FLAG}", f"{FLAG}", False),
])
def test_add_appends_once_unless_the_flag_is_named(monkeypatch, before, after, added):
    monkeypatch.setenv("XLA_FLAGS", before)
    monkeypatch.setattr(xla_flags, "backends_started", lambda: False)
    assert xla_flags.add(FLAG, "true") is added
    assert xla_flags.add(FLAG, "true") is False
    assert os.environ["XLA_FLAGS"] == after


def test_a_flag_whose_name_extends_another_is_not_it(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"{FLAG}_extra=true")
    assert not xla_flags.named(FLAG) and not xla_flags.is_deterministic()


@pytest.mark.parametrize("flags, on", [("", False), (f"{FLAG}=true", True), (f"{FLAG}=false", False),
                                       (f"{FLAG}=false {FLAG}=true", True), (f"{FLAG}", True)])
def test_is_deterministic_reads_the_last_setting(monkeypatch, flags, on):
    monkeypatch.setenv("XLA_FLAGS", flags)
    assert xla_flags.is_deterministic() is on


def test_deterministic_after_jax_started_says_it_is_too_late(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(xla_flags, "backends_started", lambda: True)
    with pytest.raises(ValueError, match="must be asked for before JAX starts"):
        xla_flags.deterministic()
    assert os.environ["XLA_FLAGS"] == ""


def _p2t(args, tmp_path, xla):
    env = dict(os.environ, XLA_FLAGS=xla, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(HERE / "fault_worker.py"), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_p2t_train_deterministic_in_a_real_process(tmp_path):
    """The flag reaches XLA before JAX starts (recorded in summary.json); a contradiction is one sentence, exit 2,
    and no run folder."""
    base = ["train", "--config", str(HERE.parent / "configs" / "shakespeare.py") + ":smoke", "--no-progress",
            "--config.train.num_steps=2", "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
            "--config.train.eval_batches=1"]
    quick = os.environ.get("XLA_FLAGS", "")
    done = _p2t([*base, "--workdir", "on", "--deterministic"], tmp_path, quick)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "on" / "summary.json").read_text())["deterministic_gpu"] is True
    plain = _p2t([*base, "--workdir", "off"], tmp_path, quick)
    assert plain.returncode == 0, plain.stderr
    assert json.loads((tmp_path / "off" / "summary.json").read_text())["deterministic_gpu"] is False
    refused = _p2t([*base, "--workdir", "refused", "--deterministic"], tmp_path, f"{quick} {FLAG}=false")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"error: --deterministic: deterministic steps ask for {FLAG}=true, but XLA_FLAGS "
                                      f"turns it off; drop one of the two.")
    assert not (tmp_path / "refused").exists()
