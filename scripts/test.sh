#!/usr/bin/env bash
# The whole test suite (what `npm test` and CI run): builds the stock llama.cpp peer the fidelity tests compare
# against, compiles, then runs every mocha test (unit, integration, native, fidelity).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/build-llama-cpp.sh stock
node_modules/.bin/tsc -p tsconfig.json
# The Vulkan variant for test/native/vulkanLavapipe.test.ts where glslc and lavapipe (Mesa's CPU Vulkan device) are
# installed: patched ggml-vulkan, test-backend-ops and an addon in native/build/vulkan (the default addon stays as is)
if command -v glslc >/dev/null && compgen -G '/usr/share/vulkan/icd.d/lvp_icd*.json' >/dev/null; then
  MOEFLASH_BACKEND=vulkan MOEFLASH_ADDON_BUILD_DIR="$root/native/build/vulkan" \
    MOEFLASH_LLAMA_TARGETS="llama ggml llama-common test-backend-ops" bash scripts/build-native.sh
fi
exec node_modules/.bin/mocha "$@"
