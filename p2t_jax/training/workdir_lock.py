"""One writer per workdir: an exclusive operating-system lock held for the whole of a run.

A run (``p2t train``, an experiment, a sweep) holds ``fcntl.flock`` on ``<workdir>/.p2t-lock``
from before it reads the workdir until it ends. The kernel drops the lock with the process,
so a run killed with ``kill -9`` never leaves a stale lock behind: the file may stay, but
the next run takes the lock at once. A second run on the same workdir is refused with
:class:`WorkdirBusy` (one sentence naming the holder's process id, exit 2 in ``p2t``)
before it reads or writes anything there.

The lock file holds the holder's process id. It is created when the lock is taken and
removed when it is released; a workdir that did not exist is created to hold it and is
removed again when the run wrote nothing into it (a refused or failed start leaves no new
files). Readers (``p2t eval``, ``p2t sample``) take no lock: they read the newest complete
checkpoint, which a writer never changes in place.

Locks nest within one process: an experiment holds its workdir while the training loop it
calls takes the same one again (no-op), or a folder below it (a lock of its own).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pathlib
import time
from collections.abc import Iterator

from p2t_jax.configuration import ConfigError

LOCK_NAME = ".p2t-lock"
_held: dict[str, int] = {}  # real path of a workdir this process holds -> nesting depth


class WorkdirBusy(ConfigError):
    """Another process holds the workdir's lock; the message names it."""


def _holder(path: pathlib.Path) -> str:
    """``process 1234`` from the lock file, or a vaguer phrase while the holder has not written it yet."""
    for _ in range(20):
        try:
            text = path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        if text.isdigit():
            return f"process {text}"
        time.sleep(0.05)
    return "another process"


def _make_folders(workdir: pathlib.Path) -> list[pathlib.Path]:
    """Creates ``workdir`` and missing parents; returns those this call created, deepest last."""
    missing = []
    for folder in [workdir, *workdir.parents]:
        if folder.exists():
            break
        missing.append(folder)
    created = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        created.append(folder)
    return created


def _remove_if_empty(folders: list[pathlib.Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def hold(workdir: str | pathlib.Path, *, enabled: bool = True) -> Iterator[bool]:
    """Holds ``workdir``'s lock for the body of the ``with``; yields whether it created ``workdir``.

    Args:
      workdir: the run folder; it (and missing parents) is created to hold the lock file.
      enabled: False does nothing (e.g. on the processes other than 0 of a multi-process run,
        which share process 0's workdir and lock).

    Raises:
      WorkdirBusy: another process holds the lock.
      ConfigError: the workdir cannot be created or written.
    """
    workdir = pathlib.Path(workdir)
    if not enabled:
        yield False
        return
    key = os.path.realpath(workdir)
    if key in _held:  # this process holds it already (an experiment around the loop)
        _held[key] += 1
        try:
            yield False
        finally:
            _held[key] -= 1
        return
    try:
        created = _make_folders(workdir.absolute())
    except OSError as e:
        raise ConfigError(f"workdir '{workdir}' cannot be written ({e.strerror or e}).") from None
    path = workdir / LOCK_NAME
    fd = None
    try:
        fd = _lock(workdir, path)
        _held[key] = 1
        try:
            yield bool(created)
        finally:
            del _held[key]
            with contextlib.suppress(OSError):
                path.unlink()  # while still holding it: a waiting opener then finds its file gone
    finally:
        if fd is not None:
            os.close(fd)
        _remove_if_empty(created)


def _lock(workdir: pathlib.Path, path: pathlib.Path) -> int:
    """Opens, locks and stamps the lock file; returns its descriptor."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise ConfigError(f"workdir '{workdir}' cannot be written ({e.strerror or e}).") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"workdir '{workdir}' cannot be locked ({e.strerror or e}).") from None
            raise WorkdirBusy(f"workdir '{workdir}' is in use by another run ({_holder(path)}); wait for it "
                              f"to end or choose another --workdir.") from None
        try:  # the holder before us may have removed the file between our open and our lock
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise ConfigError(f"workdir '{workdir}' cannot be written ({e.strerror or e}).") from None
        return fd
