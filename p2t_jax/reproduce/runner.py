"""Runs the chapters' experiments as child processes, resumably, side by side, with one progress bar.

Each chapter runs as ``python experiments/NN_name.py --workdir <out>/NN_name --config ...``
(the same script and code a reader runs by hand), in a session of its own, its output kept
whole in ``<out>/NN_name/log.txt``. ``<out>/NN_name/reproduce.json`` records what it ran
with (budget, config, overrides, the code's hash) and how it ended:

==============  =======================================================================
status          meaning
==============  =======================================================================
running         started and not yet ended (a run killed outright leaves this: run again)
passed          exit 0: every claim held
claims failed   exit 1 with results.json written: some claim failed (or none was checked)
interrupted     stopped by a signal; the next run resumes it (the experiments resume)
error           any other exit: a crash, or bad input (exit 2)
==============  =======================================================================

A chapter whose record says passed or claims failed, with the same code hash, budget,
config and overrides, and whose results.json is there, is not run again. A record with
other code or settings makes the chapter start afresh (its folder is cleared first); a
running or interrupted one is run again into the same folder, where the experiment
resumes its training runs. ``<out>`` itself is locked for the whole reproduction
(:mod:`p2t_jax.training.workdir_lock`), so a second ``p2t reproduce`` on it is refused.

The chapters share one persistent XLA compilation cache, ``<out>/.xla-cache``
(:mod:`p2t_jax.compile_cache`): a program one chapter (or one of its worker processes, or an
earlier reproduction into the same ``<out>``) compiled is loaded, not compiled again, by the
next that builds it; the results are the same. ``compile_cache=False`` (``p2t reproduce
--no-compile-cache``) leaves it out, and a ``JAX_COMPILATION_CACHE_DIR`` already in the
environment is kept either way.

With ``jobs`` > 1 the machine's cores (those this process may use) are split into ``jobs``
lanes, and each running chapter is kept to its lane's cores (``os.sched_setaffinity``; on
2 cores with 2 jobs: one core each). Unpinned, two chapters whose XLA thread pools each
span every core wait on each other's threads: chapter 8 took 69.6 s of CPU alone and
unpinned, 55.6 s on one core (and 91.5 s of wall time beside another chapter, unpinned).
``cores=None`` (``p2t reproduce --no-pin``) lets every chapter use every core.

SIGINT, SIGTERM and SIGHUP are forwarded to every running chapter's process group; the
runner waits for them to save and exit (a second signal is forwarded too, and makes them
abort at once), records them as interrupted and exits 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from p2t_jax import compile_cache as compile_cache_lib
from p2t_jax import parent_watch
from p2t_jax.configuration import REPO_ROOT, ConfigError
from p2t_jax.reproduce import provenance
from p2t_jax.reproduce.chapters import Chapter, Plan, plan
from p2t_jax.training import workdir_lock

RECORD = "reproduce.json"
LOG = "log.txt"
RESULTS = "results.json"
DONE = ("passed", "claims failed")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
KILL_AFTER_S = 120.0  # a chapter still running this long after a forwarded signal is killed
CACHE = ".xla-cache"  # <out>/.xla-cache: the chapters' shared persistent compilation cache
CLAIM_LINE = re.compile(r"^\s*(PASS|FAIL)\s+(.*)$")

# What each chapter costs, only to start the longest first when several run side by side: full, the CPU seconds
# each experiment took alone on a busy 2-core AMD EPYC after the chapters' budgets of issue 26 (bench/NOTES.md);
# quick, the CPU seconds each took in `p2t reproduce --budget quick` on a 2-core AMD EPYC (reproduce.json's
# "cpu seconds").
ESTIMATE_S = {"full": {1: 14, 2: 13, 3: 46, 4: 30, 5: 132, 6: 112, 7: 180, 8: 77, 9: 117, 10: 360, 11: 190},
              "quick": {1: 11, 2: 13, 3: 22, 4: 22, 5: 14, 6: 48, 7: 65, 8: 23, 9: 46, 10: 55, 11: 76}}


@dataclasses.dataclass
class Outcome:
    """How one chapter's run ended (or that it was reused): what :mod:`report` reads besides the folder."""

    chapter: Chapter
    folder: pathlib.Path
    status: str
    seconds: float
    reused: bool = False
    exit_code: int | None = None
    cpu_seconds: float | None = None


def fingerprint(chapter: Chapter, budget: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """What makes two runs of ``chapter`` the same: budget, config, overrides and the code's hash."""
    p = plan(chapter, budget)
    return {"budget": budget, "config": p.config, "config overrides": list(p.overrides) + list(extra),
            "code hash": provenance.code_hash(chapter.script, p.config), "script": chapter.script}


def read_record(folder: pathlib.Path) -> dict[str, Any] | None:
    """``folder/reproduce.json``, or None when missing or unreadable."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(folder: pathlib.Path, record: dict[str, Any]) -> None:
    """Writes ``folder/reproduce.json`` atomically (a temporary file renamed over it)."""
    tmp = folder / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / RECORD)


def is_reusable(folder: pathlib.Path, wanted: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a finished run made with ``wanted``'s settings and code."""
    record = read_record(folder)
    return (record is not None and record.get("status") in DONE and (folder / RESULTS).is_file()
            and all(record.get(k) == v for k, v in wanted.items()))


def check_folders(out: pathlib.Path, chapters: Sequence[Chapter]) -> None:
    """Refuses (ConfigError) a chapter folder that exists, holds files and was not written by ``p2t reproduce``:
    the reader's own runs are never cleared or mixed into."""
    for chapter in chapters:
        folder = out / chapter.name
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"'{folder}' exists and is not a folder; choose another --out.")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / RECORD).exists():
            raise ConfigError(f"'{folder}' holds files not written by `p2t reproduce` (no {RECORD}); choose "
                              f"another --out or move that folder away.")


def clear(folder: pathlib.Path) -> None:
    """Removes a chapter folder made with other code or settings: renamed aside first, so that an
    interruption leaves either the old folder or none (the hidden aside folder goes on the next run)."""
    aside = folder.with_name(f".{folder.name}.stale")
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(folder, aside)
    shutil.rmtree(aside)


class _Stop:
    """The signals that stopped the reproduction: the first (None while none came), the last, how many."""

    def __init__(self):
        self.signum: int | None = None  # the first
        self.last: int | None = None
        self.count = 0
        self.at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:  # only notes it: the runner's loop forwards it within a second
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()
        self.last = signum
        self.count += 1


def forward(proc: subprocess.Popen, signum: int) -> None:
    """Sends ``signum`` to ``proc``'s process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


class Progress:
    """One bar over the claims of every chapter to run, redrawn in place on a terminal, with the chapters done
    and those running; lines printed above it. Without a terminal (or ``enabled=False``): the lines only."""

    def __init__(self, total: int, *, enabled: bool, stream: TextIO):
        self.stream, self.enabled, self.total = stream, enabled, max(total, 1)
        self.n, self.start = 0, time.monotonic()
        self.chapters, self.running = "", ""

    def _draw(self) -> None:
        width = max(min(shutil.get_terminal_size((100, 20)).columns, 160) - 1, 40)
        elapsed = int(time.monotonic() - self.start)
        left = f"chapters {self.chapters} {100 * self.n // self.total:3d}% |"
        right = f"| {self.n}/{self.total} claims [{elapsed // 60:02d}:{elapsed % 60:02d}] {self.running}"
        cells = max(width - len(left) - len(right), 10)
        filled = cells * self.n // self.total
        text = (left + "#" * filled + " " * (cells - filled) + right)[:width]
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()

    def line(self, text: str) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
        print(text, file=self.stream, flush=True)
        if self.enabled:
            self._draw()

    def advance(self, n: int) -> None:
        self.n = min(self.n + max(n, 0), self.total)
        if self.enabled:
            self._draw()

    def status(self, chapters_done: int, chapters_total: int, running: list[str]) -> None:
        self.chapters, self.running = f"{chapters_done}/{chapters_total}", ", ".join(running)
        if self.enabled:
            self._draw()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


@dataclasses.dataclass
class _Job:
    chapter: Chapter
    plan: Plan
    folder: pathlib.Path
    record: dict[str, Any]
    proc: subprocess.Popen | None = None
    log: Any = None
    start: float = 0.0
    pending: bytes = b""
    claims_seen: int = 0
    counted: int = 0
    signals_sent: int = 0
    lane: int = 0


def command(chapter: Chapter, p: Plan, folder: pathlib.Path, extra: Sequence[str] = ()) -> list[str]:
    """The experiment's command line: what a reader would type, with the interpreter running this."""
    return ([provenance.python(), "-u", str(REPO_ROOT / chapter.script), "--workdir", str(folder), "--config",
             p.config] + [f"--config.{o}" for o in (*p.overrides, *extra)])


def child_env(cache: pathlib.Path | None = None) -> dict[str, str]:
    """The environment of a chapter: this one, with the repository first on PYTHONPATH (the code hashed is
    the code run), Python's output unbuffered (PASS/FAIL lines arrive as they are printed) and, given a
    ``cache`` folder, JAX's persistent compilation cache there (unless the environment names one already);
    ``P2T_STOP_WITH_PARENT`` names this process (:mod:`p2t_jax.parent_watch`)."""
    env = dict(os.environ)
    if cache is not None:
        compile_cache_lib.share(cache, env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                            if p])
    env["PYTHONUNBUFFERED"] = "1"
    env[parent_watch.ENV] = str(os.getpid())  # the chapter stops (saving) if this process dies, even by kill -9
    return env


def lanes(jobs: int, cpus: Sequence[int] | None = None) -> list[tuple[int, ...]] | None:
    """The cores of each of ``jobs`` lanes: ``cpus`` (by default those this process may run on) split into
    ``jobs`` runs of consecutive cores, as even as can be; None (no pinning) for one job, for more jobs than
    cores, or where the platform cannot pin."""
    if cpus is None:
        if not hasattr(os, "sched_getaffinity"):
            return None
        cpus = sorted(os.sched_getaffinity(0))
    n = len(cpus)
    if jobs <= 1 or jobs > n:
        return None
    return [tuple(cpus[i * n // jobs:(i + 1) * n // jobs]) for i in range(jobs)]


def run_chapters(chapters: Sequence[Chapter], *, budget: str, out: pathlib.Path, jobs: int,
                 extra: dict[int, list[str]] | None = None, progress: bool = True,
                 stream: TextIO | None = None, compile_cache: bool = True,
                 cores: Sequence[tuple[int, ...]] | None = None) -> tuple[list[Outcome], int | None]:
    """Runs (or reuses) every chapter into ``out/<name>``, at most ``jobs`` at a time.

    Returns the outcomes in chapter order, and the signal number that stopped the run (None
    when none did). Holds ``out``'s lock throughout; raises ConfigError (one sentence) for a
    folder it may not use or another reproduction holding ``out``. ``compile_cache``: the
    chapters share ``out/.xla-cache``; ``cores``: the cores of each of the ``jobs`` lanes
    (:func:`lanes`), each running chapter kept to its lane's, or None for every core (see the
    module's docstring).
    """
    stream = stream or sys.stderr
    extra = extra or {}
    for chapter in chapters:
        if not (REPO_ROOT / chapter.script).is_file():
            raise ConfigError(f"the experiment script '{REPO_ROOT / chapter.script}' is missing: `p2t reproduce` runs "
                              f"the scripts of a clone of the repository (installed with pip install -e .).")
    out.mkdir(parents=True, exist_ok=True)
    with workdir_lock.hold(out):
        check_folders(out, chapters)
        for stale in out.glob(".*.stale"):
            shutil.rmtree(stale, ignore_errors=True)
        cache = (out / CACHE).resolve() if compile_cache else None  # absolute: the chapters run in the repository
        return _run_locked(chapters, budget, out, jobs, extra, progress, stream, cache, cores)


def _run_locked(chapters, budget, out, jobs, extra, progress, stream, cache,
                cores) -> tuple[list[Outcome], int | None]:
    outcomes: dict[int, Outcome] = {}
    queue: list[_Job] = []
    total_claims = sum(len(c.claims) for c in chapters)
    bar = Progress(total_claims, enabled=progress and stream.isatty(), stream=stream)
    done_claims = 0
    for chapter in chapters:
        folder = out / chapter.name
        wanted = fingerprint(chapter, budget, extra.get(chapter.number, ()))
        if is_reusable(folder, wanted):
            record = read_record(folder)
            outcomes[chapter.number] = Outcome(chapter, folder, record["status"], float(record.get("seconds") or 0.0),
                                               reused=True, exit_code=record.get("exit code"),
                                               cpu_seconds=record.get("cpu seconds"))
            bar.line(f"{chapter.name}: done before with the same code and settings ({record['status']}); reused")
            done_claims += len(chapter.claims)
            continue
        record = read_record(folder)
        if record is not None and any(record.get(k) != v for k, v in wanted.items()):
            changed = [k for k, v in wanted.items() if record.get(k) != v]
            bar.line(f"{chapter.name}: {', '.join(changed)} changed since its last run; starting it afresh")
            clear(folder)
        elif record is not None:
            bar.line(f"{chapter.name}: its last run ended {record.get('status')!r}; running it again (the experiment "
                     f"resumes what it saved)")
        queue.append(_Job(chapter, plan(chapter, budget), folder, dict(wanted)))
    bar.status(len(outcomes), len(chapters), [])
    bar.advance(done_claims)
    estimate = ESTIMATE_S.get(budget, {})
    if jobs > 1:  # the longest first, so that the last to finish is short
        queue.sort(key=lambda j: -estimate.get(j.chapter.number, 0))
    running: list[_Job] = []
    selector = selectors.DefaultSelector()
    with _Stop() as stop:
        try:
            while queue or running:
                while queue and len(running) < jobs and stop.signum is None:
                    job = queue.pop(0)
                    job.lane = min(set(range(jobs)) - {j.lane for j in running})
                    _start(job, extra.get(job.chapter.number, ()), budget, cache, cores[job.lane] if cores else None)
                    selector.register(job.proc.stdout, selectors.EVENT_READ, job)
                    running.append(job)
                    bar.line(f"{job.chapter.name}: started ({shlex_join(job.record['command'])})")
                if stop.signum is not None and queue:
                    queue.clear()
                for job in running:  # each signal reaches every running chapter once (a second makes it abort)
                    while job.signals_sent < stop.count:
                        forward(job.proc, stop.last)
                        job.signals_sent += 1
                if stop.signum is not None and time.monotonic() - stop.at > KILL_AFTER_S:
                    for job in running:
                        forward(job.proc, signal.SIGKILL)
                bar.status(len(outcomes), len(chapters), [j.chapter.name for j in running])
                if not running:
                    continue
                for key, _ in selector.select(timeout=1.0):
                    job = key.data
                    data = os.read(key.fd, 65536)
                    if data:
                        _consume(job, data, bar)
                        continue
                    selector.unregister(key.fileobj)
                    _claim_line(job, job.pending, bar)
                    outcome = _finish(job, stop.signum)
                    outcomes[job.chapter.number] = outcome
                    running.remove(job)
                    bar.advance(len(job.chapter.claims) - job.counted)
                    bar.line(f"{job.chapter.name}: {outcome.status} ({outcome.seconds:.1f} s"
                             f"{'' if outcome.exit_code in (0, 1) else f', exit status {outcome.exit_code}'})")
                    bar.status(len(outcomes), len(chapters), [j.chapter.name for j in running])
        finally:
            for job in running:  # an exception here: no child outlives the runner
                forward(job.proc, signal.SIGKILL)
                job.proc.wait()
                job.log.close()
            selector.close()
            bar.close()
    return [outcomes[c.number] for c in chapters if c.number in outcomes], stop.signum


def shlex_join(args: Sequence[str]) -> str:
    import shlex

    return shlex.join(args)


def _start(job: _Job, extra: Sequence[str], budget: str, cache: pathlib.Path | None = None,
           cpus: Sequence[int] | None = None) -> None:
    job.folder.mkdir(parents=True, exist_ok=True)
    cmd = command(job.chapter, job.plan, job.folder, extra)
    job.record.update(status="running", command=cmd, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      budget=budget, seconds=None, pid=None, cores=list(cpus) if cpus else None)
    write_record(job.folder, job.record)
    job.log = open(job.folder / LOG, "ab")
    job.log.write(f"===== {job.record['started']}: {shlex_join(cmd)}\n".encode())
    job.log.flush()
    job.start = time.perf_counter()
    job.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=child_env(cache), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    if cpus:  # set before the child starts a thread (its Python is still starting), which inherit it
        with contextlib.suppress(OSError):  # it may have exited already
            os.sched_setaffinity(job.proc.pid, cpus)
    job.record["pid"] = job.proc.pid
    write_record(job.folder, job.record)


def _consume(job: _Job, data: bytes, bar: Progress) -> None:
    """Appends ``data`` to the chapter's log; each complete PASS/FAIL line advances the bar."""
    job.log.write(data)
    job.log.flush()
    text = job.pending + data
    *lines, job.pending = re.split(rb"[\r\n]", text)
    for raw in lines:
        _claim_line(job, raw, bar)


def _claim_line(job: _Job, raw: bytes, bar: Progress) -> None:
    """A PASS/FAIL line of the chapter: shown above the bar, which it advances."""
    m = CLAIM_LINE.match(raw.decode(errors="replace"))
    if m:
        job.claims_seen += 1
        bar.line(f"{job.chapter.name}: {m.group(1)}  {m.group(2)}")
        if job.counted < len(job.chapter.claims):
            job.counted += 1
            bar.advance(1)


def _wait(proc: subprocess.Popen) -> tuple[int, float | None]:
    """Waits for ``proc``; returns its exit status as Popen gives it (minus the signal's number when killed by
    one) and the CPU seconds (user + system) it used, where the platform reports them."""
    if not hasattr(os, "wait4"):
        return proc.wait(), None
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # already reaped
        return proc.wait(), None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _finish(job: _Job, stopped_by: int | None) -> Outcome:
    code, cpu = _wait(job.proc)
    seconds = time.perf_counter() - job.start
    job.log.write(f"===== exit status {code} after {seconds:.1f} s\n".encode())
    job.log.close()
    results = job.folder / RESULTS
    fresh = results.is_file() and results.stat().st_mtime >= time.time() - seconds - 1
    if code == 0 and fresh:
        status = "passed"
    elif code == 1 and fresh:
        status = "claims failed"
    elif stopped_by is not None or code in (-2, -15, -1, 129, 130, 143):
        status = "interrupted"
    else:
        status = "error"
    job.record.update(status=status, seconds=seconds, **{"cpu seconds": cpu, "exit code": code}, pid=None,
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), claims=job.claims_seen)
    write_record(job.folder, job.record)
    return Outcome(job.chapter, job.folder, status, seconds, exit_code=code, cpu_seconds=cpu)
