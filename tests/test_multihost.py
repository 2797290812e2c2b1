"""Two processes x 4 CPU devices on 127.0.0.1 (gloo) train together exactly like one process x 8."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest
from conftest import QUICK_COMPILE

from p2t_jax.configuration import apply_overrides, load_config
from p2t_jax.tasks import language_model
from p2t_jax.training.loop import restore_state, train_and_evaluate
from p2t_jax.training.metrics import read_metrics

WORKER = pathlib.Path(__file__).resolve().parent / "multihost_worker.py"
TIMEOUT_S = 150
STEPS = 6
# Saves at steps 3 and 6, each evaluated (so ranked for the best save kept).
OVERRIDES = ["model.num_layers=1", "model.num_heads=8", f"train.num_steps={STEPS}", "train.log_every=1",
             "train.eval_every=3", "train.checkpoint_every=3", "parallel.mesh_shape=(-1,1,1)"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tiny_corpus, tmp_path):
    multi = tmp_path / "two_processes"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {QUICK_COMPILE}",
               TQDM_DISABLE="1", P2T_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", P2T_NUM_PROCESSES="2")
    procs, logs = [], []
    try:
        for i in range(2):
            out, err = open(tmp_path / f"out{i}.txt", "w"), open(tmp_path / f"err{i}.txt", "w")
            logs += [out, err]
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), str(multi), str(tmp_path / f"record{i}.json"),
                 *[f"--config.{o}" for o in OVERRIDES]],
                env=dict(env, P2T_PROCESS_ID=str(i)), stdout=out, stderr=err, cwd=tmp_path))
        deadline = time.monotonic() + TIMEOUT_S

        # Meanwhile, the same run as one process with all 8 devices.
        config = apply_overrides(load_config("shakespeare:smoke"), OVERRIDES)
        one, one_summary = train_and_evaluate(language_model.make_task(config), config, tmp_path / "one_process",
                                              progress=False)

        for i, p in enumerate(procs):
            code = p.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert code == 0, (tmp_path / f"err{i}.txt").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()

    records = [json.loads((tmp_path / f"record{i}.json").read_text()) for i in range(2)]
    assert [(r["process_index"], r["process_count"], r["device_count"]) for r in records] == [(0, 2, 8), (1, 2, 8)]
    assert all(rows == [0, 4] for rows in records[0]["rows"]) and all(rows == [4, 8] for rows in records[1]["rows"])
    assert len(records[0]["rows"]) == STEPS

    out0, out1 = (tmp_path / "out0.txt").read_text(), (tmp_path / "out1.txt").read_text()
    assert "mesh: data=8 x fsdp=1 x tensor=1 on 8 of 8 cpu devices, 2 processes" in out0 and "eval loss" in out0
    assert [line for line in out1.splitlines() if "connected to" not in line] == []  # only process 0 logs (gloo aside)

    train = read_metrics(multi, "train")
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))  # one writer
    one_train = read_metrics(tmp_path / "one_process", "train")
    np.testing.assert_allclose([r["loss"] for r in train], [r["loss"] for r in one_train], rtol=0, atol=1e-5)
    np.testing.assert_allclose(read_metrics(multi, "eval")[-1]["loss"], one_summary["eval"]["loss"], rtol=0, atol=1e-5)

    model = language_model.make_model(config)
    saved, meta = restore_state(lambda rng: language_model.init_params(model, rng), config, multi)
    assert int(saved.step) == STEPS and meta["step"] == STEPS
    chex.assert_trees_all_close(jax.device_get(saved.params), jax.device_get(one.params), atol=1e-5)
