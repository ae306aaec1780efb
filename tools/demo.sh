#!/usr/bin/env bash
# The README's first command (`make demo`): shows what gelan.c does today.
set -euo pipefail
cd "$(dirname "$0")/.."
G=build/gelan
echo "== gelan.c demo"
for cfg in configs/models/gelan-t.yaml configs/models/yolov9-t.yaml configs/models/gelan-c.yaml; do
    [ -f "$cfg" ] || continue
    "$G" info "$cfg" | tail -n 1
done
golden=${GELAN_SHARED:-../shared}/golden/gelan-t_64_calib
if [ -d "$golden" ]; then
    mkdir -p runs/demo
    "$G" trace --cfg "$golden/cfg.yaml" --weights "$golden/weights.safetensors" \
        --in "$golden/input.safetensors" --out runs/demo/trace.safetensors --fuse
    echo "trace of gelan-t on the golden input written to runs/demo/trace.safetensors"
fi
