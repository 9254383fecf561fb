"""Write held-out text of each style for the LoRA study: OUT/heldout-fortunes.txt and
OUT/heldout-bible.txt, whole held-out documents (never trained on by the base model or the adapter)
joined by blank lines, up to about TOKENS tokens each.

Usage: python3 heldout_styles.py WORK OUT [TOKENS]   (WORK holds corpus.json from prepare_data.py)
"""
import json
import os
import sys

import sentencepiece as spm

WORK, OUT = sys.argv[1], sys.argv[2]
TOKENS = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
sys.argv = [sys.argv[0], WORK]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prepare_data  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sp = spm.SentencePieceProcessor(model_file=os.path.join(here, "..", "..", "models", "demo", "tokenizer.model"))
corpus = json.load(open(os.path.join(WORK, "corpus.json")))
fortunes = set(prepare_data.load_fortunes()[0])
styles = {
    "fortunes": [d for d in corpus["heldout_docs"] if d in fortunes],
    "bible": [d for d in corpus["heldout_docs"] if d not in fortunes],
}
for name, docs in styles.items():
    picked, n = [], 0
    for d in docs:
        k = len(sp.encode(d)) + 1
        if n + k > TOKENS and picked:
            break
        picked.append(d)
        n += k
    with open(os.path.join(OUT, f"heldout-{name}.txt"), "w", encoding="utf-8", newline="") as f:
        f.write("\n\n".join(picked))
    print(f"heldout-{name}.txt: {len(picked)} documents, ~{n} tokens")
