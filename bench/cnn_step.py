"""Times chapter 6's CNN training step in JAX and, in the same run, in PyTorch.

    python bench/cnn_step.py [--config configs/mnist_cnn.py] [--rounds 5] [--steps 40] [--no-torch]
                             [--config.train.batch_size=128 ...]

The JAX contender is the library's own ``train_step`` on the config's CNN (Adam, cross-entropy,
random batches of the dataset's image shape); the PyTorch one is
``bench/torch_cnn_reference.py``: the same network, batch and optimiser in PyTorch, timed
twice: in PyTorch's usual NCHW layout, and with model and batches in ``channels_last`` (NHWC,
the layout PyTorch recommends for convolutions on CPU). As in ``bench/step.py``, each
contender runs in its own worker process and the rounds alternate between them, so all see
the same machine; compare the ratio, not the
absolute times. Prints the machine (CPU, cores, versions: ``harness.machine_line``), each
contender's median ms/step, examples/s and CPU time per step, and the ratios JAX / PyTorch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def jax_contender(config) -> tuple:
    """(run(n) -> ms per step, facts) for the library's jitted train step on random image batches."""
    import harness
    import jax
    import numpy as np

    step, state = harness.image_train_step(config)
    rng = np.random.default_rng(0)
    batch = lambda: harness.random_image_batch(config, rng)  # noqa: E731
    t0 = time.perf_counter()
    compiled = step.lower(state, batch()).compile()
    compile_s = time.perf_counter() - t0
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

    params = sum(x.size for x in jax.tree.leaves(state.params))
    return run, {"version": f"jax {jax.__version__}", "compile_s": compile_s, "parameters": int(params)}


def torch_contender(config, channels_last: bool = False) -> tuple:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch_cnn_reference as ref

    from p2t_jax.data.image_datasets import IMAGE_SHAPES

    m = config.model
    side, _, channels = IMAGE_SHAPES[config.data.name]
    torch.manual_seed(0)
    model = ref.CNN(channels, tuple(m.conv_features), m.num_classes, m.kernel_size, side)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    step = ref.make_step(model, lr=config.optim.learning_rate)
    B = config.train.batch_size

    def batches(n: int, seed: int = 0) -> list:
        return [(x.to(memory_format=layout), y)
                for x, y in ref.random_batches(n, B, channels, side, m.num_classes, seed=seed)]

    ref.time_steps(step, batches(10), warmup=10)
    seed = [1]

    def run(n: int) -> list[float]:
        seed[0] += 1
        return ref.time_steps(step, batches(n, seed[0]), warmup=0)

    return run, {"version": f"torch {torch.__version__} ({torch.get_num_threads()} threads"
                            f"{', channels_last' if channels_last else ''})",
                 "parameters": sum(p.numel() for p in model.parameters())}


def worker(kind: str, config_arg: str, rest: list[str]) -> None:
    from p2t_jax.host_memory import keep_freed_host_memory

    keep_freed_host_memory()  # both contenders get the same allocator
    import harness

    config = harness.load(config_arg, harness.config_overrides(rest))
    if config.model.name != "cnn" or tuple(config.model.hidden):
        sys.exit("error: bench/cnn_step.py times chapter 6's CNN: model.name must be cnn with model.hidden=().")
    run, facts = jax_contender(config) if kind == "jax" else torch_contender(config, kind == "torch_channels_last")
    harness.serve_steps(run, facts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/mnist_cnn.py")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--worker", choices=("jax", "torch", "torch_channels_last"), help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        return worker(args.worker, args.config, rest)
    import harness

    kinds = ["jax"]
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            kinds += ["torch", "torch_channels_last"]
        except ImportError:
            print("torch not installed (pip install -e '.[bench]'): JAX only")
    workers = {k: ([sys.executable, __file__, "--worker", k, "--config", args.config, *rest], {}) for k in kinds}
    facts, times, cpu = harness.alternate(workers, args.rounds, args.steps)

    config = harness.load(args.config, harness.config_overrides(rest))
    B = config.train.batch_size
    print(harness.machine_line())
    print(f"config {args.config} {' '.join(rest)}: batch {B}; {args.rounds} alternating rounds of {args.steps} steps")
    medians = {k: statistics.median(times[k]) for k in kinds}
    for k in kinds:
        f = facts[k]
        user, sys_ = (statistics.median(c) for c in zip(*cpu[k]))
        extra = f", compile {f['compile_s']:.2f} s" if "compile_s" in f else ""
        print(f"{k} [{f['version']}, {f['parameters']:,} parameters{extra}]: median {medians[k]:.2f} ms/step, "
              f"{1000 * B / medians[k]:,.0f} examples/s; CPU time per step {user:.1f} ms user + {sys_:.1f} ms sys")
    for k in kinds[1:]:
        print(f"ratio jax / {k}: {medians['jax'] / medians[k]:.2f}")


if __name__ == "__main__":
    main()
