"""The report's "What ships" section, from metrics/details/deploy.json: per model the format chosen
and the bench figures it was chosen from, the string-in gate, the bundle size and the repositories."""

from __future__ import annotations


def _candidate(c: dict) -> str:
    speed = f"{c['throughput_seq_per_s']:.1f} seq/s" if c["throughput_seq_per_s"] else "not benched"
    ok = (
        ""
        if c["within_tolerance"]
        else " — not within eval's tolerance"
        if c["evaluated"]
        else " — not evaluated"
    )
    return f"  - `{c['target']}` ({c['backend']}): {speed}{ok}"


def _string_input(r: dict) -> list[str]:
    s = r.get("string_input")
    if s is None:
        return ["  - token ids in (onnxruntime bundle: `tokenizers` runs the tokenizer)"]
    if not s["fused"]:
        return [f"  - token ids in: the tokenizer was not fused ({s['why_not']})"]
    g, lat = s["parity"], r.get("latency_b1", {})
    line = (
        f"  - strings in: tokenizer fused into the IR; parity on {g['rows']} dev rows: "
        f"{g['token_mismatch_rows']} token mismatches, logits max |diff| {g['logits_max_abs_diff']:.2g}"
    )
    if lat:
        line += (
            f"; b1 latency ({lat['tokens']} tokens) fused {lat['fused']['latency_ms_p50']:.2f} ms vs "
            f"unfused {lat['unfused']['latency_ms_p50']:.2f} ms p50"
        )
    return [line]


def render_deploy(deploy: dict) -> list[str]:
    out = ["## What ships (deploy)", ""]
    for model, r in deploy["models"].items():
        c, size = r["choice"], r["bundle_size"]
        out += [
            f"- **{model}**: `{r['target']}` ({c['requested']}: {c['reason']}), chosen from bench on "
            f"{c['bench_cpu']['cpu']} ({', '.join(c['bench_cpu']['isa']) or 'no AVX-512/AMX'}):",
            *map(_candidate, c["candidates"]),
            *_string_input(r),
            f"  - bundle {size['bytes'] / 1e6:.1f} MB, {size['gzip_bytes'] / 1e6:.1f} MB gzip; "
            f"OVMS serves it {'string-in' if r['ovms']['string_input'] else 'token-in'}",
        ]
    repos = deploy["repositories"]
    out += [
        "",
        f"Repositories (validated): OVMS {[m['name'] for m in repos['ovms']]}, "
        f"Triton {[m['name'] + ' (' + m['backend'] + ', ' + '/'.join(m['instance_kinds']) + ')' for m in repos['triton']]}.",
        "A bench on another CPU can choose another format: the choice belongs to the machine that benched.",
        "",
    ]
    return out
