"""Faults and bad input: no run loses its work, no bad input gets a traceback.

Signals are real signals sent to real ``p2t train`` processes (tests/fault_worker.py) at
random moments; the fast suite runs a few trials, ``-m slow`` runs many more:

    python -m pytest -m slow tests/test_faults.py

Every trial resumes with the same command and must end bit-for-bit where the
uninterrupted run ends.
"""

import contextlib
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest
from conftest import QUICK_COMPILE, SMOKE_RUN_STEPS

from p2t_jax.cli import main
from p2t_jax.configuration import ConfigError, apply_overrides, load_config
from p2t_jax.tasks import language_model
from p2t_jax.training import checkpoint as ckpt
from p2t_jax.training.loop import restore_state, train_and_evaluate
from p2t_jax.training.metrics import read_metrics
from p2t_jax.training.stopping import SaveFailed
from p2t_jax.training.workdir_lock import LOCK_NAME

WORKER = pathlib.Path(__file__).resolve().parent / "fault_worker.py"
STEPS = 100  # long enough for a signal at any logged step, from 5 to 95, to stop it mid-run
RUN = ["train", "--config", "shakespeare:smoke", "--no-progress", f"--config.train.num_steps={STEPS}",
       "--config.train.log_every=5", "--config.train.checkpoint_every=25", "--config.train.eval_every=100",
       "--config.model.dropout_rate=0.1"]
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=QUICK_COMPILE, TQDM_DISABLE="1")  # one device, compiled as here
TIMEOUT_S = 300


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), *args], env=ENV, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def _final_items(workdir: pathlib.Path) -> dict:
    config = apply_overrides(load_config("shakespeare:smoke"), [a[len("--config."):] for a in RUN if "=" in a])
    model = language_model.make_model(config)
    state, _ = restore_state(lambda rng: language_model.init_params(model, rng), config, workdir)
    return jax.device_get(state.checkpoint_items())


def _no_duplicate_records(workdir: pathlib.Path) -> None:
    keys = [(r["step"], r["split"]) for r in read_metrics(workdir)]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's final checkpoint items."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    done = _run(RUN + ["--workdir", str(workdir)])
    assert done.returncode == 0, done.stderr[-2000:]
    return _final_items(workdir)


def _wait_for_logged_step(metrics: pathlib.Path, step: int, proc: subprocess.Popen) -> None:
    """Returns once ``metrics`` holds a training record at ``step`` or later (or the process has ended)."""
    deadline = time.monotonic() + TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for line in metrics.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("split") == "train" and record.get("step", 0) >= step:
                        return
        time.sleep(0.02)


def _trial(reference, workdir: pathlib.Path, signum: int, rng: random.Random) -> str:
    """Starts the run, sends ``signum`` at a random moment, resumes it, and checks the end state."""
    proc = _start(RUN + ["--workdir", str(workdir)])
    metrics = workdir / "metrics.jsonl"
    if rng.random() < 0.25:  # anywhere from start-up on
        time.sleep(rng.uniform(0.0, 6.0))
    else:  # while training: once a step drawn from the logged ones (every 5th) is logged, and a moment more
        _wait_for_logged_step(metrics, rng.randrange(5, STEPS, 5), proc)
        time.sleep(rng.uniform(0.0, 0.2))
    if proc.poll() is None:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=TIMEOUT_S)
    code = proc.returncode
    # Killed by the signal itself: SIGKILL always; SIGTERM before the loop's handler is installed;
    # SIGINT only before Python has installed its own handler (nothing printed then).
    allowed = {signal.SIGINT: (0, 130) + ((-signal.SIGINT,) if not err else ()),
               signal.SIGTERM: (0, 143, -signal.SIGTERM), signal.SIGHUP: (0, 129, -signal.SIGHUP),
               signal.SIGKILL: (0, -signal.SIGKILL)}[signum]
    assert code in allowed, (code, err[-2000:])
    if code in (129, 130, 143):
        last = (err.strip().splitlines() or [""])[-1]  # nothing printed: stopped while the worker imported
        assert last.startswith(("stopped: interrupted at step", "stopped: interrupted before training started",
                                "interrupted before training started")) or (
            code == 130 and not out and not last), err[-2000:]
        assert "Traceback" not in err, err[-3000:]
    assert not list(workdir.glob("checkpoints/*" + ckpt.TMP_MARKER + "*")) or code == -signal.SIGKILL
    assert not (workdir / LOCK_NAME).exists() or code == -signal.SIGKILL  # a killed run's file: no lock
    resumed = _run(RUN + ["--workdir", str(workdir)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(workdir.glob("checkpoints/*" + ckpt.TMP_MARKER + "*"))
    chex.assert_trees_all_equal(_final_items(workdir), reference)
    _no_duplicate_records(workdir)
    return f"{signal.Signals(signum).name}: exit {code}"


@pytest.mark.parametrize("signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow),
                                    pytest.param(signal.SIGHUP, marks=pytest.mark.e2e),
                                    pytest.param(signal.SIGKILL, marks=pytest.mark.e2e)],
                         ids=["int", "term", "hup", "kill"])  # SIGTERM takes SIGHUP's path; the slow test sends all
def test_a_signal_at_a_random_moment_then_resume_equals_the_uninterrupted_run(reference, tmp_path, signum):
    _trial(reference, tmp_path / "run", signum, random.Random(int(signum) * 7919 + int(time.time())))


@pytest.mark.slow
def test_many_signals_at_random_moments(reference, tmp_path):
    """24 trials: SIGINT, SIGTERM, SIGHUP and SIGKILL, six each, at random moments."""
    rng = random.Random(int(time.time()))
    outcomes = [_trial(reference, tmp_path / f"run{i}", s, rng)
                for i, s in enumerate([signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL] * 6)]
    print("\n".join(outcomes))


def _wait_for(path: pathlib.Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists(), proc.communicate()[1][-2000:] if proc.poll() is not None else path


def test_two_trainings_on_one_workdir_the_second_is_refused(reference, tmp_path):
    """A second `p2t train` while the first runs: refused in one sentence naming the first's process,
    exit 2; `p2t eval` reads the newest complete checkpoint meanwhile; the first ends bit-for-bit
    where a lone run ends, with each step logged once. (The first is held before its second save
    until both have been tried, so both meet it running, on any machine load.)"""
    workdir, release = tmp_path / "run", tmp_path / "release"
    first = subprocess.Popen([sys.executable, str(WORKER), *RUN, "--workdir", str(workdir)],
                             env=dict(ENV, HOLD_SAVE_UNTIL=str(release)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _wait_for(workdir / "checkpoints" / "25", first)
    second = _run(RUN + ["--workdir", str(workdir)])
    err = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(err) == 1, second.stderr[-2000:]
    assert err[0] == (f"error: workdir '{workdir}' is in use by another run (process {first.pid}); wait for it "
                      f"to end or choose another --workdir."), err
    read = _run(["eval", "--workdir", str(workdir)])
    assert read.returncode == 0 and json.loads(read.stdout)["step"] == 25, read.stderr[-2000:]
    assert first.poll() is None  # both met the first run still running
    release.touch()
    out, err = first.communicate(timeout=TIMEOUT_S)
    assert first.returncode == 0, err[-2000:]
    assert not (workdir / LOCK_NAME).exists()
    chex.assert_trees_all_equal(_final_items(workdir), reference)
    _no_duplicate_records(workdir)


def test_a_signal_while_the_stopped_run_exits_aborts_quietly(tmp_path):
    """SIGINT saves; a second SIGINT after the run has returned (here: while the interpreter's exit
    handlers run) ends the process at once, exit 130, without a KeyboardInterrupt traceback."""
    proc = subprocess.Popen([sys.executable, str(WORKER), *RUN[:4], "--config.train.num_steps=100000",
                             "--config.train.checkpoint_every=100000", "--workdir", str(tmp_path)],
                            env=dict(ENV, SLOW_EXIT_S="30"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGINT)
    lines = []
    while not lines or lines[-1] != "exit handlers running\n":
        lines.append(proc.stderr.readline())
        assert lines[-1], "".join(lines)[-2000:]
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = "".join(lines) + err
    assert proc.returncode == 130 and time.monotonic() - started < 20, err[-2000:]
    assert "stopped: interrupted at step" in err and "saved step" in err, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err and "KeyboardInterrupt" not in err, err[-2000:]


def test_a_second_ctrl_c_aborts_at_once(tmp_path):
    """The first SIGINT asks for a save; a second one while it is saving ends the process at once."""
    proc = subprocess.Popen([sys.executable, str(WORKER), *RUN[:4], "--config.train.num_steps=100000",
                             "--config.train.checkpoint_every=100000", "--workdir", str(tmp_path)],
                            env=dict(ENV, SLOW_SAVE_S="5"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT_S
    while not (tmp_path / "metrics.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    first = proc.stderr.readline() or proc.stderr.readline()  # "\n" then "SIGINT: stopping after ..."
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "aborting now" in err, first + err[-2000:]
    assert time.monotonic() - started < 4  # did not wait for the (5 s) save


# ---- divergence ---------------------------------------------------------------------------

DIVERGE = ["--config.optim.learning_rate=3000.0", "--config.optim.end_learning_rate=1.0",
           "--config.optim.warmup_steps=1000", "--config.train.num_steps=60", "--config.train.eval_every=10",
           "--config.train.checkpoint_every=10"]


def _strict_json(line: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=refuse)


def test_divergence_stops_before_saving_anything_from_the_bad_step(tiny_corpus, repo_root, tmp_path, capsys):
    code = main(["train", "--config", "shakespeare:smoke", "--workdir", str(tmp_path), "--no-progress", *DIVERGE])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and err[-1].startswith("stopped: training diverged at step"), err
    bad_step = int(err[-1].split("at step ")[1].split(":")[0])
    assert 10 < bad_step < 60
    saved = ckpt.Checkpoints(tmp_path, write=False)
    assert saved.steps() and max(saved.steps()) < bad_step and saved.best_step() is not None
    saved.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [_strict_json(line) for line in lines]  # valid JSON, no bare NaN
    assert max(r["step"] for r in records) < bad_step
    assert all(np.isfinite(r["loss"]) for r in records)
    assert main(["eval", "--workdir", str(tmp_path), "--best"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["loss"])


def test_skip_policy_leaves_the_state_unchanged_on_a_non_finite_step():
    import jax.numpy as jnp
    import optax

    from p2t_jax.training.state import TrainState
    from p2t_jax.training.steps import make_train_step

    def loss_fn(params, model_state, batch, rng, train):
        return jnp.sum(params["w"] * batch["x"]) ** 2, ({}, model_state)

    state = TrainState.create(variables={"params": {"w": jnp.ones(3)}}, tx=optax.adam(0.1), rng=jax.random.PRNGKey(0))
    step = jax.jit(make_train_step(loss_fn, skip_nonfinite=True))
    good, metrics = step(state, {"x": jnp.ones(3)})
    assert float(metrics["nonfinite"]) == 0.0 and not np.allclose(good.params["w"], 1.0)
    skipped, metrics = step(good, {"x": jnp.array([1.0, jnp.nan, 1.0])})
    assert float(metrics["nonfinite"]) == 1.0 and int(skipped.step) == 2
    chex.assert_trees_all_equal(skipped.params, good.params)
    chex.assert_trees_all_equal(skipped.opt_state, good.opt_state)


def test_a_non_finite_eval_never_becomes_the_best_checkpoint(tmp_path):
    saved = ckpt.Checkpoints(tmp_path, keep=1)
    items = {"w": np.ones(2, np.float32)}
    saved.save(1, items, {}, eval_loss=2.0)
    saved.save(2, items, {}, eval_loss=float("nan"))
    saved.save(3, items, {}, eval_loss=float("inf"))
    saved.close()
    reader = ckpt.Checkpoints(tmp_path, write=False)
    assert reader.steps() == [1, 3] and reader.best_step() == 1
    reader.close()


# ---- checkpoints: integrity and fallback ----------------------------------------------------

def _train(config, workdir):
    return train_and_evaluate(language_model.make_task(config), config, workdir, progress=False)


def _data_files(workdir: pathlib.Path, step: int) -> list[pathlib.Path]:
    files = [p for p in (workdir / "checkpoints" / str(step) / "state").rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def test_checksums_catch_a_changed_value_and_not_the_sharding():
    items = {"w": jax.random.normal(jax.random.PRNGKey(0), (8, 16)), "step": np.int32(3),
             "h": np.ones((5,), np.float16), "flag": np.array([True, False])}
    sums = ckpt.checksums(items)
    ckpt.verify(items, sums)
    flipped = np.asarray(items["w"]).copy()
    flipped.view(np.uint32)[3, 5] ^= 1 << 7
    with pytest.raises(ckpt.CheckpointError, match="checksum mismatch in w"):
        ckpt.verify(dict(items, w=flipped), sums)
    mesh = jax.make_mesh((8,), ("x",))
    sharded = jax.device_put(items["w"], jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x")))
    assert ckpt.checksums(dict(items, w=sharded)) == sums


def test_saved_arrays_that_differ_from_their_checksums_are_refused(tmp_path, monkeypatch):
    """A checkpoint whose arrays decode but are not the arrays that were saved is not used."""
    items = {"w": np.arange(6, dtype=np.float32)}
    saving = ckpt.Checkpoints(tmp_path)
    real = ckpt.checksums
    monkeypatch.setattr(ckpt, "checksums", lambda tree: real({"w": np.asarray(tree["w"]) + 1}))
    saving.save(1, items, {})
    saving.close()
    monkeypatch.setattr(ckpt, "checksums", real)
    reader = ckpt.Checkpoints(tmp_path, write=False)
    with pytest.raises(ckpt.CheckpointError, match="checksum mismatch in w"):
        reader.restore(jax.eval_shape(lambda: items), step=1)
    reader.close()


def test_a_flipped_byte_never_gives_a_silently_different_model(tiny_corpus, smoke_config, tmp_path, capsys):
    """Flip one byte in each of the newest checkpoint's largest files in turn: `p2t eval` either
    falls back to the checkpoint before it, with a warning, or gives exactly the same numbers."""
    apply_overrides(smoke_config, ["train.num_steps=40", "train.checkpoint_every=20", "train.eval_every=20"])
    _train(smoke_config, tmp_path)
    capsys.readouterr()
    assert main(["eval", "--workdir", str(tmp_path)]) == 0
    clean = json.loads(capsys.readouterr().out)
    fell_back = 0
    for path in _data_files(tmp_path, 40)[:5]:
        original = path.read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        assert main(["eval", "--workdir", str(tmp_path)]) == 0
        out, err = capsys.readouterr()
        result = json.loads(out)
        if result["step"] == 20:
            fell_back += 1
            assert "checkpoint at step 40 cannot be read" in err
        else:
            assert result == clean, path  # the byte was in data no array reads
        path.write_bytes(original)
    assert fell_back >= 1


def test_truncated_newest_checkpoint_is_set_aside_and_resume_goes_on(tiny_corpus, smoke_config, tmp_path, capsys):
    apply_overrides(smoke_config, ["train.num_steps=40", "train.checkpoint_every=20", "train.eval_every=20"])
    _train(smoke_config, tmp_path)
    for path in _data_files(tmp_path, 40):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    apply_overrides(smoke_config, ["train.num_steps=60"])
    state, summary = _train(smoke_config, tmp_path)
    assert summary["resumed_from"] == 20 and int(state.step) == 60
    assert [p.name.split("-")[1] for p in (tmp_path / "unreadable").iterdir()] == ["40"]  # moved aside, kept
    assert "checkpoint at step 40 cannot be read" in capsys.readouterr().err

    reader = ckpt.Checkpoints(tmp_path, write=False)
    for step in reader.steps():
        for path in _data_files(tmp_path, step):
            path.write_bytes(b"\x00garbage")
    reader.close()
    code = main(["eval", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: none of the") and "can be read" in err[-1]


# ---- a failed start, bad input ------------------------------------------------------------

def test_a_failed_start_leaves_the_workdir_as_it_was(tiny_corpus, tmp_path, capsys):
    workdir = tmp_path / "run"
    base = ["train", "--config", "shakespeare:smoke", "--workdir", str(workdir), "--no-progress",
            "--config.train.num_steps=5"]
    assert main(base + ["--config.seed=-1"]) == 2
    assert "config key 'seed'" in capsys.readouterr().err and not workdir.exists()
    assert main(base) == 0


def _one_sentence(capsys, argv, code=2):
    capsys.readouterr()
    got = main(argv)
    err = capsys.readouterr().err.strip()
    assert got == code and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, got, err)
    return err


def test_bad_training_input_gets_one_sentence_and_touches_nothing(tiny_corpus, tmp_path, capsys):
    workdir = tmp_path / "new"
    base = ["train", "--config", "shakespeare:smoke", "--workdir", str(workdir), "--no-progress"]
    cases = [
        (["--config.optim.learning_rate=inf"], "must be a finite number"),
        (["--config.optim.learning_rate=nan"], "'optim.learning_rate'"),
        (["--config.seed=-1"], "config key 'seed'"),
        (["--config.train.batch_size=100000000"], "lower train.batch_size"),
        (["--config.optim.warmup_steps=10000000000"], "must fit in 32 bits"),
        (["--config.model.max_len=100000"], "longer than the"),
        (["--config.train.on_nonfinite=ignore"], "train.on_nonfinite"),
        (["--config.task=nonsense"], "the known tasks are"),
    ]
    for extra, message in cases:
        assert message in _one_sentence(capsys, base + extra), extra
        assert not workdir.exists(), extra
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in _one_sentence(capsys, base[:3] + ["--workdir", str(tmp_path / "file")])
    assert (tmp_path / "file").read_text() == "x"


@pytest.fixture
def trained(tiny_corpus, smoke_run):
    """The shared smoke run (conftest.smoke_run: `p2t train` of the smoke config); read only, copied to change."""
    return smoke_run


def _copy(trained: pathlib.Path, tmp_path: pathlib.Path, name: str) -> pathlib.Path:
    import shutil

    return pathlib.Path(shutil.copytree(trained, tmp_path / name))


def test_bad_input_to_a_trained_run_gets_one_sentence(trained, tmp_path, capsys):
    w = str(trained)
    assert "cannot change" in _one_sentence(capsys, ["eval", "--workdir", w, "--config.model.emb_dim=64"])
    assert "lower --num-samples" in _one_sentence(capsys, ["sample", "--workdir", w, "--num-samples", "100000000"])
    assert "--max-new-tokens must be below" in _one_sentence(
        capsys, ["sample", "--workdir", w, "--max-new-tokens", "1000000000000"])

    garbled = _copy(trained, tmp_path, "garbled_config")
    (garbled / "config.json").write_text("{garbled")
    assert "not valid JSON" in _one_sentence(capsys, ["eval", "--workdir", str(garbled)])
    assert "cannot be read" in _one_sentence(capsys, ["train", "--config", "shakespeare:smoke", "--workdir",
                                                      str(garbled)])
    for name, text in (("garbled_tokenizer", "{garbled"), ("missing_tokenizer", None)):
        run = _copy(trained, tmp_path, name)
        if text is None:
            (run / "tokenizer.json").unlink()
        else:
            (run / "tokenizer.json").write_text(text)
        assert "tokenizer.json" in _one_sentence(capsys, ["sample", "--workdir", str(run), "--max-new-tokens", "5"])


def test_a_config_json_edited_since_the_run_is_a_config_error_not_an_unreadable_checkpoint(trained, tmp_path, capsys):
    """A width edited in config.json (and given to the command alike): the checkpoint is readable but
    does not fit, so the refusal names the config and the first differing array, in one line (also
    from a real process: no Orbax noise at exit), and nothing is moved aside or written."""
    run = _copy(trained, tmp_path, "edited_width")
    saved = json.loads((run / "config.json").read_text())
    saved["model"]["emb_dim"] *= 2
    (run / "config.json").write_text(json.dumps(saved))
    before = _listing(run)
    width = f"--config.model.emb_dim={saved['model']['emb_dim']}"
    err = _one_sentence(capsys, ["train", "--config", "shakespeare:smoke", "--workdir", str(run), "--no-progress",
                                 "--config.train.num_steps=20", width])
    newest = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert err.startswith(f"error: the checkpoint at step {newest} in") and "holds another model or optimiser than the " \
        "config builds ('params/" in err and "the config or the run's config.json was changed" in err, err
    assert _listing(run) == before
    read = _run(["eval", "--workdir", str(run)])
    assert read.returncode == 2 and read.stderr.strip().splitlines() == [err], read.stderr[-3000:]
    assert _listing(run) == before


def test_garbled_metrics_lines_are_skipped_and_dropped_on_resume(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path, "garbled_metrics")
    with open(run / "metrics.jsonl", "ab") as f:  # a line cut short, bytes that are not UTF-8, a wrong type
        f.write(b'{"step": 999, "split": "train", "loss": 1.0}\n{garbled\n\xff\xfe{"step": 1}\n{"step": "x", "split": 1}\n')
    assert len(read_metrics(run)) == len(read_metrics(trained)) + 1  # the garbled lines skipped, with a warning
    assert f"warning: skipped 3 line(s) of {run / 'metrics.jsonl'} that are not metric records." in capsys.readouterr().err
    assert main(["train", "--config", "shakespeare:smoke", "--workdir", str(run), "--no-progress",
                 f"--config.train.num_steps={SMOKE_RUN_STEPS + 10}"]) == 0
    steps = [r["step"] for r in read_metrics(run, "train")]
    assert max(steps) == SMOKE_RUN_STEPS + 10 and 999 not in steps and steps == sorted(steps) and len(steps) == len(set(steps))


HOLDER = ("import sys, time\n"
          "from p2t_jax.training.workdir_lock import hold\n"
          "with hold(sys.argv[1]):\n"
          "    print('held', flush=True)\n"
          "    time.sleep(600)\n")


@contextlib.contextmanager
def _held_by_another_process(workdir: pathlib.Path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _listing(folder: pathlib.Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_the_workdir_lock_is_exclusive_nests_and_dies_with_its_process(tmp_path):
    from p2t_jax.training.workdir_lock import WorkdirBusy, hold

    workdir = tmp_path / "new" / "run"
    with hold(workdir) as created:  # a folder that did not exist is made to hold the lock file
        assert created and (workdir / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with hold(workdir) as again:  # the same process again: nested, not refused
            assert not again
        assert (workdir / LOCK_NAME).exists()
    assert not (tmp_path / "new").exists()  # nothing was written: the folders it made are gone again
    (tmp_path / "run").mkdir()
    with _held_by_another_process(tmp_path / "run") as holder:
        with pytest.raises(WorkdirBusy, match=f"in use by another run \\(process {holder.pid}\\)"):
            with hold(tmp_path / "run"):
                pass
        holder.send_signal(signal.SIGKILL)  # kill -9: the file stays, the lock does not
        holder.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()
    with hold(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert list((tmp_path / "run").iterdir()) == []


def test_a_training_on_a_held_workdir_is_refused_and_touches_nothing(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path, "held")  # the holder leaves its lock file behind
    before = _listing(run)
    with _held_by_another_process(run) as holder:
        err = _one_sentence(capsys, ["train", "--config", "shakespeare:smoke", "--workdir", str(run),
                                     "--no-progress", "--config.train.num_steps=20"])
        assert f"is in use by another run (process {holder.pid})" in err, err
        assert _listing(run) == dict(before, **{LOCK_NAME: f"{holder.pid}\n".encode()})
    new = tmp_path / "new"
    with _held_by_another_process(new):
        assert "is in use by another run" in _one_sentence(capsys, ["train", "--config", "shakespeare:smoke",
                                                                    "--workdir", str(new), "--no-progress"])
        assert [p.name for p in new.iterdir()] == [LOCK_NAME]


def test_paths_of_the_wrong_kind_are_refused_before_anything_is_rewritten(trained, tmp_path, capsys):
    import shutil

    cases = {"checkpoints": "is not a folder", "tb": "is not a folder", "metrics.jsonl": "is not a file"}
    for name, message in cases.items():
        run = _copy(trained, tmp_path, name.replace(".", "_"))
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.write_text("x") if message == "is not a folder" else path.mkdir()
        before = _listing(run)
        err = _one_sentence(capsys, ["train", "--config", "shakespeare:smoke", "--workdir", str(run),
                                     "--no-progress", "--config.train.num_steps=20"])
        assert f"'{path}' {message}" in err, err
        assert _listing(run) == before, name
    run = _copy(trained, tmp_path, "no_checkpoints")  # a run that cannot resume is not started over
    shutil.rmtree(run / "checkpoints")
    before = _listing(run)
    err = _one_sentence(capsys, ["train", "--config", "shakespeare:smoke", "--workdir", str(run), "--no-progress",
                                 "--config.train.num_steps=20"])
    assert "holds a run (config.json) but no checkpoints folder" in err and _listing(run) == before, err


# ---- the disk -----------------------------------------------------------------------------

@contextlib.contextmanager
def _tmpfs(path: pathlib.Path, size: str, readonly: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not permitted'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_disk_full_stops_at_once_and_keeps_the_last_good_checkpoint(tiny_corpus, smoke_config, tmp_path, capfd):
    """The disk fills up at step 25; the next metrics line, TensorBoard event or save fails: the run
    stops with one sentence naming the last good checkpoint, which is intact, with no temporary folder."""
    apply_overrides(smoke_config, ["train.num_steps=60", "train.checkpoint_every=10", "train.eval_every=1000"])
    with _tmpfs(tmp_path / "disk", "32m") as disk:
        workdir = disk / "run"
        task = language_model.make_task(smoke_config)
        read = task.train_batch

        def fill_the_disk_at_step_25(step, **kw):
            if step == 25:  # to the last byte: the metrics lines, events and checkpoints all fail from here
                with open(disk / "filler", "wb", buffering=0) as f:
                    for chunk in (1 << 16, 1):
                        with contextlib.suppress(OSError):
                            while True:
                                f.write(b"\0" * chunk)
            return read(step, **kw)

        task.train_batch = fill_the_disk_at_step_25
        with pytest.raises(SaveFailed) as stop:
            train_and_evaluate(task, smoke_config, workdir, progress=False)
        message = str(stop.value)
        assert len(message.splitlines()) == 1 and "No space left on device" in message, message
        good = int(message.split("last good checkpoint is step ")[1].rstrip("."))
        assert 0 < good < 60
        assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())[-1] == good  # no temporary folder
        assert "Traceback" not in capfd.readouterr().err  # one sentence, not Orbax's logs
        (disk / "filler").unlink()
        state, summary = _train(smoke_config, workdir)
        assert summary["resumed_from"] == good and int(state.step) == 60


FULL_DISK_WRITER = ("import sys\n"
                    "from p2t_jax.training.metrics import MetricsWriter\n"
                    "from p2t_jax.training.stopping import LogFailed\n"
                    "writer = MetricsWriter(sys.argv[1])\n"
                    "writer.write(1, 'train', {'loss': 1.0})\n"
                    "with open(sys.argv[1] + '/filler', 'wb', buffering=0) as f:\n"
                    "    for chunk in (1 << 16, 1):\n"
                    "        try:\n"
                    "            while True:\n"
                    "                f.write(bytes(chunk))\n"
                    "        except OSError:\n"
                    "            pass\n"
                    "failed = []\n"
                    "for write in (lambda: writer.write(2, 'train', {'loss': 0.5}), writer.close):\n"
                    "    try:\n"
                    "        write()\n"
                    "    except LogFailed as e:\n"
                    "        failed.append(str(e))\n"
                    "print(failed)\n")


def test_metrics_on_a_full_disk_fail_in_one_sentence_and_leave_no_traceback_at_exit(tmp_path):
    """The metrics line or TensorBoard's events (buffered, written at close) cannot be written: one
    LogFailed naming the file; tensorboardX's thread and exit hook print nothing after it."""
    with _tmpfs(tmp_path / "disk", "1m") as disk:
        done = subprocess.run([sys.executable, "-c", FULL_DISK_WRITER, str(disk)], capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr[-3000:]
    failed = eval(done.stdout)
    assert len(failed) == 1 and "No space left on device" in failed[0], failed
    assert "metrics.jsonl" in failed[0] or "TensorBoard events" in failed[0], failed


def test_a_read_only_workdir_is_refused_in_one_sentence(trained, tmp_path, capsys):
    import shutil

    with _tmpfs(tmp_path / "ro", "16m") as disk:
        shutil.copytree(trained, disk / "run")
        before = sorted(str(p.relative_to(disk)) for p in disk.rglob("*"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for workdir in (disk / "run", disk / "new"):
            err = _one_sentence(capsys, ["train", "--config", "shakespeare:smoke", "--workdir", str(workdir),
                                         "--no-progress", "--config.train.num_steps=20"])
            assert "cannot be written" in err, err
        assert sorted(str(p.relative_to(disk)) for p in disk.rglob("*")) == before


# ---- the embedded data cache --------------------------------------------------------------

def test_a_cache_dir_that_is_a_file_gets_one_sentence(repo_root, tmp_path, monkeypatch, capsys):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("P2T_CACHE_DIR", str(tmp_path / "cache"))
    err = _one_sentence(capsys, ["train", "--config", "shakespeare:smoke", "--workdir", str(tmp_path / "w"),
                                 "--config.data.source=embedded"])
    assert "is not a folder" in err and not (tmp_path / "w").exists()


def test_an_edited_cached_corpus_is_rebuilt_from_the_archive(tmp_path, monkeypatch):
    """The cached splits are checked against the expected digests, not the manifest's: an
    edited corpus with a matching edited manifest is rebuilt; a garbled manifest too."""
    from p2t_jax.data import cache, shakespeare

    monkeypatch.setenv("P2T_CACHE_DIR", str(tmp_path))
    folder = tmp_path / shakespeare.CORPUS_VERSION
    folder.mkdir()
    (folder / "train.txt").write_text("ROMEO:\nedited\n\n")
    (folder / "validation.txt").write_text("ROMEO:\nedited\n\n")
    digest = cache.sha256_of(folder / "train.txt")
    (folder / "manifest.json").write_text(json.dumps({"sha256": {"train": digest, "validation": digest}}))
    built = []
    monkeypatch.setattr(cache, "cached_archive", lambda *a, **k: built.append(a) or tmp_path / "archive.tar.gz")
    monkeypatch.setattr(shakespeare, "build_corpus", lambda path: {"train": "x", "validation": "y"})
    with pytest.raises(cache.DataUnavailableError, match="has SHA-256"):
        shakespeare.embedded_corpus()  # rebuilt (here from a stand-in that does not match the digests)
    assert built
    (folder / "manifest.json").write_text("{garbled")
    assert cache.read_manifest(folder) is None


def test_a_damaged_archive_is_fetched_again(tmp_path, monkeypatch):
    from p2t_jax.data import cache

    monkeypatch.setenv("P2T_CACHE_DIR", str(tmp_path))
    good = b"the archive"
    digest = __import__("hashlib").sha256(good).hexdigest()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "a.tar.gz").write_bytes(good[:4])  # truncated

    def fetch(requirement, source):
        (downloads / "a.tar.gz").write_bytes(good)
        return downloads / "a.tar.gz"

    monkeypatch.setattr(cache, "pip_download", fetch)
    assert cache.cached_archive("a.tar.gz", "a==1", source=True, sha256=digest).read_bytes() == good
    monkeypatch.setattr(cache, "pip_download", lambda requirement, source: downloads / "a.tar.gz")
    (downloads / "a.tar.gz").write_bytes(b"other")
    with pytest.raises(cache.DataUnavailableError, match="has SHA-256"):
        cache.cached_archive("a.tar.gz", "a==1", source=True, sha256=digest)


def test_a_sharded_experiment_with_no_strategy_that_fits_is_refused(tiny_corpus, repo_root, tmp_path, capsys):
    """Every strategy skipped (3 does not divide the 8 devices): one sentence, exit 2, nothing written."""
    from conftest import load_experiment

    workdir = tmp_path / "sharded"
    code = load_experiment("10_transformer_sharded.py").cli(
        ["--workdir", str(workdir), "--config", f"{repo_root}/configs/transformer_sharded.py:smoke",
         "--config.strategies=(('tensor', (1, 1, 3)),)"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: none of the 1 strategies"), err
    assert "'tensor'" in err[0] and not workdir.exists()


def test_an_experiment_that_checks_no_claim_fails(repo_root, tmp_path, capsys):
    """An experiment that ran but checked nothing: results.json is written, and exit 1 with an error line."""
    from p2t_jax import experiment

    code = experiment.main(lambda config, workdir, claims: {"measured": 1.0}, script=__file__,
                           description="nothing checked", default_workdir=str(tmp_path / "w"),
                           default_config=f"{repo_root}/configs/xor_mlp.py", validate=lambda config: None,
                           argv=[])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [err[0]] and err[0].startswith("error: no claim was checked"), err
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert results["claims"] == {} and results["measured"] == 1.0


def test_check_run_config_names_the_key():
    config = load_config("shakespeare:smoke")
    with config.unlocked():
        config.train.log_every = 0
    with pytest.raises(ConfigError, match="train.log_every"):
        from p2t_jax.training.loop import check_run_config

        check_run_config(config)
