#!/usr/bin/env bash
# Packs a Vulkan build made here for the GPU machine, which has no glslc or Vulkan headers (and no registry):
# .devtools/vulkan.tar.xz holds the patched llama.cpp Vulkan libraries, llama-bench and test-backend-ops, the Vulkan
# addon with its CPU build record and liburing (the machine lacks it); .devtools/vulkan-loader/ the Vulkan loader
# (libvulkan1, from Debian). scripts/device/gpu-checks.sh vulkan-setup unpacks both. Build first:
#   MOEFLASH_BACKEND=vulkan MOEFLASH_LLAMA_TARGETS="llama ggml llama-common llama-bench test-backend-ops" \
#     MOEFLASH_ADDON_BUILD_DIR=$PWD/native/build/vulkan bash scripts/build-native.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=build/llama/patched/build-vulkan/bin
for f in "$bin/libggml-vulkan.so.0" "$bin/libllama-bench-impl.so" "$bin/llama-bench" "$bin/test-backend-ops" native/build/vulkan/Release/moeflash.node \
    native/build/vulkan-cpu-build.json; do
  [ -e "$f" ] || { echo "pack-vulkan: $f missing: build the Vulkan variant first (see the header)" >&2; exit 1; }
done
mkdir -p .devtools/vulkan-loader
grep -qx '/.devtools/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.devtools/' >> .git/info/exclude; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$bin" "$stage/native/build/vulkan/Release"
# the libraries under their sonames (what the addon and the tools load), stripped: the shaders are the bulk
for lib in libggml libggml-base libggml-cpu libggml-vulkan libllama libllama-common; do
  strip -s -o "$stage/$bin/$lib.so.0" "$(readlink -f "$bin/$lib.so.0")"
done
strip -s -o "$stage/$bin/libllama-bench-impl.so" "$(readlink -f "$bin/libllama-bench-impl.so")"
strip -s -o "$stage/$bin/liburing.so.2" "$(readlink -f /lib/x86_64-linux-gnu/liburing.so.2)"
cp "$bin/llama-bench" "$bin/test-backend-ops" "$stage/$bin/"
cp native/build/vulkan/Release/moeflash.node "$stage/native/build/vulkan/Release/"
cp native/build/vulkan-cpu-build.json "$stage/native/build/"
tar -C "$stage" -cf - . | xz -T0 -6 > .devtools/vulkan.tar.xz
(cd .devtools/vulkan-loader && rm -f ./*.deb && apt-get download libvulkan1 >/dev/null)
du -sh .devtools/vulkan.tar.xz .devtools/vulkan-loader/*.deb
