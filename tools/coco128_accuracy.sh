#!/usr/bin/env bash
# The coco128 accuracy tables of docs/BENCHMARKS.md: quantization (issue 7: fp32, PTQ with each
# method, QAT) and pruning (issue 9: 25 % and 50 % global L2, each fine-tuned, against an unpruned
# control fine-tuned the same way), all from one trained yolov9-t.
#
# Step 0, the trained models (about 65 minutes each on one core of the 2-core EPYC; run both at once):
#   build/gelan train --cfg configs/models/yolov9-t.yaml --data configs/data/coco128.yaml \
#       --hyp configs/hyp/hyp.adamw-coco128.yaml --optimizer AdamW --img 320 --batch 8 --nbs 8 \
#       --epochs 150 --threads 1 --noval --name c128_v9t
#   (the same with --cfg configs/models/gelan-t-shufflenet.yaml --name c128_gtshuf: the ShuffleNetV2 row)
#
# This script then runs two lanes of one thread each: quantization (three PTQ methods, QAT, then
# the pruning's control) and pruning (prune, score, fine-tune). Logs and results go to $OUT; the
# fine-tunings validate once, after their last epoch (--noval), as the scores of the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
G=${GELAN_BIN:-build/gelan}
W=${1:-runs/c128_v9t/last.safetensors}
OUT=${OUT:-runs/c128_tables}
D=configs/data/coco128.yaml
I=320
E_QAT=${E_QAT:-10} # QAT epochs
E_FT=${E_FT:-10}   # fine-tuning epochs of every pruned model and of the control
FT="--data $D --img $I --batch 8 --nbs 8 --hyp configs/hyp/hyp.adamw-finetune.yaml --optimizer AdamW --threads 1 --exist-ok --noval"
[ -f "$W" ] || { echo "error: $W: no such checkpoint (train it first, see the top of $0)" >&2; exit 1; }
mkdir -p "$OUT"

lane_quant() {
    "$G" val --weights "$W" --data "$D" --img $I --threads 1
    for m in minmax percentile kl; do
        echo "== PTQ $m"
        "$G" quantize --weights "$W" --calib "$D" --img $I --method $m --data "$D" --threads 1 \
            --out "$OUT/ptq_$m.safetensors"
    done
    echo "== QAT, $E_QAT epochs"
    "$G" train --weights "$W" --qat $FT --epochs "$E_QAT" --name c128_v9t_qat
    echo "== control: the unpruned model, the pruned models' fine-tuning"
    "$G" train --weights "$W" $FT --epochs "$E_FT" --name c128_v9t_ctl_ft
}

lane_prune() {
    for r in 25 50; do
        echo "== prune $r %"
        "$G" prune --weights "$W" --ratio 0.$r --scope global --norm l2 --out "$OUT/prune$r.safetensors"
        "$G" info "$OUT/prune$r.safetensors" --img 640 | tail -n 1
        "$G" val --weights "$OUT/prune$r.safetensors" --data "$D" --img $I --threads 1
        "$G" train --weights "$OUT/prune$r.safetensors" $FT --epochs "$E_FT" --name c128_v9t_prune${r}_ft
    done
}

lane_quant >"$OUT/quant.log" 2>&1 &
q=$!
lane_prune >"$OUT/prune.log" 2>&1 &
p=$!
rc=0
wait $q || rc=1
wait $p || rc=1
grep -E "^ +all|PTQ|==|mAP" "$OUT/quant.log" "$OUT/prune.log" | grep -v "it/s" || true
echo "logs: $OUT/quant.log $OUT/prune.log; runs: runs/c128_v9t_{qat,prune25_ft,prune50_ft,ctl_ft}"
exit $rc
