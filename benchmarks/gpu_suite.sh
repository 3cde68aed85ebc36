#!/usr/bin/env bash
# The GPU figures of the README's results table, measured in one command on a machine with an
# NVIDIA GPU (JAX backend; install "jax[cuda12]" and keras, see README.md):
#
#   CIFAR100_DIR=/path/to/cifar-100-python KERAS_BACKEND=jax bash benchmarks/gpu_suite.sh
#   EXTRA="--subset 500 --epochs 1 --width 0.0625" bash benchmarks/gpu_suite.sh   # CPU dry run
#
# Runs, each as the whole `python -m network.train_model` process (imports, data loading and
# the final test evaluation included):
#   fast_seed1  the fast recipe, cold JAX compilation cache
#   fast_seed2  the fast recipe, another seed, warm cache
#   fast_w1     the fast recipe at the classic ResNet-9 width (64-128-256-512)
#   lab_seed1, lab_seed2   the lab's recipe (early stopping, up to 100 epochs), two seeds
# and writes $OUT/summary.json (accuracy, top-5, epochs, epoch times, process seconds) plus
# $OUT/logs.txt (the tail of each run's output); models and reports stay in $WORK.
# Set SKIP_LAB=1 to leave the lab runs out.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-suite}
WORK=${WORK:-/tmp/gpu-suite-work}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" "$WORK"
export JAX_COMPILATION_CACHE_DIR="$WORK/jax-cache"   # starts empty: the first run is cold
rm -rf "$JAX_COMPILATION_CACHE_DIR" "$WORK"/*.done
: > "$OUT/logs.txt"

run() {
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  # shellcheck disable=SC2086  # EXTRA is a list of options on purpose
  python -m network.train_model "$@" --output-dir "$WORK/$name" \
    --model-path "$WORK/$name/model.h5" $EXTRA > "$WORK/$name.log" 2>&1
  local rc=$?
  end=$(date +%s.%N)
  echo "$name rc=$rc process_s=$(awk "BEGIN {print $end - $start}")" | tee "$WORK/$name.done"
  { echo "===== $name (rc=$rc)"; tr '\r' '\n' < "$WORK/$name.log" | grep -v 'step - ' | tail -n 25; } >> "$OUT/logs.txt"
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
run fast_seed1 --recipe fast --seed 1
run fast_seed2 --recipe fast --seed 2
run fast_w1 --recipe fast --width 1 --seed 1
if [ "${SKIP_LAB:-0}" != 1 ]; then
  run lab_seed1 --recipe lab --seed 1
  run lab_seed2 --recipe lab --seed 2
fi

python - "$OUT" "$WORK" <<'EOF'
import json
import sys
from pathlib import Path

out, work = Path(sys.argv[1]), Path(sys.argv[2])
summary = {"gpu": (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else None}
for done in sorted(work.glob("*.done"), key=lambda p: p.stat().st_mtime):
    name = done.stem
    fields = dict(part.split("=") for part in done.read_text().split()[1:])
    row = {"rc": int(fields["rc"]), "process_s": float(fields["process_s"])}
    run = work / name / "train_summary.json"
    if run.exists():
        s = json.loads(run.read_text())
        epochs = s["epoch_seconds"]
        steady = sorted(epochs[1:])[len(epochs[1:]) // 2] if len(epochs) > 1 else None
        row.update(test_top1=s["test"]["accuracy"], test_top5=s["test"]["top5_accuracy"],
                   epochs=s["epochs_run"], train_s=s["train_seconds"], first_epoch_s=epochs[0],
                   steady_epoch_s=steady,
                   steady_training_s=steady * s["epochs_run"] if steady else None,
                   backend=s["hardware"]["backend"], devices=s["hardware"]["devices"],
                   precision=s["settings"]["precision_used"], width=s["settings"]["width"])
    summary[name] = row
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
EOF
