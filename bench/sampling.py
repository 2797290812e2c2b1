"""Generation speed: the library's samplers against a PyTorch key/value-cache loop of the same model.

    python bench/sampling.py [--config configs/shakespeare.py:nanogpt_cpu] [--new-tokens 256 1024]
                             [--batch 1 8] [--rounds 3] [--no-recompute] [--no-torch]

Three contenders, each in its own worker process, taking turns: ``jax kv-cache``
(:func:`p2t_jax.sampling.generate_cached`: one jitted ``fori_loop``), ``torch kv-cache``
(``bench/torch_reference.py``'s ``generate_cached``: a Python loop over the same model
doing the same work: one position per token, the cache rebuilt from the last
context - context/4 tokens whenever it is full) and ``jax recompute``
(:func:`p2t_jax.sampling.generate`: the whole window again for every token). For every
(new tokens, batch) pair each contender first generates once (for JAX: compile included,
printed apart), then all take turns for ``--rounds`` rounds; the median time of a
generation gives tokens/s (batch x new tokens per second). Temperature 0.8, top-k 40,
a one-token prompt; parameters are a fresh initialisation (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEMPERATURE, TOP_K = 0.8, 40


def jax_sampler(config, cached: bool):
    """``generate(new_tokens, batch)`` -> seconds, for the library's sampler."""
    import jax
    import jax.numpy as jnp

    from p2t_jax.sampling import generate, generate_cached
    from p2t_jax.tasks import language_model

    model = language_model.make_model(config)
    params = language_model.init_params(model, jax.random.PRNGKey(0))["params"]
    rng = jax.random.PRNGKey(0)

    def run(new_tokens: int, batch: int) -> float:
        prompt = jnp.zeros((batch, 1), jnp.int32)
        kw = dict(max_new_tokens=new_tokens, temperature=TEMPERATURE, top_k=TOP_K)
        t0 = time.perf_counter()
        if cached:
            out = generate_cached(model, params, prompt, rng, **kw)
        else:
            out = generate(lambda p, t: model.apply({"params": p}, t), params, prompt, rng,
                           context=config.model.max_len, **kw)
        jax.block_until_ready(out)
        return time.perf_counter() - t0

    return run


def torch_sampler(config):
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch_reference as ref

    torch.manual_seed(0)
    model = ref.config_model(config.model)

    def run(new_tokens: int, batch: int) -> float:
        prompt = torch.zeros((batch, 1), dtype=torch.long)
        t0 = time.perf_counter()
        ref.generate_cached(model, prompt, new_tokens, temperature=TEMPERATURE, top_k=TOP_K)
        return time.perf_counter() - t0

    return run, f"torch {torch.__version__} ({torch.get_num_threads()} threads)"


def worker(kind: str, config_arg: str, rest: list[str]) -> None:
    """Serves ``run NEW_TOKENS BATCH`` requests: the seconds of one generation."""
    from p2t_jax.host_memory import keep_freed_host_memory

    keep_freed_host_memory()  # as the p2t command does
    import harness

    config = harness.load(config_arg, harness.config_overrides(rest))
    if kind == "torch kv-cache":
        run, version = torch_sampler(config)
        facts = {"version": version}
    else:
        import jax

        run = jax_sampler(config, cached=kind == "jax kv-cache")
        facts = {"version": f"jax {jax.__version__}", "machine": harness.machine_line()}
    harness.serve(lambda request: {"s": run(*map(int, request.split()[1:]))}, facts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shakespeare.py:nanogpt_cpu")
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-recompute", action="store_true", help="leave out the recomputing sampler (slow)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        return worker(args.worker, args.config, rest)
    if min(args.new_tokens + args.batch) < 1 or args.rounds < 1:
        sys.exit("error: --new-tokens, --batch and --rounds must be at least 1.")

    import harness

    kinds = ["jax kv-cache"]
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            kinds.append("torch kv-cache")
        except ImportError:
            print("torch not installed (pip install -e '.[bench]'): JAX only")
    if not args.no_recompute:
        kinds.append("jax recompute")
    workers = {k: harness.Worker(k, [sys.executable, __file__, "--worker", k, "--config", args.config, *rest])
               for k in kinds}
    print(workers["jax kv-cache"].facts["machine"])
    config = harness.load(args.config, harness.config_overrides(rest))
    L = config.model.max_len
    print(f"config {args.config} {' '.join(rest)}: context {L} (a full cache is rebuilt every {max(1, L // 4)} "
          f"tokens); temperature {TEMPERATURE}, top-k {TOP_K}; {args.rounds} alternating rounds; "
          + "; ".join(f"{k}: {w.facts['version']}" for k, w in workers.items()))
    header = f"{'new tokens':>10} {'batch':>5}  " + "  ".join(f"{k + ' tokens/s':>24}" for k in kinds)
    if "torch kv-cache" in kinds:
        header += "  jax / torch (kv-cache speed)"
    print(header)
    for new_tokens, batch in itertools.product(args.new_tokens, args.batch):
        first = {k: w.ask(f"run {new_tokens} {batch}")["s"] for k, w in workers.items()}
        times = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for k, w in workers.items():
                time.sleep(0.3)
                times[k].append(w.ask(f"run {new_tokens} {batch}")["s"])
        speed = {k: new_tokens * batch / statistics.median(t) for k, t in times.items()}
        line = f"{new_tokens:>10} {batch:>5}  " + "  ".join(f"{speed[k]:>24,.0f}" for k in kinds)
        if "torch kv-cache" in kinds:
            line += f"  {speed['jax kv-cache'] / speed['torch kv-cache']:.2f}x"
        print(line + "   (first call: " + ", ".join(f"{k} {s:.2f} s" for k, s in first.items()) + ")", flush=True)
    for w in workers.values():
        w.close()


if __name__ == "__main__":
    main()
