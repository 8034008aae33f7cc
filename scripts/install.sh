#!/usr/bin/env bash
# What `npm install` runs after the npm dependencies: system packages, generated protobuf code, the TypeScript
# build, patched llama.cpp + addon at the CPU level a probe proves this host runs (build-native.sh), and the default
# tiny model. Safe to run again (each step is incremental).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-system-deps.sh
bash scripts/gen-proto.sh
node_modules/.bin/tsc -p tsconfig.json
bash scripts/build-native.sh
model=${MOEFLASH_MODEL:-$root/models/tiny.gguf}
if [ ! -f "$model" ]; then
  mkdir -p "$(dirname "$model")"
  node bin/moeflash.js make-model --out "$model" --preset tiny --seed 1
fi
echo "install: ready. Start the stack with: npm start"
