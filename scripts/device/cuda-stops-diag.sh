#!/usr/bin/env bash
# Device diagnosis of the remaining CUDA fidelity gap of the expert cache (docs/EXPERT_CACHE.md, Fidelity). Builds the
# CUDA backend with the patch series plus scripts/device/diag/9001 (a diagnosis knob, never part of the series) and
# compares with stock -ngl 99, on the small model: a slot for every expert without stops (patch 0006) against the
# same with a stop at every layer's router that does nothing (LLAMA_EXPERT_CACHE_DIAG_FORCE_STOPS=1). If only the
# second differs, computing the graph in pieces is what changes ggml-cuda's results.
# Carry as for gpu-checks.sh cuda. Usage: bash scripts/device/cuda-stops-diag.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
diag=$(mktemp -d)
cp patches/llama.cpp/* "$diag/"
cp scripts/device/diag/9001-expert-cache-force-stops.patch "$diag/"
echo 9001-expert-cache-force-stops.patch >> "$diag/series"
export MOEFLASH_PATCHES_DIR=$diag
bash scripts/device/gpu-checks.sh cuda build-only > /tmp/build.log 2>&1 || { tail -40 /tmp/build.log; exit 1; }
export PATH=/tmp/nodebin:$PATH MOEFLASH_BACKEND=cuda
export MOEFLASH_STOCK_BIN_DIR=$root/build/llama/stock/build-cpu/bin MOEFLASH_STOCK_GGML_DIR=$root/build/llama/ggml-cuda-only
echo cuda > native/build/BACKEND
mkdir -p build/device-models
[ -f build/device-models/small.gguf ] || node bin/moeflash.js make-model --out build/device-models/small.gguf --preset small --seed 1 --quiet
for setting in "" LLAMA_EXPERT_CACHE_DIAG_FORCE_STOPS=1; do
  echo "== ${setting:-no stops with a slot for every expert (0006)}"
  env $setting node dist/bench/cacheFidelityDiag.js build/device-models/small.gguf 2>&1 |
    grep -v "^moeflash: expert cache\|ggml_cuda_init\|Device 0" | tail -9
done
