#!/usr/bin/env bash
# Builds the Node-API addon against the patched llama.cpp build: with cmake-js where it is installed (offline:
# Node-API mode takes headers from the node-api-headers package, no download), else with plain cmake and those
# headers (the GPU machine, which gets node-addon-api and node-api-headers but not the dev dependencies).
# MOEFLASH_ADDON_BUILD_DIR / MOEFLASH_LLAMA_BUILD_DIR relocate both builds (the CPU fallback test builds a second pair).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
backend=${MOEFLASH_BACKEND:-cpu}
llama_out=${MOEFLASH_LLAMA_BUILD_DIR:-$root/build/llama/patched/build-$backend}
addon_out=${MOEFLASH_ADDON_BUILD_DIR:-$root/native/build/$backend}
defs=(-DLLAMA_SRC_DIR="$root/build/llama/patched/src" -DLLAMA_BIN_DIR="$llama_out/bin")
if command -v ccache >/dev/null; then defs+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cd "$root/native"
if [ -x "$root/node_modules/.bin/cmake-js" ]; then
  "$root/node_modules/.bin/cmake-js" compile --log-level warn --out "$addon_out" "${defs[@]/#-D/--CD}"
else
  generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S . -B "$addon_out" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "${defs[@]}" \
    -DCMAKE_JS_INC="$root/node_modules/node-api-headers/include" >/dev/null
  cmake --build "$addon_out"
fi
echo "build-addon: $addon_out/Release/moeflash.node"
