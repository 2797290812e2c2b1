"""``p2t train`` against nanoGPT's own ``train.py``: the same recipe, the same text, alternating runs.

    python bench/peer_nanogpt.py --nanogpt /tmp/nanogpt --torch-python /tmp/torchenv/bin/python \\
        [--rounds 3] [--steps 200] [--no-record]

nanoGPT's code is a clone the user fetched (``git clone https://github.com/karpathy/nanoGPT``);
nothing of it is copied here. The script writes this package's Shakespeare splits in nanoGPT's
format under ``<nanogpt>/data/p2t_shakespeare/`` (checked against the token count, rewritten if
they differ), then runs, ``--rounds`` times and alternately, nanoGPT (``--device=cpu
--compile=False``, the ``nanogpt_cpu`` shapes: 4 layers, 4 heads, width 128, context 64, batch
12, no dropout) and ``p2t train --config configs/shakespeare.py:nanogpt_cpu``, ``--steps``
steps each with no evaluation on the way. The figure per run: nanoGPT, the median of its
printed per-iteration times (``--log_interval=1``) past the first 10 iterations; p2t, the
median of the loop's per-window step times (``train.log_every`` steps a window, the first
window left out: it holds the compile). Prints both per round and the ratio of the medians,
and appends a record to ``bench/results/peer_nanogpt.jsonl`` (machine line, versions, load).

The interpreter given by ``--torch-python`` needs torch and numpy (a CPU build:
``pip install "torch==2.13.0+cpu"`` in its own virtualenv); ``p2t`` runs with this one.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import results as store  # noqa: E402

DATASET = "p2t_shakespeare"
NANOGPT_ARGS = ["config/train_shakespeare_char.py", f"--dataset={DATASET}", "--device=cpu", "--compile=False",
                "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0",
                "--log_interval=1", "--eval_iters=1", "--always_save_checkpoint=False"]
ITER_LINE = re.compile(r"^iter (\d+): loss [0-9.]+, time ([0-9.]+)ms")
SKIP_ITERS = 10  # nanoGPT's first iterations (allocation, first-touch) are left out


def export_splits(nanogpt: Path) -> Path:
    """This package's train/validation ids as nanoGPT's ``train.bin`` / ``val.bin`` / ``meta.pkl``."""
    import numpy as np

    from p2t_jax.data import shakespeare

    ids, tok, _ = shakespeare.load_ids("auto")
    out = nanogpt / "data" / DATASET
    out.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.bin"), ("validation", "val.bin")):
        path = out / name
        data = ids[split].astype(np.uint16)
        if not path.is_file() or path.stat().st_size != data.nbytes:
            data.tofile(path)
    meta = {"vocab_size": len(tok.alphabet), "itos": dict(enumerate(tok.alphabet)),
            "stoi": {c: i for i, c in enumerate(tok.alphabet)}}
    (out / "meta.pkl").write_bytes(pickle.dumps(meta))
    return out


def run_nanogpt(nanogpt: Path, python: str, steps: int, out_dir: Path) -> float:
    cmd = [python, "train.py", *NANOGPT_ARGS, f"--max_iters={steps}", f"--lr_decay_iters={steps}",
           f"--eval_interval={steps + 1000}", f"--out_dir={out_dir}"]
    proc = subprocess.run(cmd, cwd=nanogpt, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nanoGPT's train.py exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    times = [float(m.group(2)) for line in proc.stdout.splitlines() if (m := ITER_LINE.match(line))
             and int(m.group(1)) >= SKIP_ITERS]
    if not times:
        raise RuntimeError("nanoGPT printed no 'iter N: ... time Xms' lines past the first iterations.")
    return statistics.median(times)


def run_p2t(steps: int, workdir: Path, log_every: int) -> float:
    cmd = [sys.executable, "-m", "p2t_jax.cli", "train", "--config", "configs/shakespeare.py:nanogpt_cpu",
           "--workdir", str(workdir), "--no-progress", f"--config.train.num_steps={steps}",
           f"--config.train.log_every={log_every}", f"--config.train.eval_every={steps}",
           "--config.train.eval_batches=1", f"--config.train.checkpoint_every={steps}"]
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"p2t train exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    windows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
               if '"ms_per_step"' in line]
    times = [w["ms_per_step"] for w in windows if w.get("split", "train") == "train"][1:]
    if not times:
        raise RuntimeError("p2t's metrics.jsonl holds no step-time window past the first.")
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nanogpt", required=True, help="a clone of github.com/karpathy/nanoGPT")
    parser.add_argument("--torch-python", required=True, help="a Python interpreter with torch and numpy")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=25, help="p2t's window of steps per timing")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/results/")
    args = parser.parse_args(argv)
    nanogpt = Path(args.nanogpt)
    if not (nanogpt / "train.py").is_file() or not (nanogpt / "config" / "train_shakespeare_char.py").is_file():
        print(f"error: --nanogpt '{nanogpt}' is not a nanoGPT clone (no train.py and "
              f"config/train_shakespeare_char.py there).", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.steps < 2 * args.log_every or args.log_every < 1:
        print("error: --rounds must be >= 1 and --steps at least two --log-every windows.", file=sys.stderr)
        return 2
    if os.sep in args.torch_python:  # a path: made absolute, since nanoGPT runs from its own folder
        args.torch_python = str(Path(args.torch_python).absolute())
    try:
        check = subprocess.run([args.torch_python, "-c", "import torch, numpy; print(torch.__version__)"],
                               capture_output=True, text=True)
    except OSError as e:
        print(f"error: --torch-python '{args.torch_python}' cannot be run ({e.strerror}).", file=sys.stderr)
        return 2
    if check.returncode != 0:
        print(f"error: --torch-python '{args.torch_python}' cannot import torch and numpy.", file=sys.stderr)
        return 2
    print(harness.machine_line(), flush=True)
    export_splits(nanogpt)
    load_start = store.load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            ng = run_nanogpt(nanogpt, args.torch_python, args.steps, Path(tmp) / f"ng{r}")
            p2 = run_p2t(args.steps, Path(tmp) / f"p2t{r}", args.log_every)
            rows.append({"nanogpt_ms": ng, "p2t_ms": p2, "ratio": p2 / ng})
            print(f"round {r + 1}: nanoGPT {ng:.2f} ms/iter, p2t {p2:.2f} ms/step, p2t / nanoGPT {p2 / ng:.3f} "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    ratio = statistics.median(r["p2t_ms"] for r in rows) / statistics.median(r["nanogpt_ms"] for r in rows)
    print(f"median: p2t / nanoGPT = {ratio:.3f} over {args.rounds} alternating rounds of {args.steps} steps")
    if not args.no_record:
        figures = {"config": "configs/shakespeare.py:nanogpt_cpu", "steps": args.steps, "rounds": rows,
                   "ratio": ratio, "torch": check.stdout.strip()}
        path = store.append(store.record("peer_nanogpt", figures, machine_line=harness.machine_line(),
                                         load_start=load_start))
        print(f"recorded in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
