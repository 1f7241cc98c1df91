#!/usr/bin/env bash
# The transfer (issue 10) and ConvNet (issue 11) experiments on ../shared/data, each one `vitkit` command.
# Each experiment runs on 1 thread; `all` runs them two at a time (2 cores), in phases whose two jobs start
# together, so the two arms of a time-matched comparison share the machine the same way.
#   benchmarks/experiments/experiments.sh all [PHASE]    # everything (from PHASE), in the background: tail -f runs/exp/all.log
#   benchmarks/experiments/experiments.sh mpp_pretrain   # one experiment, in the foreground
# Results: runs/exp/<name>/summary.json (training runs), runs/exp/fewshot_<model>_<data>.json (few-shot).
# Prerequisite of the distillation runs: the teacher (vitkit train --config recipes/cifar10_teacher.yaml
# --out runs/cifar10_teacher). Their baseline without distillation is `deit_plain`.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE  # a spinning OpenMP thread costs a lot on a CPU shared by two jobs
VITKIT=.venv/bin/vitkit
DATA=../shared/data
EXP=runs/exp
mkdir -p "$EXP"

# The transformer of every run: the 60-min CIFAR-10 recipe's (6 blocks, D=192, GAP, learned position embeddings).
VIT_BODY=(--hidden-dim 192 --depth 6 --num-heads 3 --mlp-dim 384 --pool gap --posemb learned)
# The transfer model: 8x8 patches at 64 px (an 8x8 grid, as 4x4 patches give at 32 px).
SMALL_VIT=(--model Mini/8 "${VIT_BODY[@]}")
IMAGENET_NORM=(--mean 0.485 0.456 0.406 --std 0.229 0.224 0.225)
# Crops and flips only, for every arm (pre-training, fine-tuning and scratch alike).
LIGHT_AUGMENT=(--crop rrc --rrc-scale 0.25 1 --hflip --randaugment-n 0 --mixup 0 --cutmix 0 --random-erasing 0)
COMMON=(--threads 1 --no-progress --overwrite --eval-batch-size 500)
PRETRAIN_MIN=15
FINETUNE_MIN=${FINETUNE_MIN:-5}
TEN_PERCENT=(--data "$DATA/cifar10" --train-fraction 0.1)

# 1. Supervised pre-training on Imagenette at 64 px.
imagenette_sup() {
  $VITKIT train "${SMALL_VIT[@]}" --data "$DATA/imagenette-160" --img-size 64 "${IMAGENET_NORM[@]}" \
    "${LIGHT_AUGMENT[@]}" --label-smoothing 0.1 --lr 1e-3 --weight-decay 0.05 --batch-size 128 \
    --epochs 100 --time-budget-min $PRETRAIN_MIN "${COMMON[@]}" --out $EXP/imagenette_sup
}

# 2. Masked patch prediction on the CIFAR-10 and Imagenette training images, labels unused: one folder of links.
mpp_data() {
  local tree=$EXP/mpp_images
  rm -rf "$tree" && mkdir -p "$tree"
  for dataset in cifar10 imagenette-160; do
    for folder in "$DATA/$dataset/train"/*/; do
      local name
      name=$(basename "$folder")
      ln -s "$(realpath "$folder")" "$tree/${dataset}_${name// /_}"
    done
  done
}
mpp_pretrain() {
  mpp_data
  $VITKIT pretrain --objective mpp --mpp-target mean3bit "${SMALL_VIT[@]}" --data $EXP/mpp_images --img-size 64 \
    --val-fraction 0.05 "${IMAGENET_NORM[@]}" "${LIGHT_AUGMENT[@]}" --lr 1e-3 --weight-decay 0.05 --warmup-epochs 0.5 \
    --batch-size 128 --epochs 100 --time-budget-min $PRETRAIN_MIN "${COMMON[@]}" --out $EXP/mpp
}

# Fine-tuning on 10% of the CIFAR-10 labels (4,500 images) at 64 px: the paper's recipe (SGD, no weight decay,
# zero-initialised head), same augmentation as the scratch arm.
finetune_cifar10() {  # $1: pre-trained run, $2: output name
  $VITKIT finetune "$1" "${TEN_PERCENT[@]}" --img-size 64 "${LIGHT_AUGMENT[@]}" --lr 0.03 --batch-size 128 \
    --steps none --epochs 200 --time-budget-min $FINETUNE_MIN "${COMMON[@]}" --out "$EXP/$2"
}
finetune_sup() { finetune_cifar10 $EXP/imagenette_sup/checkpoints/best finetune_sup; }
# The same with the time the scratch arm had left over (20 min - 10.7 min of pre-training ~ 9 min).
finetune_sup_9min() { FINETUNE_MIN=9 finetune_cifar10 $EXP/imagenette_sup/checkpoints/best finetune_sup_9min; }
finetune_mpp() { finetune_cifar10 $EXP/mpp/checkpoints/best finetune_mpp; }

# The same model from scratch on the same 4,500 images for the pre-training + fine-tuning time together.
scratch_cifar10() {
  $VITKIT train "${SMALL_VIT[@]}" "${TEN_PERCENT[@]}" --img-size 64 "${IMAGENET_NORM[@]}" "${LIGHT_AUGMENT[@]}" \
    --label-smoothing 0.1 --lr 1e-3 --weight-decay 0.05 --batch-size 128 --epochs 400 \
    --time-budget-min $((PRETRAIN_MIN + FINETUNE_MIN)) "${COMMON[@]}" --out $EXP/scratch_10pct
}

# 3. Resolution transfer: the 64-px Imagenette model, tuned further at 128 px (position embeddings
# interpolated to 16x16) or at 64 px, for the same time; head kept (same classes).
continue_imagenette() {  # $1: resolution
  $VITKIT finetune $EXP/imagenette_sup/checkpoints/best --data "$DATA/imagenette-160" --img-size "$1" --no-new-head \
    "${LIGHT_AUGMENT[@]}" --lr 0.01 --batch-size 128 --steps none --epochs 200 --time-budget-min 8 \
    "${COMMON[@]}" --out "$EXP/imagenette_${1}px"
}
res128() { continue_imagenette 128; }
res64() { continue_imagenette 64; }

# 4. Few-shot linear evaluation (1/5/10/25 shots, 3 draws) of each model's frozen features.
random_init() {
  .venv/bin/python - "$EXP/random_init" <<'EOF'
import sys
import vitkit
model = vitkit.create_model("Mini/8", img_size=64, hidden_dim=192, depth=6, num_heads=3, mlp_dim=384, pool="gap",
                            posemb="learned", num_classes=10)
imagenet = {"img_size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
vitkit.save(model, sys.argv[1], metadata={"data": imagenet})
EOF
}
fewshot() {  # $@: model names under runs/exp
  for model in "$@"; do
    local checkpoint=$EXP/$model
    [ -d "$checkpoint/checkpoints/best" ] && checkpoint=$checkpoint/checkpoints/best
    for dataset in cifar10 imagenette-160; do
      OMP_NUM_THREADS=1 $VITKIT fewshot "$checkpoint" --data "$DATA/$dataset" --shots 1 5 10 25 --seeds 3 --json \
        > "$EXP/fewshot_${model}_${dataset}.json"
    done
  done
}
fewshot_pretrained() { random_init && fewshot random_init imagenette_sup mpp; }
fewshot_scratch() { fewshot scratch_10pct; }

# Issue 11: DeiT on CIFAR-10, the 60-min recipe's ViT with a class token, 8 epochs (equal student steps).
DEIT=(--config recipes/cifar10_patchify_60min.yaml --pool token --epochs 8 --time-budget-min 0 --no-compile)
deit_plain() { $VITKIT train "${DEIT[@]}" "${COMMON[@]}" --out $EXP/deit_plain; }
STUDENT=(--distilled --teacher runs/cifar10_teacher)  # DeiT's distillation token and head, the vgg8 teacher
deit_hard() { $VITKIT train "${DEIT[@]}" "${STUDENT[@]}" --distill hard "${COMMON[@]}" --out $EXP/deit_hard; }
deit_soft() {
  $VITKIT train "${DEIT[@]}" "${STUDENT[@]}" --distill soft --distill-tau 3 "${COMMON[@]}" --out $EXP/deit_soft
}

# Hybrid (CIFAR ResNet stem, 8x8 grid of its features) against the pure ViT with 4x4 patches, same 12 minutes.
HYBRID_TIME=(--config recipes/cifar10_patchify_60min.yaml --epochs 100 --time-budget-min 12 --no-compile)
hybrid() { $VITKIT train "${HYBRID_TIME[@]}" --model C20+Mini/4 "${VIT_BODY[@]}" "${COMMON[@]}" --out $EXP/hybrid_c20; }
pure() { $VITKIT train "${HYBRID_TIME[@]}" --model Mini/4 "${VIT_BODY[@]}" "${COMMON[@]}" --out $EXP/pure_vit; }

source benchmarks/experiments/phases.sh

# The ConvNet teachers alone on both cores: their target is a wall-clock time (>= 90% in <= 20 minutes).
train_teacher() {  # $1: recipe name, also the run directory's
  $VITKIT train --config "recipes/$1.yaml" --no-progress --overwrite --out "runs/$1"
}
teacher() { train_teacher cifar10_teacher; }
teacher_wide() { train_teacher cifar10_teacher_wide; }

mpp_then_finetune() { sequence mpp_pretrain finetune_mpp; }
finetune_then_fewshot() { sequence finetune_sup fewshot_pretrained; }
PHASES=(
  "teacher"
  "imagenette_sup deit_plain"
  "deit_hard deit_soft"
  "teacher_wide"
  "mpp_then_finetune scratch_cifar10"
  "res128 res64"
  "hybrid pure"
  "finetune_then_fewshot fewshot_scratch"
)
main "$0" "$@"; exit $?  # on one line: bash reads no further, so this file may be edited while it runs
