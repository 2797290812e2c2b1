"""What every page shares: its settings, bad input as a message on the page, numbers, figures, runs.

A page raises :class:`InputError` (or one of the library's own one-sentence errors) for
input it cannot use; :func:`show_page` turns that into a message under the widgets and the
server keeps serving. Nothing a user types reaches a traceback. A number out of its range
does not stop the page where it is typed: :func:`number` notes it and the page goes on
drawing its widgets (so they keep their values), then :func:`checked` raises it before
anything is computed from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pathlib
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from p2t_jax.configuration import ConfigError
from p2t_jax.data.cache import DataUnavailableError
from p2t_jax.runs import UsageError
from p2t_jax.training.checkpoint import CheckpointError


class InputError(ValueError):
    """A value typed on a page that cannot be used; the message is one sentence for the reader."""


# Errors whose message is written for the user: shown as they are.
USER_ERRORS = (InputError, ConfigError, UsageError, CheckpointError, DataUnavailableError)

_run = threading.local()  # per script run (Streamlit runs each session's script in its own thread)


def _pending() -> list[InputError]:
    """The out-of-range numbers of this script run not yet raised by :func:`checked`."""
    if not hasattr(_run, "pending"):
        _run.pending = []
    return _run.pending


def checked() -> None:
    """Raises the first number found out of range so far in this run (see :func:`number`); call it
    after the page's widgets are drawn and before computing from their values."""
    pending = _pending()
    if pending:
        first = pending[0]
        pending.clear()
        raise first


@contextlib.contextmanager
def errors_shown_here(container=None):
    """Shows a user error raised inside the block as a message where the block's output would be,
    then carries on with the rest of the page (its other sections and widgets)."""
    try:
        yield
    except USER_ERRORS as e:
        (container or st).error(str(e), icon=":material/error:")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the command line gives every page.

    Attributes:
      runs_dir: the folder of run folders (``p2t playground --runs``, default ``runs``).
      links: page name -> the app's ``st.Page``, for links between pages (empty when a page
        is rendered on its own, as in tests).
    """

    runs_dir: pathlib.Path
    links: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def show_page(render: Callable[[Settings], None], settings: Settings) -> None:
    """Runs one page's ``render``: bad input becomes one message on the page, never a traceback.

    Streamlit's own control flow (``st.stop``, ``st.rerun``) derives from ``BaseException``
    and passes through. Anything else is a defect of the page: it is reported in one line on
    the page and with its traceback on the server's stderr, and the server keeps serving.
    """
    _pending().clear()
    try:
        render(settings)
        checked()  # a page that did not call it still shows an out-of-range value
    except USER_ERRORS as e:
        st.error(str(e), icon=":material/error:")
    except Exception as e:  # noqa: BLE001 - a bug: one line here, the traceback in the server log
        traceback.print_exc(file=sys.stderr)
        st.error(f"This page failed ({type(e).__name__}: {e}); the traceback is in the server's log.",
                 icon=":material/bug_report:")


def layout(title: str, intro: str, widths: tuple[int, int] = (1, 3)):
    """The page's title and introduction, then two columns: ``(controls, output)``."""
    st.title(title)
    st.markdown(intro)
    return st.columns(list(widths), gap="large")


def number(label: str, value: float, *, low: float, high: float, integer: bool = False, key: str | None = None,
           help: str | None = None, container=None, low_inclusive: bool = True) -> float | int:
    """A number input whose value must lie in ``[low, high]`` (``(low, high]`` if not ``low_inclusive``).

    The widget itself takes any number, so a value typed outside the range reaches the page,
    which says so in a sentence naming the allowed range (rather than the browser silently
    clamping it). That sentence is raised by :func:`checked`, not here: the widgets below this
    one are still drawn and keep their values, and this call returns a stand-in inside the
    range (the nearest bound, or ``value``) for widgets whose range depends on it.
    """
    container = container or st
    step = 1 if integer else None
    raw = container.number_input(label, value=int(value) if integer else float(value), step=step,
                                 format=None if integer else "%g", key=key, help=help)
    ok = raw is not None and math.isfinite(raw) and (low <= raw if low_inclusive else low < raw) and raw <= high
    if not ok:
        bracket = "[" if low_inclusive else "("
        shown = (lambda v: f"{int(v):d}") if integer else (lambda v: f"{v:g}")
        got = int(raw) if integer and raw is not None and math.isfinite(raw) else raw
        _pending().append(InputError(f"{label} must be in {bracket}{shown(low)}, {shown(high)}], got {got}."))
        stand_in = value if raw is None or not math.isfinite(raw) else min(max(raw, low), high)
        raw = value if not low_inclusive and stand_in <= low else stand_in
    return int(raw) if integer else float(raw)


def figure(fig, container=None) -> None:
    """Shows a figure made by :mod:`p2t_jax.viz` (the shared style) as a PNG."""
    (container or st).pyplot(fig, width="stretch")


def missing(what: str, command: str) -> None:
    """Says that ``what`` is not there and which command makes it."""
    st.info(f"{what} Make it with:", icon=":material/info:")
    st.code(command, language="bash")
    st.caption("Or make every run folder the pages read at once, small: `p2t playground --make-runs` (the quick "
               "budget of `p2t reproduce`).")


def read_results(folder: pathlib.Path, names: tuple[str, ...] | None = None) -> dict[str, dict]:
    """The ``result.json`` of each run folder directly inside ``folder`` (as written by
    :func:`p2t_jax.tasks.image_classification.train_or_reuse`), by folder name, sorted;
    only folders in ``names`` when given. Unreadable files are skipped."""
    results = {}
    if not folder.is_dir():
        return results
    for path in sorted(folder.glob("*/result.json")):
        name = path.parent.name
        if names is not None and name not in names:
            continue
        try:
            results[name] = json.loads(path.read_text())
        except (OSError, ValueError):  # missing, not JSON, or not UTF-8
            continue
    return results


def folder_input(label: str, default: pathlib.Path, key: str) -> pathlib.Path:
    """A text input holding a folder path (default ``default``); an empty value is refused."""
    text = st.text_input(label, value=str(default), key=key).strip()
    if not text:
        raise InputError(f"{label} is empty; type a folder path.")
    return pathlib.Path(text).expanduser()


def newer_unreadable(workdir: str | pathlib.Path, step: int) -> str | None:
    """When a run was restored at ``step`` but holds newer checkpoints (which could not be read:
    the restore fell back to an older one), the sentence that says so on the page; else None."""
    from p2t_jax.training.checkpoint import Checkpoints

    checkpoints = Checkpoints(workdir, write=False)
    try:
        newer = [s for s in checkpoints.steps() if s > step]
    finally:
        checkpoints.close()
    if not newer:
        return None
    which = f"step {newer[-1]:,}" if len(newer) == 1 else f"steps {', '.join(f'{s:,}' for s in newer)}"
    return (f"The newest checkpoint{'s' if len(newer) > 1 else ''} of `{workdir}` ({which}) cannot be read; this page "
            f"shows step {step:,}, the newest that can (the reason is in the server's log).")


def warn_if_older(run: Mapping[str, Any]) -> None:
    """Shows the run's :func:`newer_unreadable` sentence, if any, as a warning on the page."""
    if run.get("older"):
        st.warning(run["older"], icon=":material/warning:")
