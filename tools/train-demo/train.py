"""Train the demo Gemma 3 model on CPU (deterministic: fixed seeds, fixed steps, 2 threads).

Each step is a batch of BATCH rows of SEQ tokens:
  * TEXT_ROWS rows are [<bos>] + a window of the training token stream starting at a random offset
    (exactly the shape of the evaluation protocol), targets = the stream tokens;
  * the other rows are <bos> + a synthetic multi-turn Gemma chat conversation (chat_data.py).
Loss: mean next-token cross-entropy over all positions. AdamW, linear warmup then cosine decay to
10% of the peak LR, gradient clipping 1.0, bf16 autocast (weights and optimizer state in fp32).
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # much less slow-down when the CPU is shared

import argparse
import json
import math
import random
import sys
import time

import torch
import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config, Gemma3ForCausalLM  # noqa: E402
from chat_data import ChatMaker  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--work", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "work"))
ap.add_argument("--steps", type=int, default=700)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--chat-rows", type=int, default=2)
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--lr", type=float, default=3e-3)
ap.add_argument("--min-lr-frac", type=float, default=0.1)
ap.add_argument("--warmup", type=int, default=60)
ap.add_argument("--wd", type=float, default=0.1)
ap.add_argument("--init-std", type=float, default=0.02)
ap.add_argument("--embed-std", type=float, default=0.0625)
ap.add_argument("--seed", type=int, default=1234)
ap.add_argument("--stop-after", type=int, default=None,
                help="stop after this many steps (same LR schedule as --steps; for determinism checks)")
ap.add_argument("--eval-every", type=int, default=100)
ap.add_argument("--eval-windows", type=int, default=24)
ap.add_argument("--fp32", action="store_true", help="disable bf16 autocast")
ap.add_argument("--out", default=None, help="checkpoint path (default WORK/ckpt.pt)")
ap.add_argument("--log", default=None, help="log path (default WORK/train_log.json)")
args = ap.parse_args()

torch.set_num_threads(2)
torch.set_flush_denormal(True)
torch.manual_seed(args.seed)
random.seed(args.seed)
torch.use_deterministic_algorithms(True)

work = args.work
sp = spm.SentencePieceProcessor(model_file=os.path.join(work, "tokenizer.model"))
corpus = json.load(open(os.path.join(work, "corpus.json")))

t0 = time.time()
cache = os.path.join(work, "train_ids.pt")
if os.path.exists(cache):
    blob = torch.load(cache)
    train_ids, heldout_ids = blob["train"], blob["heldout"]
else:
    train_ids = torch.tensor(sp.encode("\n\n".join(corpus["train_docs"])), dtype=torch.int64)
    heldout_ids = torch.tensor(sp.encode("\n\n".join(corpus["heldout_docs"])), dtype=torch.int64)
    torch.save({"train": train_ids, "heldout": heldout_ids}, cache)
print(f"train stream {len(train_ids)} tokens, held-out {len(heldout_ids)} tokens ({time.time() - t0:.1f}s)", flush=True)

cfg = Config(vocab_size=sp.get_piece_size())
model = Gemma3ForCausalLM(cfg)
model.init_weights(args.seed, std=args.init_std, embed_std=args.embed_std)
model.banded = True
n_params = sum(p.numel() for p in model.parameters())
print(f"model: {n_params} parameters; {cfg}", flush=True)

decay, no_decay = [], []
for n, p in model.named_parameters():
    (decay if p.dim() >= 2 else no_decay).append(p)
opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)


def lr_at(step):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


chat = ChatMaker(corpus["verses"], corpus["fortunes_train"])
data_gen = torch.Generator().manual_seed(args.seed + 1)
chat_rng = random.Random(args.seed + 2)
S = args.seq
text_rows = args.batch - args.chat_rows


def batch():
    rows = []
    offs = torch.randint(0, len(train_ids) - S, (text_rows,), generator=data_gen)
    for o in offs.tolist():
        chunk = train_ids[o:o + S]
        rows.append(torch.cat([torch.tensor([2]), chunk]))  # [bos] + S tokens
    for _ in range(args.chat_rows):
        rows.append(torch.tensor(chat.sequence(chat_rng, sp, S), dtype=torch.int64))
    x = torch.stack(rows)
    return x[:, :-1], x[:, 1:]


# fixed held-out windows for progress evaluation: [bos] + 511 tokens, evenly spaced
W = S - 1
n_win = min(args.eval_windows, len(heldout_ids) // W)
eval_starts = [int(i * (len(heldout_ids) - W) / max(1, n_win - 1)) for i in range(n_win)]


@torch.no_grad()
def quick_eval():
    model.eval()
    tot, cnt = 0.0, 0
    for i in range(0, n_win, 8):
        xs = [torch.cat([torch.tensor([2]), heldout_ids[s:s + W]]) for s in eval_starts[i:i + 8]]
        x = torch.stack(xs)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
            logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 x[:, 1:].reshape(-1), reduction="sum")
        tot += loss.item()
        cnt += x[:, 1:].numel()
    model.train()
    return tot / cnt


log = {"args": vars(args), "config": cfg.__dict__, "n_params": n_params, "steps": [], "evals": []}
t_start = time.time()
tokens = 0
model.train()
for step in range(args.steps if args.stop_after is None else min(args.steps, args.stop_after)):
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
        loss = model.loss(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    tokens += x.numel()
    el = time.time() - t_start
    log["steps"].append({"step": step + 1, "loss": loss.item(), "lr": lr_at(step), "gnorm": gnorm.item(),
                         "tokens": tokens, "elapsed": el})
    if step % 10 == 0 or step == args.steps - 1:
        print(f"step {step + 1:5d}/{args.steps} loss {loss.item():.4f} lr {lr_at(step):.2e} gnorm {gnorm.item():.2f} "
              f"tok {tokens} {el:.0f}s ({tokens / el:.0f} tok/s)", flush=True)
    if (step + 1) % args.eval_every == 0 or step == args.steps - 1 or step + 1 == args.stop_after:
        te = time.time()
        hl = quick_eval()
        log["evals"].append({"step": step + 1, "heldout_loss": hl, "tokens": tokens})
        print(f"  held-out loss ({n_win} windows, bf16 autocast) {hl:.4f}  [{time.time() - te:.1f}s]", flush=True)

log["train_seconds"] = time.time() - t_start
log["tokens_seen"] = tokens
n_done = len(log["steps"])
log["text_tokens_seen"] = n_done * text_rows * S
log["chat_tokens_seen"] = n_done * args.chat_rows * S
log["train_stream_tokens"] = len(train_ids)
log["heldout_stream_tokens"] = len(heldout_ids)
torch.save({"config": cfg.__dict__, "state_dict": model.state_dict()}, args.out or os.path.join(work, "ckpt.pt"))
json.dump(log, open(args.log or os.path.join(work, "train_log.json"), "w"), indent=1)
print(f"done: {n_done} steps, {tokens} tokens, {log['train_seconds']:.0f}s", flush=True)
