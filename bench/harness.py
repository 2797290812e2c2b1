"""What the benchmark scripts share: the config from their command line, the library's jitted
train steps (language model, image classifier) and random batches for them, and the
alternating rounds of contenders in their own worker processes.

Importing it does not import JAX (so a script can set up malloc first, see
:mod:`p2t_jax.host_memory`); the train-step functions do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def image_train_step(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
    """(the library's train step for the config's image classifier, jitted with the state donated; its state).

    The image shape is the dataset's (``data.name``); nothing is loaded.
    """
    import copy

    import jax

    from p2t_jax.data.image_datasets import IMAGE_SHAPES
    from p2t_jax.optim.chains import make_optimizer
    from p2t_jax.tasks import image_classification as ic
    from p2t_jax.training.loop import create_state
    from p2t_jax.training.steps import make_train_step

    config = copy.deepcopy(config)
    config.train.num_steps = config.train.num_steps or 1000  # epochs need the data; a schedule needs a length
    model = ic.make_model(config)
    shape = IMAGE_SHAPES[config.data.name]
    state = create_state(lambda r: ic.init_variables(model, shape, r), config)
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    loss_fn = ic.make_loss_fn(model, config.loss.label_smoothing, config.loss.l2)
    return jax.jit(make_train_step(loss_fn, schedule), donate_argnums=0), state


def random_image_batch(config: ml_collections.ConfigDict, rng: np.random.Generator) -> dict:
    """``{"image": float32[B, H, W, C] in [0, 1), "label": int32[B]}`` of the config's dataset shape."""
    from p2t_jax.data.image_datasets import IMAGE_SHAPES

    B = config.train.batch_size
    return {"image": rng.random((B,) + IMAGE_SHAPES[config.data.name], np.float32),
            "label": rng.integers(0, config.model.num_classes, B).astype(np.int32)}


def is_image_config(config: ml_collections.ConfigDict) -> bool:
    """True for an image-classification config, False for a language model."""
    from p2t_jax.tasks import task_name

    return task_name(config) == "image_classification"


def train_step_and_batch(config: ml_collections.ConfigDict, rng: np.random.Generator) -> tuple[Any, Any, dict]:
    """(jitted train step, state, one random batch) for the config's task."""
    if is_image_config(config):
        step, state = image_train_step(config)
        return step, state, random_image_batch(config, rng)
    step, state = lm_train_step(config)
    return step, state, random_lm_batch(config, rng)


def serve(run: Callable[[int], list[float]], facts: dict) -> None:
    """A worker's side of :func:`alternate`: warms up with ``run(10)``, prints ``facts`` as a JSON line,
    then answers each ``run N`` line on stdin with the ms of N steps and the process's user and
    sys CPU ms per step (sys: the kernel's share, page faults and the like)."""
    run(10)  # warm-up
    print(json.dumps(facts), flush=True)
    for line in sys.stdin:
        if not line.startswith("run "):
            break
        n, before = int(line.split()[1]), os.times()
        times = run(n)
        after = os.times()
        print(json.dumps({"ms": times, "user_ms": 1000 * (after.user - before.user) / n,
                          "sys_ms": 1000 * (after.system - before.system) / n}), flush=True)


def alternate(contenders: dict[str, tuple[list[str], dict]], rounds: int, steps: int,
              cwd: Path = ROOT) -> tuple[dict, dict, dict]:
    """Times contenders, each in its own worker process, in alternating rounds.

    Two thread pools in one process steal each other's cores, so each contender runs alone
    in a worker (started one at a time, so each builds and compiles alone); each round asks
    every worker in turn for ``steps`` steps, with a pause between, so all see the same machine.

    Args:
      contenders: name -> (the worker's command line, extra environment variables); the
        worker calls :func:`serve`.

    Returns:
      ``(facts, times, cpu)``: per name, the worker's facts, every step's ms, and per round
      its (user, sys) CPU ms per step.
    """
    procs, facts, times, cpu = {}, {}, {}, {}
    for name, (cmd, env) in contenders.items():
        procs[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd,
                                       env=dict(os.environ, **env))
        line = procs[name].stdout.readline()
        if not line:
            sys.exit(f"error: the {name} worker failed to start (its error is printed above).")
        facts[name], times[name], cpu[name] = json.loads(line), [], []
    for _ in range(rounds):
        for name, proc in procs.items():
            time.sleep(0.5)  # let the other worker's threads go idle
            proc.stdin.write(f"run {steps}\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            times[name] += answer["ms"]
            cpu[name].append((answer["user_ms"], answer["sys_ms"]))
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    return facts, times, cpu
