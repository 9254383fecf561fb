"""LoRA layers as PEFT computes them, shared by the demo recipe's adapter trainers.

y = x·Wᵀ + (alpha/r)·(x·Aᵀ)·Bᵀ, A initialised Kaiming-uniform(a=√5), B zero, no dropout; the base
Linear frozen. save_peft writes an adapter folder in PEFT's layout (the one lutra reads) and loads
the stored BF16 tensors back into the layers, so whatever is evaluated afterwards is what shipped.
"""
import json
import math
import os
import time

import torch
import torch.nn as nn

from model import Gemma3ForCausalLM, load_config_json
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


def add_training_args(ap, steps: int, rank: int, alpha: float, lr: float, seed: int):
    """The options every adapter trainer takes (its own defaults), after WORK BASE OUT."""
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rank", type=int, default=rank)
    ap.add_argument("--alpha", type=float, default=alpha)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=seed)


def load_frozen_base(base: str):
    """(config, model) of the checkpoint folder base, every base weight frozen."""
    cfg = load_config_json(os.path.join(base, "config.json"))
    model = Gemma3ForCausalLM(cfg)
    model.load_state_dict(read_safetensors(os.path.join(base, "model.safetensors")), strict=True)
    model.banded = False
    for p in model.parameters():
        p.requires_grad_(False)
    return cfg, model


class Trainer:
    """AdamW over the adapters (betas 0.9/0.95, no weight decay), linear warm-up then cosine to 10% of
    the peak LR, gradients clipped to norm 1; the loss every 25 steps kept in log."""

    def __init__(self, loras: dict, args):
        self.args = args
        self.params = [p for w in loras.values() for p in (w.lora_A, w.lora_B)]
        self.opt = torch.optim.AdamW(self.params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
        self.log = []

    def lr(self, step: int) -> float:
        a = self.args
        return a.lr * min(1.0, (step + 1) / a.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / a.steps)))

    def step(self, step: int, loss, t0: float):
        lr = self.lr(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        if step % 25 == 0 or step == self.args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)
            self.log.append({"step": step, "loss": round(loss.item(), 5)})
