"""What every page shares: its settings, bad input as a message on the page, numbers, figures, runs.

A page raises :class:`InputError` (or one of the library's own one-sentence errors) for
input it cannot use; :func:`show_page` turns that into a message under the widgets and the
server keeps serving. Nothing a user types reaches a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
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
    try:
        render(settings)
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
    which stops with a sentence naming the allowed range (rather than the browser silently
    clamping it).
    """
    container = container or st
    step = 1 if integer else None
    raw = container.number_input(label, value=int(value) if integer else float(value), step=step,
                                 format=None if integer else "%g", key=key, help=help)
    ok = raw is not None and math.isfinite(raw) and (low <= raw if low_inclusive else low < raw) and raw <= high
    if not ok:
        bracket = "[" if low_inclusive else "("
        raise InputError(f"{label} must be in {bracket}{low:g}, {high:g}], got {raw}.")
    return int(raw) if integer else float(raw)


def figure(fig, container=None) -> None:
    """Shows a figure made by :mod:`p2t_jax.viz` (the shared style) as a PNG."""
    (container or st).pyplot(fig, width="stretch")


def missing(what: str, command: str) -> None:
    """Says that ``what`` is not there and which command makes it."""
    st.info(f"{what} Make it with:", icon=":material/info:")
    st.code(command, language="bash")


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
