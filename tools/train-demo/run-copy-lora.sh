#!/bin/bash
# The copy adapter of the demo recipe: a LoRA that teaches models/demo to repeat and quote passages in
# its context → models/demo-copy-lora (the copy-heavy workload of the speculative-decoding benchmark).
# Needs what run.sh needs (python3-torch, python3-sentencepiece, the fortunes and bible-kjv packages)
# and models/demo. Environment overrides: WORK (scratch dir), STEPS, LR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-$HERE/work-copy}
STEPS=${STEPS:-2500}
LR=${LR:-2e-3}
export OMP_WAIT_POLICY=PASSIVE
case "$WORK" in
  /|"$ROOT"|"$HERE") echo "refusing to wipe WORK=$WORK" >&2; exit 1 ;;
esac
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$HERE"
/usr/bin/python3 prepare_data.py "$WORK"
/usr/bin/python3 train_copy_lora.py "$WORK" "$ROOT/models/demo" "$ROOT/models/demo-copy-lora" --steps "$STEPS" --lr "$LR"
