"""Export the trained checkpoint to models/demo in Hugging Face Gemma3ForCausalLM layout:
config.json, model.safetensors (BF16, tied embeddings: no lm_head.weight), generation_config.json."""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Config  # noqa: E402
from safetensors_io import write_safetensors, read_safetensors  # noqa: E402

WORK, OUT = sys.argv[1], sys.argv[2]
os.makedirs(OUT, exist_ok=True)
ck = torch.load(os.path.join(WORK, "ckpt.pt"))
cfg = Config(**ck["config"])
sd = ck["state_dict"]

expected = {"model.embed_tokens.weight": [cfg.vocab_size, cfg.hidden_size], "model.norm.weight": [cfg.hidden_size]}
H, I, D = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
nH, nKV = cfg.num_attention_heads, cfg.num_key_value_heads
for i in range(cfg.num_hidden_layers):
    p = f"model.layers.{i}."
    expected.update({
        p + "input_layernorm.weight": [H],
        p + "self_attn.q_proj.weight": [nH * D, H],
        p + "self_attn.k_proj.weight": [nKV * D, H],
        p + "self_attn.v_proj.weight": [nKV * D, H],
        p + "self_attn.o_proj.weight": [H, nH * D],
        p + "self_attn.q_norm.weight": [D],
        p + "self_attn.k_norm.weight": [D],
        p + "post_attention_layernorm.weight": [H],
        p + "pre_feedforward_layernorm.weight": [H],
        p + "mlp.gate_proj.weight": [I, H],
        p + "mlp.up_proj.weight": [I, H],
        p + "mlp.down_proj.weight": [H, I],
        p + "post_feedforward_layernorm.weight": [H],
    })
assert set(sd) == set(expected), set(sd) ^ set(expected)
for k, shape in expected.items():
    assert list(sd[k].shape) == shape, (k, sd[k].shape, shape)

path = os.path.join(OUT, "model.safetensors")
write_safetensors(path, sd, "BF16", {"format": "pt"})
back = read_safetensors(path)
for k in sd:
    assert torch.equal(back[k], sd[k].to(torch.bfloat16).float()), k

config = cfg.to_hf_dict(eos_ids=[1, 5])
json.dump(config, open(os.path.join(OUT, "config.json"), "w"), indent=2)
gen = {"bos_token_id": 2, "eos_token_id": [1, 5], "pad_token_id": 0, "do_sample": True,
       "temperature": 0.8, "top_k": 40, "top_p": 0.95, "max_length": cfg.max_position_embeddings}
json.dump(gen, open(os.path.join(OUT, "generation_config.json"), "w"), indent=2)
print(f"exported {len(sd)} tensors ({sum(v.numel() for v in sd.values())} parameters), "
      f"{os.path.getsize(path)} bytes -> {path}")
