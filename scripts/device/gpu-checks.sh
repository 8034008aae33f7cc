#!/usr/bin/env bash
# GPU checks on the lent device machine (docs/PERFORMANCE.md, docs/EXPERT_CACHE.md), which has no registry: carry
# .devtools/ (scripts/device/pack-devtools.sh), dist/ and gen/. Runs the steps named as arguments, in order; a warm
# machine keeps what earlier calls built. Results go to $OUT (JSON and SVG in results.tar, logs beside it).
#   setup        unpack node, the npm packages and the llama.cpp source (git repos the series applies to)
#   cpu          the install on this machine's CPU with the GPU hidden: build-native (CPU level chosen by the probe),
#                the stack started with one generation through the router, and the tests that need no registry tools
#   cuda-bg      start the CUDA build (build-native: CPU level probed, then patched llama.cpp + addon) in the
#                background; cuda-wait waits for it
#   vulkan-setup unpack the Vulkan build packed on the dev machine (scripts/device/pack-vulkan.sh: the machine has no
#                glslc) and the Vulkan loader, and check that the driver gives a Vulkan device; then GPU_BACKEND=vulkan
#                makes the steps below run Vulkan
#   ops          test-backend-ops for the ops the patches add or change (the GPU backend against the CPU)
#   fidelity     the stock CPU peer, then bench/gpuFidelity.ts (cache vs stock, tiny + small)
#   cache        bench:cache on the 30b-a3b preset (BENCH_* as usual; CACHE_RUNS="env;env" runs several)
#   engine       bench:engine on the 30b-a3b preset, every layer on the GPU: the engine against llama-bench
# GPU_BACKEND=cuda (default) or vulkan picks the backend of ops, fidelity, cache and limited.
#   variants     A/B of experiments on the built GPU tree: each patch in $VARIANTS (against the patched llama.cpp
#                source; kept out of the repository, e.g. in .devtools/variants, carried) is applied, libggml and
#                test-backend-ops rebuilt, the MOE_SLOTS perf case and $VARIANT_CACHE_RUNS run, then reverted and
#                rebuilt (VARIANTS_NO_RESTORE=1: not rebuilt, the call's last step); VARIANT_FIDELITY=1 runs `fidelity` on
#                each; run `ops` and `cache` before it for the baseline of the same call
#   zerocopy     bench/cuda/zeroCopyBandwidth.cu (nvcc here): kernels reading pinned host memory against the copy engine,
#                (`scatter`, one expert read from a fresh place of an 8 GiB pool, and `graph`: by hand)
#   profile      bench/cuda/kernelProfile.c preloaded into bench:cache runs ($PROFILE_RUNS: "env;env", each its own
#                process, e.g. "BENCH_REGIMES=realistic BENCH_BUDGETS=0.5"): per decode step, the time per kernel, the
#                device's idle gaps and what they follow, the host's CUDA calls; profile-<n>.txt per run
#   limited      bench:prefetch:limited on this machine's disk: the 30b-a3b preset in a memory cgroup of a quarter of
#                its size, stock -ncmoe vs the GPU slot cache at 25 % with experts read on demand (docs/EXPERT_STORE.md);
#                LIMITED_SCENARIOS, LIMITED_TOKENS, LIMITED_RESULT, LIMITED_GPU_LAYERS (0: CPU only); MOEFLASH_RECORD_ROUTING=1 / BENCH_CACHE_PREFETCH=1 give
#                the store hints
#   readpaths    bench:readpaths on the same disk and limit: CPU cost and rate of a byte of an expert through the page
#                cache (the pager's path) and through O_DIRECT into memory the reader owns
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-$root/build/device-out}
mkdir -p "$out" build/device-models
mkdir -p /tmp/nodebin
[ -x /tmp/nodebin/node ] || { xz -dc .devtools/node.xz > /tmp/nodebin/node; chmod +x /tmp/nodebin/node; }
export PATH=/tmp/nodebin:$PATH CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-90} MOEFLASH_JOBS=${MOEFLASH_JOBS:-16}
log() { printf '== %s %s\n' "$(date +%T)" "$*"; }
gpu=${GPU_BACKEND:-cuda}
case "$gpu" in cuda) gpu_dev=CUDA0 ;; vulkan) gpu_dev=Vulkan0 ;; *) echo "gpu-checks: GPU_BACKEND must be cuda or vulkan" >&2; exit 2 ;; esac
# the NVIDIA driver's Vulkan manifest, named so that the loader finds it whatever its search path (every step of
# every call needs it)
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
# a headless machine may need the manifest vulkan-setup wrote for the same driver's EGL library (below)
egl_icd=$root/build/vulkan-egl-icd.json
icd=$nvidia_icd
[ -f "$egl_icd" ] && icd=$egl_icd
if [ "$gpu" = vulkan ] && [ -f "$icd" ]; then
  export VK_DRIVER_FILES=$icd
fi
# the result files this call writes: only they go to $OUT, before the next call's working tree replaces the tracked
# ones, appended to one results.tar ($OUT takes 8 files; a call of many steps writes more)
stamp=$(mktemp)
# a bench's whole output goes to $out/bench.log as it comes, so that a call cut at its limit still brings back what ran
# (a step piped through tail prints nothing when killed); its last lines are shown here
logged() {
  local n=$1
  shift
  "$@" 2>&1 | tee -a "$out/bench.log" | grep -v "^moeflash: expert cache" | tail -"$n"
}
keep_results() {
  local new
  new=$(find bench/results -maxdepth 1 -type f -newer "$stamp" -printf '%f\n')
  [ -z "$new" ] || tar -rf "$out/results.tar" -C bench/results $new
  touch "$stamp"
}

setup() {
  [ -d node_modules/nice-grpc ] || tar -xJf .devtools/node_modules.tar.xz
  # liburing (scripts/device/pack-devtools.sh), so that a build made here has io_uring
  for f in .devtools/debs/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
  ldconfig
  for variant in patched stock; do
    src=build/llama/$variant/src
    # a call that carries only the Vulkan build has no source
    [ -d "$src/.git" ] || [ ! -f .devtools/llama-src.tar.xz ] && continue
    mkdir -p "$src"
    tar -xJf .devtools/llama-src.tar.xz -C "$src"
    # a repository of the pristine source, so that prepare-llama-cpp.sh applies the series as anywhere else
    git -C "$src" init -q && git -C "$src" add -A && git -C "$src" -c user.name=device -c user.email=device@local commit -qm pristine
  done
  nproc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  grep -m1 'model name' /proc/cpuinfo; grep -o 'amx[a-z_0-9]*\|avx512[a-z_]*' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
}

cpu() {
  log "cpu: build-native (CPU backend, GPU hidden)"
  CUDA_VISIBLE_DEVICES= MOEFLASH_BACKEND=cpu MOEFLASH_LLAMA_TARGETS="llama ggml llama-common" bash scripts/build-native.sh > "$out/cpu-build.log" 2>&1 \
    || { tail -40 "$out/cpu-build.log"; return 1; }
  grep '^build-native' "$out/cpu-build.log"
  cp native/build/cpu-cpu-build.json "$out/cpu-build-xeon.json"
  export MOEFLASH_BACKEND=cpu CUDA_VISIBLE_DEVICES=
  [ -f models/tiny.gguf ] || node bin/moeflash.js make-model --out models/tiny.gguf --preset tiny --seed 1 --quiet
  log "cpu: npm start equivalent (moeflash serve) and one generation through the router"
  rm -f /tmp/serve.out
  MOEFLASH_METRICS_ADDR=off MOEFLASH_EXPERT_STORE_HTTP_ADDR=off setsid node bin/moeflash.js serve > /tmp/serve.out 2>/tmp/serve.err &
  local serve=$!
  for _ in $(seq 1 120); do grep -q 'router' /tmp/serve.out 2>/dev/null && break; sleep 0.5; done
  cat /tmp/serve.out
  for _ in $(seq 1 60); do node bin/moeflash.js client generate --addr 127.0.0.1:50051 --model tiny --prompt Hello --max-tokens 16 > /tmp/gen.out 2>&1 && break; sleep 0.5; done
  echo "generated through the router: $(head -c 300 /tmp/gen.out)"
  kill -TERM $serve; wait $serve || true
  log "cpu: tests that need no registry tools"
  node node_modules/.bin/mocha --no-config --require dist/test/hooks/rootHooks.js --timeout 1200000 \
    dist/test/unit/*.test.js dist/test/engine/*.test.js dist/test/integration/engineBuildGuard.test.js \
    dist/test/native/cpuBuildFallback.test.js 2>&1 | tail -25
  unset MOEFLASH_BACKEND CUDA_VISIBLE_DEVICES
}

cuda_bg() {
  log "cuda: build started in the background"
  setsid nohup bash -c "MOEFLASH_BACKEND=cuda MOEFLASH_LLAMA_TARGETS='llama ggml llama-common llama-bench test-backend-ops' bash scripts/build-native.sh > build/cuda-build.log 2>&1; echo \"exit \$?\" >> build/cuda-build.log" > /dev/null 2>&1 &
}

cuda_wait() {
  for _ in $(seq 1 1200); do grep -q '^exit ' build/cuda-build.log 2>/dev/null && break; sleep 0.5; done
  grep '^build-native\|^exit\|error' build/cuda-build.log | tail -20
  cp build/cuda-build.log "$out/" || true
  grep -q '^exit 0' build/cuda-build.log
}

# where the dynamic linker finds a library: its cache, then LD_LIBRARY_PATH and the driver's usual directory
find_lib() {
  local d path=${LD_LIBRARY_PATH:-}
  ldconfig -p | awk -v l="$1" '$1 == l { print $NF; found = 1; exit } END { exit !found }' && return 0
  for d in ${path//:/ } /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }
  done
  return 0
}

vulkan_devices() {
  build/llama/patched/build-vulkan/bin/test-backend-ops -o ADD -b Vulkan0 2>&1 | grep -q "Backend .*: Vulkan0"
}

vulkan_setup() {
  log "vulkan: the packed build, the loader and the X client libraries the driver's GLX entry links"
  tar -xJf .devtools/vulkan.tar.xz
  echo vulkan > native/build/BACKEND
  for f in .devtools/vulkan-loader/*.deb; do dpkg -x "$f" /; done
  ldconfig
  vulkan_devices && return 0
  echo "vulkan-setup: the driver gives no Vulkan device through $icd"
  VK_LOADER_DEBUG=error,warn build/llama/patched/build-vulkan/bin/test-backend-ops -o ADD -b Vulkan0 2>&1 | grep -i 'loader\|error' | head -8 || true
  [ -f "$nvidia_icd" ] || return 1
  local glx egl
  glx=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ICD"]["library_path"])' "$nvidia_icd" || true)
  [ "${glx#/}" != "$glx" ] || glx=$(find_lib "$(basename "${glx:-libGLX_nvidia.so.0}")")
  echo "vulkan-setup: the manifest's library ${glx:-not found}"
  [ -z "$glx" ] || ldd "$glx" | grep 'not found' || true
  # the manifest names the GLX library, which sets up X11 on instance creation; headless Vulkan is reported to work
  # through the EGL library of the same driver (offscreen Vulkan needs no nvidia_modeset)
  egl=$(find_lib libEGL_nvidia.so.0)
  if [ -n "$egl" ]; then
    python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); m["ICD"]["library_path"] = sys.argv[2]; json.dump(m, open(sys.argv[3], "w"))' \
      "$nvidia_icd" "$egl" "$egl_icd"
    if VK_DRIVER_FILES=$egl_icd vulkan_devices; then
      echo "vulkan-setup: a Vulkan device through $egl ($egl_icd, used by later steps and calls)"
      export VK_DRIVER_FILES=$egl_icd
      return 0
    fi
    rm -f "$egl_icd"
    echo "vulkan-setup: none through $egl either"
  fi
  grep -q '^nvidia_modeset ' /proc/modules || echo "vulkan-setup: this machine has not loaded the nvidia_modeset kernel module"
  return 1
}

# the op's cost with nothing to copy, at 30b-a3b's shapes (docs/EXPERT_CACHE.md: the fixed cost per layer)
moe_slots_perf() {
  build/llama/patched/build-$gpu/bin/test-backend-ops perf -o MOE_SLOTS -b "$gpu_dev" 2>&1 | grep 'MOE_SLOTS('
}

ops() {
  log "ops: test-backend-ops -o MOE_SLOTS on $gpu_dev"
  build/llama/patched/build-$gpu/bin/test-backend-ops -o MOE_SLOTS -b "$gpu_dev" 2>&1 | tail -25
  # greedy tokens sampled in the graph: the first of equal maxima (patch 0016)
  build/llama/patched/build-$gpu/bin/test-backend-ops -o ARGMAX -b "$gpu_dev" 2>&1 | tail -3
  moe_slots_perf
}

stock_peer() {
  [ -f build/llama/stock/build-cpu/bin/llama-completion ] && return 0
  local flags
  flags=$(node -p "require('./native/build/$gpu-cpu-build.json').cmakeFlags.join(' ')")
  MOEFLASH_BACKEND=cpu MOEFLASH_CPU_FLAGS="$flags" bash scripts/build-llama-cpp.sh stock llama-completion > "$out/build-stock.log" 2>&1 \
    || { tail -30 "$out/build-stock.log"; return 1; }
}

fidelity() {
  stock_peer
  mkdir -p "build/llama/ggml-$gpu-only"
  for l in libggml.so.0 libggml-base.so.0 libggml-cpu.so.0 "libggml-$gpu.so.0"; do
    ln -sf "$root/build/llama/patched/build-$gpu/bin/$l" "build/llama/ggml-$gpu-only/$l"
  done
  export MOEFLASH_BACKEND=$gpu MOEFLASH_STOCK_BIN_DIR=$root/build/llama/stock/build-cpu/bin MOEFLASH_STOCK_GGML_DIR=$root/build/llama/ggml-$gpu-only
  for preset in tiny small; do
    [ -f "build/device-models/$preset.gguf" ] || node bin/moeflash.js make-model --out "build/device-models/$preset.gguf" --preset "$preset" --seed 1 --quiet
  done
  log "fidelity"
  logged 40 node dist/bench/gpuFidelity.js build/device-models/tiny.gguf build/device-models/small.gguf || echo "FIDELITY FAILED"
  keep_results
}

model_30b() {
  if [ ! -f build/device-models/30b-a3b.gguf ]; then
    log "writing the 30b-a3b model"
    node bin/moeflash.js make-model --out build/device-models/30b-a3b.gguf --preset 30b-a3b --seed 1 --quiet
  fi
}

cache() {
  export MOEFLASH_BACKEND=$gpu
  model_30b
  # after the zerocopy step: the rate the op's copy loop read page-locked memory at (one layer's misses at 50%), for
  # bench:cache's kernel-copy bound
  # (an earlier call's zerocopy on the same warm machine left its output in build/)
  local zc=$out/zero-copy.txt
  [ -f "$zc" ] || zc=build/zero-copy.txt
  if [ -z "${BENCH_KERNEL_READ_GBPS:-}" ] && [ -f "$zc" ]; then
    BENCH_KERNEL_READ_GBPS=$(awk '/^page-locked/ && /\(op\)/ && $(NF-2) == 1925120 { print $NF; exit }' "$zc")
    export BENCH_KERNEL_READ_GBPS
  fi
  IFS=';' read -r -a runs <<< "${CACHE_RUNS:-}"
  [ ${#runs[@]} -eq 0 ] && runs=("")
  local i=0
  for settings in "${runs[@]}"; do
    i=$((i + 1))
    # a label per run, or every run writes cache-$gpu.json over the one before
    [[ ${#runs[@]} -gt 1 && $settings != *BENCH_LABEL=* ]] && settings="BENCH_LABEL=$gpu-run$i $settings"
    log "cache: $settings"
    logged 22 env $settings BENCH_MODEL=build/device-models/30b-a3b.gguf BENCH_THREADS=$(( $(nproc) - 1 )) node dist/bench/benchCache.js
  done
  keep_results
}

engine() {
  export MOEFLASH_BACKEND=$gpu
  model_30b
  log "engine: bench:engine, 30b-a3b, -ngl 99"
  BENCH_MODELS=build/device-models/30b-a3b.gguf BENCH_NGL=99 BENCH_THREADS=$(( $(nproc) - 1 )) BENCH_REPS=${ENGINE_REPS:-2} \
    BENCH_LABEL=$gpu-ngl99 logged 6 node dist/bench/benchEngine.js
  keep_results
}

variants() {
  local src=build/llama/patched/src dir=build/llama/patched/build-$gpu v name
  rebuild() { cmake --build "$dir" --target "ggml-$gpu" test-backend-ops -j "$MOEFLASH_JOBS"; }
  for v in ${VARIANTS:-}; do
    name=$(basename "$v" .patch)
    log "variant $name"
    git -C "$src" apply "$root/$v" || { echo "variants: $v does not apply to $src"; continue; }
    if rebuild > "build/variant-$name.log" 2>&1; then
      moe_slots_perf
      [ -z "${VARIANT_FIDELITY:-}" ] || fidelity
      CACHE_RUNS="BENCH_LABEL=$gpu-$name ${VARIANT_CACHE_RUNS:-BENCH_STOCK=0 BENCH_REGIMES=realistic,own BENCH_BUDGETS=0.5}" cache
    else
      tail -20 "build/variant-$name.log"
    fi
    git -C "$src" apply -R "$root/$v"
  done
  # the tree as it was built, unless the call ends here (a variant that changes build flags rebuilds everything twice)
  [ -n "${VARIANTS_NO_RESTORE:-}" ] || rebuild > /dev/null 2>&1
}

zerocopy() {
  log "zerocopy: kernel reads of host memory against the copy engine"
  local bin=build/zero-copy-bandwidth
  PATH=$PATH:/usr/local/cuda/bin nvcc -O3 -arch="sm_${CUDA_ARCHITECTURES%%;*}" -std=c++17 --extended-lambda -rdc=true -o "$bin" bench/cuda/zeroCopyBandwidth.cu -lcudadevrt
  # (`graph`, the device-launched copies docs/EXPERT_CACHE.md rejects, and `scatter`, which showed fresh places of
  # host memory read as fast as a re-read one, run only when asked for by hand)
  { "$bin"; timeout 60 "$bin" tma; } > "$out/zero-copy.txt" 2>&1 || true
  cp "$out/zero-copy.txt" build/zero-copy.txt
  cat "$out/zero-copy.txt"
}

profile() {
  export MOEFLASH_BACKEND=$gpu
  model_30b
  # pack-devtools.sh builds the library against the dev machine's CUPTI and packs both; else build it here
  local dir=$root/.devtools/profiler
  if [ ! -f "$dir/libkernelprofile.so" ]; then
    dir=$root/build/kernel-profile
    mkdir -p "$dir"
    gcc -O2 -shared -fPIC -o "$dir/libkernelprofile.so" bench/cuda/kernelProfile.c -I/usr/local/cuda/include \
      -L/usr/local/cuda/lib64 -L/usr/local/cuda/extras/CUPTI/lib64 -lcupti || { echo "profile: no CUPTI to build against"; return 1; }
  fi
  IFS=';' read -r -a runs <<< "${PROFILE_RUNS:-BENCH_REGIMES=realistic BENCH_BUDGETS=0.5}"
  local i=0
  for settings in "${runs[@]}"; do
    i=$((i + 1))
    log "profile $i: $settings"
    rm -f "$out/profile-$i.txt"
    # a short prompt and many steps: the window (the profile's CK_SKIP) starts after the bench's warm-up generations
    env $settings BENCH_MODEL=build/device-models/30b-a3b.gguf BENCH_THREADS=$(( $(nproc) - 1 )) BENCH_STOCK=0 BENCH_PP=16 \
      BENCH_TG=128 BENCH_LABEL=$gpu-profile-$i CK_OUT="$out/profile-$i.txt" LD_LIBRARY_PATH="$dir:${LD_LIBRARY_PATH:-}" \
      LD_PRELOAD="$dir/libkernelprofile.so" node dist/bench/benchCache.js 2>&1 | grep '^moeflash cache.*tg' || true
    grep -v 'host api' "$out/profile-$i.txt" | head -24
    grep 'host api' "$out/profile-$i.txt" | head -8
  done
}

limited() {
  export MOEFLASH_BACKEND=$gpu
  model_30b
  local size dev src
  size=$(stat -c %s build/device-models/30b-a3b.gguf)
  src=$(df --output=source build/device-models | tail -1)
  # the disk under the partition, or the device itself when the file system sits on a whole disk
  dev=$(lsblk -no pkname "$src" 2>/dev/null | head -1)
  [ -n "$dev" ] || dev=$(basename "$src")
  log "limited: 30b-a3b ($size bytes) in a cgroup of $((size / 4)) bytes, disk ${dev:-unknown}"
  BENCH_PREFETCH_MODEL=build/device-models/30b-a3b.gguf BENCH_LIMIT_BYTES=$((size / 4)) BENCH_GPU_LAYERS=${LIMITED_GPU_LAYERS:-99} BENCH_CACHE_BUDGET=0.25 \
    BENCH_BLOCK_DEV=${dev:-nvme0n1} BENCH_THREADS=$(( $(nproc) - 1 )) BENCH_SCENARIOS=${LIMITED_SCENARIOS:-raw,demand,demandHints,stock} \
    BENCH_TOKENS=${LIMITED_TOKENS:-16} BENCH_REPS=${LIMITED_REPS:-1} BENCH_RESULT=${LIMITED_RESULT:-prefetch-limited-cuda} logged 30 node dist/bench/benchPrefetchLimited.js || true
  keep_results
}

# the same disk and limit: what a byte of an expert costs by its path into memory (the page cache as the pager reads,
# or O_DIRECT into memory the reader owns), for the engine-owned RAM tier (docs/EXPERT_STORE.md); CPU only
readpaths() {
  model_30b
  local size
  size=$(stat -c %s build/device-models/30b-a3b.gguf)
  BENCH_PREFETCH_MODEL=build/device-models/30b-a3b.gguf BENCH_LIMIT_BYTES=$((size / 4)) BENCH_READ_BATCH=8 \
    BENCH_READ_BYTES=4000000000 BENCH_READ_RAM_BYTES=$((1 << 30)) BENCH_RESULT=read-paths-device logged 12 node dist/bench/benchReadPaths.js || true
  keep_results
}

for step in "$@"; do
  case "$step" in
    setup) setup ;; cpu) cpu ;; cuda-bg) cuda_bg ;; cuda-wait) cuda_wait ;; vulkan-setup) vulkan_setup ;; ops) ops ;;
    fidelity) fidelity ;; cache) cache ;; engine) engine ;;
    variants) variants ;; zerocopy) zerocopy ;; profile) profile ;; limited) limited ;; readpaths) readpaths ;;
    *) echo "gpu-checks: unknown step $step" >&2; exit 2 ;;
  esac
done
