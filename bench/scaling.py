"""How the training step's cost grows with the model: JAX against the same model in PyTorch over a grid of sizes.

    python bench/scaling.py [--widths 128 256 512] [--contexts 64 256 512] [--layers 4 8] [--tokens 1024]
                            [--rounds 3] [--round-seconds 1.5] [--out runs/bench_scaling]

Each point of the grid is ``configs/shakespeare.py:nanogpt_cpu`` with width D (MLP 4·D,
heads D/32, so every head is 32 wide as in the recipe), context T and L layers, and batch
``--tokens`` / T, so every step sees the same number of tokens. For each point a JAX and a
PyTorch worker (``bench/step.py``'s, each in its own process) are started, warmed up with
3 steps, and then take turns for ``--rounds`` rounds; a round has as many steps as fit in
about ``--round-seconds`` at that point's speed (at least 2, at most 40), so the big points
get fewer steps (the table says how many). Prints each point as it is measured, then the
table, and draws ``bench_scaling.png`` (ms/step and the ratio JAX / PyTorch against the
step's GFLOP, and the step's memory against context) into ``--out`` with the table
(``scaling.md``) and the figures (``scaling.json``).

Memory is what one step allocates beyond the parameters and optimiser state it holds:
for JAX, XLA's temporary buffer plus the outputs not written in place (from the compiled
step's memory analysis); for PyTorch, the peak of its CPU allocator during one step above
the level before it (from the profiler's memory events). Both count activations kept for
the backward pass, gradients and temporaries.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIG = "configs/shakespeare.py:nanogpt_cpu"
HEAD_WIDTH = 32


def point_overrides(width: int, context: int, layers: int, tokens: int) -> list[str]:
    """The ``--config.KEY=VALUE`` arguments of one grid point."""
    return [f"--config.model.emb_dim={width}", f"--config.model.mlp_dim={4 * width}",
            f"--config.model.num_heads={max(1, width // HEAD_WIDTH)}", f"--config.model.max_len={context}",
            f"--config.model.num_layers={layers}", f"--config.train.batch_size={max(1, tokens // context)}"]


def measure_point(width: int, context: int, layers: int, tokens: int, rounds: int, round_seconds: float) -> dict:
    """One grid point: JAX and PyTorch in their own processes, alternating."""
    import step

    workers = step.start_workers(CONFIG, point_overrides(width, context, layers, tokens), torch_too=True,
                                 warmup=3, measure_peak=False)
    if "torch" not in workers:
        sys.exit("error: bench/scaling.py compares against PyTorch; install it (pip install -e '.[bench]').")
    slowest = max(w.facts["warmup_ms"] for w in workers.values())
    steps = int(min(40, max(2, round(1000 * round_seconds / slowest))))
    times, _ = step.alternate(workers, rounds, steps, pause=0.3)
    for w in workers.values():
        w.close()
    jax_f, torch_f = workers["jax"].facts, workers["torch"].facts
    jax_ms, torch_ms = statistics.median(times["jax"]), statistics.median(times["torch"])
    return {"width": width, "context": context, "layers": layers, "batch": max(1, tokens // context),
            "steps": steps * rounds, "gflop": jax_f["flops"] / 1e9, "jax_ms": jax_ms, "torch_ms": torch_ms,
            "ratio": jax_ms / torch_ms, "jax_mib": jax_f["step_bytes"] / 2**20,
            "torch_mib": torch_f["step_bytes"] / 2**20, "compile_s": jax_f["compile_s"],
            "machine": jax_f["machine"], "versions": [jax_f["version"], torch_f["version"]]}


def table(rows: list[dict]) -> str:
    """The grid as a markdown table."""
    lines = ["| width | context | layers | batch | GFLOP/step | JAX ms | PyTorch ms | JAX / PyTorch | "
             "JAX MiB | PyTorch MiB | steps timed |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['width']} | {r['context']} | {r['layers']} | {r['batch']} | {r['gflop']:.1f} | "
                     f"{r['jax_ms']:.1f} | {r['torch_ms']:.1f} | **{r['ratio']:.2f}** | {r['jax_mib']:.0f} | "
                     f"{r['torch_mib']:.0f} | {r['steps']} |")
    return "\n".join(lines)


def draw(rows: list[dict], path: Path, title: str) -> Path:
    """ms/step against GFLOP/step, the ratio against GFLOP/step, memory against context."""
    from p2t_jax.viz.style import PALETTE, figure_style, new_figure, save_figure

    contexts = sorted({r["context"] for r in rows})
    widths = sorted({r["width"] for r in rows})
    deepest = max(r["layers"] for r in rows)
    markers = {layers: m for layers, m in zip(sorted({r["layers"] for r in rows}), "os^D")}
    with figure_style():
        fig, (ax_ms, ax_ratio, ax_mem) = new_figure(1, 3, width=4.2, height=3.4)
        for i, context in enumerate(contexts):
            for r in (r for r in rows if r["context"] == context):
                m = markers[r["layers"]]
                ax_ms.plot(r["gflop"], r["jax_ms"], m, color=PALETTE[i], mfc=PALETTE[i])
                ax_ms.plot(r["gflop"], r["torch_ms"], m, color=PALETTE[i], mfc="none")
                ax_ratio.plot(r["gflop"], r["ratio"], m, color=PALETTE[i])
            ax_ratio.plot([], [], "o", color=PALETTE[i], label=f"context {context}")
        for layers, m in markers.items():
            ax_ratio.plot([], [], m, color="grey", label=f"{layers} layers")
        ax_ms.plot([], [], "o", color="grey", label="JAX (filled)")
        ax_ms.plot([], [], "o", color="grey", mfc="none", label="PyTorch (open)")
        ax_ms.set(xscale="log", yscale="log", xlabel="GFLOP per step (XLA's count)", ylabel="ms per step",
                  title="Step time against work")
        ax_ms.legend(loc="upper left")
        ax_ratio.axhline(1.0, color="black", lw=0.8)
        ax_ratio.set(xscale="log", xlabel="GFLOP per step", ylabel="JAX ms / PyTorch ms",
                     title="JAX / PyTorch (below 1: JAX faster)")
        ax_ratio.legend(fontsize=7)
        for i, width in enumerate(widths):
            pts = sorted((r for r in rows if r["width"] == width and r["layers"] == deepest), key=lambda r: r["context"])
            ctx = [r["context"] for r in pts]
            ax_mem.plot(ctx, [r["jax_mib"] for r in pts], "-o", color=PALETTE[i], label=f"width {width}, JAX")
            ax_mem.plot(ctx, [r["torch_mib"] for r in pts], "--s", color=PALETTE[i], mfc="none",
                        label=f"width {width}, PyTorch")
        ax_mem.set(xlabel="context T (batch = tokens / T)", ylabel="MiB allocated by one step",
                   title=f"Step memory against context ({deepest} layers)", xticks=contexts)
        ax_mem.legend(fontsize=7)
        fig.suptitle(title, fontsize=7)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--contexts", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per step: batch = tokens / context")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-seconds", type=float, default=1.5)
    parser.add_argument("--out", default="runs/bench_scaling", help="folder for the figure, table and JSON")
    args = parser.parse_args()
    if min(args.widths + args.contexts + args.layers) < 1 or args.tokens < max(args.contexts) or args.rounds < 1:
        sys.exit("error: widths, contexts, layers and rounds must be positive, and --tokens at least the largest context.")
    bad = [w for w in args.widths if w % HEAD_WIDTH]
    if bad:
        sys.exit(f"error: every width must be a multiple of {HEAD_WIDTH} (the head width); got {bad}.")

    start = time.perf_counter()
    rows = []
    for width, context, layers in itertools.product(args.widths, args.contexts, args.layers):
        r = measure_point(width, context, layers, args.tokens, args.rounds, args.round_seconds)
        if not rows:
            print(r["machine"])
            print(f"config {CONFIG}, {args.tokens} tokens/step; {', '.join(r['versions'])}; "
                  f"{args.rounds} alternating rounds per point")
        rows.append(r)
        print(f"width {width:>4} context {context:>4} layers {layers}: {r['gflop']:7.1f} GFLOP/step  "
              f"JAX {r['jax_ms']:8.1f} ms  PyTorch {r['torch_ms']:8.1f} ms  ratio {r['ratio']:.2f}  "
              f"memory {r['jax_mib']:.0f} / {r['torch_mib']:.0f} MiB  ({r['steps']} steps each)", flush=True)
    print()
    text = table(rows)
    print(text)
    elapsed = time.perf_counter() - start
    print(f"\nmedian ratio JAX / PyTorch over the grid: {statistics.median(r['ratio'] for r in rows):.2f}; "
          f"whole grid {elapsed / 60:.1f} min")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.md").write_text(f"{rows[0]['machine']}\n\n{text}\n")
    (out / "scaling.json").write_text(json.dumps({"machine": rows[0]["machine"], "tokens": args.tokens,
                                                  "rounds": args.rounds, "rows": rows}, indent=1) + "\n")
    machine = rows[0]["machine"].removeprefix("machine: ").split("; XLA_FLAGS")[0]
    print(f"figure: {draw(rows, out / 'bench_scaling.png', machine)}")


if __name__ == "__main__":
    main()
