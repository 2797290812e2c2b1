"""Starting the playground's server: what ``p2t playground`` runs.

The server is Streamlit's own (``python -m streamlit run app.py``), started as a child
process bound to ``host:port``. With ``make_runs`` (``p2t playground --make-runs``) the
quick budget of ``p2t reproduce`` first writes every run folder the pages read into the runs
folder (a child process too), then the server starts. Bad input (no Streamlit, a port that is taken or out of
range, a host that cannot be bound, ``--runs`` that is a file) is a :class:`~p2t_jax.configuration.ConfigError` with
one sentence, before anything starts. SIGTERM, SIGINT and SIGHUP to the launcher stop the
server too: the launcher passes them on and waits for it, so no server is left behind.
"""

from __future__ import annotations

import errno
import importlib.util
import pathlib
import signal
import socket
import subprocess
import sys
import time

from p2t_jax.configuration import ConfigError

APP = pathlib.Path(__file__).resolve().parent / "app.py"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # passed on to the server, which then stops
STOP_WAIT_S = 10.0  # how long a stopped server may take to exit before it is killed
INSTALL = "pip install -e '.[app]'"


def require_streamlit() -> None:
    """Raises ConfigError (how to install it) when Streamlit is not installed."""
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError(f"the playground needs Streamlit, which is not installed; install the app extra with "
                          f"`{INSTALL}` (or `pip install streamlit`).")


def check_address(host: str, port: int) -> None:
    """Raises ConfigError unless ``port`` is a valid port that is free on ``host``.

    The check binds with ``SO_REUSEADDR``, as the server (tornado) does: connections of a
    stopped server still in TIME-WAIT do not count as taken, a listening socket does.
    """
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigError(f"--host '{host}' is not an address this machine can bind to.") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"--host '{host}' is not an address of this machine; give one of its own "
                                  f"addresses (default 127.0.0.1).") from None
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


def check_make_runs(runs: str) -> None:
    """Raises ConfigError when ``--make-runs`` would touch runs it must not: a chapter folder in ``runs``
    that ``p2t reproduce`` did not write (the reader's own runs), or one of its full budget (the quick
    budget would start it afresh, clearing it)."""
    from p2t_jax.playground.budgets import REPRODUCE_FILE, run_budget
    from p2t_jax.reproduce.chapters import CHAPTERS

    for chapter in CHAPTERS.values():
        folder = pathlib.Path(runs) / chapter.name
        if not folder.is_dir() or not any(folder.iterdir()):
            continue
        if not (folder / REPRODUCE_FILE).is_file():
            raise ConfigError(f"--runs '{runs}' holds '{folder}', which `p2t reproduce` did not write; --make-runs "
                              f"writes only into folders it made: give another --runs (e.g. runs/quick) or move "
                              f"that folder away.")
        if run_budget(folder).name == "full":
            raise ConfigError(f"--runs '{runs}' holds full runs of `p2t reproduce` ('{folder}'), which --make-runs "
                              f"would replace with quick ones; give another --runs (e.g. runs/quick).")


def reproduce_command(runs: str) -> list[str]:
    """The ``p2t reproduce`` command line that writes the quick budget's run folders into ``runs``."""
    return [sys.executable, "-m", "p2t_jax.cli", "reproduce", "--budget", "quick", "--out", runs]


def make_runs(runs: str) -> tuple[int, bool]:
    """Runs the quick budget of ``p2t reproduce`` into ``runs`` (SIGTERM, SIGINT and SIGHUP passed on);
    returns ``(its exit status, whether this process was asked to stop)``."""
    print(f"making the playground's runs in {runs} with the quick budget of p2t reproduce "
          f"(`p2t reproduce --budget quick --out {runs}`)", flush=True)
    return run_until_stopped(reproduce_command(runs))


def serve(host: str = "127.0.0.1", port: int = 8501, runs: str = "runs", *, make: bool = False) -> int:
    """Runs the playground until it is stopped (Ctrl-C, SIGTERM, SIGHUP); returns the server's exit status.

    With ``make``, first writes the quick budget's run folders into ``runs`` (:func:`make_runs`;
    never over runs it did not write or full ones: :func:`check_make_runs`). When a chapter did
    not finish (exit status 1) the server starts all the same, for the pages whose runs were
    written. Any other failure, or a stop while it runs, ends here with its status (0 for a
    stop) and no server.
    """
    require_streamlit()
    check_runs(runs)
    check_address(host, port)
    if make:
        check_make_runs(runs)
        status, stopped = make_runs(runs)
        if stopped:
            return 0
        if status == 1:
            print(f"warning: some chapters did not finish (their log.txt in {runs}/<chapter>/ says why); the pages "
                  f"whose runs were written work, the others say which command makes theirs.", file=sys.stderr,
                  flush=True)
        elif status != 0:
            print(f"error: `p2t reproduce --budget quick --out {runs}` failed (exit status {status}); the playground "
                  f"was not started.", file=sys.stderr, flush=True)
            return status
        check_address(host, port)  # still free after the runs were made
    if host not in LOCAL_HOSTS:
        print(f"warning: --host {host} lets other machines reach the playground; it has no login, and its pages "
              f"read the run folders under {runs} and any folder typed into them.", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"playground: http://{shown}:{port} (runs from {runs}); Ctrl-C stops it", flush=True)
    return run_child(command(host, port, runs))  # the server runs in this folder: paths stay as typed


def run_child(argv: list[str]) -> int:
    """Runs ``argv`` until it exits (:func:`run_until_stopped`); returns its exit status, 0 when it
    stopped because this process was asked to stop."""
    status, stopped = run_until_stopped(argv)
    return 0 if stopped and status in (0, -signal.SIGTERM, -signal.SIGKILL) else status


def run_until_stopped(argv: list[str]) -> tuple[int, bool]:
    """Runs ``argv`` until it exits; SIGTERM, SIGINT or SIGHUP to this process is passed on to it as
    SIGTERM (the server's clean stop), then it is waited for (killed after ``STOP_WAIT_S``). Returns
    ``(its exit status, whether this process was asked to stop)``."""
    received: list[int] = []
    children: list[subprocess.Popen] = []

    def forward(signum, _frame):
        received.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {sig: signal.getsignal(sig) for sig in FORWARDED}
    try:
        for sig in FORWARDED:
            signal.signal(sig, forward)
        child = subprocess.Popen(argv)
        children.append(child)
        if received:  # asked to stop while it was starting
            child.send_signal(signal.SIGTERM)
        stop_by = None
        while True:
            try:
                status = child.wait(timeout=0.2)  # short waits: a signal handled meanwhile starts the clock
                break
            except subprocess.TimeoutExpired:
                if received and stop_by is None:
                    stop_by = time.monotonic() + STOP_WAIT_S
                if stop_by is not None and time.monotonic() > stop_by:
                    child.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for child in children:
            if child.poll() is None:  # an error in this process: the server does not outlive it
                child.kill()
                child.wait()
    return status, bool(received)
