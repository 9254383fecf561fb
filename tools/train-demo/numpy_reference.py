"""Independent float64 NumPy forward pass of models/demo, written straight from
the Hugging Face Gemma 3 math (shares no code with model.py), used to cross-check
eval.json: recomputes the per-window losses of heldout-sample.txt from model.safetensors and
config.json and compares them with eval.json.

Usage: /usr/bin/python3 tools/train-demo/numpy_reference.py models/demo
"""
import json
import math
import os
import struct
import sys

import numpy as np
import sentencepiece as spm

D_ = sys.argv[1]
cfg = json.load(open(os.path.join(D_, "config.json")))
ev = json.load(open(os.path.join(D_, "eval.json")))


def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    t = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "BF16"
        b, e = v["data_offsets"]
        u16 = np.frombuffer(raw[8 + n + b: 8 + n + e], dtype="<u2")
        t[k] = (u16.astype(np.uint32) << 16).view(np.float32).astype(np.float64).reshape(v["shape"])
    return t


W = load(os.path.join(D_, "model.safetensors"))
H = cfg["hidden_size"]
nH = cfg["num_attention_heads"]
nKV = cfg["num_key_value_heads"]
Dh = cfg["head_dim"]
eps = cfg["rms_norm_eps"]
win = cfg["sliding_window"]
types = cfg["layer_types"]


def rms(x, w):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (1.0 + w)


def rope(x, theta):  # x [T, heads, Dh]; pairs j and j + Dh/2
    T = x.shape[0]
    half = Dh // 2
    inv = 1.0 / theta ** (np.arange(half) * 2.0 / Dh)
    ang = np.arange(T)[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(ids):
    T = len(ids)
    E = W["model.embed_tokens.weight"]
    h = E[ids] * math.sqrt(H)
    qpos = np.arange(T)[:, None]
    kpos = np.arange(T)[None, :]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        is_global = types[i] == "full_attention"
        theta = cfg["rope_theta"] if is_global else cfg["rope_local_base_freq"]
        allowed = kpos <= qpos
        if not is_global:
            allowed &= (qpos - kpos) < win
        a = rms(h, W[p + "input_layernorm.weight"])
        q = (a @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nH, Dh)
        k = (a @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nKV, Dh)
        v = (a @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nKV, Dh)
        q = rope(rms(q, W[p + "self_attn.q_norm.weight"]), theta)
        k = rope(rms(k, W[p + "self_attn.k_norm.weight"]), theta)
        out = np.zeros((T, nH, Dh))
        for hh in range(nH):
            kv = hh // (nH // nKV)
            s = (q[:, hh, :] @ k[:, kv, :].T) * cfg["query_pre_attn_scalar"] ** -0.5
            s = np.where(allowed, s, -np.inf)
            s = s - s.max(axis=-1, keepdims=True)
            pr = np.exp(s)
            pr /= pr.sum(axis=-1, keepdims=True)
            out[:, hh, :] = pr @ v[:, kv, :]
        o = out.reshape(T, nH * Dh) @ W[p + "self_attn.o_proj.weight"].T
        h = h + rms(o, W[p + "post_attention_layernorm.weight"])
        m = rms(h, W[p + "pre_feedforward_layernorm.weight"])
        m = (gelu_tanh(m @ W[p + "mlp.gate_proj.weight"].T) * (m @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
        h = h + rms(m, W[p + "post_feedforward_layernorm.weight"])
    h = rms(h, W["model.norm.weight"])
    return h @ E.T


sp = spm.SentencePieceProcessor(model_file=os.path.join(D_, "tokenizer.model"))
text = open(os.path.join(D_, ev["text_file"]), encoding="utf-8", newline="").read()
ids = sp.encode(text)
L = ev["window"] - 1
wins = [ids[i:i + L] for i in range(0, len(ids), L)]
if len(wins[-1]) < 64:
    wins.pop()
tot, cnt, worst = 0.0, 0, 0.0
for wi, w in enumerate(wins):
    x = [2] + w
    logits = forward(np.array(x[:-1]))
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll = lse - logits[np.arange(len(w)), np.array(w)]
    ref = ev["windows"][wi]["mean_loss"]
    worst = max(worst, abs(nll.mean() - ref))
    am = logits.argmax(-1)[:16].tolist()
    print(f"window {wi}: {len(w)} targets, float64 numpy loss {nll.mean():.6f}, eval.json {ref:.6f}, "
          f"argmax match {am == ev['windows'][wi]['first_16_argmax_ids']}")
    tot += nll.sum()
    cnt += len(w)
print(f"mean loss float64 numpy {tot / cnt:.6f} vs eval.json {ev['mean_loss']:.6f} (n_targets {cnt} vs {ev['n_targets']})")
ok = abs(tot / cnt - ev["mean_loss"]) < 1e-3 and worst < 2e-3 and cnt == ev["n_targets"]
print("numpy reference agrees" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
