#!/usr/bin/env bash
# The reproduction report's experiments (docs/reproduction.md, issue 17), each one `vitkit` command on
# ../shared/data. Every job runs on 1 thread; `all` runs them two at a time (2 cores), in phases whose two jobs
# start together, so the arms of a time-matched comparison share the machine the same way.
#   benchmarks/experiments/reproduction.sh all [PHASE]     # everything (from PHASE), in the background: tail -f runs/repro/all.log
#   benchmarks/experiments/reproduction.sh deit_plain      # one job, in the foreground
# Results: runs/repro/<name>/{summary.json,metrics.csv}; figures: benchmarks/figures/reproduction_figures.py.
# Phases 1-2 also hold issue 18's export measurements (a 160-px Imagenette model, accuracy and speed tables).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE  # a spinning OpenMP thread costs a lot on a CPU shared by two jobs
VITKIT=.venv/bin/vitkit
PYTHON=.venv/bin/python
DATA=../shared/data
EXP=${EXP:-runs/repro}
mkdir -p "$EXP"
COMMON=(--threads 1 --no-progress --overwrite --eval-batch-size 500)

# The pure ViT of most experiments: vitkit's Mini (6 blocks, D=128, 2 heads, MLP 512), 4x4 patches at 32 px (an
# 8x8 grid), GAP, learned 1D position embeddings; AdamW, pad-crop + flip, label smoothing 0.1, test-time flips.
VIT=(--config recipes/cifar10_patchify_30min.yaml --model Mini/4 --hidden-dim 128 --depth 6 --num-heads 2
  --mlp-dim 512 --low-res-epochs 0)
# A CIFAR ResNet (He et al. 2016, resnet20: 0.27M parameters) with its usual recipe: SGD + Nesterov, lr 0.1 per
# 128 images, weight decay 5e-4, cosine; the same augmentation and label smoothing as the ViT.
RESNET=(--config recipes/cifar10_patchify_30min.yaml --model resnet20 --low-res-epochs 0 --optimizer sgd
  --lr 0.2 --momentum 0.9 --nesterov --weight-decay 5e-4 --batch-size 256 --clip-grad 0)

# Issue 18: a 160-px Imagenette model (early-convolution hybrid: 4 stride-2 convolutions, 10x10 tokens), its
# exported files and their accuracy, then the speed table of it and of the CIFAR-10 60-min model.
imagenette_160() {
  $VITKIT train --model conv4+Mini/16 --hidden-dim 192 --depth 6 --num-heads 3 --mlp-dim 384 --pool gap \
    --data "$DATA/imagenette-160" --img-size 160 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 \
    --crop rrc --rrc-scale 0.35 1 --hflip --randaugment-n 0 --mixup 0 --cutmix 0 --random-erasing 0 \
    --label-smoothing 0.1 --optimizer adamw --lr 2e-3 --weight-decay 0.05 --warmup-epochs 1 --batch-size 64 \
    --epochs 100 --time-budget-min 13 --eval-tta flip --save-every 0 "${COMMON[@]}" --out "$EXP/imagenette_160"
}
export_imagenette() {
  OMP_NUM_THREADS=1 $PYTHON benchmarks/experiments/export_accuracy.py "$EXP/imagenette_160" --data "$DATA/imagenette-160" \
    --out "$EXP/export_imagenette" > "$EXP/export_imagenette.md"
}
export_cifar10() {
  OMP_NUM_THREADS=1 $PYTHON benchmarks/experiments/export_accuracy.py runs/cifar10_60min --data "$DATA/cifar10" \
    --out "$EXP/export_cifar10" > "$EXP/export_cifar10.md"
}
export_speed() {  # alone on the machine; timm's row when ../shared/tools builds it
  local site
  site=$(PYTHON=$PYTHON ../shared/tools/timm-site.sh 2>/dev/null || true)
  for model in cifar10:runs/cifar10_60min imagenette:$EXP/imagenette_160; do
    OMP_NUM_THREADS=1 PYTHONPATH=$site $PYTHON benchmarks/speed/export_speed.py "${model#*:}" \
      --onnx-dir "$EXP/export_${model%%:*}" --rounds 3 --seconds 1.5 > "$EXP/speed_${model%%:*}.md"
  done
}
issue18_exports() { sequence imagenette_160 export_imagenette export_cifar10; }

# 5. DeiT distillation where a ConvNet's inductive bias has something to give: 10% of CIFAR-10's labels (4,500
# images), a vgg8 teacher trained on the same images, students at equal steps (30 epochs of 128), the pure ViT
# with a class token. Hard distillation through DeiT's distillation token and through the class token, soft.
TEN_PERCENT=(--train-fraction 0.1)
teacher_10pct() {
  $VITKIT train --config recipes/cifar10_teacher.yaml "${TEN_PERCENT[@]}" --batch-size 256 --lr 0.375 \
    --epochs 50 --time-budget-min 0 --eval-tta none "${COMMON[@]}" --out "$EXP/teacher_10pct"
}
STUDENT=("${VIT[@]}" "${TEN_PERCENT[@]}" --pool token --epochs 30 --time-budget-min 0 --warmup-epochs 3 --eval-tta none)
TEACHER=(--teacher "$EXP/teacher_10pct")
# SEED and RUN_SUFFIX (unset: seed 0, no suffix) make the second seeds below.
student() {  # $1: run name, $@: what distinguishes the student
  $VITKIT train "${STUDENT[@]}" "${@:2}" --seed "${SEED:-0}" "${COMMON[@]}" --out "$EXP/$1${RUN_SUFFIX:-}"
}
deit_plain() { student deit_plain; }
deit_hard() { student deit_hard --distilled "${TEACHER[@]}" --distill hard; }
deit_hard_cls() { student deit_hard_cls "${TEACHER[@]}" --distill hard --distill-token cls; }
deit_soft() { student deit_soft --distilled "${TEACHER[@]}" --distill soft --distill-tau 3; }
# Second seeds of the light-augmentation students, whose differences were under 1 point (same teacher and images).
for arm in plain hard hard_cls soft; do
  eval "deit_${arm}_s1() { SEED=1 RUN_SUFFIX=_s1 deit_$arm; }"
done
teacher_then_plain() { sequence teacher_10pct deit_plain; }
# The same with DeiT's strong augmentation (RandAugment 2/9, Mixup 0.8, CutMix 1.0, random erasing 0.25): the
# teacher memorised its 4,500 lightly augmented images (train accuracy 100%), so on them its hard labels are the
# true labels; on mixed and distorted images they are not, which is where DeiT's hard distillation adds something.
STRONG_AUGMENT=(--randaugment-n 2 --randaugment-m 9 --mixup 0.8 --cutmix 1.0 --random-erasing 0.25)
deit_plain_aug() { student deit_plain_aug "${STRONG_AUGMENT[@]}"; }
deit_hard_aug() { student deit_hard_aug "${STRONG_AUGMENT[@]}" --distilled "${TEACHER[@]}" --distill hard; }
# The strong-augmentation pair for 100 epochs (5 of warm-up): at 30 both students were still climbing (under-fitted
# by the augmentation), while the light-augmentation plain student had levelled off.
LONG=(--epochs 100 --warmup-epochs 5)
deit_plain_aug100() { student deit_plain_aug100 "${STRONG_AUGMENT[@]}" "${LONG[@]}"; }
deit_hard_aug100() {
  student deit_hard_aug100 "${STRONG_AUGMENT[@]}" "${LONG[@]}" --distilled "${TEACHER[@]}" --distill hard
}
deit_aug100() { pair deit_plain_aug100 deit_hard_aug100; }  # the pair alone, side by side
deit_seed1() { pair deit_plain_s1 deit_hard_s1 && pair deit_hard_cls_s1 deit_soft_s1; }

# 7. Masked patch prediction (paper Sec. 4.6, App. B.1.2) of the pure ViT on CIFAR-10's training images, for the
# look inside the models (labels unused; its val split is a held-out 5% of the same images).
mpp() {
  $VITKIT pretrain --objective mpp --mpp-target mean3bit "${VIT[@]}" --data "$DATA/cifar10/train" --val-fraction 0.05 \
    --warmup-epochs 0.5 --epochs 100 --time-budget-min 15 "${COMMON[@]}" --out "$EXP/mpp"
}

# 4. AugReg at a short budget: the 60-min recipes (plain; + RandAugment and stochastic depth) for 2 epochs. The long
# arm is the 60-min runs themselves (34 and 33 epochs, runs/cifar10_60min and runs/cifar10_60min_reg).
augreg_short_plain() {
  $VITKIT train --config recipes/cifar10_60min.yaml --epochs 2 --time-budget-min 0 "${COMMON[@]}" \
    --out "$EXP/augreg_short_plain"
}
augreg_short_reg() {
  $VITKIT train --config recipes/cifar10_60min_reg.yaml --epochs 2 --time-budget-min 0 "${COMMON[@]}" \
    --out "$EXP/augreg_short_reg"
}

# 1. Data hunger: the pure ViT and resnet20 on 5%, 10%, 30% and 100% of the training labels, 5 minutes each.
# Validation (5,000 images, no test-time flips here) is inside the budget: with 5% of the labels it takes about
# as long as an epoch of training.
HUNGER_MIN=${HUNGER_MIN:-5}
hunger() {  # $1: vit | resnet, $2: percent
  local model=("${VIT[@]}")
  [ "$1" = resnet ] && model=("${RESNET[@]}")
  $VITKIT train "${model[@]}" --train-fraction "$(awk "BEGIN {print $2 / 100}")" --epochs 400 \
    --time-budget-min "$HUNGER_MIN" --eval-tta none "${COMMON[@]}" --out "$EXP/hunger_${1}_$2"
}
for percent in 5 10 30 100; do
  eval "hunger_vit_$percent() { hunger vit $percent; }; hunger_resnet_$percent() { hunger resnet $percent; }"
done

# 3. Position embeddings (paper App. D.4): the pure ViT with none / learned 1D / learned 2D / sin-cos, 30% of the
# labels (13,500 images), 5 minutes each, seeds 0 and 1. Experiments 2 and 6 share this setting, and with it the
# learned-1D runs as their pure-ViT / base arm.
SMALL_SET=(--train-fraction 0.3 --epochs 400 --time-budget-min 5 --eval-tta none)
posemb() {  # $1: kind, $2: seed
  $VITKIT train "${VIT[@]}" --posemb "$1" "${SMALL_SET[@]}" --seed "$2" "${COMMON[@]}" --out "$EXP/posemb_${1}_s$2"
}
for seed in 0 1; do
  for kind in none learned learned_2d sincos_2d; do
    eval "posemb_${kind}_s$seed() { posemb $kind $seed; }"
  done
done

# 6. Depth, width and patch size at equal training time (paper Fig. 8 in miniature), from the base 6 x 128, 4x4.
scaled() {  # $1: name, $@: what changes
  $VITKIT train "${VIT[@]}" "${@:2}" "${SMALL_SET[@]}" "${COMMON[@]}" --out "$EXP/scale_$1"
}
scale_deep() { scaled deep --depth 12; }
scale_wide() { scaled wide --hidden-dim 256 --num-heads 4 --mlp-dim 1024; }
scale_patch8() { scaled patch8 --model Mini/8; }
scale_patch2() { scaled patch2 --model Mini/2; }

# 2. Hybrids at two sizes (paper Fig. 5): the pure ViT's tokens from a CNN instead of patches, at the base width
# (pure arm: posemb_learned_s0) and at width 256 (pure arm: scale_wide). Stems: the paper's ResNet (a CIFAR
# ResNet-20's first two stages, "C20") and CCT's convolutional tokenizer ("cct2"); the same 8x8 grid.
hybrid() {  # $1: stem, $2: size name, $@: what changes
  $VITKIT train "${VIT[@]}" --model "$1+Mini/4" "${@:3}" "${SMALL_SET[@]}" "${COMMON[@]}" --out "$EXP/hybrid_$1_$2"
}
WIDE=(--hidden-dim 256 --num-heads 4 --mlp-dim 1024)
hybrid_c20_base() { hybrid C20 base; }
hybrid_cct2_base() { hybrid cct2 base; }
hybrid_c20_wide() { hybrid C20 wide "${WIDE[@]}"; }
hybrid_cct2_wide() { hybrid cct2 wide "${WIDE[@]}"; }

# 7. The look inside: `vitkit analyze` on 64 val images of each model benchmarks/figures/reproduction_figures.py compares.
analyze_models() {
  for run in posemb_learned_s0 hybrid_C20_base deit_hard mpp; do
    $VITKIT analyze "$EXP/$run" --data "$DATA/cifar10/val" --num-images 64 --out "$EXP/analysis/$run"
  done
}

PHASES=(
  "issue18_exports teacher_then_plain"
  "export_speed"
  "deit_hard deit_hard_cls"
  "deit_soft mpp"
  "augreg_short_plain augreg_short_reg"
  "deit_plain_aug deit_hard_aug"
  "deit_plain_aug100 deit_hard_aug100"
  "deit_plain_s1 deit_hard_s1"
  "deit_hard_cls_s1 deit_soft_s1"
  "hunger_vit_5 hunger_resnet_5"
  "hunger_vit_10 hunger_resnet_10"
  "hunger_vit_30 hunger_resnet_30"
  "hunger_vit_100 hunger_resnet_100"
  "posemb_none_s0 posemb_learned_s0"
  "posemb_learned_2d_s0 posemb_sincos_2d_s0"
  "posemb_none_s1 posemb_learned_s1"
  "posemb_learned_2d_s1 posemb_sincos_2d_s1"
  "scale_deep scale_wide"
  "scale_patch8 scale_patch2"
  "hybrid_c20_base hybrid_cct2_base"
  "hybrid_c20_wide hybrid_cct2_wide"
  "analyze_models"  # alone only for the order: it needs runs of three phases before it
)
source benchmarks/experiments/phases.sh
main "$0" "$@"; exit $?  # on one line: bash reads no further, so this file may be edited while it runs
