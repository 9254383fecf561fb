#!/bin/bash
# Re-run the deterministic parts of the recipe in a separate scratch dir and compare with the
# finished run (tools/train-demo/work + models/demo):
#   * corpus.json, tokenizer.model, tokenizer.json, tokenizer_config.json must be byte-identical;
#   * the first N training steps (same 700-step schedule) must give bit-identical losses.
# Usage: bash tools/train-demo/determinism_check.sh [N=40]   (after run.sh)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-$HERE/work}
OUT=${OUT:-$ROOT/models/demo}
CHECK=$HERE/work-check
N=${1:-40}
PY=/usr/bin/python3
export OMP_WAIT_POLICY=PASSIVE
STEPS=$($PY -c "import json; print(json.load(open('$WORK/train_log.json'))['args']['steps'])")

rm -rf "$CHECK"
mkdir -p "$CHECK/out"
cd "$HERE"
$PY prepare_data.py "$CHECK" >/dev/null
$PY train_tokenizer.py "$CHECK" >/dev/null
$PY write_hf_tokenizer.py "$CHECK" "$CHECK/out" >/dev/null
cmp "$WORK/corpus.json" "$CHECK/corpus.json"
cmp "$WORK/tokenizer.model" "$CHECK/tokenizer.model"
for f in tokenizer.json tokenizer_config.json special_tokens_map.json tokenizer.model; do cmp "$OUT/$f" "$CHECK/out/$f"; done
echo "data and tokenizer files: identical"
$PY train.py --work "$CHECK" --steps "$STEPS" --stop-after "$N" --out "$CHECK/ckpt.pt" --log "$CHECK/train_log.json" | tail -2
$PY - "$WORK/train_log.json" "$CHECK/train_log.json" "$N" <<'EOF'
import json, sys
a = json.load(open(sys.argv[1]))["steps"]
b = json.load(open(sys.argv[2]))["steps"]
n = int(sys.argv[3])
diff = [(x["step"], x["loss"], y["loss"]) for x, y in zip(a[:n], b[:n]) if x["loss"] != y["loss"]]
if len(b) != n or diff:
    print("NOT deterministic:", diff[:5])
    sys.exit(1)
print(f"first {n} training losses bit-identical to the full run (last: {b[-1]['loss']!r})")
EOF
