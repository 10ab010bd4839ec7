"""tools.diagnostics.bundle_size on the tiny pipeline: the three variants in order, scored on dev, against
the FP32 teacher's bundle."""

import json

from tools.diagnostics import bundle_size


def test_trimming_then_four_bits_shrink_the_bundle(built, tmp_path):
    params, path, _ = built
    out = tmp_path / "sizes.json"
    record = bundle_size.main([str(path), params["prune"]["out_dir"], "--out", str(out)])
    assert json.loads(out.read_text()) == record
    (rows,) = record["students"].values()
    assert [(r["vocab"], r["embedding_bits"]) for r in rows] == list(bundle_size.VARIANTS)
    full, task, four = (r["bundle"]["gzip_bytes"] for r in rows)
    # the tiny vocabulary is the demo's words, which train uses nearly all of: trimming keeps almost every
    # row (and adds the id remap), so only the 4-bit table is sure to shrink here
    assert four < task and max(full, task) < record["teacher_fp32_bundle"]["gzip_bytes"]
    assert rows[0]["vocab_rows_kept"] is None and 0 < rows[1]["vocab_rows_kept"] == rows[2]["vocab_rows_kept"]
    assert all(0 <= r["ov_int8_dev"]["accuracy"] <= 1 for r in rows)
