#!/bin/bash
# The LoRA steps of the demo recipe. Needs what run.sh needs (python3-torch, python3-sentencepiece, the
# fortunes and bible-kjv packages) and models/demo. Environment overrides: WORK (scratch dir), STEPS, LR.
#   run-lora.sh [fortunes]  fortunes-only fine-tune → models/demo-lora, plus the reference logits
#                           lutra's tests read (test/fixtures/demo-lora-reference.safetensors)
#   run-lora.sh copy        the copy adapter → models/demo-copy-lora (repeats and quotes passages)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WHICH=${1:-fortunes}
case "$WHICH" in
  fortunes) WORK=${WORK:-$HERE/work-lora}; STEPS=${STEPS:-500}; LR=${LR:-5e-3} ;;
  copy) WORK=${WORK:-$HERE/work-copy}; STEPS=${STEPS:-2500}; LR=${LR:-2e-3} ;;
  *) echo "run-lora.sh: unknown adapter '$WHICH' (expected fortunes or copy)" >&2; exit 1 ;;
esac
export OMP_WAIT_POLICY=PASSIVE
case "$WORK" in
  /|"$ROOT"|"$HERE") echo "refusing to wipe WORK=$WORK" >&2; exit 1 ;;
esac
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$HERE"
/usr/bin/python3 prepare_data.py "$WORK"
if [ "$WHICH" = copy ]; then
  /usr/bin/python3 train_copy_lora.py "$WORK" "$ROOT/models/demo" "$ROOT/models/demo-copy-lora" --steps "$STEPS" --lr "$LR"
else
  /usr/bin/python3 train_lora.py "$WORK" "$ROOT/models/demo" "$ROOT/models/demo-lora" "$ROOT/test/fixtures/demo-lora-reference.safetensors" --steps "$STEPS" --lr "$LR"
  /usr/bin/python3 heldout_styles.py "$WORK" "$ROOT/models/demo-lora"
  /usr/bin/python3 lora_card.py "$ROOT/models/demo-lora"
fi
