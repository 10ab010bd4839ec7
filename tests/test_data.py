"""Readers and the data stage: GLUE layout, user files, and clear errors for bad input."""

import csv
import json
import os
import re

import numpy as np
import pytest

from pipeline import data
from pipeline.data import DataError, encode_labels, pick_columns, read_table
from pipeline.core.tokens import Tokens
from pipeline.training.loop import length_grouped_batches

MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_ROWS = [
    '1\t1\t2\t"Officials at Brandeis said .\tThey said so .\n',
    "0\t3\t4\tA cat sat .\tA dog ran .\n",
]


def write_glue(root):
    d = root / "glue" / "MRPC"
    d.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        (d / name).write_text(MRPC_HEADER + "".join(MRPC_ROWS * 8), encoding="utf-8")
    return root / "glue"


def test_glue_reader_keeps_quotes_and_strips_bom(tmp_path):
    glue = write_glue(tmp_path)
    header, rows = read_table(glue / "MRPC" / "train.tsv", quoting=csv.QUOTE_NONE)
    assert header[0] == "Quality" and len(rows) == 16
    assert (
        len(read_table(glue / "MRPC" / "train.tsv")[1]) < 16
    )  # a quoting reader merges rows: why GLUE opts out
    picked = pick_columns("f", header, rows, "#1 String", "#2 String", "Quality")
    assert picked[0] == ('"Officials at Brandeis said .', "They said so .", "1")


def test_glue_task_through_stage(project, tmp_path):
    params, write = project
    params["data"].update(
        source="glue", task="MRPC", glue_dir=str(write_glue(tmp_path)), max_train_samples=None
    )
    m = data.main(write(params))
    assert m["task"] == "mrpc" and m["train_examples"] == 16
    meta = json.loads((tmp_path / "data_out" / "meta.json").read_text())
    assert meta["metrics"] == ["accuracy", "f1"] and meta["labels"] == ["0", "1"]
    ds = Tokens(tmp_path / "data_out" / "train.safetensors")
    b = ds.batch(np.array([0, 1]))
    assert (b["token_type_ids"][0] == 1).any()  # pairs are encoded as pairs


def test_user_jsonl_regression(project, tmp_path):
    params, write = project
    rows = [{"a": f"text {i}", "b": f"other {i}", "y": i / 10} for i in range(20)]
    for name in ("tr.jsonl", "ev.jsonl"):
        (tmp_path / name).write_text("\n".join(map(json.dumps, rows)))
    params["data"].update(
        train_file=str(tmp_path / "tr.jsonl"),
        eval_file=str(tmp_path / "ev.jsonl"),
        text_column="a",
        text_pair_column="b",
        label_column="y",
        labels=None,
        metrics=["pearson", "spearman"],
    )
    data.main(write(params))
    meta = json.loads((tmp_path / "data_out" / "meta.json").read_text())
    assert meta["problem_type"] == "regression" and meta["num_labels"] == 1


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"train_file": "missing.tsv"}, "missing.tsv' not found"),
        ({"text_column": "review"}, "column 'review' not found; columns: sentence, label"),
        ({"labels": ["neg", "pos"]}, "data row 1 has unknown label 'negative'; allowed: neg, pos"),
    ],
)
def test_bad_input_is_named(project, change, needle):
    params, write = project
    params["data"].update(change)
    with pytest.raises(DataError, match=needle):
        data.main(write(params))
    assert not os.path.exists(params["data"]["out_dir"])


def test_f1_needs_two_classes(project, tmp_path):
    params, write = project
    rows = "sentence\tlabel\n" + "".join(f"text {i}\t{'abc'[i % 3]}\n" for i in range(30))
    for name in ("tr.tsv", "ev.tsv"):
        (tmp_path / name).write_text(rows)
    params["data"].update(
        train_file=str(tmp_path / "tr.tsv"), eval_file=str(tmp_path / "ev.tsv"), labels=None
    )
    with pytest.raises(DataError, match="f1, which is binary.*3 labels"):
        data.main(write(params))


def test_empty_file_is_named(tmp_path):
    (tmp_path / "e.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(DataError, match="e.tsv' has no data rows"):
        read_table(tmp_path / "e.tsv")


def test_undecodable_byte_names_file_and_offset(tmp_path):
    """Latin-1 "café" in a UTF-8 file, after a BOM: the offset counts from the file's first byte."""
    head = "\ufeffsentence\tlabel\ngood row\tpositive\n".encode()
    for name, bad in (
        ("bad.tsv", b"caf\xe9 au lait\tnegative\n"),
        ("bad.jsonl", b'{"sentence": "caf\xe9"}\n'),
    ):
        path = tmp_path / name
        path.write_bytes(head + bad)
        offset = len(head) + bad.index(b"\xe9")
        with pytest.raises(DataError, match=rf"{re.escape(str(path))}.*byte offset {offset} \(line 3\)"):
            data.read_jsonl(path) if name.endswith(".jsonl") else read_table(path)


def test_encode_labels_regression_rejects_text():
    with pytest.raises(DataError, match="not a number"):
        encode_labels("f", [("a", None, "high")], None)


def test_length_grouped_batches_cover_everything_once():
    lengths = np.random.default_rng(0).integers(3, 100, 1000)
    batches = length_grouped_batches(lengths, 32, seed=1)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert lengths[batches[0]].max() == lengths.max()  # longest batch first
    spread = np.mean([np.ptp(lengths[b]) for b in batches])  # grouped: similar lengths per batch
    random_spread = np.mean([np.ptp(lengths[b]) for b in length_grouped_batches(lengths, 32, 1, group=False)])
    assert spread < random_spread / 3
    assert [b.tolist() for b in length_grouped_batches(lengths, 32, seed=1)] == [b.tolist() for b in batches]
