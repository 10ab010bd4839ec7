"""Start-up cost of a model on an edge box: the torch-free bundle runner against loading the same
model through PyTorch + transformers. Each measurement is a fresh process (imports included, as a
user pays them): wall time to the first prediction and peak resident memory, median of --runs.

    python -m tools.diagnostics.startup bundles/student models/student [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

TEXT = "The battery life was better than I expected, but the screen is dim."

RUNNER = """
import json, resource, time
t0 = time.perf_counter()
from pipeline.serving.runner import Bundle
b = Bundle({bundle!r}, threads={threads})
out = b.predict([{text!r}])
t1 = time.perf_counter()
import sys
print(json.dumps({{"seconds": t1 - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "torch_imported": "torch" in sys.modules, "prediction": out[0]}}))
"""

TORCH = """
import json, resource, time
t0 = time.perf_counter()
import torch
from transformers import AutoTokenizer
from pipeline.core.models import load_trained
torch.set_num_threads({threads})
model = load_trained({model_dir!r}).eval()
tok = AutoTokenizer.from_pretrained({model_dir!r})
with torch.inference_mode():
    logits = model(**tok([{text!r}], return_tensors="pt")).logits
t1 = time.perf_counter()
print(json.dumps({{"seconds": t1 - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "prediction": logits.softmax(-1).tolist()[0]}}))
"""


def measure(code: str, runs: int) -> dict:
    samples = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "runs": runs,
        "seconds_median": round(statistics.median(s["seconds"] for s in samples), 3),
        "peak_rss_mb_median": round(statistics.median(s["peak_rss_mb"] for s in samples), 1),
        "last": samples[-1],
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("model_dir")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    result = {
        "bundle_runner": measure(RUNNER.format(bundle=a.bundle, text=TEXT, threads=a.threads), a.runs),
        "torch_transformers": measure(
            TORCH.format(model_dir=a.model_dir, text=TEXT, threads=a.threads), a.runs
        ),
    }
    b, t = result["bundle_runner"], result["torch_transformers"]
    result["ratio_seconds"] = round(t["seconds_median"] / b["seconds_median"], 2)
    result["ratio_rss"] = round(t["peak_rss_mb_median"] / b["peak_rss_mb_median"], 2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
