"""A trained run folder, as the command line and the playground both read it.

* :class:`UsageError` — bad input from a user (an argument, a path, a run folder that holds
  no run); its message is one sentence. ``p2t`` prints it and exits 2; a playground page
  shows it under its widgets.
* :func:`load_run` — the config of an existing run folder: its task's defaults, overwritten
  by the ``config.json`` the run saved.

Nothing here imports JAX at import time: ``p2t`` imports this module before it sets up the
host allocator (:mod:`p2t_jax.host_memory`).
"""

from __future__ import annotations

import json
import pathlib


class UsageError(Exception):
    """Bad user input (an argument, a path, a run folder); the message is one sentence for the user."""


def load_run(workdir: str):
    """The config (``ml_collections.ConfigDict``) of the run in ``workdir``: its task's defaults,
    overwritten by what the run saved in ``config.json``.

    Raises:
      UsageError: ``workdir`` is not a folder, or its ``config.json`` is missing, not JSON or
        not a JSON object.
    """
    from p2t_jax import configuration, tasks

    path = pathlib.Path(workdir)
    if not path.is_dir():
        raise UsageError(f"workdir '{workdir}' does not exist; train a run there first with `p2t train`.")
    config_path = path / "config.json"
    if not config_path.exists():
        raise UsageError(f"workdir '{workdir}' has no config.json, so it holds no run of `p2t train`.")
    try:
        saved = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError(f"workdir '{workdir}' has a config.json that is not valid JSON.") from None
    if not isinstance(saved, dict):
        raise UsageError(f"workdir '{workdir}' has a config.json that does not hold a config.")
    base = tasks.module(tasks.task_name(saved)).default_config()
    return configuration.overlay(base, saved)
