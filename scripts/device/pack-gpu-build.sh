#!/usr/bin/env bash
# Packs a GPU build made here for the GPU machine: .devtools/<backend>.tar.xz, which gpu-checks.sh `prebuilt` unpacks.
#   vulkan  the machine has no glslc or Vulkan headers; .devtools/vulkan-loader/ also gets Debian's Vulkan loader
# CUDA is built on the machine instead (gpu-checks.sh cuda-bg, about two minutes on 16 cores): a CUDA build made here
# links Debian's cuBLAS 11 (this toolkit has none of its own), and its symbol version tags keep it from loading
# against the machine's cuBLAS 13.
# The tarball holds the patched llama.cpp libraries (stripped), llama-bench, test-backend-ops, the addon with its CPU
# build record, liburing (the machine lacks it) and, when built, the stock CPU peer gpu-checks.sh `fidelity` uses.
# Build first:
#   MOEFLASH_BACKEND=<backend> MOEFLASH_LLAMA_TARGETS="llama ggml llama-common llama-bench test-backend-ops" \
#     MOEFLASH_ADDON_BUILD_DIR=$PWD/native/build/<backend> bash scripts/build-native.sh
# The CPU level recorded here must run on the machine's CPU (the engine refuses a build the CPU cannot run).
set -euo pipefail
backend=${1:?usage: pack-gpu-build.sh vulkan}
case "$backend" in vulkan) ;; *) echo "pack-gpu-build: only vulkan is packed (CUDA is built on the GPU machine: see the header)" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=build/llama/patched/build-$backend/bin
stock=build/llama/stock/build-cpu/bin
for f in "$bin/libggml-$backend.so.0" "$bin/libllama-bench-impl.so" "$bin/llama-bench" "$bin/test-backend-ops" \
    "native/build/$backend/Release/moeflash.node" "native/build/$backend-cpu-build.json"; do
  [ -e "$f" ] || { echo "pack-gpu-build: $f missing: build the $backend variant first (see the header)" >&2; exit 1; }
done
command -v patchelf >/dev/null || { echo "pack-gpu-build: needs patchelf (apt-get install patchelf)" >&2; exit 1; }
exclude=$(git rev-parse --git-path info/exclude)  # a worktree's .git is a file
grep -qx '/.devtools/' "$exclude" 2>/dev/null || { mkdir -p "$(dirname "$exclude")"; echo '/.devtools/' >> "$exclude"; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$bin" "$stage/native/build/$backend/Release"
# the libraries under their sonames (what the addon and the tools load), stripped
for lib in libggml libggml-base libggml-cpu "libggml-$backend" libllama libllama-common; do
  strip -s -o "$stage/$bin/$lib.so.0" "$(readlink -f "$bin/$lib.so.0")"
done
strip -s -o "$stage/$bin/libllama-bench-impl.so" "$(readlink -f "$bin/libllama-bench-impl.so")"
strip -s -o "$stage/$bin/liburing.so.2" "$(readlink -f /lib/x86_64-linux-gnu/liburing.so.2)"
cp "$bin/llama-bench" "$bin/test-backend-ops" "$stage/$bin/"
cp "native/build/$backend/Release/moeflash.node" "$stage/native/build/$backend/Release/"
cp "native/build/$backend-cpu-build.json" "$stage/native/build/"
# the stock CPU peer, when it was built with the same CPU flags
if [ -x "$stock/llama-completion" ] && cmp -s <(node -p "require('./native/build/$backend-cpu-build.json').cmakeFlags.join(' ')") \
    <(node -p "require('./native/build/cpu-cpu-build.json').cmakeFlags.join(' ')" 2>/dev/null); then
  mkdir -p "$stage/$stock"
  for lib in libggml libggml-base libggml-cpu libllama libllama-common; do
    [ -e "$stock/$lib.so.0" ] && strip -s -o "$stage/$stock/$lib.so.0" "$(readlink -f "$stock/$lib.so.0")"
  done
  strip -s -o "$stage/$stock/llama-completion" "$stock/llama-completion"
  strip -s -o "$stage/$stock/libllama-completion-impl.so" "$(readlink -f "$stock/libllama-completion-impl.so")"
  echo "pack-gpu-build: with the stock CPU peer"
fi
# the build's absolute run paths name this checkout: each file finds its neighbours wherever the tree is unpacked
find "$stage/build" -type f -exec patchelf --set-rpath '$ORIGIN' {} \;
tar -C "$stage" -cf - . | xz -T0 -6 > ".devtools/$backend.tar.xz"
du -sh ".devtools/$backend.tar.xz"
mkdir -p .devtools/vulkan-loader
(cd .devtools/vulkan-loader && rm -f ./*.deb && apt-get download libvulkan1 >/dev/null)
du -sh .devtools/vulkan-loader/*.deb
