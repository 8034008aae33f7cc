#!/usr/bin/env bash
# Packs what the GPU machine (no registry) needs into .devtools/ (ignored by git, carried by the device call):
# the node binary, the runtime + test npm packages, and the pristine llama.cpp source of the pinned bundle (no vocab
# models or docs), Debian's liburing packages, so that a build made on the machine (CUDA) has io_uring too, and the
# kernel profiler with its CUPTI where this machine has CUDA.
# scripts/device/gpu-checks.sh setup unpacks them. Run after npm install.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
mkdir -p .devtools
grep -qx '/.devtools/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.devtools/' >> .git/info/exclude; }
[ -f .devtools/node.xz ] || xz -T0 -6 -c "$(command -v node)" > .devtools/node.xz
tar -cf - --exclude='node_modules/@bufbuild/buf*' --exclude='node_modules/typescript' --exclude='node_modules/kubernetes-models' \
  --exclude='node_modules/dprint-node' --exclude='node_modules/@types' --exclude='node_modules/ts-proto*' \
  --exclude='*.map' --exclude='*.d.ts' node_modules | xz -T0 -6 > .devtools/node_modules.tar.xz
git -C build/llama/patched/src archive --format=tar HEAD | tar --delete --wildcards 'models/*.gguf*' 'docs/*' 'media/*' \
  | xz -T0 -6 > .devtools/llama-src.tar.xz
# bench/cuda/kernelProfile.c built against this machine's CUPTI, which travels beside it (gpu-checks.sh profile)
cupti=$(ls /usr/local/cuda/lib/libcupti.so.?? /usr/local/cuda/lib64/libcupti.so.?? 2>/dev/null | head -1 || true)
if [ -n "$cupti" ]; then
  mkdir -p .devtools/profiler
  cp -L "$cupti" .devtools/profiler/
  gcc -O2 -shared -fPIC -o .devtools/profiler/libkernelprofile.so bench/cuda/kernelProfile.c -I/usr/local/cuda/include \
    -L"$(dirname "$cupti")" -lcupti -Wl,-rpath,'$ORIGIN'
fi
mkdir -p .devtools/debs
(cd .devtools/debs && rm -f ./*.deb && apt-get download liburing2 liburing-dev >/dev/null)
du -sh .devtools/*
