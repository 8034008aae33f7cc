#!/usr/bin/env bash
# Device diagnosis for the CUDA fidelity gap of the expert cache (docs/EXPERT_CACHE.md): builds the CUDA backend
# with GGML_CUDA_DEBUG (ggml-cuda then logs every fusion it applies; nothing else changes), runs 3 greedy tokens of
# the small model with the cache off and with SLOTS slots (default 4), and writes the fusion counts of both to $OUT
# (fused.txt, fused$SLOTS.txt) plus a diff. A warm machine keeps the debug build for further runs.
set -e
slots=${SLOTS:-4}
export CXXFLAGS=-DGGML_CUDA_DEBUG CUDAFLAGS=-DGGML_CUDA_DEBUG
bash scripts/device/gpu-checks.sh cuda build-only > /tmp/b.log 2>&1 || { tail -30 /tmp/b.log; exit 1; }
export PATH=/tmp/nodebin:$PATH MOEFLASH_BACKEND=cuda
mkdir -p build/device-models
[ -f build/device-models/small.gguf ] || node bin/moeflash.js make-model --out build/device-models/small.gguf --preset small --seed 1 --quiet
for s in "" "$slots"; do
  MOEFLASH_LLAMA_LOG=1 node dist/bench/fusionDiag.js build/device-models/small.gguf "Once upon a time, in a land far away," $s > /tmp/f$s.log 2>&1 || tail -20 /tmp/f$s.log
  sed -n '/=== GENERATE START/,/=== GENERATE END/p' /tmp/f$s.log | grep -o "nodes_fused: .*" | sed 's/-[0-9]*//g' | sort | uniq -c > $OUT/fused$s.txt
  grep "GENERATE END" /tmp/f$s.log
done
diff $OUT/fused.txt $OUT/fused$slots.txt || true
