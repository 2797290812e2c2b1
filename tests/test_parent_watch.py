"""A child that asked to stop with its parent gets SIGTERM when the parent is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

from p2t_jax import parent_watch

CHILD = """
import os, pathlib, signal, sys, time
from p2t_jax.parent_watch import stop_with_parent
out = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *a: (out.joinpath("term").write_text("saved"), sys.exit(143)))
arranged = stop_with_parent()
out.joinpath("ready").write_text(f"{os.getpid()} {arranged} {os.environ.get('P2T_STOP_WITH_PARENT')}")
time.sleep(60)
"""

PARENT = """
import os, subprocess, sys, time
env = dict(os.environ, P2T_STOP_WITH_PARENT=str(os.getpid()))
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], env=env)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_parent_sends_the_child_sigterm(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(tmp_path)], env=env, start_new_session=True)
    ready = tmp_path / "ready"
    deadline = time.monotonic() + 30
    while not ready.exists() or not ready.read_text():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.05)
    pid, arranged, inherited = ready.read_text().split()
    assert arranged == "True" and inherited == "None"  # arranged, and not passed on to its own children
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not (tmp_path / "term").exists():
        assert time.monotonic() < deadline, "the child did not get SIGTERM when its parent died"
        time.sleep(0.05)
    assert (tmp_path / "term").read_text() == "saved"
    while True:  # it exits (and, orphaned, is reaped by init)
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline + 10
        time.sleep(0.05)


def test_without_the_variable_nothing_is_arranged():
    env = {"OTHER": "1"}
    assert parent_watch.stop_with_parent(env) is False and env == {"OTHER": "1"}
    env = {parent_watch.ENV: "not a pid"}
    assert parent_watch.stop_with_parent(env) is False and parent_watch.ENV not in env
