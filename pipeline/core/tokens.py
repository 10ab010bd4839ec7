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
        self.ids, self.types, self.offsets, self.labels = (
            a["input_ids"],
            a["token_type_ids"],
            a["offsets"],
            a["labels"],
        )
        self.lengths = np.diff(self.offsets)
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, idx) -> "Tokens":
        """These rows, in this order, as a split of their own."""
        out = object.__new__(Tokens)
        idx = np.asarray(idx, np.int64)
        spans = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]
        flat = np.concatenate(spans) if len(spans) else np.zeros(0, np.int64)
        out.ids, out.types, out.labels = self.ids[flat], self.types[flat], self.labels[idx]
        out.lengths = self.lengths[idx]
        out.offsets = np.concatenate([[0], np.cumsum(out.lengths)]).astype(np.int64)
        out.pad_id = self.pad_id
        return out

    def batch(self, idx) -> dict:
        """Pad to the longest row in this batch only (dynamic padding)."""
        width = int(self.lengths[idx].max())
        ids = np.full((len(idx), width), self.pad_id, np.int64)
        types = np.zeros((len(idx), width), np.int64)
        mask = np.zeros((len(idx), width), np.int64)
        for row, i in enumerate(idx):
            a, b = self.offsets[i], self.offsets[i + 1]
            ids[row, : b - a], types[row, : b - a], mask[row, : b - a] = self.ids[a:b], self.types[a:b], 1
        return {
            "input_ids": torch.from_numpy(ids),
            "token_type_ids": torch.from_numpy(types),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(self.labels[idx]),
        }


def split_off(ds: Tokens, fraction: float, seed: int) -> tuple[Tokens, Tokens]:
    """(the rest, a held-out split of `fraction` of the rows): a random, seeded split of train, so a model
    can be chosen without looking at the dev set that the report then scores."""
    n = len(ds)
    held = max(1, round(fraction * n))
    if held >= n:
        raise ValueError(f"a selection split of {fraction} leaves no training rows out of {n}")
    order = np.random.default_rng(seed).permutation(n)
    return ds.subset(np.sort(order[held:])), ds.subset(np.sort(order[:held]))


def load_inputs(data_dir: Path):
    """meta.json, train and eval splits of a data stage output directory."""
    meta = read_json(Path(data_dir) / "meta.json")
    pad = meta["pad_token_id"]
    return (
        meta,
        Tokens(Path(data_dir) / "train.safetensors", pad),
        Tokens(Path(data_dir) / "eval.safetensors", pad),
    )


def feeds(ds: Tokens, batch_size: int, limit: int | None = None) -> list[dict]:
    """Dataset-order numpy batches for runtimes (no labels), dynamically padded."""
    n = min(len(ds), limit or len(ds))
    out = []
    for i in range(0, n, batch_size):
        b = ds.batch(np.arange(i, min(i + batch_size, n)))
        b.pop("labels")
        out.append({k: v.numpy() for k, v in b.items()})
    return out
