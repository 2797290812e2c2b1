"""`p2t playground`: the command it starts, the local default, and its answers to bad input."""

import importlib.util
import socket
import subprocess

import pytest

from p2t_jax.cli import main
from p2t_jax.playground import launch


@pytest.fixture
def started(monkeypatch):
    """Records the server command instead of starting it; Streamlit counts as installed."""
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
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
                 (["playground", "--config.seed=1"], "takes no --config overrides"),
                 (["playground", "--runs", str(tmp_path / "file")], f"--runs '{tmp_path / 'file'}' is a file")]
        for argv, message in cases:
            code, err = _error(capsys, argv)
            assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
    assert started == []  # nothing was started
