"""Vocabulary trimming (`prune.vocab: task`): the student keeps only the word-embedding rows its task's
text uses, plus a frequent core; every other token id reads [UNK]'s row.

After structured pruning the word embedding is most of a MiniLM student (30,522 x 384: 11.7 MB of
INT8 weights in a 14.3 MB IR, 12.8 MB gzipped; docs/results.md). Tokenization does not change: the data
stage's ids, the fused string-in IR and the runner's tokenizer stay as they are. The student carries a
table `old id -> row` applied before a table of the kept rows, so every exporter and runtime sees one
model whose input is still the tokenizer's ids; the exported graph begins with a Gather on the table.

Kept = the special tokens, ids below `prune.vocab_core`, and every id in the train split. In BERT's
WordPiece vocabularies (all-MiniLM-L6-v2 uses bert-base-uncased's) the first ids are [PAD], [unused*],
[UNK], [CLS], [SEP], [MASK] (0-998), the single characters (999-1995), then the word pieces in about
descending frequency ("the" is 1996), so a core of the first ids keeps the common words a new text may
bring. Dev is never read to choose: it only measures the out-of-vocabulary rate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TrimmedEmbedding(nn.Module):
    """A word embedding of the kept rows only, indexed through `remap` (original id -> row; dropped
    ids -> [UNK]'s row). `remap` is a buffer, so it is saved in model.safetensors and exported as a
    constant."""

    def __init__(self, remap: torch.Tensor, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("remap", remap.to(torch.int32))
        self.weight = nn.Parameter(weight)

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    @property
    def original_rows(self) -> int:
        return self.remap.shape[0]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.remap[input_ids], self.weight)


def kept_ids(vocab_size: int, special_ids, core: int, train_ids: np.ndarray) -> np.ndarray:
    """Sorted ids to keep: the special tokens, ids below `core` and every id the train split uses."""
    train_ids = np.asarray(train_ids, np.int64)
    if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= vocab_size):
        raise ValueError(
            f"the train split holds token ids outside the vocabulary of {vocab_size} rows "
            f"(min {train_ids.min()}, max {train_ids.max()}): rerun the data stage"
        )
    kept = np.zeros(vocab_size, bool)
    kept[np.asarray(list(special_ids), np.int64)] = True
    kept[: min(core, vocab_size)] = True
    kept[train_ids] = True
    return np.flatnonzero(kept)


def remap_table(vocab_size: int, kept: np.ndarray, unk_id: int) -> torch.Tensor:
    """old id -> row among the kept ones; a dropped id -> [UNK]'s row."""
    rows = np.searchsorted(kept, np.arange(vocab_size))
    is_kept = np.isin(np.arange(vocab_size), kept)
    if not is_kept[unk_id]:
        raise ValueError(f"[UNK] (id {unk_id}) must be kept: it is the row dropped tokens read")
    rows[~is_kept] = rows[unk_id]
    return torch.from_numpy(rows.astype(np.int32))


def word_embeddings(model) -> nn.Module:
    return getattr(model, model.base_model_prefix).embeddings.word_embeddings


def trim(model, kept: np.ndarray, unk_id: int) -> TrimmedEmbedding:
    """Replace the model's word embedding by its `kept` rows behind an id remap; returns the new module."""
    old = word_embeddings(model)
    if isinstance(old, TrimmedEmbedding):
        raise ValueError("the model's vocabulary is already trimmed")
    weight = old.weight.detach()
    remap = remap_table(weight.shape[0], kept, unk_id).to(weight.device)
    new = TrimmedEmbedding(remap, weight[torch.from_numpy(kept).to(weight.device)].clone())
    getattr(model, model.base_model_prefix).embeddings.word_embeddings = new
    return new


def rebuild(model, rows: int) -> None:
    """An empty trimmed embedding of `rows` rows in a model built from its config, for
    load_state_dict to fill (pipeline.core.models.load_trained)."""
    old = word_embeddings(model)
    remap = torch.zeros(old.weight.shape[0], dtype=torch.int32)
    embeddings = getattr(model, model.base_model_prefix).embeddings
    embeddings.word_embeddings = TrimmedEmbedding(remap, torch.empty(rows, old.weight.shape[1]))


def trimmed_rows(model) -> int | None:
    """The kept rows of a trimmed model, None for a full vocabulary."""
    emb = word_embeddings(model)
    return emb.num_embeddings if isinstance(emb, TrimmedEmbedding) else None


def oov_fraction(ids: np.ndarray, kept: np.ndarray, special_ids) -> tuple[float, int]:
    """(share of the non-special tokens in `ids` that trimming maps to [UNK], how many were counted);
    [PAD] is a special token, and split files hold no padding."""
    ids = np.asarray(ids, np.int64)
    ordinary = ids[~np.isin(ids, list(special_ids))]
    if not ordinary.size:
        return 0.0, 0
    return float(np.mean(~np.isin(ordinary, kept))), int(ordinary.size)
