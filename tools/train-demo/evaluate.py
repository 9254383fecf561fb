"""Evaluate the EXPORTED model (bf16 weights from model.safetensors, cast to float32, float32 math)
and write models/demo/eval.json, heldout-sample.txt, heldout-full.txt, samples.json, loss.png.

Evaluation protocol (the cross-check contract for other implementations):
  tokenize the file's full text (UTF-8, exactly as stored) with add_special_tokens=false; split the
  ids into consecutive windows of 511 tokens (drop a final partial window shorter than 64 tokens,
  otherwise keep it); evaluate each window as [<bos>] + window; loss = mean natural-log cross-entropy
  of predicting every window token from its prefix (all positions except predicting <bos>),
  averaged over ALL target tokens of all windows.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import math
import sys
import time

import torch
import torch.nn.functional as F
import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Gemma3ForCausalLM, load_config_json  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402
from chat_format import render_chat  # noqa: E402

torch.set_num_threads(2)
WORK, OUT = sys.argv[1], sys.argv[2]
WINDOW = 512  # [<bos>] + 511 tokens
MIN_LAST = 64
SAMPLE_TOKENS = 2600  # heldout-sample.txt: whole held-out documents, at most this many tokens

PROTOCOL = ("Tokenize the file's full text (read as UTF-8 exactly as stored, no stripping) with "
            "add_special_tokens=false. Split the ids into consecutive windows of 511 tokens; drop a final "
            "partial window shorter than 64 tokens, otherwise keep it. Evaluate each window independently as "
            "[<bos>=2] + window (positions 0..len, no KV cache carried between windows). Loss = natural-log "
            "cross-entropy of predicting each window token from its prefix (every position except predicting "
            "<bos>), averaged over ALL target tokens of all windows (not a mean of window means). Reference "
            "numbers computed with the bf16 weights of model.safetensors cast to float32 and float32 math "
            "(embedding scale sqrt(256)=16 exact).")

sp = spm.SentencePieceProcessor(model_file=os.path.join(OUT, "tokenizer.model"))
corpus = json.load(open(os.path.join(WORK, "corpus.json")))
cfg = load_config_json(os.path.join(OUT, "config.json"))
model = Gemma3ForCausalLM(cfg)
weights = read_safetensors(os.path.join(OUT, "model.safetensors"))
missing, unexpected = model.load_state_dict(weights, strict=True), None
model.eval()
model.banded = False  # plain [T, T] masks, exactly as specified

# ---------------- held-out texts ----------------
docs = corpus["heldout_docs"]
full_text = "\n\n".join(docs)
sample_docs, n = [], 0
for d in docs:
    k = len(sp.encode(d)) + 1
    if n + k > SAMPLE_TOKENS:
        break
    sample_docs.append(d)
    n += k
sample_text = "\n\n".join(sample_docs)
with open(os.path.join(OUT, "heldout-sample.txt"), "w", encoding="utf-8", newline="") as f:
    f.write(sample_text)
with open(os.path.join(OUT, "heldout-full.txt"), "w", encoding="utf-8", newline="") as f:
    f.write(full_text)


def windows_of(ids):
    W = WINDOW - 1
    out = [ids[i:i + W] for i in range(0, len(ids), W)]
    if out and len(out[-1]) < MIN_LAST:
        out.pop()
    return out


@torch.no_grad()
def evaluate_text(text, batch=4, keep_windows=False):
    ids = sp.encode(text)
    wins = windows_of(ids)
    tot, cnt = 0.0, 0
    top1_prob, top1_hit, tgt_prob = 0.0, 0, 0.0
    per = []
    for i in range(0, len(wins), batch):
        group = wins[i:i + batch]
        for L in sorted(set(len(w) for w in group)):  # equal-length rows batch together
            rows = [w for w in group if len(w) == L]
            x = torch.tensor([[2] + w for w in rows], dtype=torch.int64)
            logits = model(x[:, :-1]).float()  # [B, L, V], position t predicts x[t+1]
            y = x[:, 1:]
            lp = torch.log_softmax(logits, dim=-1)
            nll = -lp.gather(-1, y[..., None])[..., 0]  # [B, L]
            p = lp.exp()
            pmax, amax = p.max(-1)
            tot += nll.double().sum().item()
            cnt += nll.numel()
            top1_prob += pmax.double().sum().item()
            top1_hit += (amax == y).sum().item()
            tgt_prob += (-nll).exp().double().sum().item()
            if keep_windows:
                for r in range(len(rows)):
                    per.append({"n_targets": L, "mean_loss": nll[r].double().mean().item(),
                                "first_targets_argmax": amax[r, :16].tolist()})
    res = {"n_tokens": len(ids), "n_windows": len(wins), "n_targets": cnt, "mean_loss": tot / cnt,
           "mean_top1_prob": top1_prob / cnt, "top1_accuracy": top1_hit / cnt, "mean_target_prob": tgt_prob / cnt}
    if keep_windows:
        res["windows"] = per
    return res


t0 = time.time()
s = evaluate_text(sample_text, keep_windows=True)
print(f"sample: {s['n_tokens']} tokens, {s['n_windows']} windows, loss {s['mean_loss']:.6f} ({time.time() - t0:.0f}s)",
      flush=True)
t0 = time.time()
f = evaluate_text(full_text)
print(f"full held-out: {f['n_tokens']} tokens, loss {f['mean_loss']:.6f} ppl {math.exp(f['mean_loss']):.3f} "
      f"top1 prob {f['mean_top1_prob']:.4f} acc {f['top1_accuracy']:.4f} ({time.time() - t0:.0f}s)", flush=True)

eval_json = {
    "text_file": "heldout-sample.txt",
    "window": WINDOW,
    "n_windows": s["n_windows"],
    "n_targets": s["n_targets"],
    "mean_loss": round(s["mean_loss"], 6),
    "full_heldout_mean_loss": round(f["mean_loss"], 6),
    "full_heldout_tokens": f["n_tokens"],
    "protocol": PROTOCOL,
    # extras (not part of the required contract)
    "text_tokens": s["n_tokens"],
    "perplexity": round(math.exp(s["mean_loss"]), 4),
    "mean_top1_prob": round(s["mean_top1_prob"], 6),
    "top1_accuracy": round(s["top1_accuracy"], 6),
    "windows": [{"index": i, "n_targets": w["n_targets"], "mean_loss": round(w["mean_loss"], 6),
                 "first_16_argmax_ids": w["first_targets_argmax"]} for i, w in enumerate(s["windows"])],
    "full_heldout_file": "heldout-full.txt",
    "full_heldout_n_windows": f["n_windows"],
    "full_heldout_n_targets": f["n_targets"],
    "full_heldout_perplexity": round(math.exp(f["mean_loss"]), 4),
    "full_heldout_mean_top1_prob": round(f["mean_top1_prob"], 6),
    "full_heldout_top1_accuracy": round(f["top1_accuracy"], 6),
    "full_heldout_mean_target_prob": round(f["mean_target_prob"], 6),
    "definitions": {
        "mean_top1_prob": "mean over target positions of the largest next-token probability (softmax of float32 logits)",
        "top1_accuracy": "fraction of target positions where the argmax token equals the actual next token",
        "mean_target_prob": "mean probability assigned to the actual next token",
        "first_16_argmax_ids": "argmax token id at the first 16 positions of the window (position 0 is <bos>)",
    },
}
def dump_compact(obj, path):
    """indent=2 JSON, but lists of numbers on one line."""
    import re
    txt = json.dumps(obj, indent=2, ensure_ascii=False)
    txt = re.sub(r"\[\s*([-0-9.,\s]+?)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", txt)
    open(path, "w", encoding="utf-8").write(txt + "\n")


dump_compact(eval_json, os.path.join(OUT, "eval.json"))


# ---------------- generations (float32 torch model, exported weights) ----------------
@torch.no_grad()
def generate(ids, max_new, greedy=True, temperature=0.8, top_k=40, gen=None, stop=(1, 5)):
    ids = list(ids)
    out = []
    for _ in range(max_new):
        x = torch.tensor([ids[-cfg.max_position_embeddings:]])
        logits = model(x)[0, -1].float()
        if greedy:
            nxt = int(torch.argmax(logits))
        else:
            logits = logits / temperature
            v, ix = torch.topk(logits, top_k)
            p = torch.softmax(v, -1)
            nxt = int(ix[torch.multinomial(p, 1, generator=gen)])
        ids.append(nxt)
        out.append(nxt)
        if nxt in stop:
            break
    return out


prompts = [
    {"kind": "text", "prompt": "In the beginning"},
    {"kind": "text", "prompt": "And Jesus said unto them,"},
    {"kind": "text", "prompt": "The LORD is my shepherd;"},
    {"kind": "text", "prompt": "A computer"},
    {"kind": "chat", "messages": [{"role": "user", "content": "What does Genesis 1:3 say?"}]},
    {"kind": "chat", "messages": [{"role": "user", "content": "Tell me a fortune."}]},
    {"kind": "chat", "messages": [{"role": "user", "content": "Continue: For God so loved the world,"}]},
    {"kind": "chat", "messages": [{"role": "system", "content": "You are a wise old oracle."},
                                  {"role": "user", "content": "Give me a quote."}]},
]
samples = []
gen = torch.Generator().manual_seed(42)
t0 = time.time()
for p in prompts:
    if p["kind"] == "text":
        rendered = "<bos>" + p["prompt"]
        prompt_ids = [2] + sp.encode(p["prompt"])
        max_new = 48
    else:
        rendered = render_chat(p["messages"], add_generation_prompt=True)
        prompt_ids = [2] + sp.encode(rendered[len("<bos>"):])
        max_new = 64
    g = generate(prompt_ids, max_new, greedy=True)
    smp = generate(prompt_ids, max_new, greedy=False, gen=gen)
    samples.append({**p, "rendered_prompt": rendered, "prompt_ids": prompt_ids,
                    "greedy_ids": g, "greedy_text": sp.decode(g),
                    "sampled_text": sp.decode(smp), "sampled_ids": smp,
                    "greedy_stopped_on": g[-1] if g and g[-1] in (1, 5) else None})
    print(f"--- {p.get('prompt') or p['messages'][-1]['content']!r}\n  greedy : {sp.decode(g)!r}\n  sampled: {sp.decode(smp)!r}",
          flush=True)
json.dump({"note": "float32 torch reference using the bf16 weights of model.safetensors; greedy = argmax, "
                   "no KV cache (full recompute each step); sampled = temperature 0.8, top-k 40, torch "
                   "Generator seed 42 (not reproducible outside torch). Generation stops after <eos>=1 or "
                   "<end_of_turn>=5 (included in the ids).",
           "samples": samples}, open(os.path.join(OUT, "samples.json"), "w"), indent=1, ensure_ascii=False)
print(f"generation {time.time() - t0:.0f}s")

# ---------------- loss curve ----------------
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = json.load(open(os.path.join(WORK, "train_log.json")))
steps = [r["step"] for r in log["steps"]]
losses = [r["loss"] for r in log["steps"]]
k = 20
smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(len(losses))]
fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
ax.plot(steps, losses, color="#bbbbdd", lw=0.7, label="train loss (per step)")
ax.plot(steps, smooth, color="#3344aa", lw=1.5, label=f"train loss ({k}-step mean)")
ax.plot([e["step"] for e in log["evals"]], [e["heldout_loss"] for e in log["evals"]], "o-", color="#cc5500",
        label="held-out loss (quick eval, bf16)")
ax.axhline(f["mean_loss"], color="#cc5500", ls=":", lw=1, label=f"final held-out (fp32, full) {f['mean_loss']:.3f}")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats/token)")
ax.set_ylim(min(smooth + [f["mean_loss"]]) - 0.3, min(10, max(losses[:5]) + 0.2))
ax.grid(alpha=0.3)
ax.legend()
ax.set_title("lutra demo Gemma 3 (9.2M) training on KJV + fortunes")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "loss.png"))
print("wrote eval.json, samples.json, loss.png")
