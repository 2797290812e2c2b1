"""Why and how a run stops before its last step: early stopping, signals, divergence, failed saves.

Every stop that is not the end of training raises a :class:`RunStopped` subclass whose
``exit_code`` the ``p2t`` command and the experiments exit with, after one sentence:

======  =====================================================================================
code    meaning
======  =====================================================================================
2       bad input (config, arguments, paths, data, an unreadable checkpoint): nothing written
3       :class:`Diverged`: a non-finite loss or gradient; nothing from that step was saved
4       :class:`SaveFailed`: a checkpoint or log could not be written (e.g. disk full); the
        last good checkpoint stands and no temporary folders are left
129     :class:`Interrupted` by SIGHUP (a closed terminal or SSH session); 130 by SIGINT
        (Ctrl-C); 143 by SIGTERM: the step in flight finished, and the state after it was saved
======  =====================================================================================

A second stopping signal aborts at once, with the same code and one line, no traceback;
after the first one the process keeps aborting quietly on any further one until it exits
(:func:`abort_on_further_signals`).

Early stopping (:class:`EarlyStopping`) is not a failure: the loop ends normally.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
from typing import Any


class RunStopped(Exception):
    """A run that stopped before its last step; ``str(e)`` is one sentence for the user."""

    exit_code = 1


class Diverged(RunStopped):
    """The loss or a gradient became NaN or infinite (``train.on_nonfinite = "stop"``)."""

    exit_code = 3


class SaveFailed(RunStopped):
    """A checkpoint or a log record could not be written."""

    exit_code = 4


class LogFailed(SaveFailed):
    """A metrics line or TensorBoard event could not be written; the loop adds which checkpoint stands."""


class Interrupted(RunStopped):
    """SIGINT, SIGTERM or SIGHUP arrived; the state after the step in flight was saved."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


@dataclasses.dataclass
class EarlyStopping:
    """Stop once the eval loss has not improved for ``patience`` evaluations (0: never).

    The counters travel with each checkpoint (:meth:`to_meta`), so a resumed run stops
    where the uninterrupted one would. A non-finite eval loss never counts as an improvement.
    """

    patience: int = 0
    best_eval_loss: float = math.inf
    evals_since_best: int = 0

    def update(self, eval_loss: float) -> bool:
        """Records one evaluation; returns whether it is the best so far."""
        if math.isfinite(eval_loss) and eval_loss < self.best_eval_loss:
            self.best_eval_loss, self.evals_since_best = eval_loss, 0
            return True
        self.evals_since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return bool(self.patience) and self.evals_since_best >= self.patience

    def to_meta(self) -> dict:
        best = None if math.isinf(self.best_eval_loss) else self.best_eval_loss
        return {"best_eval_loss": best, "evals_since_best": self.evals_since_best}

    @classmethod
    def from_meta(cls, patience: int, meta: dict | None) -> EarlyStopping:
        meta = meta or {}
        best = meta.get("best_eval_loss")
        return cls(patience, math.inf if best is None else best, meta.get("evals_since_best", 0))


class StopSignals:
    """While active, SIGINT, SIGTERM and SIGHUP ask the loop to stop at the next step boundary.

    The first signal sets :attr:`signum` (the loop finishes the step in flight, saves and
    raises :class:`Interrupted`); a second one ends the process at once with ``128 + signum``.
    Handlers are installed only in the main thread (elsewhere, e.g. under a web app, the
    loop runs without them) and the previous ones are restored on exit, unless a signal
    arrived: the process is then on its way out, and a further signal still aborts it at once
    (:func:`abort_on_further_signals`) instead of raising ``KeyboardInterrupt`` in its exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            os.write(2, f"\nsecond {signal.Signals(signum).name}: aborting now.\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        # os.write, not print: the handler may run while the main thread is inside a print.
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after the step in flight and saving "
                    f"(send it again to abort at once).\n".encode())

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.signum is not None and self._previous:  # stopping: a further signal aborts, quietly
            abort_on_further_signals(128 + self.signum)
        else:
            for s, previous in self._previous.items():
                signal.signal(s, previous)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None


def abort_on_further_signals(code: int) -> None:
    """From now on, SIGINT, SIGTERM or SIGHUP end the process at once with ``code`` and one line.

    For a command that is already stopping (after :class:`Interrupted`, or a Ctrl-C before
    training started): a further signal while it prints, closes files or runs the
    interpreter's exit handlers would otherwise end in a ``KeyboardInterrupt`` traceback
    ("Exception ignored in atexit callback"). Main thread only; elsewhere it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum, frame):
        os.write(2, f"\n{signal.Signals(signum).name} again: aborting now.\n".encode())
        os._exit(code)

    for s in StopSignals.SIGNALS:
        signal.signal(s, handle)
