#!/usr/bin/env bash
# Train a CIFAR-10 recipe in the background (about 60 minutes on a 2-core CPU), then evaluate its best
# checkpoint. Progress: tail -f runs/cifar10.log; result: runs/cifar10/summary.json (val_top1, wall_s).
#   benchmarks/experiments/cifar10_run.sh                                  # recipes/cifar10.yaml -> runs/cifar10
#   RECIPE=recipes/cifar10_progressive.yaml OUT=runs/cifar10_progressive benchmarks/experiments/cifar10_run.sh
# Extra arguments go to `vitkit train`. Resume after a stop: .venv/bin/vitkit train --resume runs/cifar10
set -euo pipefail
cd "$(dirname "$0")/../.."
RECIPE=${RECIPE:-recipes/cifar10.yaml}
OUT=${OUT:-runs/cifar10}
mkdir -p "$(dirname "$OUT")"
# Passive OpenMP waiting: a spinning worker thread costs a lot on a CPU shared with other jobs.
export OMP_WAIT_POLICY=PASSIVE RECIPE OUT
nohup setsid bash -c '
  start=$(date +%s)
  .venv/bin/vitkit train --config "$RECIPE" --out "$OUT" --overwrite --no-progress "$@" &&
  .venv/bin/vitkit eval "$OUT" --json > "$OUT/eval_report.json" &&
  echo "done: $(( $(date +%s) - start )) s for training and evaluation" &&
  .venv/bin/python -c "import json, sys; s = json.load(open(sys.argv[1])); print(\"val top-1\", s[\"val_top1\"], \"best epoch\", s[\"best_epoch\"], \"epochs\", s[\"epochs\"], \"wall_s\", s[\"wall_s\"])" "$OUT/summary.json"
' _ "$@" > "$OUT.log" 2>&1 &
echo "started (pid $!): tail -f $OUT.log"
