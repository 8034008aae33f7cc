#!/usr/bin/env bash
# The whole test suite (what `npm test` and CI run): builds the stock llama.cpp peer the fidelity tests compare
# against, compiles, then runs every mocha test (unit, integration, native, fidelity).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/build-llama-cpp.sh stock
node_modules/.bin/tsc -p tsconfig.json
exec node_modules/.bin/mocha "$@"
