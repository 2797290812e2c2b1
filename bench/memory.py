"""XLA's compiled memory for one train step, under each remat policy and gradient accumulation.

    python bench/memory.py [--config configs/shakespeare.py:gpu] [--remat none full dots_saveable]
                           [--accum 1 4] [KEY=VALUE ...]

For each ``model.remat`` policy and each ``train.grad_accum_steps``, lowers and compiles the
library's train step for the config's model on the default backend (nothing is allocated:
the state is abstract) and prints XLA's memory analysis: the temporary bytes the step needs
beside its arguments (parameters, optimiser state, batch) and outputs, and the compile time.
The figures are the compiler's for this backend; a GPU's or TPU's differ, the ratios carry.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2t_jax.host_memory import schedule_for_memory  # noqa: E402

schedule_for_memory()  # before JAX starts, as the p2t command does (p2t_jax.host_memory)

import harness  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402


def compiled_memory(config) -> tuple[dict, float]:
    """({"temp", "argument", "output"} bytes, compile seconds) of the config's train step."""
    from p2t_jax.tasks import language_model
    from p2t_jax.training.loop import create_state
    from p2t_jax.training.steps import make_train_step

    model = language_model.make_model(config)
    state = jax.eval_shape(lambda: create_state(lambda r: language_model.init_params(model, r), config))
    step = jax.jit(make_train_step(language_model.make_loss_fn(model),
                                   grad_accum_steps=config.train.grad_accum_steps), donate_argnums=0)
    batch = harness.random_lm_batch(config, np.random.default_rng(0))
    t0 = time.perf_counter()
    memory = step.lower(state, batch).compile().memory_analysis()
    seconds = time.perf_counter() - t0
    return {"temp": memory.temp_size_in_bytes, "argument": memory.argument_size_in_bytes,
            "output": memory.output_size_in_bytes}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shakespeare.py:gpu")
    parser.add_argument("--remat", nargs="+", default=["none", "full", "dots_saveable"])
    parser.add_argument("--accum", type=int, nargs="+", default=[1, 4])
    args, rest = parser.parse_known_args()
    print(harness.machine_line())
    print(f"config {args.config} {' '.join(rest)}; backend {jax.default_backend()}")
    print(f"{'remat':>14} {'accum':>5} {'temp MiB':>9} {'args MiB':>9} {'compile s':>9}")
    for remat in args.remat:
        for k in args.accum:
            config = harness.load(args.config, [*rest, f"model.remat={remat}", f"train.grad_accum_steps={k}"])
            memory, seconds = compiled_memory(config)
            print(f"{remat:>14} {k:>5} {memory['temp'] / 2**20:>9.1f} {memory['argument'] / 2**20:>9.1f} "
                  f"{seconds:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
