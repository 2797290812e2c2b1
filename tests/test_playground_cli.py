"""`p2t playground`: the command it starts, the local default, and its answers to bad input."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from p2t_jax.cli import main
from p2t_jax.playground import launch


@pytest.fixture
def started(monkeypatch):
    """Records the server command instead of starting it; Streamlit counts as installed."""
    calls = []
    monkeypatch.setattr(launch, "run_child", lambda argv: calls.append(argv) or 0)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "streamlit" else real(name, *a))
    return calls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serves_the_app_on_localhost_by_default(started, capsys, tmp_path):
    port = _free_port()
    assert main(["playground", "--port", str(port), "--runs", str(tmp_path)]) == 0
    (argv,) = started
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4] == str(launch.APP)
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.port") + 1] == str(port)
    assert argv[argv.index("--") + 1:] == ["--runs", str(tmp_path)]
    captured = capsys.readouterr()
    assert f"http://127.0.0.1:{port}" in captured.out and "warning" not in captured.err


def test_another_host_warns(started, capsys):
    assert main(["playground", "--host", "0.0.0.0", "--port", str(_free_port())]) == 0
    assert started[0][started[0].index("--server.address") + 1] == "0.0.0.0"
    assert capsys.readouterr().err.startswith("warning: --host 0.0.0.0 lets other machines reach the playground")


def _error(capsys, argv):
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_without_streamlit_it_says_how_to_install_it(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else real(name, *a))
    code, err = _error(capsys, ["playground"])
    assert code == 2 and "pip install -e '.[app]'" in err and len(err.splitlines()) == 1


def test_bad_arguments(started, capsys, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        cases = [(["playground", "--port", "0"], "--port must be between 1 and 65535"),
                 (["playground", "--port", "70000"], "--port must be between 1 and 65535"),
                 (["playground", "--port", "x"], "invalid int value"),
                 (["playground", "--port", str(taken)], f"cannot serve on 127.0.0.1:{taken}"),
                 (["playground", "--host", "no.such.host.invalid"], "is not an address"),
                 (["playground", "--host", "192.0.2.1"], "--host '192.0.2.1' is not an address of this machine"),
                 (["playground", "--config.seed=1"], "takes no --config overrides"),
                 (["playground", "--runs", str(tmp_path / "file")], f"--runs '{tmp_path / 'file'}' is a file")]
        for argv, message in cases:
            code, err = _error(capsys, argv)
            assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
    assert started == []  # nothing was started


def _wait_until_serving(port: int, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the playground did not answer on port {port} within {timeout_s} s")


def _start(port: int, runs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "p2t_jax.cli", "playground", "--port", str(port), "--runs",
                             str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(importlib.util.find_spec("streamlit") is None, reason="needs Streamlit")
def test_sigterm_stops_the_server_and_a_restart_on_the_same_port_starts_at_once(tmp_path):
    """A real launcher and server: a page request leaves connections in TIME-WAIT; SIGTERM to the
    launcher stops the server too (the port is free, no process of its group is left), and the same
    port serves again at once. The second run is stopped with SIGHUP, the same way."""
    port = _free_port()
    first = _start(port, tmp_path)
    try:
        _wait_until_serving(port, first)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()  # a browser's visit
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        assert not _listening(port)
        with pytest.raises(ProcessLookupError):  # the launcher's group (it and the server) is gone
            os.killpg(first.pid, 0)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    second = _start(port, tmp_path)  # at once, while the first server's connections may be in TIME-WAIT
    try:
        _wait_until_serving(port, second)
        second.send_signal(signal.SIGHUP)
        assert second.wait(timeout=30) == 0
        assert "cannot serve" not in second.stderr.read()
        assert not _listening(port)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)


@pytest.fixture
def reproduced(started, monkeypatch):
    """`p2t reproduce` recorded instead of run: ``reproduced.status`` is the exit status it gives,
    ``reproduced.stopped`` whether the launcher was asked to stop meanwhile."""

    class Runner:
        def __init__(self):
            self.status, self.stopped, self.calls = 0, False, []

        def __call__(self, argv):
            self.calls.append(argv)
            return self.status, self.stopped

    runner = Runner()
    monkeypatch.setattr(launch, "run_until_stopped", runner)
    return runner


def test_make_runs_runs_the_quick_budget_into_the_runs_folder_then_serves(reproduced, started, capsys, tmp_path):
    runs = str(tmp_path / "mine")
    assert main(["playground", "--make-runs", "--runs", runs, "--port", str(_free_port())]) == 0
    assert reproduced.calls == [[sys.executable, "-m", "p2t_jax.cli", "reproduce", "--budget", "quick", "--out", runs]]
    (server,) = started
    assert server[server.index("--") + 1:] == ["--runs", runs]
    assert f"p2t reproduce --budget quick --out {runs}" in capsys.readouterr().out


@pytest.mark.parametrize("status, stopped, code, served, message", [
    (1, False, 0, True, "warning: some chapters did not finish (their log.txt in runs/<chapter>/ says why)"),
    (2, False, 2, False, "failed (exit status 2); the playground was not started"),
    (-15, True, 0, False, ""),  # Ctrl-C or SIGTERM while the runs are made: no server after it
])
def test_make_runs_serves_only_when_the_runs_were_written(reproduced, started, capsys, status, stopped, code, served,
                                                          message):
    reproduced.status, reproduced.stopped = status, stopped
    assert main(["playground", "--make-runs", "--port", str(_free_port())]) == code
    assert bool(started) == served
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == (1 if message else 0), err


def test_make_runs_refuses_bad_arguments_before_making_anything(reproduced, started, capsys, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    code, err = _error(capsys, ["playground", "--make-runs", "--runs", str(tmp_path / "file")])
    assert code == 2 and "is a file" in err and reproduced.calls == [] and started == []


@pytest.mark.parametrize("record, message", [
    (None, "which `p2t reproduce` did not write; --make-runs writes only into folders it made"),
    ({"budget": "full", "status": "passed"}, "holds full runs of `p2t reproduce`"),
])
def test_make_runs_never_replaces_other_runs(reproduced, started, capsys, tmp_path, record, message):
    """Runs made by hand or by the full budget stay as they are: refused in one sentence, nothing run."""
    folder = tmp_path / "runs" / "07_batchnorm_residual"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text("{}")
    if record:
        (folder / "reproduce.json").write_text(json.dumps(record))
    before = sorted(p.name for p in folder.iterdir())
    code, err = _error(capsys, ["playground", "--make-runs", "--runs", str(tmp_path / "runs"),
                                "--port", str(_free_port())])
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert reproduced.calls == [] and started == [] and sorted(p.name for p in folder.iterdir()) == before
    (folder / "reproduce.json").write_text(json.dumps({"budget": "quick", "status": "passed"}))  # its own: resumed
    assert main(["playground", "--make-runs", "--runs", str(tmp_path / "runs"), "--port", str(_free_port())]) == 0
    assert len(reproduced.calls) == 1 and len(started) == 1
