#!/usr/bin/env bash
# Lays out a llama.cpp source tree from node-llama-cpp's git bundle and applies patches/llama.cpp in series order.
#   scripts/prepare-llama-cpp.sh patched   -> build/llama/patched/src (our patch series applied)
#   scripts/prepare-llama-cpp.sh stock     -> build/llama/stock/src   (the fidelity peer: build fixes only, series-stock)
# Idempotent: a tree whose patch stamp matches is left alone, so incremental builds stay incremental; a changed
# series restores only the files git sees as modified before re-applying, so only touched files rebuild.
set -euo pipefail
variant=${1:-patched}
case "$variant" in patched|stock) ;; *) echo "usage: $0 patched|stock" >&2; exit 2 ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/llama-cpp.env"
dl="$root/build/dl"
bundle="$dl/node-llama-cpp-$NODE_LLAMA_CPP_VERSION/llama/gitRelease.bundle"
src="$root/build/llama/$variant/src"
patches="$root/patches/llama.cpp"

if [ ! -f "$bundle" ]; then
  mkdir -p "$dl"
  echo "prepare-llama-cpp: fetching node-llama-cpp@$NODE_LLAMA_CPP_VERSION (for llama/gitRelease.bundle)"
  tgz=$(cd "$dl" && npm pack --silent "node-llama-cpp@$NODE_LLAMA_CPP_VERSION")
  tmp=$(mktemp -d "$dl/extract.XXXXXX")
  tar -xzf "$dl/$tgz" -C "$tmp" package/llama/gitRelease.bundle
  mkdir -p "$(dirname "$bundle")"
  mv "$tmp/package/llama/gitRelease.bundle" "$bundle"
  rm -rf "$tmp" "${dl:?}/$tgz"
fi

if [ ! -d "$src/.git" ]; then
  mkdir -p "$(dirname "$src")"
  git -c advice.detachedHead=false clone --quiet "$bundle" "$src"
fi
commit=$(git -C "$src" rev-parse HEAD)

# The stock peer gets only the build fixes listed in series-stock (e.g. building against Debian 12's Vulkan
# headers), never a behaviour change: it is what our output is compared against.
series_file="$patches/series"
[ "$variant" = stock ] && series_file="$patches/series-stock"
series=()
while IFS= read -r line; do
  line=${line%%#*}; line=$(echo "$line" | xargs)
  [ -n "$line" ] && series+=("$line")
done < "$series_file"
stamp=$( { echo "$commit"; for p in "${series[@]}"; do echo "$p"; cat "$patches/$p"; done; } | sha256sum | cut -d' ' -f1)
if [ -f "$src/.moeflash-stamp" ] && [ "$(cat "$src/.moeflash-stamp")" = "$stamp" ]; then
  echo "prepare-llama-cpp: $variant tree up to date ($commit, ${#series[@]} patches)"
  exit 0
fi

rm -f "$src/.moeflash-stamp"
git -C "$src" checkout --quiet -f "$commit" -- .
git -C "$src" clean --quiet -fd -e .moeflash-stamp
for p in "${series[@]}"; do
  if [ ! -f "$patches/$p" ]; then echo "prepare-llama-cpp: patch listed in series is missing: patches/llama.cpp/$p" >&2; exit 1; fi
  if ! git -C "$src" apply --check "$patches/$p" 2>/tmp/moeflash-patch-err; then
    echo "prepare-llama-cpp: patch does not apply: patches/llama.cpp/$p" >&2
    cat /tmp/moeflash-patch-err >&2
    exit 1
  fi
  git -C "$src" apply "$patches/$p"
done
echo "$stamp" > "$src/.moeflash-stamp"
printf '{"package":"node-llama-cpp@%s","commit":"%s","patches":[%s]}\n' "$NODE_LLAMA_CPP_VERSION" "$commit" \
  "$(printf '"%s",' "${series[@]}" | sed 's/,$//')" > "$root/build/llama/$variant/source.json"
echo "prepare-llama-cpp: $variant tree at $commit with ${#series[@]} patches"
