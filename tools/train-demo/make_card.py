"""Write models/demo/MODEL_CARD.md from the training log, eval.json and samples.json."""
import json
import math
import os
import sys

WORK, OUT, TOTAL = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = json.load(open(os.path.join(WORK, "train_log.json")))
ev = json.load(open(os.path.join(OUT, "eval.json")))
samples = json.load(open(os.path.join(OUT, "samples.json")))["samples"]
cfg = json.load(open(os.path.join(OUT, "config.json")))
corpus = json.load(open(os.path.join(WORK, "corpus.json")))
st = corpus["stats"]
a = log["args"]
files = sorted(os.listdir(OUT))
sizes = {f: os.path.getsize(os.path.join(OUT, f)) for f in files}


def mmss(s):
    return f"{int(s) // 60} min {int(s) % 60:02d} s"


first = log["steps"][:10]
last = log["steps"][-20:]
evals = "\n".join(f"| {e['step']} | {e['tokens']:,} | {e['heldout_loss']:.4f} |" for e in log["evals"])
sample_md = []
for s in samples:
    if s["kind"] == "text":
        sample_md.append(f"**Prompt** `<bos>{s['prompt']}`\n\n- greedy: {json.dumps(s['greedy_text'], ensure_ascii=False)}\n"
                         f"- sampled: {json.dumps(s['sampled_text'], ensure_ascii=False)}\n")
    else:
        sample_md.append(f"**Chat** rendered prompt {json.dumps(s['rendered_prompt'], ensure_ascii=False)}\n\n"
                         f"- greedy: {json.dumps(s['greedy_text'], ensure_ascii=False)}"
                         f"{' (stopped on <end_of_turn>)' if s['greedy_stopped_on'] == 5 else ''}\n"
                         f"- sampled: {json.dumps(s['sampled_text'], ensure_ascii=False)}\n")
n_params = log["n_params"]
emb = cfg["vocab_size"] * cfg["hidden_size"]

DESCR = {
    "config.json": "HF config, every field explicit",
    "model.safetensors": "BF16 weights, HF tensor names, tied embeddings (no `lm_head.weight`)",
    "generation_config.json": "bos 2, eos [1, 5], pad 0, sampling defaults",
    "tokenizer.json": "HF fast-tokenizer file written by hand from the SentencePiece model",
    "tokenizer_config.json": "add_bos_token, special tokens, Gemma 3 chat template",
    "special_tokens_map.json": "special tokens",
    "tokenizer.model": "the SentencePiece model (BPE, byte fallback)",
    "eval.json": "held-out evaluation: the cross-check contract",
    "heldout-sample.txt": "held-out text used by eval.json (never trained on)",
    "heldout-full.txt": "the whole held-out split (never trained on)",
    "samples.json": "prompt ids and greedy/sampled generations of the float32 torch reference",
    "loss.png": "loss curve",
    "MODEL_CARD.md": "this file",
}

card = f"""# lutra demo model: a {n_params / 1e6:.1f} M-parameter Gemma 3 trained from scratch on CPU

A tiny model with the exact Gemma 3 text architecture (`model_type: gemma3_text`,
`Gemma3ForCausalLM`), trained from scratch in {mmss(log['train_seconds'])} on a 2-core CPU, so that
lutra has a small, redistributable default model and a cross-check target. It writes King James
Bible verses and fortune-cookie sayings, and answers in Gemma chat turns. It knows nothing useful.

Built by `tools/train-demo/` (see its README.md); every number below comes from that recipe.

## Files

| file | bytes | what |
|---|---|---|
""" + "\n".join(f"| `{f}` | {sizes[f]:,} | {DESCR.get(f, '')} |" for f in files) + f"""

## Architecture

| field | value |
|---|---|
| layers | {cfg['num_hidden_layers']} (global = full attention: {[i for i, t in enumerate(cfg['layer_types']) if t == 'full_attention']}; the rest sliding, window {cfg['sliding_window']}) |
| hidden_size | {cfg['hidden_size']} (embedding scale sqrt(256) = 16, exact in bf16) |
| attention heads / KV heads / head_dim | {cfg['num_attention_heads']} / {cfg['num_key_value_heads']} / {cfg['head_dim']} (q_proj is [{cfg['num_attention_heads'] * cfg['head_dim']}, {cfg['hidden_size']}]: head_dim != hidden/heads, as in real Gemma 3) |
| query_pre_attn_scalar | {cfg['query_pre_attn_scalar']} (scale 1/sqrt({cfg['query_pre_attn_scalar']}), equal to head_dim so llama.cpp agrees) |
| intermediate_size | {cfg['intermediate_size']} (GeGLU, gelu tanh) |
| vocab_size | {cfg['vocab_size']} |
| RoPE theta | global {cfg['rope_theta']:g}, sliding {cfg['rope_local_base_freq']:g}, no scaling, rotate-half layout |
| norms | Gemma (1 + w) RMSNorm, eps 1e-6, 4 per layer + q_norm/k_norm + final |
| max_position_embeddings | {cfg['max_position_embeddings']} (trained on 512-token rows) |
| parameters | {n_params:,} ({emb:,} in the tied embedding) |
| softcapping | none |

## Tokenizer

SentencePiece BPE, {cfg['vocab_size']} pieces, byte fallback, digits split, no dummy prefix,
identity normalisation, trained on the training split only. Ids: `<pad>`=0, `<eos>`=1, `<bos>`=2,
`<unk>`=3, `<start_of_turn>`=4, `<end_of_turn>`=5 (both user-defined: matched verbatim in text),
`<0x00>`..`<0xFF>` = 6..261 (so `"\\n"` is the byte token `<0x0A>` = 16), then learned pieces.
`tokenizer.json` uses the Gemma pipeline (Replace " "->"▁", BPE with byte_fallback, decoder
Replace/ByteFallback/Fuse, TemplateProcessing adding `<bos>`). It was checked against
sentencepiece with `@huggingface/tokenizers` on every held-out line, whole documents, both shipped
held-out files, digits, non-ASCII and turn tokens (ids identical, decode round-trips), and the chat
template with `@huggingface/jinja`. As with real Gemma, the HF tokenizer matches `<bos>`/`<eos>`/
`<pad>`/`<unk>` written literally in text while sentencepiece does not; stop generation on
`<eos>`=1 or `<end_of_turn>`=5.

Chat format (Gemma 3): `<bos><start_of_turn>user\\n{{question}}<end_of_turn>\\n<start_of_turn>model\\n{{answer}}<end_of_turn>\\n`,
system text folded into the first user turn followed by a blank line.

## Data and licences

- **King James Version of the Bible** (1611), Debian package `bible-kjv` (`bible -f "Genesis 1:1 - Revelation 22:21"`):
  public domain (Crown copyright in the United Kingdom only; free elsewhere). The package's
  text file is offered "for unrestricted use" by its author (Chip Chapin); the `bible` program is GPL-2+.
  {st['bible_verses']:,} verses in {st['bible_chapters']:,} chapters; verse references stripped, one verse per line, one chapter per document.
- **fortunes** (Debian package `fortunes`, section main, so DFSG-free; BSD licence of fortune-mod per
  `/usr/share/doc/fortunes/copyright`), all files except `ascii-art`: {st['fortunes']:,} fortunes after
  cleaning (overstrike and control characters removed, mis-encoded UTF-8 repaired, whitespace runs collapsed,
  exact duplicates, mostly-symbol items and items over 2000 characters dropped). The quotations are
  short sayings attributed to many authors.
- **Held-out split** (deterministic, never trained on, not used for the tokenizer): Bible chapters
  whose canonical index (0..1188) is 10 mod 20 ({st['bible_heldout_chapters']} chapters) and fortunes whose index
  is 10 mod 20 ({st['fortunes_heldout']} fortunes). Training stream: {log['train_stream_tokens']:,} tokens;
  held-out stream: {log['heldout_stream_tokens']:,} tokens.
- **Chat data**: synthetic Gemma chat conversations built from training verses and fortunes
  ("What does Genesis 1:3 say?", "Tell me a fortune.", "Continue: <first half of a verse>", "Quote a
  verse from <book>.", "Which book of the Bible says ...", sometimes with a system prompt),
  {a['chat_rows']} of the {a['batch']} rows of every batch.

## Training

- Command: `bash tools/train-demo/run.sh` (the training step inside it is
  `/usr/bin/python3 tools/train-demo/train.py --work tools/train-demo/work --steps {a['steps']}`).
- {a['steps']} steps x {a['batch']} rows x {a['seq']} tokens = **{log['tokens_seen']:,} tokens seen**
  ({log['text_tokens_seen']:,} plain text = {log['text_tokens_seen'] / log['train_stream_tokens']:.2f} epochs of the training stream,
  {log['chat_tokens_seen']:,} chat). Text rows are `[<bos>]` + 512 stream tokens from a random offset.
- AdamW (betas 0.9/0.95, weight decay {a['wd']} on matrices), peak LR {a['lr']}, {a['warmup']} warmup steps, cosine
  to {a['min_lr_frac']:g}x, gradient clip 1.0, bf16 autocast with fp32 master weights, seed {a['seed']},
  `torch.set_num_threads(2)`. Deterministic: `tools/train-demo/determinism_check.sh` rebuilds corpus and
  tokenizer byte-identically and reproduces the first 40 training losses of this run bit for bit.
- Wall time: training {mmss(log['train_seconds'])} ({log['train_seconds'] / a['steps']:.2f} s/step); whole recipe {mmss(TOTAL)}.
  The 2-core machine was shared with other heavy work during most of this run (load average 4-9);
  on a quiet machine a step takes about 2 s (the first 200 steps of this run averaged 2.25 s/step),
  i.e. 23-26 minutes of training.
- Loss curve: ![loss](loss.png)

| step | tokens | held-out loss (quick eval: {a['eval_windows']} windows, bf16) |
|---|---|---|
{evals}

## Evaluation (exported bf16 weights, float32 math)

| text | tokens | windows | targets | mean loss (nats) | perplexity | mean top-1 prob | top-1 accuracy |
|---|---|---|---|---|---|---|---|
| `heldout-sample.txt` | {ev['text_tokens']:,} | {ev['n_windows']} | {ev['n_targets']:,} | **{ev['mean_loss']:.4f}** | {ev['perplexity']:.2f} | {ev['mean_top1_prob']:.4f} | {ev['top1_accuracy']:.4f} |
| `heldout-full.txt` (whole held-out split) | {ev['full_heldout_tokens']:,} | {ev['full_heldout_n_windows']} | {ev['full_heldout_n_targets']:,} | **{ev['full_heldout_mean_loss']:.4f}** | {ev['full_heldout_perplexity']:.2f} | {ev['full_heldout_mean_top1_prob']:.4f} | {ev['full_heldout_top1_accuracy']:.4f} |

Mean probability of the actual next token on the full held-out split: {ev['full_heldout_mean_target_prob']:.4f}.
"Mean top-1 prob" is the mean over target positions of the largest next-token probability;
"top-1 accuracy" is how often that token is the actual next token.

**Protocol** (`eval.json`, for cross-checking other implementations): {ev['protocol']}

`eval.json` also lists each window's loss and the argmax ids at its first 16 positions. The
numbers were reproduced by `tools/train-demo/numpy_reference.py`, an independent float64 NumPy
forward pass written from the architecture document (agreement to 1e-6).

## Samples (float32 torch reference, exported weights)

Greedy = argmax; sampled = temperature 0.8, top-k 40. Chat prompts are rendered with the chat
template and generation stops at `<end_of_turn>` (id 5). Token ids are in `samples.json`.

""" + "\n".join(sample_md) + """
## Limitations

A 9 M-parameter model trained for well under an hour: fluent-looking KJV English and fortune-shaped text,
no knowledge, references in chat answers are mostly wrong. Use it to test engines, not to learn anything.
"""
open(os.path.join(OUT, "MODEL_CARD.md"), "w").write(card)
print("wrote MODEL_CARD.md")
