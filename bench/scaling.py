"""How the training step's cost grows with the model: JAX against the same model in PyTorch over a grid of sizes.

    python bench/scaling.py [--widths 128 256 512] [--contexts 64 256 512] [--layers 4 8] [--tokens 1024]
                            [--rounds 3] [--round-seconds 1.5] [--out runs/bench_scaling]
                            [--attention xla blocked] [--no-torch] [--results DIR] [--no-record]

Each point of the grid is ``configs/shakespeare.py:nanogpt_cpu`` with width D (MLP 4·D,
heads D/32, so every head is 32 wide as in the recipe), context T and L layers, and batch
``--tokens`` / T, so every step sees the same number of tokens. For each point one JAX
worker per attention kernel (``--attention``: ``model.attention_impl`` ``xla``, the
materialised scores, and ``blocked``, the online-softmax attention) and a PyTorch worker
(``bench/step.py``'s, each in its own process; PyTorch where torch is installed) are
started, warmed up with 3 steps, and then take turns for ``--rounds`` rounds; a round has
as many steps as fit in about ``--round-seconds`` at that point's speed (at least 2, at
most 40), so the big points get fewer steps (the table says how many). Prints each point as
it is measured, then the table, the median JAX / PyTorch per kernel and the memory ratio at
context 512, and draws ``bench_scaling.png`` (ms/step, the ratio JAX / PyTorch and the
step's memory, each against context) into ``--out`` with the table (``scaling.md``) and the
figures (``scaling.json``). Each run appends a record to the results store
(``bench/results/scaling.jsonl``, see ``bench/results.py``), with the load average at its
start and end.

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
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CONFIG = "configs/shakespeare.py:nanogpt_cpu"
HEAD_WIDTH = 32
IMPLS = ("xla", "blocked")  # the attention kernels timed (model.attention_impl)


def point_overrides(width: int, context: int, layers: int, tokens: int) -> list[str]:
    """The ``--config.KEY=VALUE`` arguments of one grid point."""
    return [f"--config.model.emb_dim={width}", f"--config.model.mlp_dim={4 * width}",
            f"--config.model.num_heads={max(1, width // HEAD_WIDTH)}", f"--config.model.max_len={context}",
            f"--config.model.num_layers={layers}", f"--config.train.batch_size={max(1, tokens // context)}"]


def measure_point(width: int, context: int, layers: int, tokens: int, rounds: int, round_seconds: float,
                  impls: tuple[str, ...] = IMPLS, torch_too: bool = True) -> dict:
    """One grid point: JAX with each attention kernel of ``impls`` and PyTorch (if installed), each in its
    own process, alternating."""
    import harness
    import step

    overrides = point_overrides(width, context, layers, tokens)
    workers = {}
    for impl in impls:  # started one at a time: each builds and compiles alone
        cmd = [sys.executable, step.__file__, "--worker", "jax", "--warmup", "3", "--no-peak", "--config", CONFIG,
               *overrides, f"--config.model.attention_impl={impl}"]
        workers[impl] = harness.Worker(f"jax ({impl} attention)", cmd)
    if torch_too:
        cmd = [sys.executable, step.__file__, "--worker", "torch", "--warmup", "3", "--torch-device", "cpu",
               "--config", CONFIG, *overrides]
        workers["torch"] = harness.Worker("torch", cmd)
    slowest = max(w.facts["warmup_ms"] for w in workers.values())
    steps = int(min(40, max(2, round(1000 * round_seconds / slowest))))
    times, _ = step.alternate(workers, rounds, steps, pause=0.3)
    for w in workers.values():
        w.close()
    first = workers[impls[0]].facts
    row = {"width": width, "context": context, "layers": layers, "batch": max(1, tokens // context),
           "steps": steps * rounds, "gflop": first["flops"] / 1e9, "machine": first["machine"],
           "versions": [first["version"]] + ([workers["torch"].facts["version"]] if torch_too else []),
           "ms": {}, "mib": {}, "compile_s": {}}
    for name, w in workers.items():
        row["ms"][name] = statistics.median(times[name])
        row["mib"][name] = w.facts["step_bytes"] / 2**20 if "step_bytes" in w.facts else None
        if name != "torch":
            row["compile_s"][name] = w.facts["compile_s"]
    if torch_too:
        row["ratio"] = {impl: row["ms"][impl] / row["ms"]["torch"] for impl in impls}
        row["memory_ratio"] = {impl: row["mib"][impl] / row["mib"]["torch"] for impl in impls}
    return row


def table(rows: list[dict]) -> str:
    """The grid as a markdown table: ms/step and MiB per contender, JAX / PyTorch per attention kernel."""
    impls = [name for name in rows[0]["ms"] if name != "torch"]
    torch_too = "torch" in rows[0]["ms"]
    head = ["width", "context", "layers", "batch", "GFLOP/step", *(f"JAX {i} ms" for i in impls)]
    head += ["PyTorch ms", *(f"{i} / PyTorch" for i in impls)] if torch_too else []
    head += [*(f"JAX {i} MiB" for i in impls), *(["PyTorch MiB"] if torch_too else []), "steps timed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["width"], r["context"], r["layers"], r["batch"], f"{r['gflop']:.1f}",
                 *(f"{r['ms'][i]:.1f}" for i in impls)]
        if torch_too:
            cells += [f"{r['ms']['torch']:.1f}", *(f"**{r['ratio'][i]:.2f}**" for i in impls)]
        cells += [*(f"{r['mib'][i]:.0f}" for i in impls), *([f"{r['mib']['torch']:.0f}"] if torch_too else []),
                  r["steps"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def draw(rows: list[dict], path: Path, title: str) -> Path:
    """ms/step against context, JAX / PyTorch against context, memory against context (deepest layers), one line
    per width and contender."""
    from p2t_jax.viz.style import PALETTE, figure_style, new_figure, save_figure

    widths = sorted({r["width"] for r in rows})
    contexts = sorted({r["context"] for r in rows})
    deepest = max(r["layers"] for r in rows)
    names = list(rows[0]["ms"])
    styles = {name: style for name, style in zip(names, ("-o", "-s", "--^", ":D"))}
    with figure_style():
        fig, (ax_ms, ax_ratio, ax_mem) = new_figure(1, 3, width=4.2, height=3.4)
        for i, width in enumerate(widths):
            pts = sorted((r for r in rows if r["width"] == width and r["layers"] == deepest), key=lambda r: r["context"])
            ctx = [r["context"] for r in pts]
            for name in names:
                label = f"width {width}, " + ("PyTorch" if name == "torch" else f"JAX {name}")
                ax_ms.plot(ctx, [r["ms"][name] for r in pts], styles[name], color=PALETTE[i], label=label)
                if pts[0]["mib"][name] is not None:
                    ax_mem.plot(ctx, [r["mib"][name] for r in pts], styles[name], color=PALETTE[i], label=label)
                if name != "torch" and "ratio" in pts[0]:
                    ax_ratio.plot(ctx, [r["ratio"][name] for r in pts], styles[name], color=PALETTE[i],
                                  label=f"width {width}, JAX {name}")
        ax_ms.set(xscale="log", yscale="log", xlabel="context T (batch = tokens / T)", ylabel="ms per step",
                  title=f"Step time against context ({deepest} layers)", xticks=contexts)
        ax_ms.legend(fontsize=6)
        ax_ratio.axhline(1.0, color="black", lw=0.8)
        ax_ratio.set(xscale="log", xlabel="context T", ylabel="JAX ms / PyTorch ms", xticks=contexts,
                     title="JAX / PyTorch (below 1: JAX faster)")
        ax_ratio.legend(fontsize=6)
        ax_mem.set(xscale="log", yscale="log", xlabel="context T", ylabel="MiB allocated by one step",
                   title=f"Step memory against context ({deepest} layers)", xticks=contexts)
        ax_mem.legend(fontsize=6)
        for ax in (ax_ms, ax_ratio, ax_mem):
            ax.set_xticklabels([str(c) for c in contexts])
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
    parser.add_argument("--attention", nargs="+", default=list(IMPLS), choices=("xla", "blocked", "auto"),
                        help="the JAX attention kernels to time (model.attention_impl)")
    parser.add_argument("--no-torch", action="store_true", help="JAX only")
    parser.add_argument("--results", default="", metavar="DIR",
                        help="the results store to append this run's record to (default bench/results)")
    parser.add_argument("--no-record", action="store_true", help="append nothing to the results store")
    args = parser.parse_args()
    if min(args.widths + args.contexts + args.layers) < 1 or args.tokens < max(args.contexts) or args.rounds < 1:
        sys.exit("error: widths, contexts, layers and rounds must be positive, and --tokens at least the largest context.")
    bad = [w for w in args.widths if w % HEAD_WIDTH]
    if bad:
        sys.exit(f"error: every width must be a multiple of {HEAD_WIDTH} (the head width); got {bad}.")

    torch_too = not args.no_torch
    if torch_too:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch not installed (pip install -e '.[bench]'): JAX only")
            torch_too = False
    import results as store

    load_start = store.load_average()
    start = time.perf_counter()
    rows = []
    impls = tuple(dict.fromkeys(args.attention))
    for width, context, layers in itertools.product(args.widths, args.contexts, args.layers):
        r = measure_point(width, context, layers, args.tokens, args.rounds, args.round_seconds, impls, torch_too)
        if not rows:
            print(r["machine"])
            print(f"config {CONFIG}, {args.tokens} tokens/step; {', '.join(r['versions'])}; "
                  f"{args.rounds} alternating rounds per point")
        rows.append(r)
        print(f"width {width:>4} context {context:>4} layers {layers}: {r['gflop']:7.1f} GFLOP/step  "
              + "  ".join(f"{name} {ms:8.1f} ms {r['mib'][name] or 0:.0f} MiB" for name, ms in r["ms"].items())
              + f"  ({r['steps']} steps each; load {store.load_average()[:1]})", flush=True)
    print()
    text = table(rows)
    print(text)
    elapsed = time.perf_counter() - start
    summary = {}
    if torch_too:
        for impl in impls:
            summary[impl] = {"median_ratio": statistics.median(r["ratio"][impl] for r in rows)}
            at_512 = [r["memory_ratio"][impl] for r in rows if r["context"] == 512]
            if at_512:
                summary[impl]["memory_ratio_at_512"] = max(at_512)
            print(f"{impl} attention: median JAX / PyTorch over the grid {summary[impl]['median_ratio']:.2f}"
                  + (f"; step memory at context 512 up to {max(at_512):.2f}x PyTorch's" if at_512 else ""))
    load_end = store.load_average()
    print(f"whole grid {elapsed / 60:.1f} min; load average (1 min) {load_start[0] if load_start else 0:.2f} at the "
          f"start, {load_end[0] if load_end else 0:.2f} at the end, on {os.cpu_count()} CPUs")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.md").write_text(f"{rows[0]['machine']}\n\n{text}\n")
    (out / "scaling.json").write_text(json.dumps({"machine": rows[0]["machine"], "tokens": args.tokens,
                                                  "rounds": args.rounds, "rows": rows}, indent=1) + "\n")
    if not args.no_record:
        figures = {"tokens": args.tokens, "rounds": args.rounds, "summary": summary,
                   "rows": [{k: v for k, v in r.items() if k not in ("machine", "versions")} for r in rows]}
        path = store.append(store.record("scaling", figures, machine_line=rows[0]["machine"], load_start=load_start),
                            Path(args.results) if args.results else store.RESULTS)
        print(f"recorded in {path}")
    machine = rows[0]["machine"].removeprefix("machine: ").split("; XLA_FLAGS")[0]
    print(f"figure: {draw(rows, out / 'bench_scaling.png', machine)}")


if __name__ == "__main__":
    main()
