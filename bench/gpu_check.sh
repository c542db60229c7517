#!/usr/bin/env bash
# The encoder on a GPU machine, offline, in one run well under 10 minutes:
#   1. install the carried wheels (bench/gpu_wheels.sh made them) and this package, offline;
#   2. run the GPU encoder tests (tests/gpu);
#   3. run bench/encoder.py: torch fp32/fp16/bf16 on CUDA and ORT CUDA (skipped, and said
#      so, where onnxruntime has no CUDA provider), each row's mean cosine vs CPU fp32;
#   4. embed 100,000 real texts at <= 64 tokens with MiniLM-L6 fp16 and print texts/s
#      (target >= 10,000 texts/s on one H100/H200).
#
#   bash bench/gpu_check.sh [--cpu-dry-run] [--wheels DIR] [--python PY]
#
# On the GPU machine (python3 with torch and CUDA; no network) the repo's working tree is
# copied there and build/gpu-wheels is carried beside it (run bench/gpu_wheels.sh here
# first). --cpu-dry-run runs every step with tiny sizes and CUDA hidden, to prove the steps
# and paths on a machine without a GPU (the CUDA tests and rows are skipped, and say so).
# Results and the log go to $OUT when it is set (the device tool's folder), else
# build/gpu-check. Every step has its own timeout, and the whole script one of TOTAL_S.
#
# Packages go into a --target folder put first on PYTHONPATH, not a venv: the GPU image's
# python3 is itself a venv (/opt/torch/.venv), and a venv made from it with
# --system-site-packages would see the base interpreter's packages, not its torch.
set -uo pipefail
SCRIPT=$(realpath "$0")
cd "$(dirname "$SCRIPT")/.." || exit 2
TOTAL_S=${TOTAL_S:-500}
if [ -z "${GPU_CHECK_INNER:-}" ]; then
  GPU_CHECK_INNER=1 exec timeout --kill-after=15 "$TOTAL_S" bash "$SCRIPT" "$@"
fi

DRY_RUN=0
WHEELS=build/gpu-wheels
PY=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-dry-run) DRY_RUN=1 ;;
    --wheels) WHEELS=$2; shift ;;
    --python) PY=$2; shift ;;
    *) echo "usage: bash bench/gpu_check.sh [--cpu-dry-run] [--wheels DIR] [--python PY]" >&2
       exit 2 ;;
  esac
  shift
done
RESULTS=${OUT:-build/gpu-check}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
exec > >(tee "$RESULTS/gpu_check.log") 2>&1

SITE=${SITE:-/tmp/proxal-gpu-site}
export PYTHONPATH="$SITE" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "$DRY_RUN" = 1 ]; then
  export CUDA_VISIBLE_DEVICES=""
  BENCH_TEXTS=64 EMBED_TEXTS=1000 EMBED_PRECISION=fp32 EMBED_BATCH=256
else
  BENCH_TEXTS=1000 EMBED_TEXTS=100000 EMBED_PRECISION=fp16 EMBED_BATCH=1024
fi
SUMMARY=()

step() {  # step NAME SECONDS COMMAND...: run it under its own timeout, record how it ended
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "=== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  [ "$rc" = 124 ] && echo "=== $name: TIMED OUT after ${limit}s"
  SUMMARY+=("$name: rc=$rc in $((SECONDS - start))s")
  echo "=== $name: rc=$rc in $((SECONDS - start))s"
  return "$rc"
}

echo "gpu_check: dry_run=$DRY_RUN python=$PY wheels=$WHEELS results=$RESULTS $(date -u +%FT%TZ)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader
shopt -s nullglob
WHEEL_FILES=("$WHEELS"/*.whl)
[ ${#WHEEL_FILES[@]} -eq 0 ] && echo "no wheels in $WHEELS: run bash bench/gpu_wheels.sh \
here and carry $WHEELS"
PIP=("$PY" -m pip install -q --no-index --no-deps --no-cache-dir --target "$SITE")
rm -rf "$SITE"
# shellcheck disable=SC2016  # 1b: the inner bash expands its own "$@" and "$0"
if step "1a install the carried wheels" 45 "${PIP[@]}" --no-compile "${WHEEL_FILES[@]}" &&
  step "1b install proxal (build log: pip_build.log)" 75 bash -c \
    '"$@" >"$0" 2>&1 || { tail -30 "$0"; exit 1; }' "$RESULTS/pip_build.log" \
    "${PIP[@]}" --no-build-isolation . &&
  step "1c weights and imports" 75 "$PY" bench/gpu_setup.py; then
  step "2 GPU encoder tests" 90 "$PY" -m pytest -q -p no:cacheprovider tests/gpu \
    --junitxml="$RESULTS/gpu_tests.xml"
  step "3 bench/encoder.py (CUDA rows)" 120 "$PY" bench/encoder.py --texts "$BENCH_TEXTS" \
    --repeats 1 --texts-file "$WHEELS/texts.jsonl" --out "$RESULTS/encoder_gpu.json" \
    --only "torch fp32 (cuda),torch fp16 (cuda),torch bf16 (cuda),onnx fp32 (cuda)"
  step "4 embed $EMBED_TEXTS texts, MiniLM-L6 $EMBED_PRECISION" 90 \
    "$PY" bench/encoder_throughput.py --texts "$EMBED_TEXTS" --max-length 64 \
    --precision "$EMBED_PRECISION" --batch-size "$EMBED_BATCH" \
    --texts-file "$WHEELS/texts.jsonl" --out "$RESULTS/encoder_throughput.json"
fi
echo "=== summary"
printf '%s\n' "${SUMMARY[@]}"
! printf '%s\n' "${SUMMARY[@]}" | grep -qv "rc=0 "
