#!/usr/bin/env bash
# The Imagenette lever runs of docs/photos.md (issue 25): 128 px from the 160 px copy, official val split,
# random init, no test-time augmentation; each one `vitkit train` command on 1 thread.
#   benchmarks/experiments/photos_levers.sh NAME [EPOCHS] [SEED]   # e.g. vit6_patch16 5 0; resumes a stopped run
#   THREADS=2 benchmarks/experiments/photos_levers.sh ...          # the big models on both cores
# Results: runs/photos/<name>_<epochs>ep[_s<seed>]/{summary.json,metrics.csv}; table: benchmarks/figures/photos_table.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE  # a spinning OpenMP thread costs a lot on a CPU shared by two jobs
NAME=$1; EPOCHS=${2:-5}; SEED=${3:-0}
OUT=runs/photos/${NAME}_${EPOCHS}ep$([ "$SEED" = 0 ] || echo "_s$SEED")
if [ -f "$OUT/checkpoints/last/config.json" ]; then exec .venv/bin/vitkit train --resume "$OUT"; fi

# Every run: light augmentation at 5-20 epochs (crops and flips; RandAugment and mixup only for long schedules),
# label smoothing 0.1, one epoch of warm-up then cosine, AdamW, batch 64 (147 steps per epoch).
COMMON=(--data ../shared/data/imagenette-160 --img-size 128 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225
  --crop rrc --rrc-scale 0.35 1 --hflip --randaugment-n 0 --mixup 0 --cutmix 0 --random-erasing 0
  --label-smoothing 0.1 --batch-size 64 --warmup-epochs 1 --schedule cosine --epochs "$EPOCHS" --seed "$SEED"
  --threads "${THREADS:-1}" --no-progress --eval-batch-size 250)
# The ViT body of every lever: Ti's width (D=192, 3 heads), 6 blocks, MLP 384, GAP, learned position embeddings
# (the CIFAR-10 recipes' transformer), 16x16 patches: 64 tokens at 128 px.
BODY=(--depth 6 --mlp-dim 384 --pool gap --posemb learned --lr 1e-3 --weight-decay 0.05)

case $NAME in
  vit6_patch16) ARGS=(--model Ti/16 "${BODY[@]}") ;;                     # baseline: plain 16x16 patches
  vit6_conv4) ARGS=(--model conv4+Ti/16 "${BODY[@]}") ;;                 # Xiao et al. early convolutions
  vit6_xres4) ARGS=(--model xres4+Ti/16 "${BODY[@]}") ;;                 # the xresnet stem + 2 strided convs
  vit6_cct4) ARGS=(--model cct4+Ti/16 "${BODY[@]}") ;;                   # CCT's tokenizer
  vit6_spt) ARGS=(--model Ti/16 --spt "${BODY[@]}") ;;                   # shifted patch tokenization
  vit6_lsa) ARGS=(--model Ti/16 --lsa "${BODY[@]}") ;;                   # locality self-attention
  vit6_spt_lsa) ARGS=(--model Ti/16 --spt --lsa "${BODY[@]}") ;;         # both (SL-ViT)
  vit6_conv4_lsa) ARGS=(--model conv4+Ti/16 --lsa "${BODY[@]}") ;;
  # The 5-epoch recipe's optimizer (Muon for the blocks' matrices) on the conv4 ViT, and the leaderboard's schedule
  vit6_conv4_muon) ARGS=(--model conv4+Ti/16 "${BODY[@]}" --optimizer muon) ;;
  vit6_conv4_muon_flatcos) ARGS=(--model conv4+Ti/16 "${BODY[@]}" --optimizer muon --schedule flat_cos) ;;
  vit6_conv4_ranger) ARGS=(--model conv4+Ti/16 "${BODY[@]}" --optimizer ranger --lr 2e-3 --betas 0.9 0.99
    --warmup-epochs 0 --schedule flat_cos --clip-grad 0 --min-lr 0) ;;
  # The paper's hybrid on the half-width xresnet18's trunk (stages 1-3 folded at /16) with the 6-block ViT, Muon for
  # the blocks' matrices and AdamW for the trunk, at a rate between the ViT's 1e-3 and the ConvNet's 3e-3
  x18h_vit6_muon) ARGS=(--model X18x0.5+Ti/16 "${BODY[@]}" --optimizer muon --lr 2e-3) ;;
  # ... with Muon for the trunk's convolution kernels too (all but the first; as the CIFAR-10 speedrun's Muon)
  x18h_vit6_muonconv) ARGS=(--model X18x0.5+Ti/16 "${BODY[@]}" --optimizer muon --lr 2e-3 --muon-convs) ;;
  xresnet18x0.5) ARGS=(--model xresnet18x0.5 --lr 3e-3 --weight-decay 0.05) ;;  # the ConvNet, half width
  xresnet18) ARGS=(--model xresnet18 --lr 3e-3 --weight-decay 0.05) ;;
  # AdamW at twice the rate (6e-3) with the leaderboard's betas (0.9 / 0.99) and weight decay (1e-2), a short warm-up
  xresnet18x0.5_lr6e-3) ARGS=(--model xresnet18x0.5 --lr 6e-3 --betas 0.9 0.99 --weight-decay 0.01 --warmup-epochs 0.2) ;;
  # The leaderboard's optimizer and schedule: Ranger (RAdam + Lookahead) at 1e-2, flat for 75% then cosine to 0,
  # no warm-up (RAdam rectifies), no clipping, weight decay 1e-2
  xresnet18x0.5_ranger) ARGS=(--model xresnet18x0.5 --optimizer ranger --lr 1e-2 --betas 0.9 0.99 --weight-decay 0.01
    --warmup-epochs 0 --schedule flat_cos --clip-grad 0 --min-lr 0) ;;
  xresnet18x0.5_fp32) ARGS=(--model xresnet18x0.5 --lr 3e-3 --weight-decay 0.05 --precision fp32) ;;  # bf16's cost?
  # The leaderboard's model (xresnet50 + Mish) with its optimizer's settings as far as AdamW has them
  # (lr 4e-3, betas 0.95 / 0.99, weight decay 1e-2).
  xresnet50_mish) ARGS=(--model xresnet50_mish --lr 4e-3 --betas 0.95 0.99 --weight-decay 0.01) ;;
  # The paper's hybrid with the leaderboard's trunk: xresnet50 + Mish stages 1-3 (folded to 3, 4, 9 units, stride
  # 16) in place of stage 4 a 6-block 192-wide ViT on the 8x8 feature map; between the two lrs above.
  x50_vit6) ARGS=(--model X50_mish+Ti/16 --depth 6 --mlp-dim 384 --pool gap --posemb learned --lr 2e-3
    --betas 0.95 0.99 --weight-decay 0.05) ;;
  *) echo "unknown run $NAME" >&2; exit 2 ;;
esac
exec .venv/bin/vitkit train "${COMMON[@]}" "${ARGS[@]}" --out "$OUT" --overwrite
