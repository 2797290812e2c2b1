"""First-step compile time against depth, with and without ``scan_layers``; and the bf16 option.

    python bench/compile_time.py [--depths 2 4 8 16] [--config configs/shakespeare.py:nanogpt_cpu]

For each depth, lowers and compiles the library's train step for the config's model with
the blocks unrolled and with ``nn.scan``, and prints both compile times. Then times a few
steps in float32 and in bfloat16 compute (``precision.compute``) at the config's own depth.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from p2t_jax.host_memory import keep_freed_host_memory  # noqa: E402


def compiled_step(config):
    step, state = harness.lm_train_step(config)
    batch = harness.random_lm_batch(config, np.random.default_rng(0))
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    return compiled, state, batch, time.perf_counter() - t0


def main() -> None:
    keep_freed_host_memory()  # as the p2t command does
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shakespeare.py:nanogpt_cpu")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(harness.machine_line())
    print(f"config {args.config}")
    print("layers  compile unrolled  compile scan_layers")
    for depth in args.depths:
        row = []
        for scan in (False, True):
            config = harness.load(args.config, [f"model.num_layers={depth}", f"model.scan_layers={scan}"])
            row.append(compiled_step(config)[3])
        print(f"{depth:>6}  {row[0]:>14.2f} s  {row[1]:>17.2f} s")
    for dtype in ("float32", "bfloat16"):
        for scan in (False, True):
            config = harness.load(args.config, [f"precision.compute={dtype}", f"model.scan_layers={scan}"])
            compiled, state, batch, _ = compiled_step(config)
            times = []
            for i in range(args.steps + 5):
                t0 = time.perf_counter()
                state, metrics = compiled(state, batch)
                jax.block_until_ready(metrics["loss"])
                if i >= 5:
                    times.append(1000 * (time.perf_counter() - t0))
            print(f"{dtype:>8} scan_layers={scan!s:<5}: median {statistics.median(times):.1f} ms/step, "
                  f"loss after {args.steps + 5} steps on one batch {float(metrics['loss']):.3f}")


if __name__ == "__main__":
    main()
