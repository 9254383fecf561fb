"""LoRA layers as PEFT computes them, shared by the demo recipe's adapter trainers.

y = x·Wᵀ + (alpha/r)·(x·Aᵀ)·Bᵀ, A initialised Kaiming-uniform(a=√5), B zero, no dropout; the base
Linear frozen. save_peft writes an adapter folder in PEFT's layout (the one lutra reads) and loads
the stored BF16 tensors back into the layers, so whatever is evaluated afterwards is what shipped.
"""
import json
import math
import os

import torch
import torch.nn as nn

from safetensors_io import read_safetensors, write_safetensors

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraLinear(nn.Module):
    """A frozen Linear plus scale·B·A (PEFT's LoRA layer without dropout)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        return self.base(x) + self.scale * ((x @ self.lora_A.to(x.dtype).t()) @ self.lora_B.to(x.dtype).t())


def attach(model, rank: int, alpha: float):
    """Wrap every target projection of every layer; returns {peft module name: LoraLinear}."""
    loras = {}
    for i, layer in enumerate(model.model.layers):
        for owner, prefix in ((layer.self_attn, "self_attn"), (layer.mlp, "mlp")):
            for t in TARGETS:
                if hasattr(owner, t):
                    w = LoraLinear(getattr(owner, t), rank, alpha)
                    setattr(owner, t, w)
                    loras[f"model.layers.{i}.{prefix}.{t}"] = w
    return loras


def save_peft(out: str, loras: dict, rank: int, alpha: float, base_name: str = "models/demo"):
    """adapter_model.safetensors (BF16) and adapter_config.json in out; the stored values loaded back."""
    os.makedirs(out, exist_ok=True)
    tensors = {}
    for name, w in loras.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = w.lora_A.detach()
        tensors[f"base_model.model.{name}.lora_B.weight"] = w.lora_B.detach()
    write_safetensors(os.path.join(out, "adapter_model.safetensors"), tensors, dtype="BF16")
    stored = read_safetensors(os.path.join(out, "adapter_model.safetensors"))
    with torch.no_grad():
        for name, w in loras.items():
            w.lora_A.copy_(stored[f"base_model.model.{name}.lora_A.weight"])
            w.lora_B.copy_(stored[f"base_model.model.{name}.lora_B.weight"])
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_name,
        "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": TARGETS,
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
        "init_lora_weights": True, "inference_mode": True,
    }
    json.dump(config, open(os.path.join(out, "adapter_config.json"), "w"), indent=2)
