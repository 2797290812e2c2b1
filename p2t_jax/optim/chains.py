"""The optimiser built from ``config.optim``: one path for ``p2t train``, ``p2t eval``, the
experiments and sweeps.

Three ways to describe it, checked before anything compiles (ConfigError, one sentence):

* **A named optimiser** (``optim.name``, default ``"adamw"``): any of :data:`OPTIMIZERS`,
  which are Optax's optimisers (adamw, adam, sgd, lion, adafactor, rmsprop, adagrad, nadam,
  ...) plus ``momentum`` and ``nesterov``. The classic seven of :mod:`p2t_jax.optim.scratch`
  (sgd, momentum, nesterov, rmsprop, adam, adamw, lion) read the shared fields ``optim.b1``,
  ``b2``, ``eps``, ``momentum``, ``rms_decay`` and ``weight_decay`` and may use the
  hand-written implementation (``optim.implementation = "scratch"``); every other one starts
  from Optax's defaults. Any further hyperparameter of the optimiser's Optax function goes
  in the open group ``optim.kwargs`` (``--config.optim.kwargs.nesterov=true``,
  ``--config.optim.kwargs.decay_rate=0.8``), checked against that function's signature and
  the type of its default. ``optim.grad_clip_norm > 0`` puts ``clip_by_global_norm`` first.
* **A declarative chain** (``optim.chain``, a tuple of ``(transform name, kwargs)`` pairs, or
  bare names): each resolved against ``optax`` (``clip_by_global_norm``, ``scale_by_adam``,
  ``add_decayed_weights``, ``scale_by_learning_rate``, ...); a ``learning_rate`` left out is
  the configured schedule, and a mask given by name (:data:`MASKS`, e.g. ``"matrices"``) is
  that mask. The chain is the whole optimiser: ``optim.name`` and its fields are unused.
* **A factory** (``optim.factory = "module:function"``): ``function(config)`` returns any
  ``optax.GradientTransformation`` (or a ``(transformation, schedule)`` pair); a task module
  may define it. It sees ``config.train.num_steps`` as the schedule's horizon.

The schedule (:func:`make_schedule`) is ``optim.schedule``: ``"warmup_cosine"`` (default) or
``"constant"``. Every optimiser except the classic seven (whose optimiser state keeps its
shape, so runs saved before still resume) is wrapped in ``optax.inject_hyperparams``: its
learning rate and float hyperparameters live in the optimiser state, and the train step logs
them (:func:`p2t_jax.training.steps.injected_hyperparams`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax

from p2t_jax.configuration import ConfigError, require, require_choice
from p2t_jax.optim import scratch

CLASSIC = tuple(scratch.OPTIMIZERS)  # sgd, momentum, nesterov, rmsprop, adam, adamw, lion
# Optax functions that take learning_rate first but are not whole optimisers, or need more than
# (grads, state, params) in their update.
_NOT_OPTIMIZERS = ("lbfgs", "scale_by_learning_rate", "scale_by_rprop", "polyak_sgd")
IMPLEMENTATIONS = ("optax", "scratch")
SCHEDULES = ("warmup_cosine", "constant")
WITH_WEIGHT_DECAY = ("adamw", "lion")  # the classic optimisers whose update carries decoupled weight decay
# The shared fields each classic optimiser reads (besides learning_rate and weight_decay).
CLASSIC_FIELDS = {"sgd": (), "momentum": ("momentum",), "nesterov": ("momentum",), "rmsprop": ("rms_decay", "eps"),
                  "adam": ("b1", "b2", "eps"), "adamw": ("b1", "b2", "eps"), "lion": ("b1", "b2")}
_FIELD_TO_ARG = {"rms_decay": "decay"}  # shared field -> the Optax argument it sets
MASK_ARGS = ("mask", "weight_decay_mask", "trust_ratio_mask")


def decay_mask(params) -> dict:
    """True for matrices and embeddings (ndim >= 2), False for biases and norm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


MASKS: dict[str, Callable | None] = {"matrices": decay_mask, "all": None}


def _optax_optimizers() -> dict[str, Callable[..., optax.GradientTransformation]]:
    found = {}
    for name in dir(optax):
        fn = getattr(optax, name)
        if name.startswith("_") or name in _NOT_OPTIMIZERS or not callable(fn) or inspect.isclass(fn):
            continue
        try:
            params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            continue
        if params and params[0] == "learning_rate":
            found[name] = fn
    return found


OPTAX_OPTIMIZERS = _optax_optimizers()
OPTIMIZERS = tuple(sorted(set(OPTAX_OPTIMIZERS) | set(CLASSIC)))


# ---- checking keyword arguments against an Optax function -------------------------------------

def _signature(fn: Callable) -> inspect.Signature:
    return inspect.signature(fn)


def _type_name(default: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(type(default),
                                                                                           type(default).__name__)


def _check_kwargs(where: str, label: str, fn: Callable, kwargs: dict, *, fill: tuple[str, ...] = ()) -> dict:
    """``kwargs`` checked against ``fn``'s signature: known names, values of the default's type,
    named masks resolved; the names in ``fill`` may be missing (the caller fills them).

    Returns the kwargs to call ``fn`` with. Raises ConfigError naming ``where`` (a config key).
    """
    params = _signature(fn).parameters
    accepts_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    out = {}
    for key, value in kwargs.items():
        if key not in params and not accepts_any:
            allowed = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            raise ConfigError(f"config key '{where}' gives '{key}', which {label} does not take; it takes "
                              f"{', '.join(allowed) or 'no arguments'}.")
        default = params[key].default if key in params else inspect.Parameter.empty
        if key in MASK_ARGS and isinstance(value, str):
            require(value in MASKS, f"config key '{where}' names mask '{value}' for {key}; the named masks are "
                                    f"{', '.join(MASKS)}.")
            value = MASKS[value]
        elif isinstance(default, bool):
            require(isinstance(value, bool), f"config key '{where}' gives {key}={value!r}; {label} takes true or "
                                             f"false there.")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if isinstance(default, float):
                require(numeric, f"config key '{where}' gives {key}={value!r}; {label} takes a number there.")
                value = float(value)
            else:
                require(numeric or value is None,
                        f"config key '{where}' gives {key}={value!r}; {label} takes {_type_name(default)} there.")
        out[key] = value
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in out
               and n not in fill and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    require(not missing, f"config key '{where}' must give {', '.join(missing)} for {label}.")
    return out


def _inject(fn: Callable, kwargs: dict) -> optax.GradientTransformation:
    """``fn(**kwargs)`` under ``optax.inject_hyperparams`` with its float and schedule arguments
    injected (so they are in the optimiser state and logged); the rest stay static."""
    dynamic = [k for k, v in kwargs.items() if (isinstance(v, float) or callable(v)) and k not in MASK_ARGS]
    if not dynamic:
        return fn(**kwargs)
    # Everything else stays static, also the defaults left out (inject_hyperparams fills them in).
    static = [k for k in _signature(fn).parameters if k not in dynamic]
    return optax.inject_hyperparams(fn, static_args=static)(**kwargs)


# ---- the schedule ---------------------------------------------------------------------------

def make_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """The learning rate per step.

    ``optim.schedule == "constant"``: ``optim.learning_rate`` throughout. Otherwise (the
    default) linear warm-up from 0 to ``optim.learning_rate`` over ``optim.warmup_steps``,
    then cosine decay to ``optim.end_learning_rate`` at ``optim.decay_steps`` (0 or less:
    ``num_steps``, the horizon: the training loop passes the one fixed at the run's first start).
    """
    kind = optim.get("schedule", "warmup_cosine")
    if kind not in SCHEDULES:
        raise ConfigError(f"config key 'optim.schedule' must be one of {', '.join(SCHEDULES)}, got {kind!r}.")
    if kind == "constant":
        return optax.constant_schedule(optim.learning_rate)
    decay_steps = optim.decay_steps if optim.decay_steps > 0 else num_steps
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=optim.learning_rate, warmup_steps=optim.warmup_steps,
        decay_steps=max(decay_steps, optim.warmup_steps + 1), end_value=optim.end_learning_rate)


# ---- a named optimiser ------------------------------------------------------------------------

def _kwargs(optim: ml_collections.ConfigDict) -> dict:
    kwargs = optim.get("kwargs", None)
    if kwargs is None:
        return {}
    return kwargs.to_dict() if isinstance(kwargs, ml_collections.ConfigDict) else dict(kwargs)


def _named(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimiser named by ``optim.name`` from the chosen implementation, on ``schedule``."""
    name = optim.get("name", "adamw")
    impl = optim.get("implementation", "optax")
    if name not in OPTIMIZERS:
        raise ConfigError(f"config key 'optim.name' must be one of {', '.join(OPTIMIZERS)} (Optax's optimisers "
                          f"and momentum, nesterov), got {name!r}.")
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"config key 'optim.implementation' must be one of {', '.join(IMPLEMENTATIONS)}, "
                          f"got {impl!r}.")
    extra = _kwargs(optim)
    weight_decay = optim.get("weight_decay", 0.0)
    if name in CLASSIC:
        if name not in WITH_WEIGHT_DECAY and weight_decay:  # in this order: a swept (traced) weight decay is no bool
            raise ConfigError(f"config key 'optim.weight_decay' is used by {' and '.join(WITH_WEIGHT_DECAY)} only; "
                              f"set it to 0 for {name} (an L2 penalty belongs in the loss).")
        fields = CLASSIC_FIELDS[name] + (("weight_decay",) if name in WITH_WEIGHT_DECAY else ())
        for key in extra:
            field = {v: k for k, v in _FIELD_TO_ARG.items()}.get(key, key)
            require(field not in fields, f"config key 'optim.kwargs.{key}' repeats optim.{field}; set "
                                         f"optim.{field} instead.")
        kw = {_FIELD_TO_ARG.get(f, f): optim.get(f, default) for f, default in
              (("momentum", 0.9), ("rms_decay", 0.9)) if f in fields}
        kw.update({f: optim[f] for f in ("b1", "b2", "eps") if f in fields})
        if name in WITH_WEIGHT_DECAY:
            kw.update(weight_decay=weight_decay, mask=decay_mask)
        if impl == "scratch":
            require(not extra, f"config key 'optim.kwargs' must be empty with optim.implementation=scratch "
                               f"(the hand-written {name} takes only the shared fields), got {sorted(extra)}.")
            return scratch.OPTIMIZERS[name](schedule, **kw)
        build = scratch.OPTAX_COUNTERPARTS[name]
        kw.update(_check_kwargs("optim.kwargs", f"optax.{name}", OPTAX_OPTIMIZERS.get(name, build), extra,
                                fill=("learning_rate",)))
        return build(schedule, **kw)
    require(impl == "optax", f"config key 'optim.implementation' is 'scratch', which has only {', '.join(CLASSIC)}; "
                             f"'{name}' is Optax's (set optim.implementation=optax).")
    fn = OPTAX_OPTIMIZERS[name]
    kw = _check_kwargs("optim.kwargs", f"optax.{name}", fn, extra, fill=("learning_rate",))
    params = _signature(fn).parameters
    if weight_decay:
        require("weight_decay" in params and "weight_decay" not in kw,
                f"config key 'optim.weight_decay' ({weight_decay}) is not used by optax.{name}; set it to 0"
                + (" (give optim.kwargs instead)." if "weight_decay" in kw else "."))
        kw["weight_decay"] = float(weight_decay)
        mask_arg = next((a for a in ("mask", "weight_decay_mask") if a in params), None)
        if mask_arg is not None and mask_arg not in kw:
            kw[mask_arg] = decay_mask
    return _inject(fn, dict(kw, learning_rate=schedule))


# ---- a declarative chain --------------------------------------------------------------------

def _entry(i: int, entry: Any) -> tuple[str, dict]:
    where = f"optim.chain[{i}]"
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, (tuple, list)) and len(entry) in (1, 2) and isinstance(entry[0], str):
        kwargs = entry[1] if len(entry) == 2 else {}
        if isinstance(kwargs, ml_collections.ConfigDict):
            kwargs = kwargs.to_dict()
        require(isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs),
                f"config key '{where}' must be (transform name, {{keyword: value}}), got {entry!r}.")
        return entry[0], dict(kwargs)
    raise ConfigError(f"config key '{where}' must be an Optax transform name or (name, {{keyword: value}}), "
                      f"got {entry!r}.")


def make_chain(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """``optax.chain`` of ``optim.chain``'s entries, each under ``inject_hyperparams`` where it has
    float or schedule arguments. A ``learning_rate`` left out is ``schedule``."""
    parts = []
    for i, entry in enumerate(optim.chain):
        name, kwargs = _entry(i, entry)
        where = f"optim.chain[{i}]"
        fn = getattr(optax, name, None) if not name.startswith("_") else None
        require(callable(fn) and not inspect.isclass(fn) and name not in ("chain", "named_chain"),
                f"config key '{where}' names '{name}', which is not an Optax transform (such as clip_by_global_norm, "
                f"scale_by_adam, add_decayed_weights, scale_by_learning_rate).")
        try:
            params = _signature(fn).parameters
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{where}' names '{name}', whose arguments cannot be read.") from None
        fill = ("learning_rate",) if "learning_rate" in params else ()
        kw = _check_kwargs(where, f"optax.{name}", fn, kwargs, fill=fill)
        if fill and "learning_rate" not in kw:
            kw["learning_rate"] = schedule
        try:
            tx = _inject(fn, kw)
        except Exception as e:  # noqa: BLE001 - a constructor's own refusal, as one sentence
            raise ConfigError(f"config key '{where}': optax.{name} refuses its arguments ({e}).") from None
        require(isinstance(tx, optax.GradientTransformation),
                f"config key '{where}' names '{name}', which does not return an Optax GradientTransformation.")
        parts.append(tx)
    require(bool(parts), "config key 'optim.chain' is empty.")
    return optax.chain(*parts)


# ---- a factory ------------------------------------------------------------------------------

def load_factory(spec: str) -> Callable:
    """The function named by ``"module:function"`` (ConfigError, one sentence, when there is none)."""
    module_name, sep, attr = spec.partition(":")
    require(bool(sep and module_name and attr),
            f"config key 'optim.factory' must be 'module:function', got {spec!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"config key 'optim.factory' is {spec!r}, whose module cannot be imported ({e}).") from None
    fn = getattr(module, attr, None)
    require(callable(fn), f"config key 'optim.factory' is {spec!r}, but module {module_name} has no function {attr}.")
    return fn


def _from_factory(spec: str, config: ml_collections.ConfigDict
                  ) -> tuple[optax.GradientTransformation, optax.Schedule | None]:
    out = load_factory(spec)(config)
    schedule = None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], optax.GradientTransformation):
        out, schedule = out
    require(isinstance(out, optax.GradientTransformation),
            f"config key 'optim.factory' ({spec}) returned a {type(out).__name__}, not an Optax GradientTransformation.")
    return out, schedule


# ---- the one entry point --------------------------------------------------------------------

def validate_optim(config: ml_collections.ConfigDict) -> None:
    """The checks of ``config.optim`` every task shares (ConfigError): the fields the schedule
    reads, and the optimiser, chain or factory itself, built once (nothing compiles)."""
    o = config.optim
    for key, choices in (("implementation", IMPLEMENTATIONS), ("schedule", SCHEDULES)):
        if key in o:
            require_choice(config, f"optim.{key}", choices)
    require(o.get("grad_clip_norm", 0.0) >= 0 and o.get("weight_decay", 0.0) >= 0 and o.get("warmup_steps", 0) >= 0,
            "config keys 'optim.grad_clip_norm', 'optim.weight_decay' and 'optim.warmup_steps' must be >= 0.")
    if "b1" in o and "b2" in o:
        require(0 <= o.b1 < 1 and 0 <= o.b2 < 1, "config keys 'optim.b1' and 'optim.b2' must be in [0, 1).")
    num_steps = config.train.num_steps if "train" in config and "num_steps" in config.train else 1
    make_optimizer(o, num_steps, config=config)


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int, *,
                   config: ml_collections.ConfigDict | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule | None]:
    """Builds the optimiser ``optim`` describes (see the module docstring).

    Args:
      optim: the ``config.optim`` group.
      num_steps: the schedule's horizon when ``optim.decay_steps`` is 0.
      config: the whole config, for ``optim.factory`` (which then sees ``train.num_steps`` set
        to ``num_steps``); without it the factory gets a config of ``optim`` and ``train.num_steps``.

    Returns:
      (the transformation, the learning-rate schedule it follows for logging; None when the
      learning rate is read from the optimiser state instead: chains and factories).
    """
    factory = optim.get("factory", "") or ""
    if factory:
        if config is None:
            config = ml_collections.ConfigDict({"optim": optim, "train": {"num_steps": num_steps}})
        else:
            config = ml_collections.ConfigDict(config.to_dict())
            with config.unlocked():
                config.train.num_steps = num_steps
        return _from_factory(factory, config)
    schedule = make_schedule(optim, num_steps)
    if optim.get("chain", ()):
        return make_chain(optim, schedule), None
    parts = []
    if optim.get("grad_clip_norm", 0.0) > 0:
        parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
    tx = _named(optim, schedule)
    parts.append(tx)
    logged = schedule if optim.get("name", "adamw") in CLASSIC else None  # the rest log it from their state
    return optax.chain(*parts), logged
