"""Generation speed: tokens/s with and without the key/value cache.

    python bench/sampling.py [--config configs/shakespeare.py:nanogpt_cpu] [--new-tokens 256] [--batch 1]

Both samplers are compiled first (compile time printed apart); then each generates
``--new-tokens`` tokens from a one-character prompt ``--repeats`` times and the median
wall time is reported. Parameters are a fresh initialisation: speed does not depend on them.
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
import jax.numpy as jnp  # noqa: E402

from p2t_jax.host_memory import keep_freed_host_memory  # noqa: E402
from p2t_jax.sampling import generate, generate_cached  # noqa: E402
from p2t_jax.tasks import language_model  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call seconds, median seconds of the next ``repeats`` calls)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def main() -> None:
    keep_freed_host_memory()  # as the p2t command does
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shakespeare.py:nanogpt_cpu")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args, rest = parser.parse_known_args()
    config = harness.load(args.config, harness.config_overrides(rest))
    model = language_model.make_model(config)
    params = language_model.init_params(model, jax.random.PRNGKey(0))["params"]
    prompt = jnp.zeros((args.batch, 1), jnp.int32)
    rng = jax.random.PRNGKey(0)
    kw = dict(max_new_tokens=args.new_tokens, temperature=0.8, top_k=40)

    def plain():
        return generate(lambda p, t: model.apply({"params": p}, t), params, prompt, rng,
                        context=config.model.max_len, **kw)

    def cached():
        return generate_cached(model, params, prompt, rng, **kw)

    n = args.batch * args.new_tokens
    results = {}
    for name, fn in (("recompute", plain), ("kv-cache", cached)):
        first, median = timed(fn, args.repeats)
        results[name] = median
        print(f"{name:>9}: {n / median:8,.0f} tokens/s  ({median * 1000:.0f} ms for {n} tokens; "
              f"first call incl. compile {first:.2f} s)")
    print(f"config {args.config}, context {config.model.max_len}, batch {args.batch}: "
          f"cache speed-up {results['recompute'] / results['kv-cache']:.1f}x")


if __name__ == "__main__":
    main()
