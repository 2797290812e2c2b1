"""Times the training step of a Shakespeare config in JAX and, in the same run, in PyTorch.

    python bench/step.py [--config configs/shakespeare.py:nanogpt_cpu] [--rounds 5] [--steps 40]
                         [--malloc-defaults] [--variant NAME=VALUE ...] [--no-torch] [--peak-tflops T]
                         [--warmup 10] [--json FILE]
                         [--config.model.gelu_approximate=true ...]
    python bench/step.py --predict H100,A100,v5e [--mfu 0.3] [--config ...] [--json FILE]

``--predict`` times nothing: it lowers the config's train step here (any machine, no
accelerator needed), prints its FLOPs per step from XLA's cost analysis of the lowered step
and, for each named device (:data:`PREDICT_DEVICES`), the step time and tokens/s it would
take at the stated MFU (``--mfu``, an assumption, default 0.3) against the device's dense
bfloat16 peak: ``ms/step = FLOPs / (MFU x peak)``. ``bench/accelerator.sh`` prints this
prediction beside what it measures.

Prints first where it ran (``harness.machine_line()``); then, for the JAX step (the
library's own ``train_step`` on the config's model): the first-step compile time, median
ms/step after warm-up, tokens/s, the step's FLOPs (from XLA's cost analysis) and, on a CPU,
the achieved GFLOP/s as a fraction of this machine's f32 matmul peak (measured here, on a
few matmul shapes). On an accelerator (or with ``--peak-tflops``) it prints the model FLOPs
utilisation (MFU) by nanoGPT's estimate (6N + 12·L·D·T FLOPs per token) against the
device's dense bfloat16 peak (:data:`PEAK_BF16_TFLOPS`). Then the PyTorch reference
(``bench/torch_reference.py``, same model and recipe; on a GPU only if torch there has
CUDA) when torch is installed, and the ratio JAX / PyTorch. ``--malloc-defaults`` adds a
third contender: the JAX step with glibc's malloc left at its defaults (see
``p2t_jax/host_memory.py``); ``--variant NAME=VALUE`` (repeatable) adds a JAX contender
with that environment variable set (an A/B of XLA flags: ``--variant
XLA_FLAGS=--xla_cpu_enable_fast_math=true``). ``--json FILE`` also writes the figures as JSON.
Every timed run appends a record (machine, versions, figures, date, load average at its
start and end) to the results store ``bench/results/step.jsonl`` (``bench/results.py``;
``--results DIR`` for another folder, ``--no-record`` for none), from which
``bench/render_table.py`` renders the README's per-machine table.

Each contender runs in its own worker process (two thread pools in one process steal each
other's cores: in one process the JAX step measured 28.3 ms against 22.0 ms alone), and
the rounds alternate between them with a pause, so all see the same machine. Compare
ratios, not absolute times: shared machines drift.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Dense bfloat16 peak TFLOP/s by a part of ``device_kind`` as JAX reports it (first match wins),
# from the vendors' spec sheets (the dense figure: NVIDIA's sheets also quote twice as much
# "with sparsity"). For another device, or float32 compute, pass --peak-tflops.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),   # NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe: BF16 1,513 TFLOPS with sparsity
    ("H100", 989.0),        # same datasheet, H100 SXM: BF16 1,979 TFLOPS with sparsity
    ("H200", 989.0),        # NVIDIA H200 datasheet, H200 SXM: BF16 1,979 TFLOPS with sparsity
    ("A100", 312.0),        # NVIDIA A100 Tensor Core GPU datasheet: BF16 Tensor Core 312 TFLOPS (624 sparse)
    ("L40S", 362.0),        # NVIDIA L40S datasheet: BF16 733 TFLOPS with sparsity
    ("L4", 121.0),          # NVIDIA L4 datasheet: BF16 242 TFLOPS with sparsity
    ("TPU v4", 275.0),      # Google Cloud TPU v4 documentation: 275 TFLOPS bf16 per chip
    ("TPU v5 lite", 197.0),  # Google Cloud TPU v5e documentation: 197 TFLOPS bf16 per chip
    ("TPU v5p", 459.0),     # Google Cloud TPU v5p documentation: 459 TFLOPS bf16 per chip
    ("TPU v6 lite", 918.0),  # Google Cloud TPU v6e (Trillium) documentation: 918 TFLOPS bf16 per chip
)
# --predict NAME: the device_kind JAX reports for it (looked up in PEAK_BF16_TFLOPS).
PREDICT_DEVICES = {"H100": "NVIDIA H100 80GB HBM3", "A100": "NVIDIA A100-SXM4-80GB", "v5e": "TPU v5 lite"}


def device_peak_tflops(device_kind: str, dtype: str) -> float | None:
    """The table's peak for ``device_kind`` in bfloat16, or None (unknown device or float32)."""
    if dtype != "bfloat16":
        return None
    return next((tflops for name, tflops in PEAK_BF16_TFLOPS if name.lower() in device_kind.lower()), None)


def model_flops_per_token(config, n_params: int) -> float:
    """nanoGPT's estimate (``estimate_mfu``): 6N + 12·L·D·T, N the parameters without the
    position table; matmul FLOPs of forward and backward only."""
    m = config.model
    return 6 * n_params + 12 * m.num_layers * m.emb_dim * m.max_len


def predict(flops: float, tokens: int, device_kind: str, mfu: float) -> dict | None:
    """Step time and tokens/s of a step of ``flops`` FLOPs on ``device_kind`` at ``mfu`` of its bfloat16
    peak (``ms = flops / (mfu * peak)``), or None when the peak is not in the table."""
    peak = device_peak_tflops(device_kind, "bfloat16")
    if peak is None:
        return None
    seconds = flops / (mfu * peak * 1e12)
    return {"device_kind": device_kind, "peak_tflops": peak, "mfu": mfu, "ms_per_step": 1000 * seconds,
            "tokens_per_s": tokens / seconds}


def step_flops(config) -> dict:
    """FLOPs of one train step of a language-model ``config`` from XLA's cost analysis of the lowered step
    (before any backend's optimisation, so the same for every platform; nothing is compiled), beside
    nanoGPT's estimate (:func:`model_flops_per_token` times the tokens of a step).

    Returns ``{"flops", "model_flops", "tokens", "parameters"}`` (``parameters``: N, without the position table).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness
    import jax
    import numpy as np

    step, state = harness.lm_train_step(config, abstract=True)
    batch = harness.random_lm_batch(config, np.random.default_rng(0))
    flops = _flops(_lowered_cost(step.lower(state, batch)))
    if flops != flops:  # NaN: a backend behind a PJRT plugin (CUDA, TPU) has no analysis of unoptimised HLO
        raise SystemExit(f"error: XLA's cost analysis of the lowered step is not available on the "
                         f"{jax.default_backend()} backend; run the prediction with JAX_PLATFORMS=cpu (the count is "
                         f"the unoptimised step's, the same for every platform).")
    n_params = sum(x.size for x in jax.tree.leaves(state.params)) - state.params["pos_embed"].size
    tokens = config.train.batch_size * config.model.max_len
    return {"flops": flops, "model_flops": model_flops_per_token(config, n_params) * tokens,
            "tokens": tokens, "parameters": int(n_params)}


def _lowered_cost(lowered):
    try:
        return lowered.cost_analysis()
    except NotImplementedError:
        return None


def _flops(cost) -> float:
    """The ``flops`` of an XLA cost analysis (a dict, a list of one, or None where the backend has none), NaN if absent."""
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    return float(cost.get("flops", "nan")) if isinstance(cost, dict) else float("nan")


def print_prediction(config_text: str, config, names: list[str], mfu: float) -> dict:
    """Prints the FLOPs of ``config``'s step and the predicted table for the devices ``names``; returns the
    figures (JSON-ready)."""
    import jax

    f = step_flops(config)
    print(f"config {config_text}; jax {jax.__version__}; the train step lowered here ({jax.default_backend()}), "
          f"nothing timed")
    print(f"FLOPs per step: {f['flops'] / 1e12:.3f} TFLOP from XLA's cost analysis of the lowered step; "
          f"{f['model_flops'] / 1e12:.3f} TFLOP by nanoGPT's 6N + 12·L·D·T per token "
          f"(N = {f['parameters']:,}, {f['tokens']:,} tokens per step)")
    print(f"predicted at MFU {mfu:.0%} of the dense bfloat16 peak (ms/step = FLOPs / (MFU x peak)):")
    print("| device | bf16 dense peak, TFLOP/s | predicted ms / step | predicted tokens / s |")
    print("|---|---:|---:|---:|")
    rows = {}
    for name in names:
        row = predict(f["flops"], f["tokens"], PREDICT_DEVICES[name], mfu)
        rows[name] = row
        print(f"| {name} ({row['device_kind']}) | {row['peak_tflops']:g} | {row['ms_per_step']:.2f} | "
              f"{row['tokens_per_s']:,.0f} |")
    return dict(f, mfu=mfu, devices=rows, config=config_text)


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


def jax_contender(config, measure_peak: bool = True) -> tuple:
    """(run(n) -> ms per step, facts) for the library's jitted train step on random batches."""
    import harness
    import jax
    import numpy as np

    device = jax.devices()[0]
    peak = matmul_peak_gflops() if measure_peak and device.platform == "cpu" else {}
    step, state = harness.lm_train_step(config)
    rng = np.random.default_rng(0)
    batch = lambda: harness.random_lm_batch(config, rng)  # noqa: E731

    t0 = time.perf_counter()
    compiled = step.lower(state, batch()).compile()
    compile_s = time.perf_counter() - t0
    flops = _flops(compiled.cost_analysis())
    memory = compiled.memory_analysis()
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

    n_params = sum(x.size for x in jax.tree.leaves(state.params)) - state.params["pos_embed"].size
    facts = {"version": f"jax {jax.__version__}", "machine": harness.machine_line(), "platform": device.platform,
             "device_kind": device.device_kind, "compile_s": compile_s, "flops": flops,
             "model_flops": model_flops_per_token(config, n_params) * config.train.batch_size * config.model.max_len,
             "peak": peak, "tokens": config.train.batch_size * config.model.max_len,
             # what the step allocates beyond the state it updates in place: XLA's temporaries and new outputs
             "step_bytes": memory.temp_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes}
    return run, facts


def torch_contender(config, device: str = "cpu") -> tuple:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch_reference as ref

    if device == "cuda" and not torch.cuda.is_available():
        return None, {"skip": f"torch {torch.__version__} has no CUDA here, and JAX runs on a GPU: no PyTorch figures"}
    torch.manual_seed(0)
    m = config.model
    step = ref.make_step(ref.config_model(m, device), lr=config.optim.learning_rate, dtype=config.precision.compute)
    B, T, V = config.train.batch_size, m.max_len, m.vocab_size
    ref.time_steps(step, ref.random_batches(2, B, T, V, device=device), warmup=2)
    seed = [1]

    def run(n: int) -> list[float]:
        seed[0] += 1
        return ref.time_steps(step, ref.random_batches(n, B, T, V, seed=seed[0], device=device), warmup=0)

    facts = {"version": f"torch {torch.__version__} ({torch.get_num_threads()} threads, {device})"}
    if device == "cpu":
        facts["step_bytes"] = ref.step_peak_bytes(step, ref.random_batches(1, B, T, V, seed=1)[0])
    return run, facts


def worker(kind: str, config_arg: str, rest: list[str], warmup: int, device: str, measure_peak: bool = True) -> None:
    """Builds one contender, warms it up, then serves ``run N`` requests (harness.serve)."""
    from p2t_jax.host_memory import keep_freed_host_memory

    keep_freed_host_memory()  # both contenders get the same allocator (a no-op with P2T_KEEP_MALLOC_DEFAULTS=1)
    import harness

    config = harness.load(config_arg, harness.config_overrides(rest))
    run, facts = jax_contender(config, measure_peak) if kind == "jax" else torch_contender(config, device)
    if run is not None:
        facts["warmup_ms"] = statistics.median(run(warmup)[1:] or [float("nan")])
    harness.serve(lambda request: harness.cpu_timed(run, int(request.split()[1])), facts)


def start_workers(config_arg: str, rest: list[str], *, torch_too: bool, malloc_defaults: bool = False,
                  variants: tuple[str, ...] = (), warmup: int = 10, measure_peak: bool = True) -> dict:
    """name -> harness.Worker, the JAX worker first, then one more JAX worker per ``variants``
    entry (``NAME=VALUE``: that environment variable set, e.g. ``XLA_FLAGS=...``); a
    contender that cannot run here is left out with a printed line."""
    import harness

    def start(name, kind, env=None, device="cpu"):
        cmd = [sys.executable, __file__, "--worker", kind, "--warmup", str(warmup), "--torch-device", device,
               *([] if measure_peak else ["--no-peak"]), "--config", config_arg, *rest]
        return harness.Worker(name, cmd, env)

    workers = {"jax": start("jax", "jax")}  # one at a time: each builds and compiles alone
    if malloc_defaults:
        workers["jax, malloc defaults"] = start("jax, malloc defaults", "jax", {"P2T_KEEP_MALLOC_DEFAULTS": "1"})
    for variant in variants:
        name, _, value = variant.partition("=")
        workers[f"jax, {variant}"] = start(f"jax, {variant}", "jax", {name: value})
    if torch_too:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch not installed (pip install -e '.[bench]'): JAX only")
        else:
            platform = workers["jax"].facts["platform"]
            if platform not in ("cpu", "gpu"):
                print(f"JAX runs on {platform}, where the PyTorch reference cannot: no PyTorch figures")
            else:
                w = start("torch", "torch", device="cuda" if platform == "gpu" else "cpu")
                if "skip" in w.facts:
                    print(w.facts["skip"])
                    w.close()
                else:
                    workers["torch"] = w
    return workers


def alternate(workers: dict, rounds: int, steps: int, pause: float = 0.5) -> tuple[dict, dict]:
    """``rounds`` rounds of ``steps`` steps, the contenders taking turns; returns
    (name -> all step ms, name -> [(user, sys) CPU ms per step of each round])."""
    times = {name: [] for name in workers}
    cpu = {name: [] for name in workers}
    for _ in range(rounds):
        for name, w in workers.items():
            time.sleep(pause)  # let the other worker's threads go idle
            answer = w.ask(f"run {steps}")
            times[name] += answer["ms"]
            cpu[name].append((answer["user_ms"], answer["sys_ms"]))
    return times, cpu


def refuse(text: str) -> None:
    """A bad argument: one sentence on stderr, exit status 2."""
    print(text, file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/shakespeare.py:nanogpt_cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="also time the JAX step with glibc malloc at its defaults")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE",
                        help="also time the JAX step with this environment variable set (repeatable), e.g. "
                             "--variant XLA_FLAGS=--xla_cpu_enable_fast_math=true")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="the device's peak TFLOP/s for the MFU (default: the table, for known accelerators)")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    parser.add_argument("--results", default="", metavar="DIR",
                        help="the results store to append this run's record to (default bench/results)")
    parser.add_argument("--no-record", action="store_true", help="append nothing to the results store")
    parser.add_argument("--predict", default="", metavar="DEVICES",
                        help=f"time nothing; print the step's FLOPs and the predicted step time on these devices "
                             f"(comma-separated: {', '.join(PREDICT_DEVICES)})")
    parser.add_argument("--mfu", type=float, default=0.3, help="the MFU --predict assumes (default 0.3)")
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps of each contender before the rounds")
    parser.add_argument("--torch-device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--no-peak", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        return worker(args.worker, args.config, rest, args.warmup, args.torch_device, not args.no_peak)
    if args.predict:
        names = [n.strip() for n in args.predict.split(",") if n.strip()]
        unknown = [n for n in names if n not in PREDICT_DEVICES]
        if not names or unknown:
            refuse(f"error: --predict takes devices from {', '.join(PREDICT_DEVICES)} (comma-separated), "
                     f"got {args.predict!r}.")
        if not 0 < args.mfu <= 1:
            refuse(f"error: --mfu must be in (0, 1], got {args.mfu}.")
        import harness

        config = harness.load(args.config, harness.config_overrides(rest))
        if harness.is_image_config(config):
            refuse(f"error: --predict takes a language-model config (tokens per step), got {args.config}.")
        figures = print_prediction(" ".join([args.config, *rest]), config, names, args.mfu)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
        return None
    if args.rounds < 1 or args.steps < 1 or args.warmup < 1:
        sys.exit("error: --rounds, --steps and --warmup must be at least 1.")
    bad = [v for v in args.variant if "=" not in v or not v.partition("=")[0].isidentifier()]
    if bad:
        sys.exit(f"error: --variant takes NAME=VALUE (an environment variable), got {bad[0]!r}.")

    import results as store

    load_start = store.load_average()
    workers = start_workers(args.config, rest, torch_too=not args.no_torch, malloc_defaults=args.malloc_defaults,
                            variants=tuple(args.variant), warmup=args.warmup)
    f = workers["jax"].facts
    print(f["machine"])
    times, cpu = alternate(workers, args.rounds, args.steps)
    for w in workers.values():
        w.close()

    import harness

    config = harness.load(args.config, harness.config_overrides(rest))
    tokens = f["tokens"]
    if f["peak"]:
        print("f32 matmul GFLOP/s (jax.jit): " + ", ".join(f"{k} {v:.0f}" for k, v in f["peak"].items()))
    print(f"config {args.config} {' '.join(rest)}; {args.rounds} alternating rounds of {args.steps} steps")
    ms = statistics.median(times["jax"])
    line = (f"{f['version']}: compile {f['compile_s']:.2f} s, median {ms:.1f} ms/step, {1000 * tokens / ms:,.0f} tokens/s, "
            f"{f['flops'] / 1e9:.2f} GFLOP/step, {f['flops'] / ms / 1e6:.0f} GFLOP/s")
    if f["peak"]:
        line += f" = {f['flops'] / ms / 1e6 / max(f['peak'].values()):.0%} of matmul peak"
    print(line)
    peak_tflops = args.peak_tflops or device_peak_tflops(f["device_kind"], config.precision.compute)
    mfu = None
    if peak_tflops:
        mfu = f["model_flops"] / (ms / 1000) / (peak_tflops * 1e12)
        source = "--peak-tflops" if args.peak_tflops else f"the table's bfloat16 peak for {f['device_kind']}"
        print(f"MFU {mfu:.1%}: {f['model_flops'] / 1e9:.1f} model GFLOP/step (nanoGPT's 6N + 12·L·D·T per token) "
              f"against {peak_tflops:g} TFLOP/s ({source})")
    for name in workers:
        user, sys_ = (statistics.median(c) for c in zip(*cpu[name]))
        print(f"{name}: CPU time per step {user:.1f} ms user + {sys_:.1f} ms sys (kernel)")
    results = {"machine": f["machine"], "device_kind": f["device_kind"], "config": " ".join([args.config, *rest]),
               "rounds": args.rounds,
               "steps": args.steps, "jax": {"version": f["version"], "ms_per_step": ms, "tokens_per_s": 1000 * tokens / ms,
                                            "compile_s": f["compile_s"], "gflop_per_step": f["flops"] / 1e9, "mfu": mfu}}
    for name in workers:
        if name != "jax":
            other = statistics.median(times[name])
            print(f"{name} [{workers[name].facts['version']}]: median {other:.1f} ms/step, "
                  f"{1000 * tokens / other:,.0f} tokens/s; ratio jax / {name}: {ms / other:.2f}")
            results[name] = {"version": workers[name].facts["version"], "ms_per_step": other, "ratio": ms / other}
    for name in workers:
        results.setdefault(name, {})["cpu_ms_per_step"] = [statistics.median(c) for c in zip(*cpu[name])]
        if "step_bytes" in workers[name].facts:
            results[name]["step_mib"] = workers[name].facts["step_bytes"] / 2**20
    load_end = store.load_average()
    busy = load_start and max(load_start[0], load_end[0]) > (os.cpu_count() or 1)
    print(f"load average (1 min) {load_start[0] if load_start else float('nan'):.2f} at the start, "
          f"{load_end[0] if load_end else float('nan'):.2f} at the end, on {os.cpu_count()} CPUs"
          + (": taken under load (other work shared the cores)" if busy else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_record:
        path = store.append(store.record("step", results, machine_line=f["machine"], load_start=load_start),
                            Path(args.results) if args.results else store.RESULTS)
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()
