#!/usr/bin/env bash
# A learning-rate x seed sweep of nanogpt_cpu in one compiled step (`p2t sweep`) against the
# same runs trained one after another (`p2t train`), back to back on the same machine:
# the sweep, then the runs, then the sweep again (to bracket a machine whose load drifts).
#
#   bash bench/sweep_vs_runs.sh OUT [extra --config overrides...]
#
# Writes OUT/times.txt (wall seconds of each command), OUT/sweep_a (the sweep, with its
# sweep.md table and sweep.png figure), OUT/runs/lr*_s* and OUT/sweep_b.
set -euo pipefail
OUT=${1:?usage: bash bench/sweep_vs_runs.sh OUT [--config.key=value ...]}
shift
P2T=${P2T:-p2t}
LRS=${LRS:-1e-3,2e-3,3e-3,6e-3}
SEEDS=${SEEDS:-0,1}
CONFIG=configs/shakespeare.py:nanogpt_cpu
mkdir -p "$OUT"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores" | tee "$OUT/times.txt"
timed() {  # name command...
  local name=$1 t0 t1; shift
  t0=$(date +%s.%N)
  "$@" > "$OUT/$name.log" 2>&1
  t1=$(date +%s.%N)
  echo "$name $(echo "$t1 - $t0" | bc) s" | tee -a "$OUT/times.txt"
}
sweep() {
  local name=$1; shift
  timed "$name" "$P2T" sweep --config "$CONFIG" --workdir "$OUT/$name" --no-progress \
    --sweep optim.learning_rate="$LRS" --sweep seed="$SEEDS" "$@"
}
runs() {
  local t0 t1 lr seed
  t0=$(date +%s.%N)
  for lr in ${LRS//,/ }; do
    for seed in ${SEEDS//,/ }; do
      timed "run_lr${lr}_s${seed}" "$P2T" train --config "$CONFIG" --workdir "$OUT/runs/lr${lr}_s${seed}" \
        --no-progress --config.optim.learning_rate="$lr" --config.seed="$seed" "$@"
    done
  done
  t1=$(date +%s.%N)
  echo "runs_total $(echo "$t1 - $t0" | bc) s" | tee -a "$OUT/times.txt"
}
echo "overrides: $*" | tee -a "$OUT/times.txt"
sweep sweep_a "$@"
runs "$@"
sweep sweep_b "$@"
