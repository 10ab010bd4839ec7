"""The tokenized splits the data stage writes, as every later stage reads them: ragged token ids
in safetensors (flat arrays plus offsets), padded per batch on the way out."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.core.common import read_json


class Tokens:
    """A tokenized split saved by the data stage: ragged ids as flat arrays plus offsets."""

    def __init__(self, path: str | Path, pad_id: int = 0):
        from safetensors.numpy import load_file

        a = load_file(str(path))
        self.ids, self.types, self.offsets, self.labels = a["input_ids"], a["token_type_ids"], a["offsets"], a["labels"]
        self.lengths = np.diff(self.offsets)
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx) -> dict:
        """Pad to the longest row in this batch only (dynamic padding)."""
        width = int(self.lengths[idx].max())
        ids = np.full((len(idx), width), self.pad_id, np.int64)
        types = np.zeros((len(idx), width), np.int64)
        mask = np.zeros((len(idx), width), np.int64)
        for row, i in enumerate(idx):
            a, b = self.offsets[i], self.offsets[i + 1]
            ids[row, : b - a], types[row, : b - a], mask[row, : b - a] = self.ids[a:b], self.types[a:b], 1
        return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                "attention_mask": torch.from_numpy(mask), "labels": torch.from_numpy(self.labels[idx])}


def load_inputs(data_dir: Path):
    """meta.json, train and eval splits of a data stage output directory."""
    meta = read_json(Path(data_dir) / "meta.json")
    pad = meta["pad_token_id"]
    return meta, Tokens(Path(data_dir) / "train.safetensors", pad), Tokens(Path(data_dir) / "eval.safetensors", pad)


def feeds(ds: Tokens, batch_size: int, limit: int | None = None) -> list[dict]:
    """Dataset-order numpy batches for runtimes (no labels), dynamically padded."""
    n = min(len(ds), limit or len(ds))
    out = []
    for i in range(0, n, batch_size):
        b = ds.batch(np.arange(i, min(i + batch_size, n)))
        b.pop("labels")
        out.append({k: v.numpy() for k, v in b.items()})
    return out
