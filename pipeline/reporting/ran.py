"""What ran, set against what was asked, for each row of the report's table.

A backend's name asks for a precision, and onnxruntime is asked for providers; the runtime may run
something else: OpenVINO runs an FP32 IR in f32 when asked for bf16 on a CPU without bf16, and
onnxruntime with allow_fallback runs on the CPU when CUDA does not load. Eval and bench rows record
what ran (pipeline.runtime.backends Runner.info); compile.json records what onnxruntime was asked for. Pure
functions of those parsed files; a value a row does not record is None, never guessed.
"""

from __future__ import annotations

ELEMENT = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # OpenVINO element types -> the backends' spelling
BF16_ISA = ("avx512_bf16", "amx_bf16")  # without either, OpenVINO's CPU plugin runs a bf16 hint in f32


def precision(row: dict, hint: str | None) -> tuple[str | None, str]:
    """(the precision that ran, None when the row does not record it; the precision asked).

    An OpenVINO INT8 IR runs its quantized layers in int8 and the rest at the compile stage's
    INFERENCE_PRECISION_HINT (`hint`), so both halves are shown."""
    ran = row.get("inference_precision")
    ran = ELEMENT.get(ran, ran)
    if row["backend"].startswith("ov-") and row["precision"] == "int8":
        return ran and f"int8 + {ran}", f"int8 + {ELEMENT.get(hint, hint)}"
    return ran, row["precision"]


def precision_mark(ran: str | None, asked: str, isa: list[str]) -> str | None:
    """None when what ran is what was asked; else the difference and, where the inputs show it, why."""
    if ran is None:
        return f"{asked} asked; what ran is not recorded (rerun eval and bench)"
    if ran == asked or ran.startswith(asked + "-"):  # ort-int8 records int8-dynamic: an int8
        return None
    no_bf16 = "bf16" in asked and "bf16" not in ran and not set(BF16_ISA) & set(isa)
    why = f"this CPU has no bf16 (neither {' nor '.join(BF16_ISA)})" if no_bf16 else "the runtime chose it"
    return f"{asked} asked, {ran} ran: {why}"


def provider_mark(row: dict, sessions: dict) -> str | None:
    """onnxruntime only (torch and OpenVINO are asked for the CPU and nothing else): the providers
    compile asked for (compile.json ort_sessions) that this row did not run on."""
    if not row["backend"].startswith("ort-"):
        return None
    if row["precision"] not in sessions:
        return f"providers asked not recorded (compile.json ort_sessions.{row['precision']}); rerun compile"
    asked = sessions[row["precision"]]["requested"]
    lost = [p for p in asked if p not in (row.get("provider") or "").split(",")]
    if not lost:
        return None
    return (
        f"{','.join(asked)} asked, {row.get('provider')} ran: {', '.join(lost)} did not load (allow_fallback)"
    )


def what_ran(eval_row: dict, bench_rows: list[dict], compile_model: dict, isa: list[str]) -> dict:
    """The table's precision and provider for one (model, backend), from eval's row, with every way
    it differs from the ask, and any bench row of it that ran otherwise than eval did."""
    hint = compile_model.get("compile_config", {}).get("INFERENCE_PRECISION_HINT")
    ran, asked = precision(eval_row, hint)
    marks = [precision_mark(ran, asked, isa), provider_mark(eval_row, compile_model.get("ort_sessions", {}))]
    odd: dict[tuple, list[str]] = {}
    for r in bench_rows:
        other = (precision(r, hint)[0], r.get("provider"))
        if other != (ran, eval_row.get("provider")):
            odd.setdefault(other, []).append(f"b{r['batch']}×s{r['seq_len']}")
    marks += [
        f"bench ran {p} on {prov} at {', '.join(dict.fromkeys(cells))}, eval {ran} on {eval_row.get('provider')}"
        for (p, prov), cells in odd.items()
    ]
    return {
        "precision_ran": ran,
        "provider_ran": eval_row.get("provider"),
        "asked_vs_ran": list(dict.fromkeys(m for m in marks if m)),
    }


def hardware(bench: dict) -> dict:
    """The CPU bench ran on (older bench.json files keep it under env)."""
    env = bench.get("env", {})
    return bench.get("hardware") or {k: env.get(k) for k in ("cpu", "logical_cpus", "physical_cores", "isa")}
