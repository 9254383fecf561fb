"""Write OUT/README.md, the adapter's card, from OUT/train.json (written by train_lora.py).

Usage: python3 lora_card.py OUT
"""
import json
import os
import sys

OUT = sys.argv[1]
t = json.load(open(os.path.join(OUT, "train.json")))
b, a = t["loss_before"], t["loss_after"]
card = f"""# demo-lora: a LoRA adapter for models/demo

A rank-{t['rank']} LoRA adapter (PEFT layout: `adapter_config.json`, `adapter_model.safetensors`, BF16)
for the shipped demo model, fine-tuned on the **fortunes only**. The base model learned the King James
Bible and the Debian fortunes together; this adapter moves it toward the fortunes and away from the
Bible, so its effect shows as a lower loss on one held-out style and a higher one on the other.

- Adapted: every `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj` of the 8
  layers; r = {t['rank']}, lora_alpha = {t['alpha']:g} (scale alpha/r = {t['alpha'] / t['rank']:g}); the base weights frozen.
- Data: the training split of the fortunes (tools/train-demo/prepare_data.py: fortune i is held out iff
  i mod 20 = 10), shuffled and joined by blank lines; rows of [<bos>] + {t['seq']} tokens at random offsets.
- Training: {t['steps']} steps of {t['batch']} rows, AdamW (betas 0.9/0.95, no weight decay), peak LR
  {t['lr']:g} after {t['warmup']} warm-up steps, cosine to 10%, gradient clipping 1.0, bf16 autocast, seed
  {t['seed']}; {t['seconds']} s on 2 CPU cores (shared with other work).
- Command: `bash tools/train-demo/run-lora.sh` (tools/train-demo/README.md).

Held-out loss, nats per token ({t['eval']}):

| held-out text | base model | base + adapter | change |
|---|---|---|---|
| fortunes (the adapter's style) | {b['fortunes']:.4f} | {a['fortunes']:.4f} | {a['fortunes'] - b['fortunes']:+.4f} |
| KJV Bible (the other style) | {b['bible']:.4f} | {a['bible']:.4f} | {a['bible'] - b['bible']:+.4f} |

Files beside the adapter: `train.json` (the figures above and the training loss every 25 steps),
`heldout-fortunes.txt` and `heldout-bible.txt` (held-out documents of each style, about 3000 tokens
each, for studies such as docs/EXPERIMENTS.md's LoRA quantization study).
`test/fixtures/demo-lora-reference.safetensors` holds the float64 PyTorch forward of the base plus this
adapter as stored, on two prompts at every position, and of the base alone at each prompt's last
position: lutra's tests check its logits against them.
"""
open(os.path.join(OUT, "README.md"), "w").write(card)
print(f"wrote {os.path.join(OUT, 'README.md')}")
