"""Vocabulary trimming (prune.vocab: task): which ids are kept, the trimmed student's save and reload,
and a trimmed student through prune, export and compile with their parity gates."""

import numpy as np
import pytest
import torch

from pipeline.core import vocab

SPECIALS = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK], as in the tiny vocab (tests/conftest.py)


def test_kept_ids_are_specials_core_and_train_ids():
    kept = vocab.kept_ids(20, [*SPECIALS, 17], core=7, train_ids=np.array([9, 12, 9, 3]))
    assert kept.tolist() == [0, 1, 2, 3, 4, 5, 6, 9, 12, 17]
    assert vocab.kept_ids(20, SPECIALS, core=100, train_ids=np.array([], np.int64)).tolist() == list(
        range(20)
    )
    with pytest.raises(ValueError, match="outside the vocabulary of 20 rows"):
        vocab.kept_ids(20, SPECIALS, core=5, train_ids=np.array([3, 20]))


def test_remap_sends_dropped_ids_to_unk_and_needs_unk_kept():
    table = vocab.remap_table(8, np.array([0, 1, 2, 5]), unk_id=1)
    assert table.dtype == torch.int32 and table.tolist() == [0, 1, 2, 1, 1, 3, 1, 1]
    with pytest.raises(ValueError, match=r"\[UNK\] \(id 1\) must be kept"):
        vocab.remap_table(8, np.array([0, 2, 5]), unk_id=1)


def test_oov_fraction_counts_ordinary_tokens_only():
    ids = np.array([2, 7, 8, 9, 3, 0, 0, 1])  # [CLS] 7 8 9 [SEP], padding and a tokenizer [UNK] not counted
    assert vocab.oov_fraction(ids, np.array([*SPECIALS, 7]), SPECIALS) == (pytest.approx(2 / 3), 3)


def tiny_classifier(tiny_model_dir):
    from pipeline.core.models import load_classifier

    torch.manual_seed(0)
    return load_classifier(str(tiny_model_dir), 2, "classification", ["negative", "positive"]).eval()


def logits(model, ids: list[int]) -> torch.Tensor:
    x = torch.tensor([ids])
    with torch.no_grad():
        return model(
            input_ids=x, attention_mask=torch.ones_like(x), token_type_ids=torch.zeros_like(x)
        ).logits


def test_trimmed_student_round_trips_through_safetensors(tiny_model_dir, tmp_path):
    import copy

    from pipeline.core.models import VOCAB_KEY, load_tokenizer, load_trained, read_config, save_model

    full = tiny_classifier(tiny_model_dir)
    rows = full.config.vocab_size
    kept = vocab.kept_ids(rows, SPECIALS, core=10, train_ids=np.array([40, 41, 42]))
    student = copy.deepcopy(full)
    vocab.trim(student, kept, unk_id=1)
    save_model(student, load_tokenizer(str(tiny_model_dir)), tmp_path)
    config = read_config(tmp_path)
    assert config[VOCAB_KEY] == {"rows": len(kept)} and config["vocab_size"] == rows
    assert not [f for f in tmp_path.iterdir() if f.suffix in (".bin", ".pt", ".pkl")]
    reloaded = load_trained(tmp_path).eval()
    emb = vocab.word_embeddings(reloaded)
    assert isinstance(emb, vocab.TrimmedEmbedding) and tuple(emb.weight.shape) == (len(kept), 128)
    assert vocab.trimmed_rows(reloaded) == len(kept) and emb.original_rows == rows
    inside = [2, 7, 40, 5, 42, 3]  # every token kept: the same model
    assert torch.equal(logits(reloaded, inside), logits(full, inside))
    dropped = [2, 7, 50, 3]  # 50 is dropped: it reads [UNK]'s row
    assert torch.equal(logits(reloaded, dropped), logits(full, [2, 7, 1, 3]))
    assert not torch.allclose(logits(reloaded, dropped), logits(full, dropped))


def test_a_trimmed_student_passes_prune_export_and_compile(trained, tmp_path):
    """Tiny end to end: the vocabulary is the specials, the first 20 ids and train's tokens (never dev's),
    both exports pass their parity gates, the fused string-in IR passes deploy's, and the files shrink
    against the untrimmed teacher of the same shape."""
    from pipeline import compile as compile_, export, prune
    from pipeline.core.tokens import load_inputs
    from pipeline.deploy import dev_rows, fused_model

    params, write = trained
    params["prune"].update(vocab="task", vocab_core=20, target_sparsity=0.0, epochs=1)
    params["compile"]["calibration_samples"] = 4
    path = write(params)
    m = prune.main(path)["vocab"]
    _, train, dev = load_inputs(params["data"]["out_dir"])
    assert m["rows_kept"] == len(set(range(20)) | set(train.ids.tolist())) < m["rows_original"]
    assert m["word_embedding_params_after"] == m["rows_kept"] * 128 < m["word_embedding_params_before"]
    assert 0 < m["dev_oov_token_fraction"] < 1  # dev holds tokens train does not: they were not kept
    assert set(m["untrimmed_scores"]) == set(m["trimmed_scores"]) >= {"accuracy", "f1", "score"}
    gates = {}
    for exporter in ("torch", "optimum"):
        params["export"]["exporter"] = exporter
        gates[exporter] = export.main(write(params))["models"]
        assert gates[exporter]["student"]["max_abs_diff"] <= params["export"]["atol"]
    onnx = {k: v["onnx_bytes"] for k, v in gates["optimum"].items()}
    assert onnx["student"] < onnx["teacher"] - 0.9 * (m["rows_original"] - m["rows_kept"]) * 128 * 4
    sizes = {k: v["sizes"] for k, v in compile_.main(path)["models"].items()}
    assert sizes["student"]["ir_int8"]["gzip_bytes"] < sizes["teacher"]["ir_int8"]["gzip_bytes"]
    xml = tmp_path / "compiled" / "student" / "int8.xml"
    data_dir = tmp_path / "data_out"
    fused, record = fused_model(data_dir / "tokenizer", xml, dev_rows(data_dir), 64, 1e-3, tmp_path)
    assert fused is not None and record["parity"]["passed"], record


def test_the_report_says_the_vocabulary_was_trimmed_beside_the_size():
    from pipeline.reporting.render_gain import render_gain

    def row(model, tput, gz, score):
        return {
            "model": model,
            "backend": "ov-int8",
            "throughput_seq_per_s": tput,
            "latency_ms_p50": 1.0,
            "size_gzip_mb": gz,
            "score": score,
            "speedup_x": None,
        }

    rows = [row("teacher", 300.0, 20.3, 0.83), row("student", 900.0, 2.1, 0.82)]
    deploy = {"models": {"student": {"target": "openvino-int8", "bundle_size": {"gzip_bytes": 2_000_000}}}}
    compile_ = {"models": {"teacher": {"sizes": {"onnx_fp32": {"gzip_bytes": 83_600_000}}}}}
    trimmed = {"rows_kept": 9_871, "rows_original": 30_522, "dev_oov_token_fraction": 0.0123}
    lead = render_gain(rows, deploy, compile_, (1, 32), (32, 128), trimmed)[2]
    assert "(1/41.8); its word embedding keeps 9,871 of 30,522 rows (prune.vocab: task, 1.23% of dev" in lead
    assert "word embedding" not in render_gain(rows, deploy, compile_, (1, 32), (32, 128))[2]
