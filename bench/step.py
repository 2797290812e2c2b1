"""Times the training step of the nanoGPT CPU recipe in JAX and, in the same run, in PyTorch.

    python bench/step.py [--config configs/shakespeare.py:nanogpt_cpu] [--rounds 5] [--steps 40]
                         [--malloc-defaults] [--no-torch] [--config.model.gelu_approximate=true ...]

Prints, for the JAX step (the library's own ``train_step`` on the config's model): the
first-step compile time, median ms/step after warm-up, tokens/s, the step's FLOPs (from
XLA's cost analysis) and the achieved GFLOP/s as a fraction of this machine's f32 matmul
peak (measured here, on a few matmul shapes). Then the PyTorch reference
(``bench/torch_reference.py``, same model and recipe) when torch is installed, and the
ratio JAX / PyTorch. ``--malloc-defaults`` adds a third contender: the JAX step with
glibc's malloc left at its defaults (see ``p2t_jax/host_memory.py``).

Each contender runs in its own worker process (two thread pools in one process steal each
other's cores: in one process the JAX step measured 28.3 ms against 22.0 ms alone), and
the rounds alternate between them with a pause, so all see the same machine. Compare
ratios, not absolute times: shared machines drift.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def matmul_peak_gflops(shapes=((768, 128, 512), (768, 512, 128), (1024, 1024, 1024)), reps: int = 200) -> dict:
    """Median f32 GFLOP/s of a jitted matmul per (m, k, n)."""
    import jax
    import jax.numpy as jnp

    out = {}
    for m, k, n in shapes:
        a = jnp.ones((m, k), jnp.float32)
        b = jnp.ones((k, n), jnp.float32)
        f = jax.jit(lambda a, b: a @ b)
        f(a, b).block_until_ready()
        times = []
        for _ in range(reps if m * k * n < 1e8 else 20):
            t0 = time.perf_counter()
            f(a, b).block_until_ready()
            times.append(time.perf_counter() - t0)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / statistics.median(times) / 1e9
    return out


def jax_contender(config) -> tuple:
    """(run(n) -> ms per step, facts) for the library's jitted train step on random batches."""
    import harness
    import jax
    import numpy as np

    peak = matmul_peak_gflops()
    step, state = harness.lm_train_step(config)
    rng = np.random.default_rng(0)
    batch = lambda: harness.random_lm_batch(config, rng)  # noqa: E731

    t0 = time.perf_counter()
    compiled = step.lower(state, batch()).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    holder = {"state": state}

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            b = batch()
            t = time.perf_counter()
            holder["state"], metrics = compiled(holder["state"], b)
            jax.block_until_ready(metrics["loss"])
            times.append(1000 * (time.perf_counter() - t))
        return times

    facts = {"version": f"jax {jax.__version__}", "compile_s": compile_s, "flops": float(cost.get("flops", "nan")),
             "peak": peak, "tokens": config.train.batch_size * config.model.max_len}
    return run, facts


def torch_contender(config) -> tuple:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch_reference as ref

    torch.manual_seed(0)
    m = config.model
    step = ref.make_step(ref.GPT(m.vocab_size, m.max_len, m.emb_dim, m.num_layers, m.num_heads),
                         lr=config.optim.learning_rate)
    batches = ref.random_batches(10, config.train.batch_size, m.max_len, m.vocab_size)
    ref.time_steps(step, batches, warmup=10)
    seed = [1]

    def run(n: int) -> list[float]:
        seed[0] += 1
        return ref.time_steps(step, ref.random_batches(n, config.train.batch_size, m.max_len, m.vocab_size,
                                                       seed=seed[0]), warmup=0)

    return run, {"version": f"torch {torch.__version__} ({torch.get_num_threads()} threads)"}


def worker(kind: str, config_arg: str, rest: list[str]) -> None:
    """Builds one contender and serves it (:func:`harness.serve`)."""
    from p2t_jax.host_memory import keep_freed_host_memory

    keep_freed_host_memory()  # both contenders get the same allocator (a no-op with P2T_KEEP_MALLOC_DEFAULTS=1)
    import harness

    config = harness.load(config_arg, harness.config_overrides(rest))
    run, facts = (jax_contender if kind == "jax" else torch_contender)(config)
    harness.serve(run, facts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shakespeare.py:nanogpt_cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="also time the JAX step with glibc malloc at its defaults")
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        return worker(args.worker, args.config, rest)

    contenders = {"jax": ("jax", {})}
    if args.malloc_defaults:
        contenders["jax, malloc defaults"] = ("jax", {"P2T_KEEP_MALLOC_DEFAULTS": "1"})
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            contenders["torch"] = ("torch", {})
        except ImportError:
            print("torch not installed (pip install -e '.[bench]'): JAX only")

    import harness

    commands = {name: ([sys.executable, __file__, "--worker", kind, "--config", args.config, *rest], env)
                for name, (kind, env) in contenders.items()}
    facts, times, cpu = harness.alternate(commands, args.rounds, args.steps)

    f = facts["jax"]
    tokens = f["tokens"]
    print("f32 matmul GFLOP/s (jax.jit): " + ", ".join(f"{k} {v:.0f}" for k, v in f["peak"].items()))
    print(f"config {args.config} {' '.join(rest)}; {args.rounds} alternating rounds of {args.steps} steps")
    ms = statistics.median(times["jax"])
    best_peak = max(f["peak"].values())
    print(f"{f['version']}: compile {f['compile_s']:.2f} s, median {ms:.1f} ms/step, {1000 * tokens / ms:,.0f} tokens/s, "
          f"{f['flops'] / 1e9:.2f} GFLOP/step, {f['flops'] / ms / 1e6:.0f} GFLOP/s = "
          f"{f['flops'] / ms / 1e6 / best_peak:.0%} of matmul peak")
    for name in contenders:
        user, sys_ = (statistics.median(c) for c in zip(*cpu[name]))
        print(f"{name}: CPU time per step {user:.1f} ms user + {sys_:.1f} ms sys (kernel)")
    for name in contenders:
        if name != "jax":
            other = statistics.median(times[name])
            print(f"{name} [{facts[name]['version']}]: median {other:.1f} ms/step, {1000 * tokens / other:,.0f} tokens/s;"
                  f" ratio jax / {name}: {ms / other:.2f}")


if __name__ == "__main__":
    main()
