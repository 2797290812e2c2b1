#!/usr/bin/env bash
# The accelerator table: run once on a machine with a GPU (or TPU) and JAX for it installed
# (e.g. pip install -e . "jax[cuda12]"; a CUDA build of torch adds PyTorch's eager step).
#
#   bash bench/accelerator.sh [--peak-tflops T]
#
# First the prediction (bench/step.py --predict, lowered on the CPU backend: FLOPs per step from XLA's cost analysis and
# the step time at MFU $MFU, default 0.3, on H100, A100, v5e and on the device at hand), then
# nanoGPT's GPU recipe (configs/shakespeare.py:gpu) twice: bench/step.py for the step
# (median ms, tokens/s, compile time, MFU against the device's dense bfloat16 peak from
# bench/step.py's table or --peak-tflops T), then `p2t train` for all 5,000 steps (wall
# time, validation loss at the end). Prints the machine line (first, and again above the
# table) and a markdown table for the README: each measured figure beside its prediction.
# Writes into $OUT (default runs/accelerator), which must not hold an earlier run.
#
# P2T_ACCEL_SMOKE=1 runs the same logic on a few steps with a batch of 2 (any machine, a few
# minutes on a CPU): a check that the script works, not a measurement.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
OUT=${OUT:-runs/accelerator}
MFU=${MFU:-0.3}
CONFIG=configs/shakespeare.py:gpu
PEAK=()
if [[ $# -gt 0 ]]; then
  if [[ $1 == --peak-tflops && $# -eq 2 ]]; then PEAK=(--peak-tflops "$2"); else
    echo "usage: bash bench/accelerator.sh [--peak-tflops T]" >&2; exit 2; fi
fi
if [[ -e $OUT/train ]]; then
  echo "error: $OUT/train already exists; move it away or set OUT to a new folder." >&2; exit 2
fi
mkdir -p "$OUT"

if [[ ${P2T_ACCEL_SMOKE:-0} == 1 ]]; then
  SIZE=(--config.train.batch_size=2)
  STEP=(--rounds 1 --steps 3 --warmup 2 --no-record)
  TRAIN=(--config.train.num_steps=6 --config.train.log_every=3 --config.train.eval_every=6
         --config.train.eval_batches=2 --config.train.checkpoint_every=6)
  echo "P2T_ACCEL_SMOKE=1: a check of the script with a batch of 2 and a few steps, not a measurement"
else
  SIZE=()
  STEP=(--rounds 3 --steps 50)
  TRAIN=()
fi

JAX_PLATFORMS=cpu "$PY" bench/step.py --config "$CONFIG" "${SIZE[@]}" --predict H100,A100,v5e --mfu "$MFU" --json "$OUT/predict.json"
"$PY" bench/step.py --config "$CONFIG" "${SIZE[@]}" "${STEP[@]}" "${PEAK[@]}" --json "$OUT/step.json"
start=$(date +%s.%N)
"$PY" -m p2t_jax.cli train --config "$CONFIG" --workdir "$OUT/train" --no-progress "${SIZE[@]}" "${TRAIN[@]}"
end=$(date +%s.%N)

"$PY" - "$OUT" "$start" "$end" "${PEAK[1]:-0}" <<'EOF'
import json
import sys
from pathlib import Path

sys.path.insert(0, "bench")
import step as bench_step  # noqa: E402  (the peak table)

out, start, end, peak_given = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
step = json.loads((out / "step.json").read_text())
predicted = json.loads((out / "predict.json").read_text())
summary = json.loads((out / "train" / "summary.json").read_text())
jax_ = step["jax"]
mfu = f"{jax_['mfu']:.1%}" if jax_["mfu"] is not None else "(peak unknown: pass --peak-tflops)"
torch_ = step.get("torch")
minutes, seconds = divmod(end - start, 60)
peak = peak_given or bench_step.device_peak_tflops(step["device_kind"], "bfloat16")
if peak:
    here_s = predicted["flops"] / (predicted["mfu"] * peak * 1e12)
    here = (f"{1000 * here_s:.1f} ms, {predicted['tokens'] / here_s:,.0f} tokens/s (at MFU {predicted['mfu']:.0%} of "
            f"{peak:g} TFLOP/s)")
else:
    here = f"no peak for {step['device_kind']} (pass --peak-tflops)"
rows = [
    ("FLOPs per step (XLA's cost analysis, lowered step)", f"{predicted['flops'] / 1e12:.3f} TFLOP "
     f"(nanoGPT's 6N + 12·L·D·T: {predicted['model_flops'] / 1e12:.3f})"),
    (f"predicted on {step['device_kind']}", here),
    ("step, median (`bench/step.py`)", f"{jax_['ms_per_step']:.1f} ms (of {step['rounds']} x {step['steps']} steps)"),
    ("tokens/s", f"{jax_['tokens_per_s']:,.0f}"),
    ("MFU (nanoGPT's estimate)", mfu),
    ("first-step compile", f"{jax_['compile_s']:.1f} s"),
    ("PyTorch step, same model (eager, `torch_reference.py`)",
     f"{torch_['ms_per_step']:.1f} ms, {torch_['version']}; JAX / PyTorch {torch_['ratio']:.2f}"
     if torch_ else "not run (no CUDA build of torch here)"),
    (f"`p2t train`, {summary['final_step']:,} steps", f"{int(minutes)} min {seconds:.0f} s wall, "
     f"median {summary['ms_per_step_median']:.1f} ms/step in the loop, compile {summary['compile_s']:.1f} s"),
    (f"validation loss at step {summary['final_step']:,}", f"{summary['eval']['loss']:.4f}"),
]
print()
print(step["machine"])
print(f"config {step['config']}")
print()
print("| what | figure |")
print("|---|---|")
for what, figure in rows:
    print(f"| {what} | {figure} |")
print()
print(f"predicted elsewhere, at MFU {predicted['mfu']:.0%} (bench/step.py --predict):")
print("| device | bf16 dense peak, TFLOP/s | predicted ms / step | predicted tokens / s |")
print("|---|---:|---:|---:|")
for name, row in predicted["devices"].items():
    print(f"| {name} | {row['peak_tflops']:g} | {row['ms_per_step']:.2f} | {row['tokens_per_s']:,.0f} |")
EOF
