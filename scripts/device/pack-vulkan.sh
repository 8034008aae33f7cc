#!/usr/bin/env bash
# Packs the Vulkan build made here for the GPU machine, which has no glslc or Vulkan headers (and no registry):
# .devtools/vulkan.tar.xz holds the patched llama.cpp libraries (stripped), llama-bench, test-backend-ops, the Vulkan
# addon with its CPU build record, liburing (the machine lacks it) and, when built with the same CPU flags, the stock
# CPU peer gpu-checks.sh `fidelity` uses; .devtools/vulkan-loader/ Debian's Vulkan loader and X client libraries.
# gpu-checks.sh vulkan-setup unpacks both. (CUDA is built on the machine, gpu-checks.sh cuda-bg, about two minutes on
# 16 cores: a CUDA build made here links Debian's cuBLAS 11, and its symbol version tags keep it from loading against
# the machine's cuBLAS 13.)
# Build first:
#   MOEFLASH_BACKEND=vulkan MOEFLASH_LLAMA_TARGETS="llama ggml llama-common llama-bench test-backend-ops" \
#     MOEFLASH_ADDON_BUILD_DIR=$PWD/native/build/vulkan bash scripts/build-native.sh
# The CPU level recorded here must run on the machine's CPU (the engine refuses a build the CPU cannot run).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=build/llama/patched/build-vulkan/bin
stock=build/llama/stock/build-cpu/bin
for f in "$bin/libggml-vulkan.so.0" "$bin/libllama-bench-impl.so" "$bin/llama-bench" "$bin/test-backend-ops" \
    native/build/vulkan/Release/moeflash.node native/build/vulkan-cpu-build.json; do
  [ -e "$f" ] || { echo "pack-vulkan: $f missing: build the Vulkan variant first (see the header)" >&2; exit 1; }
done
command -v patchelf >/dev/null || { echo "pack-vulkan: needs patchelf (apt-get install patchelf)" >&2; exit 1; }
exclude=$(git rev-parse --git-path info/exclude)  # a worktree's .git is a file
grep -qx '/.devtools/' "$exclude" 2>/dev/null || { mkdir -p "$(dirname "$exclude")"; echo '/.devtools/' >> "$exclude"; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$bin" "$stage/native/build/vulkan/Release"
# the libraries under their sonames (what the addon and the tools load), stripped
for lib in libggml libggml-base libggml-cpu libggml-vulkan libllama libllama-common; do
  strip -s -o "$stage/$bin/$lib.so.0" "$(readlink -f "$bin/$lib.so.0")"
done
strip -s -o "$stage/$bin/libllama-bench-impl.so" "$(readlink -f "$bin/libllama-bench-impl.so")"
strip -s -o "$stage/$bin/liburing.so.2" "$(readlink -f /lib/x86_64-linux-gnu/liburing.so.2)"
cp "$bin/llama-bench" "$bin/test-backend-ops" "$stage/$bin/"
cp native/build/vulkan/Release/moeflash.node "$stage/native/build/vulkan/Release/"
cp native/build/vulkan-cpu-build.json "$stage/native/build/"
# the stock CPU peer, when it was built with the same CPU flags
if [ -x "$stock/llama-completion" ] && cmp -s <(node -p "require('./native/build/vulkan-cpu-build.json').cmakeFlags.join(' ')") \
    <(node -p "require('./native/build/cpu-cpu-build.json').cmakeFlags.join(' ')" 2>/dev/null); then
  mkdir -p "$stage/$stock"
  for lib in libggml libggml-base libggml-cpu libllama libllama-common; do
    [ -e "$stock/$lib.so.0" ] && strip -s -o "$stage/$stock/$lib.so.0" "$(readlink -f "$stock/$lib.so.0")"
  done
  strip -s -o "$stage/$stock/llama-completion" "$stock/llama-completion"
  strip -s -o "$stage/$stock/libllama-completion-impl.so" "$(readlink -f "$stock/libllama-completion-impl.so")"
  echo "pack-vulkan: with the stock CPU peer"
fi
# the build's absolute run paths name this checkout: each file finds its neighbours wherever the tree is unpacked
find "$stage/build" -type f -exec patchelf --set-rpath '$ORIGIN' {} \;
tar -C "$stage" -cf - . | xz -T0 -6 > .devtools/vulkan.tar.xz
mkdir -p .devtools/vulkan-loader
# with the X client libraries NVIDIA's GLX library (the Vulkan driver's usual entry) links: the machine has none
(cd .devtools/vulkan-loader && rm -f ./*.deb && apt-get download libvulkan1 libx11-6 libxext6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0 >/dev/null)
du -sh .devtools/vulkan.tar.xz .devtools/vulkan-loader/*.deb
