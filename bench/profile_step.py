"""Where the training step's time goes: a Perfetto trace of XLA-CPU kernels, summed by name, kind and layer part.

    python bench/profile_step.py [--config configs/shakespeare.py:nanogpt_cpu] [--steps 20] [--top 25]
                                 [--malloc-defaults] [--trace-dir DIR] [--config.model.gelu_approximate=true ...]
    python bench/profile_step.py --config configs/mnist_cnn.py      # chapter 6's CNN

Runs the library's jitted train step ``--steps`` times under ``jax.profiler.trace`` and
prints: wall ms/step with the process's user and sys (kernel) CPU time per step; the
costliest kernels (XLA thunks) with the HLO ``op_name`` each came from; and the kernel
time summed by kind (``ynn_fusion``: matmuls through XNNPACK, ``dot``: other matmuls,
the rest elementwise / layout fusions), by pass (forward, backward, the rest: optimiser
and metrics) and by part of the model. Kernel times overlap where XLA runs independent
kernels at once, so their sum can exceed the wall time. The trace stays in ``--trace-dir``
for https://ui.perfetto.dev. ``--malloc-defaults`` leaves glibc's malloc alone, to see
the page-fault cost that ``p2t_jax/host_memory.py`` removes.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PARTS = ("attn", "mlp", "ln1", "ln2", "ln_f", "token_embed", "pos_embed",  # the Transformer
         "conv_0", "conv_1", "conv_2", "dense_0", "dense_1")  # chapter 6's CNN


def kernel_times(trace_dir: Path, steps: int) -> dict[str, float]:
    """ms per step of each traced event name in the newest Perfetto trace under ``trace_dir``."""
    trace = sorted(trace_dir.glob("**/*perfetto_trace.json.gz"), key=os.path.getmtime)[-1]
    events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    total: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            total[e["name"]] += e.get("dur", 0) / 1000 / steps
    return total


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the ``op_name`` of its metadata (the JAX operation it came from)."""
    names = {}
    for line in hlo_text.split("\n"):
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = \S+ \w+\(", line)
        if m:
            op = re.search(r'op_name="([^"]+)"', line)
            names[m.group(1)] = op.group(1).replace("jit(train_step)/", "") if op else ""
    return names


def classify(kernel: str, op_name: str) -> tuple[str, str, str]:
    kind = "ynn_fusion (XNNPACK matmul)" if kernel.startswith("ynn") else (
        "dot (other matmul)" if kernel.startswith("dot") else "elementwise / layout")
    phase = "backward" if "transpose(jvp" in op_name else "forward" if "jvp(" in op_name else "optimiser + metrics"
    part = next((p for p in PARTS if f"/{p}/" in op_name or op_name.endswith(f"/{p}")), "other")
    return kind, phase, part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shakespeare.py:nanogpt_cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--malloc-defaults", action="store_true")
    parser.add_argument("--trace-dir", default="")
    args, rest = parser.parse_known_args()
    if not args.malloc_defaults:
        from p2t_jax.host_memory import keep_freed_host_memory

        keep_freed_host_memory()
    import harness
    import jax
    import numpy as np

    print(harness.machine_line())
    config = harness.load(args.config, harness.config_overrides(rest))
    step, state, batch = harness.train_step_and_batch(config, np.random.default_rng(0))
    compiled = step.lower(state, batch).compile()
    names = op_names(compiled.as_text())
    for _ in range(10):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)

    trace_dir = Path(args.trace_dir or tempfile.mkdtemp(prefix="p2t_profile_"))
    t0, cpu0 = time.perf_counter(), os.times()
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        for _ in range(args.steps):
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
        wall, cpu1 = time.perf_counter() - t0, os.times()
    per_step = lambda seconds: 1000 * seconds / args.steps  # noqa: E731
    print(f"{args.config} {' '.join(rest)}: {per_step(wall):.1f} ms/step under the profiler; CPU time "
          f"{per_step(cpu1.user - cpu0.user):.1f} ms user + {per_step(cpu1.system - cpu0.system):.1f} ms sys per step")

    times = {k: v for k, v in kernel_times(trace_dir, args.steps).items() if k in names}
    print(f"\n{'ms/step':>8}  kernel{'':24}op_name")
    for kernel, ms in sorted(times.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{ms:8.3f}  {kernel:30.30} {names[kernel][-90:]}")
    for title, index in (("kind", 0), ("pass", 1), ("part of the model", 2)):
        sums: collections.Counter = collections.Counter()
        for kernel, ms in times.items():
            sums[classify(kernel, names[kernel])[index]] += ms
        print(f"\nby {title}:")
        for key, ms in sums.most_common():
            print(f"{ms:8.2f}  {key}")
    print(f"\n{sum(times.values()):8.2f}  all kernels (ms/step); trace in {trace_dir}")


if __name__ == "__main__":
    main()
