#!/usr/bin/env bash
# Lays out a llama.cpp source tree from node-llama-cpp's git bundle and applies patches/llama.cpp in series order.
#   scripts/prepare-llama-cpp.sh patched   -> build/llama/patched/src (our patch series applied)
#   scripts/prepare-llama-cpp.sh stock     -> build/llama/stock/src   (the fidelity peer: build fixes only, series-stock)
# Idempotent: a tree whose patch stamp matches is left alone; a changed series rewrites only the files whose content
# changes, so an edit to one patch rebuilds only what that patch touches.
set -euo pipefail
variant=${1:-patched}
case "$variant" in patched|stock) ;; *) echo "usage: $0 patched|stock" >&2; exit 2 ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/llama-cpp.env"
dl="$root/build/dl"
bundle="$dl/node-llama-cpp-$NODE_LLAMA_CPP_VERSION/llama/gitRelease.bundle"
# MOEFLASH_LLAMA_SRC / MOEFLASH_PATCHES_DIR relocate the tree and the series (tests use them).
src=${MOEFLASH_LLAMA_SRC:-$root/build/llama/$variant/src}
patches=${MOEFLASH_PATCHES_DIR:-$root/patches/llama.cpp}

# the bundle is needed only to lay out a new tree (a machine without a registry brings its tree instead)
if [ ! -d "$src/.git" ]; then
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
# Apply the series to pristine copies of just the files it touches (plus files a previous series changed), in a
# scratch folder; then copy over only files whose content changed, so unchanged files keep their mtimes.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/moeflash-patch.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
touched=$( { git -C "$src" diff --name-only; git -C "$src" ls-files --others --exclude-standard;
             for p in "${series[@]}"; do [ -f "$patches/$p" ] && git -C "$src" apply --numstat "$patches/$p" | cut -f3; done; } | sort -u)
for f in $touched; do
  if git -C "$src" cat-file -e "$commit:$f" 2>/dev/null; then
    mkdir -p "$scratch/$(dirname "$f")"
    git -C "$src" show "$commit:$f" > "$scratch/$f"
  fi
done
for p in "${series[@]}"; do
  if [ ! -f "$patches/$p" ]; then echo "prepare-llama-cpp: patch listed in series is missing: ${patches#$root/}/$p" >&2; exit 1; fi
  if ! (cd "$scratch" && git apply --check "$patches/$p") 2>"$scratch/.err"; then
    echo "prepare-llama-cpp: patch does not apply: ${patches#$root/}/$p" >&2
    cat "$scratch/.err" >&2
    exit 1
  fi
  (cd "$scratch" && git apply "$patches/$p")
done
changed=0
for f in $touched; do
  if [ -f "$scratch/$f" ]; then
    if ! cmp -s "$scratch/$f" "$src/$f"; then mkdir -p "$(dirname "$src/$f")"; cp "$scratch/$f" "$src/$f"; changed=$((changed + 1)); fi
  elif [ -e "$src/$f" ]; then
    rm -f "$src/$f"; changed=$((changed + 1))  # added by an earlier series, gone from this one
  fi
done
echo "prepare-llama-cpp: $changed file(s) changed"
echo "$stamp" > "$src/.moeflash-stamp"
printf '{"package":"node-llama-cpp@%s","commit":"%s","patches":[%s]}\n' "$NODE_LLAMA_CPP_VERSION" "$commit" \
  "$(printf '"%s",' "${series[@]}" | sed 's/,$//')" > "$(dirname "$src")/source.json"
echo "prepare-llama-cpp: $variant tree at $commit with ${#series[@]} patches"
