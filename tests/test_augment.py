"""Perturbed copies of train for distillation: what may change, what must not, and the stage's record."""

import numpy as np
import pytest

from pipeline.training.augment import augment, perturb
from tests.test_distill import ragged  # noqa: F401  (a fixture)

MASK, SPECIAL = 4, (0, 1, 2, 3, 4)


def test_perturb_changes_only_ordinary_tokens_to_mask_or_pool_tokens():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 50, 4000)
    ids[::7] = 2  # specials at fixed places
    ordinary = ids != 2
    out = perturb(ids, ordinary, 1.0, MASK, np.random.default_rng(1))
    assert (out[~ordinary] == 2).all()
    masked = out == MASK
    assert 0.45 < masked[ordinary].mean() < 0.55  # half masked, half replaced
    assert np.isin(out[ordinary & ~masked], ids[ordinary]).all()
    assert (perturb(ids, ordinary, 0.0, MASK, rng) == ids).all()
    changed = (perturb(ids, ordinary, 0.15, MASK, rng) != ids)[ordinary].mean()
    assert 0.10 < changed < 0.16  # a replacement may draw the same token


def test_augment_appends_copies_with_lengths_types_labels_and_specials_kept(ragged):  # noqa: F811
    ragged.ids[ragged.offsets[:-1]] = 2  # a [CLS] at the start of every row
    out = augment(ragged, 2, 0.5, 0, MASK, SPECIAL)
    n = len(ragged)
    assert len(out) == 3 * n
    assert (out.lengths == np.tile(ragged.lengths, 3)).all() and (
        out.labels == np.tile(ragged.labels, 3)
    ).all()
    assert (out.types == np.tile(ragged.types, 3)).all()
    assert (out.ids[: len(ragged.ids)] == ragged.ids).all()  # the originals come first, unchanged
    for c in (1, 2):
        copy = out.ids[c * len(ragged.ids) : (c + 1) * len(ragged.ids)]
        assert (copy[ragged.offsets[:-1]] == 2).all()
        assert 0.3 < (copy != ragged.ids).mean() < 0.55
    assert not (out.ids[len(ragged.ids) : 2 * len(ragged.ids)] == out.ids[2 * len(ragged.ids) :]).all()
    assert augment(ragged, 0, 0.5, 0, MASK, SPECIAL) is ragged


def test_prune_distils_on_the_copies_and_records_them(trained):
    from pipeline import prune

    params, write = trained
    params["prune"].update(augment_copies=1, alpha_ce=0.0, epochs=1)
    m = prune.main(write(params))
    from pipeline.core.common import read_json

    d = read_json("metrics/details/prune.json")
    train_rows = read_json(f"{params['data']['out_dir']}/meta.json")["splits"]["train"]["examples"]
    assert d["augment"] == {"copies": 1, "prob": 0.15, "train_rows": 2 * train_rows}
    assert d["steps"] == -(-2 * train_rows // params["prune"]["batch_size"])
    assert abs(m["achieved_sparsity"] - params["prune"]["target_sparsity"]) <= 0.005
