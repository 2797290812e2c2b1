"""Step time with and without batches placed on the devices ahead of their step (``train.prefetch``).

    python bench/prefetch.py [--config configs/shakespeare.py:nanogpt_cpu] [--rounds 6] [--steps 50] [KEY=VALUE ...]

Compiles the library's train step once, then alternates blocks of ``--steps`` steps read as
the loop reads them: without prefetching (each batch read and placed when its step asks) and
with ``train.prefetch=2`` (:class:`p2t_jax.training.prefetch.Prefetcher`). Prints the median
ms/step of each over the rounds, and the spread, since a shared machine drifts between blocks.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shakespeare.py:nanogpt_cpu")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50)
    args, rest = parser.parse_known_args()

    from p2t_jax.tasks import language_model
    from p2t_jax.training.prefetch import Prefetcher

    config = harness.load(args.config, [*rest, "parallel.mesh_shape=(1,1,1)"])
    task = language_model.make_task(config)
    step, state = harness.lm_train_step(config)
    step = step.lower(state, task.train_batch(0)).compile()
    shardings = step.input_shardings[0][1]
    place = lambda b: jax.device_put(b, shardings)  # noqa: E731
    print(harness.machine_line())
    print(f"config {args.config} {' '.join(rest)}; {args.rounds} alternating rounds of {args.steps} steps")
    times: dict[int, list[float]] = {0: [], 2: []}
    position = 0
    for _ in range(args.rounds):
        for depth in (0, 2):
            feed = Prefetcher(task.train_batch, place, depth, position + args.steps)
            jax.block_until_ready(state)
            t0 = time.perf_counter()
            for s in range(position, position + args.steps):
                state, metrics = step(state, feed.get(s))
                feed.fill(s + 1)
            jax.block_until_ready(metrics)
            times[depth].append(1000 * (time.perf_counter() - t0) / args.steps)
            position += args.steps
    for depth, ms in times.items():
        print(f"prefetch={depth}: median {statistics.median(ms):.2f} ms/step "
              f"(rounds: {', '.join(f'{m:.1f}' for m in ms)})")


if __name__ == "__main__":
    main()
