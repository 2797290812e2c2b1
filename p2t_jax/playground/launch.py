"""Starting the playground's server: what ``p2t playground`` runs.

The server is Streamlit's own (``python -m streamlit run app.py``), started as a child
process bound to ``host:port``. Bad input (no Streamlit, a port that is taken or out of
range, a host that cannot be bound, ``--runs`` that is a file) is a :class:`~p2t_jax.configuration.ConfigError` with
one sentence, before anything starts.
"""

from __future__ import annotations

import importlib.util
import pathlib
import socket
import subprocess
import sys

from p2t_jax.configuration import ConfigError

APP = pathlib.Path(__file__).resolve().parent / "app.py"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
INSTALL = "pip install -e '.[app]'"


def require_streamlit() -> None:
    """Raises ConfigError (how to install it) when Streamlit is not installed."""
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError(f"the playground needs Streamlit, which is not installed; install the app extra with "
                          f"`{INSTALL}` (or `pip install streamlit`).")


def check_address(host: str, port: int) -> None:
    """Raises ConfigError unless ``port`` is a valid port that is free on ``host``."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigError(f"--host '{host}' is not an address this machine can bind to.") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(address)
        except OSError as e:
            raise ConfigError(f"cannot serve on {host}:{port} ({e.strerror}); pick another --port.") from None


def check_runs(runs: str) -> None:
    """Raises ConfigError when ``runs`` exists and is not a folder (a missing one is fine: the
    pages then say which command makes each run)."""
    path = pathlib.Path(runs)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--runs '{runs}' is a file, not a folder of run folders; give the folder that holds "
                          f"the runs (default: runs).")


def command(host: str, port: int, runs: str) -> list[str]:
    """The Streamlit command line for the playground (headless, no file watching, no usage statistics)."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
            "--client.showErrorDetails", "none", "--", "--runs", runs]


def serve(host: str = "127.0.0.1", port: int = 8501, runs: str = "runs") -> int:
    """Runs the playground until it is stopped (Ctrl-C); returns the server's exit status."""
    require_streamlit()
    check_runs(runs)
    check_address(host, port)
    if host not in LOCAL_HOSTS:
        print(f"warning: --host {host} lets other machines reach the playground; it has no login, and its pages "
              f"read the run folders under {runs} and any folder typed into them.", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"playground: http://{shown}:{port} (runs from {runs}); Ctrl-C stops it", flush=True)
    try:
        return subprocess.call(command(host, port, runs))  # the server runs in this folder: paths stay as typed
    except KeyboardInterrupt:
        return 0
