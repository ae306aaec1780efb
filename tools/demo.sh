#!/usr/bin/env bash
# The README's first command (`make demo`): trains a small GELAN on the built-in
# synthetic shapes data set (no download), validates it, runs detection on a few
# validation images and tells where everything went. A few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
G=${GELAN_BIN:-build/gelan}
CFG=tests/configs/gelan-tiny.yaml   # gelan-t's layout, narrower (0.9 M parameters)
DATA=configs/data/shapes.yaml
RUN=runs/demo
EPOCHS=${DEMO_EPOCHS:-12}

echo "== gelan.c demo: $("$G" info "$CFG" --img 160 | tail -n 1)"
echo "== 1. train for $EPOCHS epochs on $DATA at 160 pixels (runs/demo)"
# --nbs 8: one optimizer step per batch of 8 (the official nominal batch of 64
# would give a few dozen steps in a demo this short); everything else is the
# official recipe: SGD + Nesterov, warmup, linear LR, EMA, mosaic / mixup / HSV /
# flips, mosaic closed for the last epochs.
"$G" train --cfg "$CFG" --data "$DATA" --img 160 --batch 8 --nbs 8 --epochs "$EPOCHS" --close-mosaic 4 \
    --name demo --exist-ok --seed 0
echo "== 2. validate the best checkpoint (EMA weights)"
"$G" val --weights "$RUN/best.safetensors" --data "$DATA" --img 160 --save-json "$RUN/val_detections.json"
echo "== 3. detect on the first 6 validation images"
"$G" detect --weights "$RUN/best.safetensors" --data "$DATA" --count 6 --img 160 --out "$RUN/detect"
echo "== 4. convert for deployment: fold BN, merge RepConvN, write the runtime's graph"
"$G" convert --weights "$RUN/best.safetensors" --out "$RUN/model.safetensors" --data "$DATA"
GI=${GELAN_INFER_BIN:-$(dirname "$G")/gelan-infer}
echo "== 5. time it on the standalone runtime (build/gelan-infer, no autograd, no libyaml)"
"$GI" bench --model "$RUN/model.safetensors" --img 160 --runs 20 --warmup 3
echo
echo "== where everything went"
echo "  checkpoints:        $RUN/last.safetensors, $RUN/best.safetensors"
echo "  per-epoch results:  $RUN/results.csv and the plot $RUN/results.svg"
echo "  COCO detections:    $RUN/val_detections.json (score it: $G val --detections $RUN/val_detections.json --data $DATA)"
echo "  annotated images:   $RUN/detect/"
echo "  inference model:    $RUN/model.safetensors (build/gelan-infer run|detect|bench --model ...)"
