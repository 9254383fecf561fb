"""Minimal safetensors writer/reader (BF16 / F32), no external package.

File layout: u64 little-endian header length N, N bytes of UTF-8 JSON header
{"<name>": {"dtype": "BF16", "shape": [...], "data_offsets": [begin, end]}, ..., "__metadata__": {...}},
then the raw little-endian tensor data; offsets are relative to the first byte after the header.
The header is padded with spaces to a multiple of 8 bytes (as the reference implementation does).
"""
import json
import struct

import numpy as np
import torch


def bf16_bytes(t: torch.Tensor) -> bytes:
    """Round to bfloat16 (round-to-nearest-even, as torch does) and return little-endian bytes."""
    b = t.detach().to(torch.float32).contiguous().to(torch.bfloat16)
    return b.view(torch.int16).numpy().astype("<i2").tobytes()


def write_safetensors(path, tensors: dict, dtype="BF16", metadata=None):
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name]
        if dtype == "BF16":
            data = bf16_bytes(t)
        elif dtype == "F32":
            data = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = metadata or {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path) -> dict:
    """Returns {name: float32 torch tensor}."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = raw[base + b: base + e]
        if info["dtype"] == "BF16":
            u = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif info["dtype"] == "F32":
            arr = np.frombuffer(buf, dtype="<f4").astype(np.float32)
        else:
            raise ValueError(info["dtype"])
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out
