"""Fine-tune a LoRA adapter that teaches the demo model to copy: repeat or quote a passage that is
already in its context. The 9.2 M-parameter demo model, trained on 2.9 M tokens, never learned to
copy (asked to repeat a passage it writes new verses), so prompt-lookup and suffix drafts, which
propose text from the context, are almost never accepted on it. With this adapter a copy-heavy
workload exists to measure speculative decoding on (tools/bench/speculative.mjs).

Usage: python3 train_copy_lora.py WORK BASE OUT
  WORK  folder with corpus.json from prepare_data.py
  BASE  the demo model folder (models/demo)
  OUT   adapter folder to write (models/demo-copy-lora): adapter_config.json,
        adapter_model.safetensors, train.json (copy accuracy and held-out loss before and after)

Passages are spans of 80..420 characters of the training documents (no passage of Genesis 1, the
benchmark's passage; the evaluation takes its passages from the held-out documents). Each example
is one passage in one of the formats below; the loss is the cross-entropy over the tokens after the
passage's first occurrence (the copy, or the quote) plus --lm-weight times that over the tokens
before it (ordinary text: it keeps the adapter from forgetting how to write).
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import random
import sys
import time

import torch
import torch.nn.functional as F
import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_layers import Trainer, add_training_args, attach, load_frozen_base, save_peft  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("work")
ap.add_argument("base")
ap.add_argument("out")
add_training_args(ap, steps=2500, rank=64, alpha=64.0, lr=2e-3, seed=2718)
ap.add_argument("--eval-passages", type=int, default=64)
ap.add_argument("--max-chars", type=int, default=420)
ap.add_argument("--lm-weight", type=float, default=0.3)
args = ap.parse_args()

torch.set_num_threads(2)
torch.manual_seed(args.seed)

# (prefix before the copy, what follows it) given the passage p and a quoted sub-span q.
FORMATS = [
    lambda p, q: (f"{p}\n\nRepeat the passage above word for word.\n\n", p),
    lambda p, q: (f"Copy this text: {p}\nCopy: ", p),
    lambda p, q: (f"{p}\n\n", p),
    lambda p, q: (f"{p}\n\nThe passage says that \"", q + "\""),
    lambda p, q: (f"{p}\n\nSummarise the passage, quoting its key lines: \"", q + "\""),
]


def passage(rng, docs):
    """A span of 80..--max-chars characters of a random document, starting at a line or word start."""
    while True:
        d = rng.choice(docs)
        if len(d) < 80 or "In the beginning God created" in d:
            continue
        n = rng.randint(80, max(80, args.max_chars))
        starts = [0] + [i + 1 for i, c in enumerate(d) if c in " \n" and i + 1 < len(d) - 80]
        s = rng.choice(starts)
        e = min(len(d), s + n)
        if e < len(d):
            cut = d.rfind(" ", s, e)
            e = cut if cut > s + 40 else e
        p = d[s:e].strip()
        if len(p) >= 60:
            return p


def quote(rng, p):
    """A sub-span of whole words of p (at least a third of it)."""
    w = p.split()
    k = rng.randint(min(len(w), max(3, len(w) // 3)), len(w))
    s = rng.randint(0, len(w) - k)
    return " ".join(w[s:s + k])


sp = spm.SentencePieceProcessor(model_file=os.path.join(args.base, "tokenizer.model"))


def example(rng, docs):
    """(ids, k): the token ids and the index of the copy's first token."""
    p = passage(rng, docs)
    prefix, copy = rng.choice(FORMATS)(p, quote(rng, p))
    a = sp.encode(prefix)
    return [2] + a + sp.encode(copy), 1 + len(a)


def batch(rng, docs, n):
    """Inputs x, the copy's targets y (-100 elsewhere) and the prefix's targets z (-100 elsewhere)."""
    rows = [example(rng, docs) for _ in range(n)]
    T = max(len(r[0]) for r in rows)
    x = torch.zeros((n, T), dtype=torch.int64)
    y = torch.full((n, T), -100, dtype=torch.int64)
    z = torch.full((n, T), -100, dtype=torch.int64)
    for i, (ids, k) in enumerate(rows):
        x[i, :len(ids)] = torch.tensor(ids)
        # the target at position j is the token at j + 1
        y[i, k - 1:len(ids) - 1] = torch.tensor(ids[k:])
        z[i, :k - 1] = torch.tensor(ids[1:k])
    return x, y, z


corpus = json.load(open(os.path.join(args.work, "corpus.json")))
train_docs = corpus["train_docs"]
held_docs = corpus["heldout_docs"]
eval_rng = random.Random(args.seed + 7)
eval_batches = [batch(eval_rng, held_docs, 8) for _ in range(args.eval_passages // 8)]
held_text = "\n\n".join(held_docs)
held_ids = torch.tensor(sp.encode(held_text[:200_000]), dtype=torch.int64)
lm_windows = torch.stack([torch.cat([torch.tensor([2]), held_ids[s:s + 255]]) for s in range(0, 32 * 1000, 1000)])


@torch.no_grad()
def evaluate(m):
    """Teacher-forced top-1 accuracy and loss over the copies of held-out passages; held-out LM loss."""
    m.eval()
    hit = tot = 0
    loss = 0.0
    for x, y, _ in eval_batches:
        logits = m(x).float()
        mask = y != -100
        hit += (logits.argmax(-1)[mask] == y[mask]).sum().item()
        tot += mask.sum().item()
        loss += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100, reduction="sum").item()
    lm = 0.0
    for i in range(0, len(lm_windows), 8):
        w = lm_windows[i:i + 8]
        logits = m(w[:, :-1]).float()
        lm += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum").item()
    m.train()
    return {"copy_top1": round(hit / tot, 4), "copy_loss": round(loss / tot, 4), "heldout_lm_loss": round(lm / lm_windows[:, 1:].numel(), 4)}


cfg, model = load_frozen_base(args.base)
before = evaluate(model)
print(f"before: {before}", flush=True)
loras = attach(model, args.rank, args.alpha)
trainer = Trainer(loras, args)
rng = random.Random(args.seed)
model.train()
t0 = time.time()
for step in range(args.steps):
    x, y, z = batch(rng, train_docs, args.batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x).float().reshape(-1, cfg.vocab_size)
    loss = F.cross_entropy(logits, y.reshape(-1), ignore_index=-100)
    if args.lm_weight > 0:
        loss = loss + args.lm_weight * F.cross_entropy(logits, z.reshape(-1), ignore_index=-100)
    trainer.step(step, loss, t0)
    if step % 100 == 99:
        print(f"  eval: {evaluate(model)}", flush=True)

save_peft(args.out, loras, args.rank, args.alpha)
after = evaluate(model)
print(f"after (as stored): {after}", flush=True)
json.dump({"steps": args.steps, "batch": args.batch, "max_chars": args.max_chars, "lm_weight": args.lm_weight, "rank": args.rank, "alpha": args.alpha, "lr": args.lr,
           "warmup": args.warmup, "seed": args.seed, "seconds": round(time.time() - t0), "before": before, "after": after, "log": trainer.log,
           "eval": f"{args.eval_passages} held-out passages in the training formats: top-1 and cross-entropy (nats) over the copied tokens, "
                   "teacher-forced, float32; heldout_lm_loss: 32 windows of [<bos>] + 255 held-out tokens"},
          open(os.path.join(args.out, "train.json"), "w"), indent=1)
print(f"wrote {args.out}", flush=True)
