"""Rebuild model.safetensors from tools/gpu/pack_model.py's planes (on the device)."""

import json, lzma, sys
from pathlib import Path
import numpy as np
from safetensors.numpy import save_file

d = Path(sys.argv[1])
meta = json.loads((d / "pack.json").read_text())
planes = [np.frombuffer(lzma.decompress((d / f"plane{i}.xz").read_bytes()), np.uint8) for i in (1, 2, 3)]
b = np.zeros((len(planes[0]), 4), np.uint8)
for i, p in zip((1, 2, 3), planes):
    b[:, i] = p
flat, at, out = b.reshape(-1).view(np.float32), 0, {}
for t in meta["tensors"]:
    n = int(np.prod(t["shape"]))
    v = flat[at : at + n].reshape(t["shape"])
    at += n
    if t["name"].endswith("word_embeddings.weight"):
        full = np.zeros((meta["vocab_rows"], v.shape[1]), np.float32)
        full[np.array(meta["used_ids"])] = v
        v = full
    out[t["name"]] = np.ascontiguousarray(v)
for k, r in meta.get("raw", {}).items():
    out[k] = np.array(r["data"], r["dtype"]).reshape(r["shape"])
save_file(out, str(d / "model.safetensors"), metadata={"format": "pt"})
print("unpacked", len(out), "tensors")
