#!/usr/bin/env bash
# Generates the TypeScript for proto/ into gen/ (git-ignored) and the FileDescriptorSet the router serves through
# reflection. Offline: buf runs with the locally installed ts-proto plugin and no remote dependencies.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
buf=node_modules/.bin/buf
"$buf" lint
# Stale files from renamed or deleted protos would still compile into dist/; start from an empty gen/.
rm -rf gen
mkdir -p gen
"$buf" generate
# Imports (google/protobuf/*) and source info (doc comments) included, so reflection clients can resolve and
# describe every type.
"$buf" build -o gen/descriptor.binpb
echo "gen-proto: gen/ ($(find gen -name '*.ts' | wc -l) TypeScript files) and gen/descriptor.binpb"
