#!/usr/bin/env bash
# The levers of docs/efficiency.md, each against one baseline at equal epochs, two runs at a time on 1 thread each.
#   benchmarks/experiments/levers_ablation.sh [OUT_DIR] [EPOCHS]      (default runs/levers, 5 epochs; ~30 min a pair here)
# Patch dropout (keep half the patch tokens in training) against the baseline, started together:
#   benchmarks/experiments/levers_ablation.sh OUT_DIR EPOCHS patchdrop
# Then the 30-minute recipe beside the CCT repository's CPU recommendation (needs ../shared/tools):
#   benchmarks/experiments/levers_ablation.sh OUT_DIR EPOCHS final30
# CCT_EPOCHS (default 11) sets the CCT script's epochs: choose them so that it ends near 30 minutes on your CPU
# (11 on the 2-core Zen 5 and Xeon AMX machines; 4 on a 2-core Zen 3, ~7 min an epoch on one thread).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-runs/levers}; epochs=${2:-5}; phase=${3:-ablation}
export OMP_NUM_THREADS=1
VITKIT=${VITKIT:-.venv/bin/vitkit}
BODY="--hidden-dim 192 --depth 4 --num-heads 3 --mlp-dim 384 --pool gap --posemb learned"
arm() {  # arm NAME FLAGS...: one run of the 30-minute recipe's data and schedule at full resolution
  local name=$1; shift
  $VITKIT train --config recipes/cifar10_patchify_30min.yaml --low-res-epochs 0 --epochs "$epochs" --threads 1 \
    --attention math --no-progress --out "$out/$name" --overwrite "$@" > "$out/$name.log" 2>&1
}
mkdir -p "$out"
if [ "$phase" = ablation ]; then
  arm base --model Mini/4 $BODY & arm mimetic --model Mini/4 $BODY --attn-init mimetic & wait
  arm muon --model Mini/4 $BODY --optimizer muon & arm cct2 --model cct2+Mini/4 $BODY & wait
  arm cct2_muon --model cct2+Mini/4 $BODY --optimizer muon & arm conv2_muon --model conv2+Mini/4 $BODY --optimizer muon & wait
elif [ "$phase" = patchdrop ]; then
  arm base --model Mini/4 $BODY & arm patchdrop --model Mini/4 $BODY --patch-drop 0.5 & wait
else
  $VITKIT train --config recipes/cifar10_30min.yaml --threads 1 --attention math --no-progress \
    --out "$out/final30_vitkit" --overwrite > "$out/final30_vitkit.log" 2>&1 &
  site=$(PYTHON=.venv/bin/python ../shared/tools/timm-site.sh)
  CCT_TRAIN=../shared/data/cifar10/train CCT_TEST=../shared/data/cifar10/val PYTHONPATH=$site \
    .venv/bin/python ../shared/tools/cct/run_cct.py --dataset cifar10 --model cct_2 --conv-size 3 --conv-layers 2 \
    --epochs "${CCT_EPOCHS:-11}" --warmup 1 --print-freq 50 --workers 1 --checkpoint-path "$out/cct.pth" unused \
    > "$out/final30_cct.log" 2>&1 &
  wait
fi
