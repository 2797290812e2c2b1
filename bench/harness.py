"""What the benchmark scripts share: the config from their command line, the library's jitted
language-model train step, and random batches for it.

Importing it does not import JAX (so a script can set up malloc first, see
:mod:`p2t_jax.host_memory`); :func:`lm_train_step` does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from p2t_jax.configuration import apply_overrides, load_config  # noqa: E402


def config_overrides(rest: list[str]) -> list[str]:
    """The ``KEY=VALUE`` of each ``--config.KEY=VALUE`` among unparsed command-line arguments."""
    return [a[len("--config."):] for a in rest if a.startswith("--config.")]


def load(config_arg: str, overrides: list[str]) -> ml_collections.ConfigDict:
    """``load_config(config_arg)`` with ``overrides`` (``KEY=VALUE``) applied."""
    return apply_overrides(load_config(config_arg), overrides)


def lm_train_step(config: ml_collections.ConfigDict, model: Any = None) -> tuple[Any, Any]:
    """(the library's train step for ``model`` (default: the config's), jitted with the state donated; its state)."""
    import jax

    from p2t_jax.optim.chains import make_optimizer
    from p2t_jax.tasks import language_model
    from p2t_jax.training.loop import create_state
    from p2t_jax.training.steps import make_train_step

    model = language_model.make_model(config) if model is None else model
    state = create_state(model.apply, lambda r: language_model.init_params(model, r), config)
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    return jax.jit(make_train_step(language_model.make_loss_fn(model), schedule), donate_argnums=0), state


def random_lm_batch(config: ml_collections.ConfigDict, rng: np.random.Generator) -> dict:
    """``{"inputs", "targets"}``: ``int32[B, T]`` random token ids, targets shifted by one."""
    B, T = config.train.batch_size, config.model.max_len
    d = rng.integers(0, config.model.vocab_size, (B, T + 1)).astype(np.int32)
    return {"inputs": d[:, :-1], "targets": d[:, 1:]}
