#!/usr/bin/env bash
# Installs the Debian packages moeflash builds and tests with. Idempotent: installs only what is missing.
#   build: cmake ninja g++ git ccache pkg-config liburing-dev (io_uring expert I/O)
#   tests: python3-grpcio python3-grpc-tools python3-jinja2 python3-jsonschema (the Python client tests: stubs,
#          the reference chat template rendering, schema validation), prometheus (the scrape test), libvulkan-dev
#          glslc spirv-headers mesa-vulkan-drivers (the Vulkan build, run by the tests on lavapipe, Mesa's CPU Vulkan device)
set -euo pipefail
packages=(cmake ninja-build g++ git ccache pkg-config liburing-dev python3-grpcio python3-grpc-tools python3-jinja2 python3-jsonschema prometheus openssl
          libvulkan-dev glslc spirv-headers mesa-vulkan-drivers)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-system-deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo=(sudo); else
    echo "install-system-deps: missing ${missing[*]} and not root (install them, or run as root)" >&2; exit 1
  fi
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
