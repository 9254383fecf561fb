#!/bin/bash
# Reproducible recipe for models/demo: data -> tokenizer -> tokenizer check -> train -> export -> eval -> card.
# Usage (from anywhere):  bash tools/train-demo/run.sh
# Environment overrides: STEPS (default 700), WORK (scratch dir, default tools/train-demo/work),
#                        OUT (default models/demo).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-$HERE/work}
OUT=${OUT:-$ROOT/models/demo}
STEPS=${STEPS:-700}
PY=/usr/bin/python3
export OMP_WAIT_POLICY=PASSIVE

start=$(date +%s)
case "$WORK" in
  /|"$ROOT"|"$HERE") echo "refusing to wipe WORK=$WORK" >&2; exit 1 ;;
esac
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
cd "$HERE"
{
  echo "== 1/7 prepare data"
  $PY prepare_data.py "$WORK"
  echo "== 2/7 train tokenizer"
  $PY train_tokenizer.py "$WORK"
  echo "== 3/7 write Hugging Face tokenizer files"
  $PY write_hf_tokenizer.py "$WORK" "$OUT"
  echo "== 4/7 check tokenizer.json + chat template in JavaScript"
  (cd "$ROOT" && node tools/train-demo/check_tokenizer.mjs "$OUT" "$WORK/tokenizer_tests.json")
  echo "== 5/7 train ($STEPS steps)"
  $PY train.py --work "$WORK" --steps "$STEPS"
  echo "== 6/7 export + evaluate"
  $PY export.py "$WORK" "$OUT"
  $PY evaluate.py "$WORK" "$OUT"
  echo "== 7/7 independent float64 NumPy check of eval.json, tokenizer check on the shipped held-out texts, model card"
  $PY numpy_reference.py "$OUT"
  $PY write_hf_tokenizer.py "$WORK" "$OUT" --with-heldout >/dev/null
  (cd "$ROOT" && node tools/train-demo/check_tokenizer.mjs "$OUT" "$WORK/tokenizer_tests.json")
  $PY make_card.py "$WORK" "$OUT" $(( $(date +%s) - start ))
  echo "== done in $(( $(date +%s) - start ))s"
} 2>&1 | tee "$WORK/run.log"
