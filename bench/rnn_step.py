"""Times one LSTM training step in JAX (the library's cell, layer and train step) and in PyTorch (``torch.nn.LSTM``).

    python bench/rnn_step.py [--width 256] [--length 64] [--batch 32] [--rounds 5] [--steps 20] [--no-torch]

The same job on both sides: one LSTM layer of ``width`` units over ``[batch, length, width]``
random inputs, the mean squared error of its outputs against random targets, the gradient
through time and one Adam step (lr 1e-3, no clipping). JAX: :class:`p2t_jax.models.rnn.Recurrent`
of an :class:`~p2t_jax.models.rnn.LSTMCell` with the library's ``make_train_step`` (which also
measures gradient, parameter and update norms), jitted with the state donated. PyTorch:
``torch.nn.LSTM(batch_first=True)``, ``torch.optim.Adam``. Each contender runs in its own
worker process and the rounds alternate (``bench/harness.py``, as ``bench/step.py``).
Prints each median ms/step, the ratio, and the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def jax_contender(width: int, length: int, batch: int, unroll: int) -> tuple:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from p2t_jax.models.rnn import LSTMCell, Recurrent
    from p2t_jax.training.state import TrainState
    from p2t_jax.training.steps import make_train_step

    model = Recurrent(LSTMCell(width), unroll=unroll)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, length, width), np.float32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    tx = optax.adam(1e-3)
    state = TrainState.create(variables=variables, tx=tx, rng=jax.random.PRNGKey(1))

    def loss_fn(params, model_state, b, step_rng, train):
        outputs = model.apply({"params": params}, b["x"]).outputs
        return jnp.mean((outputs - b["y"]) ** 2), ({}, model_state)

    step = jax.jit(make_train_step(loss_fn), donate_argnums=0)
    batches = [{"x": rng.standard_normal((batch, length, width), np.float32),
                "y": rng.standard_normal((batch, length, width), np.float32)} for _ in range(10)]
    t0 = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def run(n: int) -> list[float]:
        times = []
        for i in range(n):
            t = time.perf_counter()
            holder["state"], metrics = compiled(holder["state"], batches[i % len(batches)])
            jax.block_until_ready(metrics["loss"])
            times.append(1000 * (time.perf_counter() - t))
        return times

    return run, {"version": f"jax {jax.__version__} (unroll {unroll})", "compile_s": compile_s}


def torch_contender(width: int, length: int, batch: int) -> tuple:
    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(width, width, batch_first=True)
    opt = torch.optim.Adam(lstm.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, length, width, generator=g), torch.randn(batch, length, width, generator=g))
               for _ in range(10)]

    def run(n: int) -> list[float]:
        times = []
        for i in range(n):
            x, y = batches[i % len(batches)]
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out, _ = lstm(x)
            loss = torch.mean((out - y) ** 2)
            loss.backward()
            opt.step()
            times.append(1000 * (time.perf_counter() - t))
        return times

    return run, {"version": f"torch {torch.__version__} ({torch.get_num_threads()} threads)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--unroll", type=int, default=1, help="lax.scan unroll of the JAX layer")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.width, args.length, args.batch)
    if args.worker:
        from p2t_jax.host_memory import keep_freed_host_memory

        keep_freed_host_memory()  # both contenders get the same allocator
        import harness

        run, facts = jax_contender(*shape, args.unroll) if args.worker == "jax" else torch_contender(*shape)
        return harness.serve_steps(run, facts)

    import harness

    kinds = ["jax"]
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            kinds.append("torch")
        except ImportError:
            print("torch not installed (pip install -e '.[bench]'): JAX only")
    common = ["--width", str(args.width), "--length", str(args.length), "--batch", str(args.batch),
              "--unroll", str(args.unroll)]
    facts, times, cpu = harness.alternate({k: ([sys.executable, __file__, "--worker", k, *common], {}) for k in kinds},
                                          args.rounds, args.steps)
    print(harness.machine_line())
    print(f"LSTM training step: width {args.width}, length {args.length}, batch {args.batch}; "
          f"{args.rounds} alternating rounds of {args.steps} steps")
    medians = {k: statistics.median(times[k]) for k in kinds}
    for k in kinds:
        user, sys_ = (statistics.median(c) for c in zip(*cpu[k]))
        compiled = f", compile {facts[k]['compile_s']:.2f} s" if "compile_s" in facts[k] else ""
        print(f"{k} [{facts[k]['version']}]: median {medians[k]:.2f} ms/step{compiled}; "
              f"CPU per step {user:.1f} ms user + {sys_:.1f} ms sys")
    if "torch" in medians:
        print(f"ratio jax / torch: {medians['jax'] / medians['torch']:.2f}")


if __name__ == "__main__":
    main()
