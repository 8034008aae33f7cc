#!/usr/bin/env bash
# Builds the patched llama.cpp (scripts/build-llama-cpp.sh) and then the Node-API addon against it with cmake-js
# (offline: Node-API mode takes headers from the node-api-headers package, no download).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
backend=${MOEFLASH_BACKEND:-cpu}
bash "$root/scripts/build-llama-cpp.sh" patched
launcher=()
if command -v ccache >/dev/null; then launcher=(--CDCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cd "$root/native"
"$root/node_modules/.bin/cmake-js" compile --log-level warn --out "build/$backend" \
  --CDLLAMA_SRC_DIR="$root/build/llama/patched/src" \
  --CDLLAMA_BIN_DIR="$root/build/llama/patched/build-$backend/bin" "${launcher[@]}"
# the addon loads the backend built last unless MOEFLASH_BACKEND says otherwise
echo "$backend" > "$root/native/build/BACKEND"
echo "build-native: native/build/$backend/Release/moeflash.node"
