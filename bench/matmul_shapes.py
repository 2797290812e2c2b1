"""The nanoGPT CPU step's matmul shapes, each timed alone: XLA-CPU (``jax.jit``) against PyTorch.

    python bench/matmul_shapes.py [--reps 300] [--rounds 3]

The shapes of ``configs/shakespeare.py:nanogpt_cpu``'s train step (12 x 64 = 768 rows, width
128, MLP width 512, 4 heads of width 32): the MLP's ``fc`` and ``proj``, the attention's ``qkv``
and ``out`` projections, and the attention's batched ``[64, 32] x [32, 64]`` score matmul over
12 x 4 = 48 sequences and heads. Each is the median of ``--reps`` calls, per round; the rounds
alternate JAX and PyTorch (2 threads, as ``bench/step.py``'s PyTorch worker), each in its own
process (two thread pools in one process steal each other's cores). Prints the machine line,
then per shape the range over the rounds of each side's milliseconds and GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = {  # name: (batch, m, k, n)
    "mlp fc [768,128]x[128,512]": (1, 768, 128, 512),
    "mlp proj [768,512]x[512,128]": (1, 768, 512, 128),
    "qkv [768,128]x[128,384]": (1, 768, 128, 384),
    "out [768,128]x[128,128]": (1, 768, 128, 128),
    "scores 48 x [64,32]x[32,64]": (48, 64, 32, 64),
}

WORKER = """
import json, statistics, sys, time
import numpy as np
side, reps = sys.argv[1], int(sys.argv[2])
shapes = json.loads(sys.argv[3])
rng = np.random.default_rng(0)
data = {name: (rng.standard_normal((b, m, k), np.float32), rng.standard_normal((b, k, n), np.float32))
        for name, (b, m, k, n) in shapes.items()}
out = {}
if side == "jax":
    from p2t_jax.host_memory import keep_freed_host_memory
    keep_freed_host_memory()
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x, y: jnp.einsum("bmk,bkn->bmn", x, y))
    for name, (x, y) in data.items():
        x, y = jnp.asarray(x), jnp.asarray(y)
        out[name] = lambda x=x, y=y: f(x, y).block_until_ready()
else:
    import torch
    torch.set_num_threads(2)
    for name, (x, y) in data.items():
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        out[name] = (lambda x=x, y=y: torch.bmm(x, y)) if x.shape[0] > 1 else (lambda x=x[0], y=y[0]: x @ y)
ms = {}
for name, call in out.items():
    for _ in range(20):
        call()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
    ms[name] = 1000 * statistics.median(times)
print(json.dumps(ms))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import harness

    print(harness.machine_line(), flush=True)
    root = str(Path(__file__).resolve().parent.parent)
    results = {"jax": [], "torch": []}
    for _ in range(args.rounds):
        for side in results:
            done = subprocess.run([sys.executable, "-c", WORKER, side, str(args.reps), json.dumps(SHAPES)],
                                  capture_output=True, text=True, cwd=root,
                                  env=dict(os.environ, PYTHONPATH=root))
            if done.returncode != 0:
                sys.exit(f"error: the {side} worker failed: {done.stderr.strip().splitlines()[-1]}")
            results[side].append(json.loads(done.stdout.splitlines()[-1]))
    print(f"median of {args.reps} calls per round, {args.rounds} alternating rounds (min-max over the rounds)")
    print("| shape | JAX ms | PyTorch ms | JAX GFLOP/s | PyTorch GFLOP/s |")
    print("|---|---|---|---|---|")
    for name, (b, m, k, n) in SHAPES.items():
        flop = 2 * b * m * k * n
        j = sorted(r[name] for r in results["jax"])
        t = sorted(r[name] for r in results["torch"])
        print(f"| {name} | {j[0]:.3f}-{j[-1]:.3f} | {t[0]:.3f}-{t[-1]:.3f} | {flop / j[-1] / 1e6:.0f}-{flop / j[0] / 1e6:.0f} "
              f"| {flop / t[-1] / 1e6:.0f}-{flop / t[0] / 1e6:.0f} |")


if __name__ == "__main__":
    main()
