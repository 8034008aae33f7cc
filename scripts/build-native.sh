#!/usr/bin/env bash
# Builds the patched llama.cpp and the addon at the best CPU level this host can run, and proves it: after each
# build a child process decodes a tiny model; if it dies by a signal (an instruction set the host reports but does
# not execute, e.g. AMX on some Intel VMs), the build drops that instruction set and tries again, saying so in one
# line. The choice is recorded in native/build/<backend>-cpu-build.json (`npx moeflash cpu-build show`); the stock
# peer is built with the same options. The selection is TypeScript (services/engine/cpuBuild), so dist/ must exist.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
backend=${MOEFLASH_BACKEND:-cpu}
if [ ! -f dist/cli/main.js ]; then
  bash scripts/gen-proto.sh
  node_modules/.bin/tsc -p tsconfig.json
fi
MOEFLASH_BACKEND=$backend node bin/moeflash.js cpu-build select
# the addon loads the backend built last unless MOEFLASH_BACKEND says otherwise
[ -z "${MOEFLASH_ADDON_BUILD_DIR:-}" ] && echo "$backend" > "$root/native/build/BACKEND"
echo "build-native: ${MOEFLASH_ADDON_BUILD_DIR:-native/build/$backend}/Release/moeflash.node"
