"""Tasks: a chapter's model, loss and data, packaged for the one training loop.

A config names its task in its top-level ``task`` field; :data:`REGISTRY` maps that name to
a module of this package, which defines:

* ``default_config() -> ConfigDict``: every field at its default (``task`` set to the name);
* ``validate(config) -> None``: raises ``ConfigError`` (one sentence) for a bad value;
* ``build(config) -> (Task, config)``: loads the data and returns the loop's
  :class:`~p2t_jax.training.loop.Task` and the config the loop runs with (e.g. with step
  counts resolved from epochs);
* optionally ``CAN_SAMPLE = True``: the task generates text (``p2t sample``), with
  ``decoder(config) ->`` :class:`p2t_jax.models.decoder.Decoder` (its model, context and, where the
  model has one, the key/value cache) and optionally ``load_tokenizer(workdir)`` (default: the
  character tokenizer :mod:`p2t_jax.tasks.language_model` saves).

``p2t train``, ``p2t eval`` and the experiments reach every task through :func:`module`
and :func:`build`; adding a task is one module here and one line in :data:`REGISTRY`. A
task that lives outside this package is named by its module path instead
(``config.task = "my_project.my_task"``); ``docs/extending.md`` walks through one.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import ml_collections

from p2t_jax.configuration import ConfigError

REGISTRY: dict[str, str] = {
    "language_model": "p2t_jax.tasks.language_model",
    "image_classification": "p2t_jax.tasks.image_classification",
    "memory": "p2t_jax.tasks.memory",
    "reorder": "p2t_jax.tasks.reorder",
    "pointer": "p2t_jax.tasks.pointer",
}
DEFAULT_TASK = "language_model"  # runs saved before configs named their task


def task_name(config: ml_collections.ConfigDict | dict) -> str:
    """The task ``config`` names (:data:`DEFAULT_TASK` when it names none)."""
    return config.get("task", DEFAULT_TASK) or DEFAULT_TASK


def module(name: str) -> ModuleType:
    """The task module registered as ``name``, or the module at the dotted path ``name``.

    Raises:
      ConfigError: an unknown name, or a module path that cannot be imported or is not a task.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"config key 'task' must name a task, got {name!r}.")
    if name in REGISTRY:
        return importlib.import_module(REGISTRY[name])
    try:
        found = importlib.import_module(name)
    except ImportError as e:
        if getattr(e, "name", None) == name.split(".")[0]:  # no such module at all
            raise ConfigError(f"config key 'task' is {name!r}; the known tasks are {', '.join(sorted(REGISTRY))}, "
                              f"or the import path of a task module of your own.") from None
        raise ConfigError(f"config key 'task' is {name!r}, which cannot be imported ({e}).") from None
    missing = [f for f in ("default_config", "validate", "build") if not callable(getattr(found, f, None))]
    if missing:
        raise ConfigError(f"config key 'task' names module {name!r}, which lacks {', '.join(missing)} "
                          f"(see p2t_jax.tasks).")
    return found


def build(config: ml_collections.ConfigDict):
    """``(Task, config)`` for the task ``config`` names, after its checks."""
    task_module = module(task_name(config))
    task_module.validate(config)
    return task_module.build(config)


def can_sample(name: str) -> bool:
    return bool(getattr(module(name), "CAN_SAMPLE", False))
