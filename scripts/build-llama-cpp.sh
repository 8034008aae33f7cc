#!/usr/bin/env bash
# Configures and builds one llama.cpp tree (shared libraries + the tools/tests moeflash uses).
#   scripts/build-llama-cpp.sh patched   libllama/libggml for the addon, llama-bench, test-backend-ops, test-gguf
#   scripts/build-llama-cpp.sh stock     the unpatched peer: llama-simple, llama-completion, llama-bench
# MOEFLASH_BACKEND=cpu|vulkan|cuda picks the ggml backend (default cpu); each backend has its own build folder
# (MOEFLASH_LLAMA_BUILD_DIR overrides the patched one). The CPU instruction sets come from MOEFLASH_CPU_FLAGS (cmake
# options chosen and probed by build-native.sh) or, for the stock peer, from the patched build's record, so both
# trees run the same CPU code; never -march=native, which trusts whatever the hypervisor reports.
# ccache is used when present; both variants share one base dir so unchanged files hit the cache across them.
set -euo pipefail
variant=${1:-patched}
root=$(cd "$(dirname "$0")/.." && pwd)
backend=${MOEFLASH_BACKEND:-cpu}
src="$root/build/llama/$variant/src"
out="$root/build/llama/$variant/build-$backend"
[ "$variant" = patched ] && out=${MOEFLASH_LLAMA_BUILD_DIR:-$out}

bash "$root/scripts/prepare-llama-cpp.sh" "$variant"

# GGML_OPENMP=OFF: ggml's own threadpool, which the engine creates once per context and attaches. With OpenMP,
# every thread that ever runs a graph (the addon's load worker, the scheduler, a second engine) gets its own team of
# workers; once they outnumber the cores libgomp stops spinning and decode slows by up to 2x.
flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
       -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON -DGGML_OPENMP=OFF)
case "$backend" in
  cpu) ;;
  vulkan) flags+=(-DGGML_VULKAN=ON) ;;
  cuda) flags+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-native}") ;;
  *) echo "build-llama-cpp: MOEFLASH_BACKEND must be cpu, vulkan or cuda (got '$backend')" >&2; exit 2 ;;
esac
cpu_flags=${MOEFLASH_CPU_FLAGS:-}
if [ -z "$cpu_flags" ]; then
  record=${MOEFLASH_ADDON_BUILD_DIR:-$root/native/build/$backend}-cpu-build.json
  if [ ! -f "$record" ]; then
    echo "build-llama-cpp: no CPU build record at $record: run npm run build:native first (it chooses and probes the CPU build)" >&2
    exit 1
  fi
  cpu_flags=$(node -p "require(process.argv[1]).cmakeFlags.join(' ')" "$record")
fi
read -r -a cpu_flag_list <<<"$cpu_flags"
flags+=("${cpu_flag_list[@]}")
if command -v ccache >/dev/null; then
  export CCACHE_BASEDIR="$root/build/llama" CCACHE_NOHASHDIR=1
  flags+=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)

if [ "$variant" = patched ]; then
  targets=(llama ggml llama-common llama-bench test-backend-ops test-gguf)
else
  targets=(llama-simple llama-completion llama-bench)
fi
[ $# -gt 1 ] && targets=("${@:2}")
[ -n "${MOEFLASH_LLAMA_TARGETS:-}" ] && read -r -a targets <<<"$MOEFLASH_LLAMA_TARGETS"

cmake -S "$src" -B "$out" "${generator[@]}" "${flags[@]}" >"$out.configure.log" 2>&1 \
  || { echo "build-llama-cpp: cmake configure failed, see $out.configure.log" >&2; tail -30 "$out.configure.log" >&2; exit 1; }
cmake --build "$out" --target "${targets[@]}" -j "${MOEFLASH_JOBS:-$(nproc)}"
echo "build-llama-cpp: $variant ($backend) built in $out/bin"
