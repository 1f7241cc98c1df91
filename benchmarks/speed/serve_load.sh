#!/usr/bin/env bash
# The measured tables of docs/serve.md: the models (trained and exported here), then the load runs and the soak.
# Run from the repo root; on a shared machine under `chrt -r 1`. Each step is bounded in requests.
set -eu
export PYTHONPATH=$PWD/src
PY=.venv/bin/python
OUT=runs/serve_load
C10=../shared/data/cifar10/val
IN=../shared/data/imagenette-160/val
if [ ! -d runs/serve_cifar10 ]; then
  $PY -m vitkit train --config recipes/cifar10.yaml --time-budget-min 6 --threads 1 --out runs/serve_cifar10
fi
if [ ! -d runs/serve_imagenette ]; then
  $PY -m vitkit train --model conv4+Mini/16 --hidden-dim 192 --depth 6 --num-heads 3 --mlp-dim 384 --pool gap \
    --data ../shared/data/imagenette-160 --img-size 160 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 \
    --crop rrc --rrc-scale 0.35 1 --hflip --randaugment-n 0 --mixup 0 --cutmix 0 --random-erasing 0 \
    --label-smoothing 0.1 --optimizer adamw --lr 2e-3 --weight-decay 0.05 --warmup-epochs 1 --batch-size 64 \
    --epochs 100 --time-budget-min 6 --save-every 0 --threads 1 --out runs/serve_imagenette
fi
for run in serve_cifar10 serve_imagenette; do
  [ -f runs/${run}_int8.onnx ] || $PY -m vitkit export runs/$run --quantize dynamic --out runs/${run}_int8.onnx
done
mkdir -p $OUT
$PY benchmarks/speed/serve_load.py runs/serve_cifar10 --data $C10 --requests 960 --out $OUT/cifar10_torch.json
$PY benchmarks/speed/serve_load.py runs/serve_cifar10 --data $C10 --requests 960 --workers 2 --skip-naive --out $OUT/cifar10_torch_workers2.json
$PY benchmarks/speed/serve_load.py runs/serve_cifar10_int8.onnx --data $C10 --requests 960 --out $OUT/cifar10_ort_int8.json
$PY benchmarks/speed/serve_load.py runs/serve_imagenette --data $IN --requests 480 --out $OUT/imagenette_torch.json
$PY benchmarks/speed/serve_load.py runs/serve_imagenette --data $IN --requests 960 --concurrency 32 --workers 2 --max-batch 16 --out $OUT/imagenette_torch_workers2_mb16.json
$PY benchmarks/speed/serve_load.py runs/serve_imagenette_int8.onnx --data $IN --requests 480 --out $OUT/imagenette_ort_int8.json
$PY benchmarks/speed/serve_load.py runs/serve_cifar10 --data $C10 --soak 20000 --bad-fraction 0.05 --out $OUT/soak_cifar10_torch.json
# the one-request-at-a-time script (decode and classify on the event loop), for each model
$PY benchmarks/speed/serve_load.py runs/serve_cifar10 --data $C10 --requests 960 --serial --out $OUT/cifar10_torch_serial.json
$PY benchmarks/speed/serve_load.py runs/serve_cifar10_int8.onnx --data $C10 --requests 960 --serial --out $OUT/cifar10_ort_int8_serial.json
$PY benchmarks/speed/serve_load.py runs/serve_imagenette --data $IN --requests 480 --serial --out $OUT/imagenette_torch_serial.json
$PY benchmarks/speed/serve_load.py runs/serve_imagenette_int8.onnx --data $IN --requests 480 --serial --out $OUT/imagenette_ort_int8_serial.json
