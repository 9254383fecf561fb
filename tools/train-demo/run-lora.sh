#!/bin/bash
# The LoRA step of the demo recipe: fortunes-only fine-tune of models/demo → models/demo-lora, plus the
# reference logits lutra's tests read (test/fixtures/demo-lora-reference.safetensors).
# Needs what run.sh needs (python3-torch, python3-sentencepiece, the fortunes and bible-kjv packages)
# and models/demo. Environment overrides: WORK (scratch dir), STEPS, LR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-$HERE/work-lora}
STEPS=${STEPS:-500}
LR=${LR:-5e-3}
export OMP_WAIT_POLICY=PASSIVE
case "$WORK" in
  /|"$ROOT"|"$HERE") echo "refusing to wipe WORK=$WORK" >&2; exit 1 ;;
esac
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$HERE"
/usr/bin/python3 prepare_data.py "$WORK"
/usr/bin/python3 train_lora.py "$WORK" "$ROOT/models/demo" "$ROOT/models/demo-lora" "$ROOT/test/fixtures/demo-lora-reference.safetensors" --steps "$STEPS" --lr "$LR"
/usr/bin/python3 heldout_styles.py "$WORK" "$ROOT/models/demo-lora"
/usr/bin/python3 lora_card.py "$ROOT/models/demo-lora"
