# Here, before a device call: what the GPU machine lacks, in the ignored folders gpu/ and .whl/ (< 64 MiB
# with the repository, the transfer limit). Its image has torch, accelerate, safetensors and numpy 2
# (INC's pruning code runs on numpy 2: tests/test_recipes.py passed here with numpy 2.3.5); it lacks
# transformers < 4.58 and INC with their small dependencies, and dvclive (its dvc tree is too large to
# carry: tools/gpu/stubs stands in, so no curves are logged there).
#   bash tools/gpu/prepare.sh && device run: `DEVICE=1 bash tools/gpu/run.sh python3 gpu/mrpc 550`, carry [.whl, gpu]
set -eu
PY=${PY:-.venv/bin/python}
mkdir -p .whl gpu/glue
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 neural-compressor==3.7.1 Deprecated==1.3.1 \
  prettytable==3.18.0 schema==0.7.8 pycocotools==2.0.11 dill==0.4.1 wcwidth==0.9.4 pydot==4.0.1 setuptools==80.10.2
cp -r ../shared/data/glue/MRPC gpu/glue/
$PY tools/gpu/pack_model.py "$($PY -c 'from pipeline.core.models import resolve_model as r; print(r("bundled:all-MiniLM-L6-v2"))')" gpu/model gpu/glue
du -cb gpu .whl | tail -1
