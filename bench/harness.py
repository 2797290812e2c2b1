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


def lm_train_step(config: ml_collections.ConfigDict, model: Any = None, abstract: bool = False) -> tuple[Any, Any]:
    """(the library's train step for ``model`` (default: the config's), jitted with the state donated; its state,
    or with ``abstract`` its shapes only: enough to lower the step, nothing allocated)."""
    import jax

    from p2t_jax.optim.chains import make_optimizer
    from p2t_jax.tasks import language_model
    from p2t_jax.training.loop import create_state
    from p2t_jax.training.steps import make_train_step

    model = language_model.make_model(config) if model is None else model
    create = lambda: create_state(lambda r: language_model.init_params(model, r), config)  # noqa: E731
    state = jax.eval_shape(create) if abstract else create()
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    step = make_train_step(language_model.make_loss_fn(model), schedule,
                           grad_accum_steps=config.train.get("grad_accum_steps", 1))
    return jax.jit(step, donate_argnums=0), state


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


# --- contenders in their own processes ------------------------------------------------------
# Two thread pools in one process steal each other's cores (bench/NOTES.md, change 6), so a
# bench runs each contender in a worker process of its own and alternates requests between
# them: the worker prints its facts as one JSON line, then answers each request line with
# one JSON line; the parent (``Worker``) sends the requests.


def serve(answer: Callable[[str], dict], facts: dict) -> None:
    """The worker's side: prints ``facts`` as a JSON line, then answers each line of stdin
    with ``answer(line)`` as a JSON line, until stdin closes or a line reads ``quit``."""
    print(json.dumps(facts), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line or line == "quit":
            break
        print(json.dumps(answer(line)), flush=True)


def cpu_timed(run: Callable[[int], list[float]], n: int) -> dict:
    """``{"ms": run(n), "user_ms", "sys_ms"}``: the n step times and the whole process's user
    (computing) and sys (kernel: page faults, ...) CPU milliseconds per step while they ran."""
    before = os.times()
    times = run(n)
    after = os.times()
    return {"ms": times, "user_ms": 1000 * (after.user - before.user) / n,
            "sys_ms": 1000 * (after.system - before.system) / n}


class Worker:
    """The parent's side: one contender in its own process, started with ``cmd``.

    Waits for the worker's facts line (``self.facts``); :meth:`ask` sends one request and
    returns the answer. Exits with one sentence if the worker dies (its own error has
    gone to stderr above).
    """

    def __init__(self, name: str, cmd: list[str], env: dict | None = None, cwd: Path | None = None):
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=cwd or ROOT, env=dict(os.environ, **(env or {})))
        self.facts = self._read("start")

    def _read(self, doing: str) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            sys.exit(f"error: the {self.name} worker failed to {doing} (exit {self.proc.returncode}; "
                     "its error is printed above).")
        return json.loads(line)

    def ask(self, request: str) -> dict:
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self._read(f"answer '{request}'")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def serve_steps(run: Callable[[int], list[float]], facts: dict, warmup: int = 10) -> None:
    """A step-timing worker: warms up with ``run(warmup)``, then :func:`serve` answering each
    ``run N`` request with :func:`cpu_timed` (``run(N)``'s step times and CPU ms per step)."""
    run(warmup)
    serve(lambda request: cpu_timed(run, int(request.split()[1])), facts)


def alternate(contenders: dict[str, tuple[list[str], dict]], rounds: int, steps: int,
              cwd: Path = ROOT, pause: float = 0.5) -> tuple[dict, dict, dict]:
    """Times step-timing workers (:func:`serve_steps`) in alternating rounds.

    Each contender is started one at a time (so each builds and compiles alone); each round asks
    every worker in turn for ``steps`` steps, pausing before each so the others' threads go idle.

    Args:
      contenders: name -> (the worker's command line, extra environment variables).

    Returns:
      ``(facts, times, cpu)``: per name, the worker's facts, every step's ms, and per round
      its (user, sys) CPU ms per step.
    """
    workers = {name: Worker(name, cmd, env, cwd) for name, (cmd, env) in contenders.items()}
    times = {name: [] for name in workers}
    cpu = {name: [] for name in workers}
    try:
        for _ in range(rounds):
            for name, w in workers.items():
                time.sleep(pause)
                answer = w.ask(f"run {steps}")
                times[name] += answer["ms"]
                cpu[name].append((answer["user_ms"], answer["sys_ms"]))
    finally:
        for w in workers.values():
            w.close()
    return {name: w.facts for name, w in workers.items()}, times, cpu
