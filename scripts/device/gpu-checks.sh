#!/usr/bin/env bash
# GPU checks on the lent device machine (see docs/PERFORMANCE.md): builds or unpacks the backend, generates the
# benchmark models, runs the GPU fidelity check and bench:engine, and copies the JSON results to $OUT.
#   scripts/device/gpu-checks.sh cuda     builds patched + stock llama.cpp and the addon with CUDA there
#   scripts/device/gpu-checks.sh vulkan   uses a Vulkan build made on the dev machine (.devtools/vulkan.tar.xz)
#   a second argument picks the steps (a device command may run 10 minutes at most; a warm machine keeps the builds):
#     build-only | fidelity (GPU fidelity incl. the expert cache) | bench (bench:engine) | cache (bench:cache) | all
# It expects: .devtools/node.xz (node binary), dist/ (compiled TS), node_modules/node-addon-api and
# node_modules/node-api-headers, and for cuda the llama.cpp bundle under build/dl (carried by the caller).
set -euo pipefail
backend=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-$root/build/device-out}
mkdir -p "$out" build/device-models
export MOEFLASH_BACKEND=$backend

mkdir -p /tmp/nodebin
[ -x /tmp/nodebin/node ] || { xz -dc .devtools/node.xz > /tmp/nodebin/node; chmod +x /tmp/nodebin/node; }
export PATH=/tmp/nodebin:$PATH
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

steps=${2:-all}
built() { [ -f "native/build/$backend/Release/moeflash.node" ] && [ -f "build/llama/patched/build-$backend/bin/llama-bench" ]; }
if [ "$backend" = cuda ] && built && [ -f "$root/build/llama/stock/build-cpu/bin/llama-completion" ]; then
  echo "updating the CUDA build of this warm machine"
  export CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-90} MOEFLASH_JOBS=${MOEFLASH_JOBS:-16}
  bash scripts/build-llama-cpp.sh patched > "$out/build-patched.log" 2>&1 || { tail -40 "$out/build-patched.log"; exit 1; }
  cmake --build "native/build/$backend" > "$out/addon.log" 2>&1 || { tail -30 "$out/addon.log"; exit 1; }
  export MOEFLASH_STOCK_BIN_DIR=$root/build/llama/stock/build-cpu/bin MOEFLASH_STOCK_GGML_DIR=$root/build/llama/ggml-cuda-only
elif [ "$backend" = cuda ]; then
  export CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-90} MOEFLASH_JOBS=${MOEFLASH_JOBS:-16}
  t0=$(date +%s)
  bash scripts/build-llama-cpp.sh patched > "$out/build-patched.log" 2>&1 || { tail -40 "$out/build-patched.log"; exit 1; }
  # The stock peer differs from ours only in libllama (our patches leave ggml alone): build it CPU-only (quick) and
  # run it on the CUDA ggml libraries of the patched build.
  if [ "$steps" != cache ]; then
    MOEFLASH_BACKEND=cpu MOEFLASH_PORTABLE=1 bash scripts/build-llama-cpp.sh stock llama-completion > "$out/build-stock.log" 2>&1 || { tail -40 "$out/build-stock.log"; exit 1; }
  fi
  mkdir -p build/llama/ggml-cuda-only
  for l in libggml.so.0 libggml-base.so.0 libggml-cpu.so.0 libggml-cuda.so.0; do
    ln -sf "$root/build/llama/patched/build-cuda/bin/$l" build/llama/ggml-cuda-only/$l
  done
  export MOEFLASH_STOCK_BIN_DIR=$root/build/llama/stock/build-cpu/bin MOEFLASH_STOCK_GGML_DIR=$root/build/llama/ggml-cuda-only
  echo "llama.cpp builds: $(( $(date +%s) - t0 )) s"
else
  tar -xJf .devtools/vulkan.tar.xz
  # the addon was linked on the dev machine against its liburing
  export LD_LIBRARY_PATH=$root/.devtools/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  fi
fi
if [ "$backend" = cuda ] && ! built; then
  cmake -S native -B "native/build/$backend" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_SRC_DIR="$root/build/llama/patched/src" -DLLAMA_BIN_DIR="$root/build/llama/patched/build-$backend/bin" \
    -DCMAKE_JS_INC="$root/node_modules/node-api-headers/include" > "$out/addon.log" 2>&1
  cmake --build "native/build/$backend" >> "$out/addon.log" 2>&1 || { tail -30 "$out/addon.log"; exit 1; }
fi

[ "$steps" = build-only ] && { echo "built"; exit 0; }
echo "$backend" > native/build/BACKEND

for preset in tiny small; do
  [ -f "build/device-models/$preset.gguf" ] || node bin/moeflash.js make-model --out "build/device-models/$preset.gguf" --preset "$preset" --seed 1 --quiet
done
if [ "$steps" = fidelity ] || [ "$steps" = all ]; then
  node dist/bench/gpuFidelity.js build/device-models/tiny.gguf build/device-models/small.gguf 2>&1 | grep -v "^moeflash: expert cache" | tail -60 || echo "FIDELITY FAILED"
  cp bench/results/fidelity-*.json "$out/" 2>/dev/null || true
  [ "$steps" = fidelity ] && exit 0
fi
if [ ! -f build/device-models/30b-a3b.gguf ]; then
  t0=$(date +%s)
  node bin/moeflash.js make-model --out build/device-models/30b-a3b.gguf --preset 30b-a3b --seed 1 --quiet
  echo "30b-a3b model written in $(( $(date +%s) - t0 )) s"
fi

if [ "$steps" = cache ] || [ "$steps" = all ]; then
  label=${BENCH_LABEL:-$backend}
  BENCH_MODEL=build/device-models/30b-a3b.gguf BENCH_LABEL="$label" BENCH_THREADS=$(( $(nproc) - 1 )) node dist/bench/benchCache.js 2>&1 | grep -v "^moeflash: expert cache" | tail -30
  # only this run's files: $OUT takes a limited number of files back
  cp "bench/results/cache-$label.json" "bench/results/cache-$label.svg" "$out/" 2>/dev/null || true
  [ "$steps" = cache ] && exit 0
fi
export BENCH_REPS=${BENCH_REPS:-2}
BENCH_MODELS=build/device-models/30b-a3b.gguf BENCH_NGL=99 BENCH_LABEL="$backend-ngl99" node dist/bench/benchEngine.js 2>&1 | tail -8
if [ "$backend" = cuda ]; then
  # the same build with the GPU hidden: the device's CPU figures
  # one core is left to the event loop: compute threads that share cores with it stall at every barrier
  CUDA_VISIBLE_DEVICES= BENCH_THREADS=$(( $(nproc) - 1 )) BENCH_MODELS=build/device-models/30b-a3b.gguf BENCH_NGL=0 BENCH_LABEL=device-cpu node dist/bench/benchEngine.js 2>&1 | tail -8
fi
cp bench/results/*.json "$out/" 2>/dev/null || true
