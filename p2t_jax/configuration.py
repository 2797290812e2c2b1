"""Loading ``get_config(arg)`` files and applying ``--config.a.b=value`` overrides.

A config file is a Python file with ``get_config(arg: str | None) -> ConfigDict``; it is
named on the command line as ``path/to/file.py:arg`` (``arg`` picks a variant such as
``small`` or ``smoke``). Overrides are applied with the type of the existing field, so a
typo or a wrong type is caught before anything compiles.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections

# Groups with these names take keys they do not hold yet (``--config.optim.kwargs.b3=0.01``): the
# keyword arguments of a function chosen by another field, checked by the code that calls it.
OPEN_GROUPS = ("kwargs",)


class ConfigError(ValueError):
    """A bad config value, key, variant or file: its message is one sentence for the user."""


REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _resolve_path(path: str) -> pathlib.Path:
    candidates = [pathlib.Path(path)]
    if not path.endswith(".py"):
        candidates.append(pathlib.Path(path + ".py"))
        candidates.append(REPO_ROOT / "configs" / (path + ".py"))
    candidates.append(REPO_ROOT / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file '{path}' does not exist (give a path such as configs/shakespeare.py:small).")


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads ``file.py[:arg]`` and returns ``get_config(arg)``.

    Args:
        spec: ``path/to/config.py`` or ``path/to/config.py:variant``; a bare name such as
            ``shakespeare:small`` is looked up in the repository's ``configs/`` folder.

    Returns:
        The ConfigDict, locked so that unknown keys cannot be added by accident.
    """
    path, _, arg = spec.partition(":")
    file = _resolve_path(path)
    module_spec = importlib.util.spec_from_file_location(f"p2t_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # a broken config file is the user's input, not our crash
        raise ConfigError(f"config file '{file}' failed to load: {type(e).__name__}: {e}.") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file '{file}' has no get_config(arg) function.")
    try:
        config = module.get_config(arg or None)
    except Exception as e:
        raise ConfigError(f"config '{spec}' cannot be built: {e}.") from e
    config.lock()
    return config


def _parse_value(text: str, current: Any, key: str) -> Any:
    """Parses ``text`` into the type of ``current`` (the field's present value)."""
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key '{key}' takes true or false, not '{text}'.")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"config key '{key}' takes an integer, not '{text}'.") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"config key '{key}' takes a number, not '{text}'.") from None
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConfigError(f"config key '{key}' takes a tuple such as (1, -1, 1), not '{text}'.") from None
        if isinstance(value, (int, float)):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"config key '{key}' takes a tuple such as (1, -1, 1), not '{text}'.")
        return type(current)(value)
    if current is None:
        if text.lower() == "none":
            return None
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return text


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates ``--config.KEY=VALUE`` (or ``--config.KEY VALUE``) arguments from the rest.

    Returns:
      (the other arguments, in order; the overrides as ``KEY=VALUE`` strings, in order).
    """
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        item = argv[i]
        if item.startswith("--config."):
            item = item[len("--config."):]
            if "=" not in item and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                item, i = f"{item}={argv[i + 1]}", i + 1
            overrides.append(item)
        else:
            rest.append(item)
        i += 1
    return rest, overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Applies ``a.b=value`` strings to ``config`` in place, typed by the existing field.

    Raises:
        ConfigError: for an unknown key, a malformed override or a value of the wrong type.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"config override '{item}' is not of the form --config.key=value.")
        node = config
        parts = key.split(".")
        for depth, part in enumerate(parts):
            known = sorted(node.keys())
            if part not in known and depth == len(parts) - 1 and depth > 0 and parts[depth - 1] in OPEN_GROUPS:
                with config.unlocked():
                    node[part] = _parse_value(text, None, key)
                break
            if part not in known:
                where = ".".join(parts[:depth]) or "the top level"
                raise ConfigError(f"unknown config key '{key}': '{part}' is not one of {', '.join(known)} at {where}.")
            if depth < len(parts) - 1:
                node = node[part]
                if not isinstance(node, ml_collections.ConfigDict):
                    raise ConfigError(f"unknown config key '{key}': '{'.'.join(parts[:depth + 1])}' is a value, not a group.")
        leaf = parts[-1]
        if len(parts) > 1 and parts[-2] in OPEN_GROUPS and leaf in node and node[leaf] is not None:
            with config.unlocked():  # an open group's value takes whatever type the text holds
                del node[leaf]
                node[leaf] = _parse_value(text, None, key)
            continue
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ConfigError(f"config key '{key}' is a group; set one of its fields, e.g. {key}.{sorted(current.keys())[0]}.")
        value = _parse_value(text, current, key)
        with config.unlocked():
            try:
                node[leaf] = value
            except TypeError as e:
                raise ConfigError(f"config key '{key}' cannot take '{text}': {e}.") from None
    return config


# Fields that moved: (group, key) in a saved config -> where they live now.
MOVED = {("model", "dtype"): ("precision", "compute")}


def upgrade_saved(saved: dict) -> dict:
    """A saved config (e.g. a run's config.json) with fields that moved (:data:`MOVED`) in
    their new place, unless that place is already set; ``saved`` itself is not changed."""
    saved = {k: dict(v) if isinstance(v, dict) else v for k, v in saved.items()}
    for (group, key), (new_group, new_key) in MOVED.items():
        if isinstance(saved.get(group), dict) and key in saved[group]:
            value = saved[group].pop(key)
            target = saved.setdefault(new_group, {})
            if isinstance(target, dict):
                target.setdefault(new_key, value)
    return saved


def overlay(base: ml_collections.ConfigDict, saved: dict) -> ml_collections.ConfigDict:
    """``base`` with every value of ``saved`` (e.g. a run's config.json) written over it.

    Fields that ``saved`` lacks keep ``base``'s values, so a run saved before a field was
    added still loads; fields that moved are read from their old place (:func:`upgrade_saved`);
    JSON lists become tuples where ``base`` holds a tuple.
    """
    saved = upgrade_saved(saved)
    with base.unlocked():
        for key, value in saved.items():
            current = base.get(key)
            if isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
                overlay(current, value)
            elif isinstance(current, tuple) and isinstance(value, list):
                base[key] = _as_tuple(value)
            else:
                try:
                    base[key] = value
                except TypeError:  # the field changed type since the run was saved
                    del base[key]
                    base[key] = value
    return base


def _as_tuple(value):
    return tuple(_as_tuple(v) if isinstance(v, list) else v for v in value)


def require(condition: bool, message: str) -> None:
    """Raises ``ConfigError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def _value(config: ml_collections.ConfigDict, key: str):
    """The value at dotted ``key``."""
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def require_positive(config: ml_collections.ConfigDict, *keys: str) -> None:
    """Every dotted key in ``keys`` must hold a number > 0."""
    for key in keys:
        value = _value(config, key)
        require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                        f"config key '{key}' must be a positive number, got {value!r}.")


def require_choice(config: ml_collections.ConfigDict, key: str, choices: Iterable[str]) -> None:
    """The dotted ``key`` must hold one of ``choices``."""
    value = _value(config, key)
    choices = tuple(choices)
    require(value in choices, f"config key '{key}' must be one of {', '.join(map(str, choices))}, got {value!r}.")


def require_names(config: ml_collections.ConfigDict, key: str, allowed: Iterable[str], noun: str) -> tuple:
    """The dotted ``key`` must hold a non-empty sequence of names from ``allowed`` (each a ``noun``); returns it."""
    names, allowed = tuple(_value(config, key)), tuple(allowed)
    require(len(names) > 0, f"config key '{key}' must name at least one {noun}.")
    for name in names:
        require(name in allowed, f"config key '{key}' holds '{name}'; allowed {noun}s are {', '.join(allowed)}.")
    return names


def to_dict(config: ml_collections.ConfigDict) -> dict:
    """A plain, JSON-ready dict of ``config``."""
    return config.to_dict()
