#!/usr/bin/env bash
# Device diagnosis of the CUDA fidelity gap of the expert cache (docs/EXPERT_CACHE.md, Fidelity). Builds the CUDA
# backend with the patch series plus every diagnosis patch in scripts/device/diag/ (env knobs, never part of the
# series), then runs bench/cacheFidelityDiag.ts on the small model once per setting given as an argument (a space-
# separated list of VAR=value; "" for none), each against stock -ngl 99 run with the same environment.
# DIAG_SLOTS picks the cache's slot count (default: cache off and a slot for every expert).
# Carry as for gpu-checks.sh cuda. Example:
#   bash scripts/device/cuda-cache-diag.sh "" "LLAMA_EXPERT_CACHE_DIAG_NO_RESTORE=1 GGML_CUDA_DIAG_LOG_TOPK=1"
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
diag=$(mktemp -d)
cp patches/llama.cpp/* "$diag/"
for p in scripts/device/diag/*.patch; do
  cp "$p" "$diag/"
  basename "$p" >> "$diag/series"
done
export MOEFLASH_PATCHES_DIR=$diag
bash scripts/device/gpu-checks.sh cuda build-only > /tmp/build.log 2>&1 || { tail -40 /tmp/build.log; exit 1; }
export PATH=/tmp/nodebin:$PATH MOEFLASH_BACKEND=cuda
export MOEFLASH_STOCK_BIN_DIR=$root/build/llama/stock/build-cpu/bin MOEFLASH_STOCK_GGML_DIR=$root/build/llama/ggml-cuda-only
echo cuda > native/build/BACKEND
mkdir -p build/device-models
[ -f build/device-models/small.gguf ] || node bin/moeflash.js make-model --out build/device-models/small.gguf --preset small --seed 1 --quiet
# each setting's whole output (DIAG lines of the diagnosis patches included) goes to $OUT/diag-N.log when $OUT is set
n=0
for setting in "$@"; do
  n=$((n + 1))
  log=${OUT:-/tmp}/diag-$n.log
  echo "== ${setting:-no knob}"
  env DIAG_QUICK=1 $setting node dist/bench/cacheFidelityDiag.js build/device-models/small.gguf > "$log" 2>&1 || true
  grep -v "^moeflash: expert cache\|ggml_cuda_init\|Device 0\|^DIAG" "$log" | tail -4
  grep "^DIAG" "$log" | sort | uniq -c | sort -rn | head -12 || true
done
