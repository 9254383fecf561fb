"""Gemma 3 text architecture (Gemma3ForCausalLM) in plain torch.

Follows the Hugging Face Gemma 3 text model exactly:
  * embedding * sqrt(hidden) (hidden is a perfect square, so the bf16 rounding of the scale is exact)
  * four "(1 + w)" RMSNorms per layer, computed in float32, weights stored as offsets (init 0)
  * q_norm / k_norm over head_dim (1 + w), RoPE (rotate-half / NeoX) applied after them
  * theta 1e4 on sliding layers, 1e6 on global layers; layer i is global iff (i + 1) % 6 == 0
  * attention scale query_pre_attn_scalar ** -0.5, GQA, float32 softmax
  * sliding mask: k <= q and q - k < W ; global: k <= q
  * GeGLU MLP: down(gelu_tanh(gate(x)) * up(x)); no biases anywhere
  * final norm, tied LM head (logits = h @ embed.T), no softcapping
"""
import json
import math
from dataclasses import dataclass, asdict, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 8192
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 8
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 96
    query_pre_attn_scalar: int = 96
    sliding_window: int = 128
    sliding_window_pattern: int = 6
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 1024
    pad_token_id: int = 0
    eos_token_id: int = 1
    bos_token_id: int = 2

    def layer_types(self):
        return ["full_attention" if (i + 1) % self.sliding_window_pattern == 0 else "sliding_attention"
                for i in range(self.num_hidden_layers)]

    def to_hf_dict(self, eos_ids=None):
        return {
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "query_pre_attn_scalar": self.query_pre_attn_scalar,
            "sliding_window": self.sliding_window,
            "sliding_window_pattern": self.sliding_window_pattern,
            "layer_types": self.layer_types(),
            "rope_theta": self.rope_theta,
            "rope_local_base_freq": self.rope_local_base_freq,
            "rope_scaling": None,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_activation": "gelu_pytorch_tanh",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "final_logit_softcapping": None,
            "attn_logit_softcapping": None,
            "tie_word_embeddings": True,
            "use_cache": True,
            "initializer_range": 0.02,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id if eos_ids is None else eos_ids,
            "bos_token_id": self.bos_token_id,
            "torch_dtype": "bfloat16",
        }


class GemmaRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))  # stored as offset from 1

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        y = y * (1.0 + self.weight.float())
        return y.to(x.dtype)


def rope_tables(theta, head_dim, positions):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angle = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([angle, angle], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    # x: [B, heads, T, D]; cos/sin: [T, D] float32 -> cast to activation dtype like HF
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


def attention_mask(T, window, device=None):
    """Additive float32 mask [T, T]; window=None means full causal."""
    q = torch.arange(T, device=device)[:, None]
    k = torch.arange(T, device=device)[None, :]
    allowed = k <= q
    if window is not None:
        allowed = allowed & ((q - k) < window)
    m = torch.zeros(T, T, dtype=torch.float32, device=device)
    m.masked_fill_(~allowed, float("-inf"))
    return m


class Attention(nn.Module):
    def __init__(self, cfg: Config, is_global: bool):
        super().__init__()
        self.cfg = cfg
        self.is_global = is_global
        H, nH, nKV, D = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(H, nH * D, bias=False)
        self.k_proj = nn.Linear(H, nKV * D, bias=False)
        self.v_proj = nn.Linear(H, nKV * D, bias=False)
        self.o_proj = nn.Linear(nH * D, H, bias=False)
        self.q_norm = GemmaRMSNorm(D, cfg.rms_norm_eps)
        self.k_norm = GemmaRMSNorm(D, cfg.rms_norm_eps)
        self.scale = cfg.query_pre_attn_scalar ** -0.5

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        nH, nKV, D = self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.cfg.head_dim
        q = self.q_proj(x).view(B, T, nH, D).transpose(1, 2)
        k = self.k_proj(x).view(B, T, nKV, D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, nKV, D).transpose(1, 2)
        q = self.q_norm(q)
        k = self.k_norm(k)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        g = nH // nKV
        # repeat_kv: kv head j serves query heads j*g .. j*g+g-1
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
        if isinstance(mask, tuple):
            o = self._banded(q, k, v, mask[1])
        else:
            s = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            s = s.float() + mask
            p = torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
            o = torch.matmul(p, v)
        o = o.transpose(1, 2).reshape(B, T, nH * D)
        return self.o_proj(o)

    def _banded(self, q, k, v, bmask):
        """Sliding-window attention computed block-wise (training speed-up only).

        Mathematically identical to the full [T, T] masked version: query block i
        (positions iW..iW+W-1) only sees keys (i-1)W..(i+1)W-1; everything outside the
        band has probability exactly 0 in the full version as well."""
        B, nH, T, D = q.shape
        W = self.cfg.sliding_window
        nb = T // W
        zeros = torch.zeros(B, nH, W, D, dtype=k.dtype)
        kp = torch.cat([zeros, k], dim=2)
        vp = torch.cat([zeros.to(v.dtype), v], dim=2)
        kb = torch.stack([kp[:, :, i * W:(i + 2) * W] for i in range(nb)], dim=2)  # [B,nH,nb,2W,D]
        vb = torch.stack([vp[:, :, i * W:(i + 2) * W] for i in range(nb)], dim=2)
        qb = q.view(B, nH, nb, W, D)
        s = torch.matmul(qb, kb.transpose(-1, -2)) * self.scale  # [B,nH,nb,W,2W]
        s = s.float() + bmask
        p = torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(p, vb)  # [B,nH,nb,W,D]
        return o.reshape(B, nH, T, D)


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Config, i: int):
        super().__init__()
        self.is_global = cfg.layer_types()[i] == "full_attention"
        self.input_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, self.is_global)
        self.post_attention_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)
        self.post_feedforward_layernorm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, h, cos, sin, mask):
        a = self.self_attn(self.input_layernorm(h), cos, sin, mask)
        h = h + self.post_attention_layernorm(a)
        m = self.mlp(self.pre_feedforward_layernorm(h))
        h = h + self.post_feedforward_layernorm(m)
        return h


class GemmaInner(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers)])
        self.norm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Gemma3ForCausalLM(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.model = GemmaInner(cfg)
        self._mask_cache = {}
        self.banded = False  # set True during training for the block-banded sliding attention

    def init_weights(self, seed, std=0.02, embed_std=None):
        """Norm offsets 0 (gain 1); matrices N(0, std); embedding N(0, embed_std or std)."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if p.dim() == 1:
                    p.zero_()
                else:
                    s = embed_std if (embed_std is not None and name.endswith("embed_tokens.weight")) else std
                    p.copy_(torch.randn(p.shape, generator=g) * s)

    def masks(self, T):
        if (T, self.banded) not in self._mask_cache:
            W = self.cfg.sliding_window
            slide = attention_mask(T, W)
            if self.banded and T % W == 0 and T > W:
                nb = T // W
                r = torch.arange(W)[:, None]
                c = torch.arange(2 * W)[None, :]
                band = torch.zeros(nb, W, 2 * W)
                band.masked_fill_(~((c > r) & (c <= W + r)), float("-inf"))
                band[0, :, :W] = float("-inf")  # block 0: the first W keys are padding
                slide = ("banded", band)
            self._mask_cache[(T, self.banded)] = (attention_mask(T, None), slide)
        return self._mask_cache[(T, self.banded)]

    def hidden(self, ids):
        cfg = self.cfg
        B, T = ids.shape
        pos = torch.arange(T)
        cos_g, sin_g = rope_tables(cfg.rope_theta, cfg.head_dim, pos)
        cos_l, sin_l = rope_tables(cfg.rope_local_base_freq, cfg.head_dim, pos)
        full_mask, slide_mask = self.masks(T)
        e = self.model.embed_tokens(ids)
        # HF casts sqrt(H) to the weight dtype; H is a perfect square so this is exact in bf16 too.
        h = e * torch.tensor(math.sqrt(cfg.hidden_size), dtype=e.dtype)
        for layer in self.model.layers:
            if layer.is_global:
                h = layer(h, cos_g, sin_g, full_mask)
            else:
                h = layer(h, cos_l, sin_l, slide_mask)
        return self.model.norm(h)

    def forward(self, ids):
        h = self.hidden(ids)
        return torch.matmul(h, self.model.embed_tokens.weight.to(h.dtype).t())

    def loss(self, ids, targets):
        logits = self.forward(ids)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def hf_state_dict(model: Gemma3ForCausalLM):
    """Parameter names already match the HF checkpoint names (model.layers.{i}....)."""
    return {k: v for k, v in model.state_dict().items()}


def load_config_json(path):
    d = json.load(open(path))
    fields = Config.__dataclass_fields__.keys()
    kw = {k: d[k] for k in fields if k in d and k != "eos_token_id"}
    return Config(**kw)
