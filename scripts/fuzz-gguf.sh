#!/usr/bin/env bash
# Coverage-guided fuzzing of the GGUF load path (native/fuzz/ggufLayoutFuzzer.cpp) with libFuzzer.
#
#   bash scripts/fuzz-gguf.sh build            compile ggml's base sources + the target with ASan/UBSan into build/fuzz/
#   bash scripts/fuzz-gguf.sh seeds            write the seed corpus (generated models, minimal files) to build/fuzz/seeds/
#   bash scripts/fuzz-gguf.sh run [RUNS] [...] build, seed, then fuzz RUNS executions (default 10000; extra args go to
#                                              libFuzzer, e.g. -max_total_time=600); corpus in build/fuzz/corpus/,
#                                              crash reproducers in build/fuzz/artifacts/
#   bash scripts/fuzz-gguf.sh repro FILE       run the target on one input (a reproducer) and show the sanitizer report
#
# Needs clang with libFuzzer (Debian: apt-get install clang; installed here if missing) and the llama.cpp sources
# prepared by scripts/prepare-llama-cpp.sh (LLAMA_SRC, default build/llama/patched/src). Touches nothing outside
# build/fuzz/. Compiled after `npx tsc -p tsconfig.json` (the seeds are written by dist/bench/fuzzSeeds.js).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out="$root/build/fuzz"
src="${LLAMA_SRC:-$root/build/llama/patched/src}"
jobs="${FUZZ_JOBS:-$(nproc)}"

ensure_clang() {
    if ! command -v clang++ >/dev/null; then
        echo "fuzz-gguf: installing clang (libFuzzer)" >&2
        apt-get install -y clang >/dev/null || { apt-get update >/dev/null && apt-get install -y clang >/dev/null; }
    fi
}

build() {
    ensure_clang
    [[ -f "$src/ggml/src/gguf.cpp" ]] || { echo "fuzz-gguf: no llama.cpp sources at $src (run scripts/prepare-llama-cpp.sh)" >&2; exit 1; }
    mkdir -p "$out/obj" "$out/include"
    local version
    version=$(sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))$/\2/p' "$src/ggml/CMakeLists.txt" | paste -sd.)
    sed -e "s/@GGML_VERSION@/$version/" -e 's/@GGML_BUILD_COMMIT@/fuzz/' "$src/ggml/src/ggml-version.h.in" > "$out/include/ggml-version.h"
    # ggml's own sources with coverage instrumentation and the sanitizers; the CPU backend is not needed to parse.
    # Two kinds of undefined behaviour ggml's reader is known to have (docs/RELIABILITY.md) are reported once per
    # location and fuzzing goes on: type tags read straight into enum variables (rejected afterwards), and
    # ggml_nelements overflowing inside gguf.cpp's own overflow guard. Every other UBSan finding stops the run.
    local sanitize="${FUZZ_SANITIZE:--fsanitize-recover=enum,signed-integer-overflow}"
    local common=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined $sanitize
                  -D_GNU_SOURCE -DGGML_SCHED_MAX_COPIES=4 -I"$out/include" -I"$src/ggml/include" -I"$src/ggml/src")
    local sources=(ggml.c ggml-quants.c ggml.cpp gguf.cpp ggml-threading.cpp ggml-alloc.c ggml-backend.cpp ggml-backend-meta.cpp ggml-opt.cpp)
    local pids=() objs=() s obj
    # Objects built with other flags are rebuilt.
    if [[ "$(cat "$out/obj/flags" 2>/dev/null)" != "${common[*]}" ]]; then rm -f "$out"/obj/*.o; echo "${common[*]}" > "$out/obj/flags"; fi
    for s in "${sources[@]}"; do
        obj="$out/obj/$s.o"
        objs+=("$obj")
        if [[ ! -f "$obj" || "$src/ggml/src/$s" -nt "$obj" ]]; then
            if [[ "$s" == *.c ]]; then clang -std=gnu11 "${common[@]}" -c "$src/ggml/src/$s" -o "$obj" &
            else clang++ -std=c++17 "${common[@]}" -c "$src/ggml/src/$s" -o "$obj" &
            fi
            pids+=($!)
            if (( ${#pids[@]} >= jobs )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
        fi
    done
    for p in "${pids[@]}"; do wait "$p"; done  # set -e: a failed compile stops here
    clang++ -std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $sanitize \
        -I"$src/ggml/include" -I"$root/native/src" -I"$root/native/fuzz" \
        "$root/native/fuzz/ggufLayoutFuzzer.cpp" "$root/native/src/GgufReader.cpp" "${objs[@]}" -lpthread -lm -o "$out/gguf-layout-fuzzer"
    echo "fuzz-gguf: built $out/gguf-layout-fuzzer" >&2
}

seeds() {
    [[ -f "$root/dist/bench/fuzzSeeds.js" ]] || { echo "fuzz-gguf: compile first: npx tsc -p tsconfig.json" >&2; exit 1; }
    node "$root/dist/bench/fuzzSeeds.js" "$out/seeds"
}

case "${1:-run}" in
    build) build ;;
    seeds) seeds ;;
    run)
        runs="${2:-10000}"
        shift $(( $# > 1 ? 2 : $# ))
        build
        seeds
        mkdir -p "$out/corpus" "$out/artifacts"
        # -rss_limit_mb: ggml sizes its metadata context from the file; a bigger need than this is a finding.
        "$out/gguf-layout-fuzzer" -runs="$runs" -max_len=262144 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
            -artifact_prefix="$out/artifacts/" "$@" "$out/corpus" "$out/seeds"
        ;;
    repro)
        [[ -n "${2:-}" ]] || { echo "usage: $0 repro FILE" >&2; exit 2; }
        [[ -x "$out/gguf-layout-fuzzer" ]] || build
        GGUF_FUZZ_VERBOSE=1 "$out/gguf-layout-fuzzer" "$2"
        ;;
    *) echo "usage: $0 build | seeds | run [RUNS] [libFuzzer args] | repro FILE" >&2; exit 2 ;;
esac
