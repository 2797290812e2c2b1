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


def cpu_facts() -> dict:
    """The CPU this runs on, from ``/proc/cpuinfo`` (Linux; empty elsewhere): model name,
    vendor family/model, the ISA extensions that matter for XLA-CPU and PyTorch kernels,
    and the cores this process may use."""
    import os

    facts = {"cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return facts
    first = text.split("\n\n")[0]
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    isa = [name for name, flag in (("AVX2", "avx2"), ("FMA", "fma"), ("AVX-512F", "avx512f"),
                                   ("AVX-512 BF16", "avx512_bf16"), ("AVX-512 VNNI", "avx512_vnni"),
                                   ("AMX-BF16", "amx_bf16"), ("AMX-TILE", "amx_tile")) if flag in flags]
    facts.update(model_name=fields.get("model name", "?"), family=fields.get("cpu family", "?"),
                 model=fields.get("model", "?"), isa=isa)
    return facts


def machine_line() -> str:
    """One line saying where a benchmark ran: CPU (model name, family/model, ISA), cores,
    jax/jaxlib (and torch, if installed) versions and the XLA flags in force. Imports JAX."""
    import importlib.metadata
    import os

    import jax

    cpu = cpu_facts()
    versions = [f"jax {jax.__version__}", f"jaxlib {importlib.metadata.version('jaxlib')}"]
    try:
        versions.append(f"torch {importlib.metadata.version('torch')}")
    except importlib.metadata.PackageNotFoundError:
        pass
    devices = jax.devices()
    device = (f"{len(devices)} x {devices[0].device_kind}" if devices[0].platform != "cpu" else "CPU backend")
    return (f"machine: {cpu.get('model_name', '?')} (family {cpu.get('family', '?')}, model {cpu.get('model', '?')}; "
            f"{', '.join(cpu.get('isa', [])) or 'no AVX2'}), {cpu['cores']} cores; {device}; {', '.join(versions)}; "
            f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(none)'}")


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
    state = create_state(lambda r: language_model.init_params(model, r), config)
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    return jax.jit(make_train_step(language_model.make_loss_fn(model), schedule), donate_argnums=0), state


def random_lm_batch(config: ml_collections.ConfigDict, rng: np.random.Generator) -> dict:
    """``{"inputs", "targets"}``: ``int32[B, T]`` random token ids, targets shifted by one."""
    B, T = config.train.batch_size, config.model.max_len
    d = rng.integers(0, config.model.vocab_size, (B, T + 1)).astype(np.int32)
    return {"inputs": d[:, :-1], "targets": d[:, 1:]}
