"""Times the training step of the nanoGPT CPU recipe in JAX and, in the same run, in PyTorch.

    python bench/step.py [--config configs/shakespeare.py:nanogpt_cpu] [--rounds 3] [--steps 50]
                         [--config.model.gelu_approximate=true ...]

Prints, for the JAX step (the library's own ``train_step`` on the config's model): the
first-step compile time, median ms/step after warm-up, tokens/s, the step's FLOPs (from
XLA's cost analysis) and the achieved GFLOP/s as a fraction of this machine's f32 matmul
peak (measured here, on a few matmul shapes). Then the PyTorch reference
(``bench/torch_reference.py``) when torch is installed, alternating rounds so that both
see the same machine, and the ratio JAX / PyTorch. Compare ratios, not absolute times:
shared machines drift.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from p2t_jax.configuration import apply_overrides, load_config  # noqa: E402
from p2t_jax.tasks import language_model  # noqa: E402
from p2t_jax.training.loop import create_state  # noqa: E402
from p2t_jax.training.steps import make_train_step  # noqa: E402
from p2t_jax.optim.chains import make_optimizer  # noqa: E402


def matmul_peak_gflops(shapes=((768, 128, 512), (768, 512, 128), (1024, 1024, 1024)), reps: int = 200) -> dict:
    """Median f32 GFLOP/s of a jitted matmul per (m, k, n)."""
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


def jax_step(config):
    model = language_model.make_model(config)
    state = create_state(model.apply, lambda r: language_model.init_params(model, r), config)
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    step = jax.jit(make_train_step(language_model.make_loss_fn(model), schedule), donate_argnums=0)
    rng = np.random.default_rng(0)
    B, T, V = config.train.batch_size, config.model.max_len, config.model.vocab_size

    def batch():
        d = rng.integers(0, V, (B, T + 1)).astype(np.int32)
        return {"inputs": d[:, :-1], "targets": d[:, 1:]}

    t0 = time.perf_counter()
    compiled = step.lower(state, batch()).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))
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

    return run, compile_s, flops, B * T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shakespeare.py:nanogpt_cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--no-torch", action="store_true")
    args, rest = parser.parse_known_args()
    config = load_config(args.config)
    apply_overrides(config, [a[len("--config."):] for a in rest if a.startswith("--config.")])

    peak = matmul_peak_gflops()
    print("f32 matmul GFLOP/s (jax.jit): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
    run_jax, compile_s, flops, tokens = jax_step(config)
    run_jax(10)  # warm-up

    run_torch = None
    if not args.no_torch:
        try:
            import torch

            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import torch_reference as ref

            torch.manual_seed(0)
            m = config.model
            tstep = ref.make_step(ref.GPT(m.vocab_size, m.max_len, m.emb_dim, m.num_layers, m.num_heads))
            tbatches = ref.random_batches(args.rounds * args.steps + 10, config.train.batch_size, m.max_len,
                                          m.vocab_size)
            ref.time_steps(tstep, tbatches[:10], warmup=10)
            cursor = iter(tbatches[10:])

            def torch_rounds(n):
                return ref.time_steps(tstep, [next(cursor) for _ in range(n)], warmup=0)

            run_torch = torch_rounds
        except ImportError:
            print("torch not installed (pip install -e '.[bench]'): JAX only")

    jax_times, torch_times = [], []
    for _ in range(args.rounds):
        jax_times += run_jax(args.steps)
        if run_torch:
            torch_times += run_torch(args.steps)

    ms = statistics.median(jax_times)
    best_peak = max(peak.values())
    print(f"config {args.config} {' '.join(rest)}")
    print(f"jax {jax.__version__}: compile {compile_s:.2f} s, median {ms:.1f} ms/step, {1000 * tokens / ms:,.0f} tokens/s, "
          f"{flops / 1e9:.2f} GFLOP/step, {flops / ms / 1e6:.0f} GFLOP/s = {flops / ms / 1e6 / best_peak:.0%} of matmul peak")
    if torch_times:
        tms = statistics.median(torch_times)
        print(f"torch {torch.__version__}: median {tms:.1f} ms/step, {1000 * tokens / tms:,.0f} tokens/s")
        print(f"ratio jax/torch step time: {ms / tms:.2f}")


if __name__ == "__main__":
    main()
