"""Fine-tune a LoRA adapter on the demo model: the fortunes corpus only (a distinct style from the
mixed Bible + fortunes pre-training), written in the PEFT layout lutra reads.

Usage: python3 train_lora.py WORK BASE OUT FIXTURE
  WORK     folder with corpus.json from prepare_data.py (for the training and held-out texts)
  BASE     the demo model folder (models/demo)
  OUT      adapter folder to write (models/demo-lora): adapter_config.json, adapter_model.safetensors,
           train.json (losses before/after on held-out text of both styles)
  FIXTURE  reference logits for lutra's tests (float64 forward with the adapter as stored)

LoRA as PEFT computes it (lora_layers.py); the base weights frozen; every q/k/v/o/gate/up/down
projection adapted.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import random
import sys
import time

import torch
import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402
from lora_layers import Trainer, add_training_args, attach, load_frozen_base, save_peft  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("work")
ap.add_argument("base")
ap.add_argument("out")
ap.add_argument("fixture")
add_training_args(ap, steps=300, rank=8, alpha=16.0, lr=2e-3, seed=4321)
ap.add_argument("--seq", type=int, default=256)
ap.add_argument("--eval-windows", type=int, default=32)
args = ap.parse_args()

torch.set_num_threads(2)
torch.manual_seed(args.seed)
torch.use_deterministic_algorithms(True)
sp = spm.SentencePieceProcessor(model_file=os.path.join(args.base, "tokenizer.model"))
corpus = json.load(open(os.path.join(args.work, "corpus.json")))
fortunes_train = corpus["fortunes_train"]
# prepare_data.py holds out fortune i iff i % 20 == 10 of the cleaned list; the held-out documents are
# those fortunes plus the held-out Bible chapters. A held-out document is a fortune iff it is not a
# chapter (chapters are verse lines; fortunes_train tells the fortunes' style apart only by content),
# so split by membership in the full cleaned fortune list, rebuilt here the same way.
sys.argv = [sys.argv[0], args.work]
import prepare_data  # noqa: E402

all_fortunes, _ = prepare_data.load_fortunes()
fortune_set = set(all_fortunes)
held_fortunes = [d for d in corpus["heldout_docs"] if d in fortune_set]
held_bible = [d for d in corpus["heldout_docs"] if d not in fortune_set]
print(f"fortunes: {len(fortunes_train)} train, {len(held_fortunes)} held out; held-out Bible chapters {len(held_bible)}", flush=True)

rng = random.Random(args.seed)
docs = fortunes_train[:]
rng.shuffle(docs)
train_ids = torch.tensor(sp.encode("\n\n".join(docs)), dtype=torch.int64)
S = args.seq


def windows(texts, n):
    ids = torch.tensor(sp.encode("\n\n".join(texts)), dtype=torch.int64)
    W = S - 1
    n = min(n, len(ids) // W)
    starts = [int(i * (len(ids) - W) / max(1, n - 1)) for i in range(n)]
    return torch.stack([torch.cat([torch.tensor([2]), ids[s:s + W]]) for s in starts])


eval_sets = {"fortunes": windows(held_fortunes, args.eval_windows), "bible": windows(held_bible, args.eval_windows)}


@torch.no_grad()
def evaluate(m):
    m.eval()
    out = {}
    for k, x in eval_sets.items():
        tot = 0.0
        for i in range(0, len(x), 8):
            xb = x[i:i + 8]
            logits = m(xb[:, :-1]).float()
            tot += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), xb[:, 1:].reshape(-1), reduction="sum").item()
        out[k] = tot / x[:, 1:].numel()
    m.train()
    return out


_, model = load_frozen_base(args.base)
before = evaluate(model)
print(f"held-out loss before: {before}", flush=True)
loras = attach(model, args.rank, args.alpha)
trainer = Trainer(loras, args)
gen = torch.Generator().manual_seed(args.seed + 1)
model.train()
t0 = time.time()
for step in range(args.steps):
    offs = torch.randint(0, len(train_ids) - S, (args.batch,), generator=gen)
    x = torch.stack([torch.cat([torch.tensor([2]), train_ids[o:o + S]]) for o in offs.tolist()])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(x[:, :-1], x[:, 1:])
    trainer.step(step, loss, t0)

# What is shipped: BF16 tensors, in PEFT's names; everything after this reads them back as stored.
save_peft(args.out, loras, args.rank, args.alpha)
after = evaluate(model)
print(f"held-out loss after: {after}", flush=True)
json.dump({"steps": args.steps, "batch": args.batch, "seq": args.seq, "rank": args.rank, "alpha": args.alpha, "lr": args.lr,
           "warmup": args.warmup, "seed": args.seed,
           "seconds": round(time.time() - t0), "loss_before": before, "loss_after": after, "log": trainer.log,
           "eval": f"{args.eval_windows} windows of [<bos>] + {S - 1} held-out tokens per style, float32, mean token cross-entropy (nats)"},
          open(os.path.join(args.out, "train.json"), "w"), indent=1)

# Reference logits for lutra's tests: float64 forward of the base (bf16 weights) plus the adapter as
# stored, on two prompts, at every position; and the base alone at each prompt's last position, so a
# test can see the adapter act.
PROMPTS = ["A fool and his money", "And the LORD said unto Moses"]
ids = [[2] + sp.encode(p) for p in PROMPTS]
model = model.double().eval()
rows_with, rows_base, rows_ids = [], [], []
with torch.no_grad():
    for x in ids:
        t = torch.tensor([x])
        rows_with.append(model(t)[0].float())
        for w in loras.values():
            w.scale_saved, w.scale = w.scale, 0.0
        rows_base.append(model(t)[0, -1:].float())
        for w in loras.values():
            w.scale = w.scale_saved
        rows_ids.append(torch.tensor(x, dtype=torch.float32))
os.makedirs(os.path.dirname(args.fixture), exist_ok=True)
write_safetensors(args.fixture, {
    "ids_0": rows_ids[0], "ids_1": rows_ids[1],
    "logits_0": rows_with[0], "logits_1": rows_with[1],
    "base_logits_0": rows_base[0], "base_logits_1": rows_base[1],
}, dtype="F32", metadata={"format": "pt", "about": "float64 forward of models/demo + models/demo-lora as stored, rounded to f32"})

print(f"wrote {args.out} and {args.fixture}", flush=True)
