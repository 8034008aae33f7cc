#!/usr/bin/env bash
# Installs node-llama-cpp (same pinned version as our llama.cpp source) with only its x64 CPU prebuilt binary into
# build/bench-peers, for bench:engine's third column. Not a runtime dependency: its optional packages are 700+ MB.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/llama-cpp.env"
dir="$root/build/bench-peers"
mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"name":"moeflash-bench-peers","private":true}' > "$dir/package.json"
cd "$dir"
npm install --no-audit --no-fund --ignore-scripts --omit=optional -E \
  "node-llama-cpp@$NODE_LLAMA_CPP_VERSION" "@node-llama-cpp/linux-x64@$NODE_LLAMA_CPP_VERSION" >/dev/null
echo "install-bench-peers: node-llama-cpp@$NODE_LLAMA_CPP_VERSION in $dir"
