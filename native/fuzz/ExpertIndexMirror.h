// The expert index of services/expert-store/ExpertIndex.ts (loadExpertIndex, one file), computed from a Layout
// with the same rules: *_exps tensors by name, expert count from "<arch>.expert_count" or the first tensor's
// third dimension, shape and divisibility checks, one slab of nbytes / n_expert per expert. CheckExpertIndex then
// asserts what the expert I/O relies on: every slab lies inside the file, in the tensor data, and no two overlap.
#pragma once

#include "GgufReader.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace moeflash::fuzz {

using Layout = moeflash::GgufLayout;
using Tensor = moeflash::GgufTensor;
using Kv = moeflash::GgufKv;


struct Slab {
    uint64_t offset;
    uint64_t length;
    size_t tensor;
};

struct ExpertIndex {
    uint64_t n_expert = 0;
    uint64_t n_layer = 0;
    std::vector<Slab> slabs;
    // The TypeScript index would allocate more entries than any real model has (see below): not built.
    bool oversized = false;
};

// Bounds no real model comes near (llama.cpp: LLAMA_MAX_LAYERS 512, LLAMA_MAX_EXPERTS 512). The TypeScript index
// allocates an array per layer up to the largest layer number and an entry per expert per MoE layer without such
// bounds (docs/RELIABILITY.md, finding expert-index-sizes): a file past them is reported, not indexed here.
constexpr uint64_t kMaxIndexLayers = 1u << 16;
constexpr uint64_t kMaxIndexExperts = 1u << 16;

// Matches ^blk\.(\d+)\.ffn_(gate|up|down|gate_up)_(ch)?exps\.weight$ (ExpertIndex.ts EXPERT_TENSOR_PATTERN);
// `layer` saturates at UINT64_MAX for absurd digit strings (JavaScript's Number() would not fail either).
inline bool MatchExpertTensor(const std::string & name, uint64_t & layer) {
    const std::string prefix = "blk.";
    if (name.compare(0, prefix.size(), prefix) != 0) return false;
    size_t i = prefix.size();
    const size_t digits = i;
    layer = 0;
    while (i < name.size() && name[i] >= '0' && name[i] <= '9') {
        const uint64_t d = (uint64_t) (name[i] - '0');
        layer = layer > (UINT64_MAX - d) / 10 ? UINT64_MAX : layer * 10 + d;
        i++;
    }
    if (i == digits) return false;
    const std::string rest = name.substr(i);
    for (const char * proj : {"gate", "up", "down", "gate_up"}) {
        for (const char * ch : {"", "ch"}) {
            if (rest == std::string(".ffn_") + proj + "_" + ch + "exps.weight") return true;
        }
    }
    return false;
}

// True with `index` filled when loadExpertIndex would resolve; false with its reason when it would reject.
inline bool BuildExpertIndex(const Layout & layout, ExpertIndex & index, std::string & error) {
    const Kv * arch = layout.find("general.architecture");
    const std::string architecture = arch && arch->type == GGUF_TYPE_STRING ? arch->str : "";
    auto meta_number = [&](const std::string & key) -> double {
        const Kv * kv = layout.find(key);
        return kv && kv->type != GGUF_TYPE_STRING && kv->type != GGUF_TYPE_ARRAY && kv->type != GGUF_TYPE_BOOL ? kv->num : 0;
    };
    struct Found {
        size_t tensor;
        uint64_t layer;
    };
    std::vector<Found> found;
    for (size_t i = 0; i < layout.tensors.size(); i++) {
        uint64_t layer = 0;
        if (MatchExpertTensor(layout.tensors[i].name, layer)) found.push_back({i, layer});
    }
    if (found.empty()) {
        error = "not a MoE model";
        return false;
    }
    double n_expert = meta_number(architecture + ".expert_count");
    if (n_expert == 0) {
        const Tensor & first = layout.tensors[found[0].tensor];
        n_expert = first.n_dims >= 3 ? (double) first.ne[2] : 0;
    }
    double n_layer = meta_number(architecture + ".block_count");
    for (const auto & f : found) {
        const Tensor & t = layout.tensors[f.tensor];
        if (t.n_dims != 3 || (double) t.ne[2] != n_expert) {
            error = "wrong expert dimension";
            return false;
        }
        if (t.nbytes % (uint64_t) n_expert != 0) {
            error = "bytes not a multiple of the experts";
            return false;
        }
        n_layer = std::max(n_layer, (double) f.layer + 1);
    }
    index.n_expert = (uint64_t) n_expert;
    index.n_layer = !(n_layer > 0) ? 0 : n_layer >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t) n_layer;
    if (index.n_layer > kMaxIndexLayers || index.n_expert > kMaxIndexExperts) {
        index.oversized = true;
        return true;
    }
    for (const auto & f : found) {
        const Tensor & t = layout.tensors[f.tensor];
        const uint64_t slab = t.nbytes / index.n_expert;
        for (uint64_t e = 0; e < index.n_expert; e++) index.slabs.push_back({t.offset + e * slab, slab, f.tensor});
    }
    return true;
}

[[noreturn]] inline void Violated(const std::string & what) {
    fprintf(stderr, "expert index invariant violated: %s\n", what.c_str());
    abort();
}

inline void CheckExpertIndex(const Layout & layout, const ExpertIndex & index) {
    if (index.n_expert < 2) Violated("an index with fewer than 2 experts (ne[2] > 1 for a 3-d tensor)");
    if (index.oversized) {
        // Known (expert-index-sizes); GGUF_FUZZ_INDEX_SIZES=1 stops at it to keep a reproducer.
        static bool reported = false;
        const std::string what = "index of " + std::to_string(index.n_layer) + " layers x " + std::to_string(index.n_expert) + " experts";
        if (getenv("GGUF_FUZZ_INDEX_SIZES") != nullptr) Violated(what);
        if (!reported) fprintf(stderr, "known finding expert-index-sizes: %s (reported once)\n", what.c_str());
        reported = true;
        return;
    }
    std::vector<Slab> slabs = index.slabs;
    std::sort(slabs.begin(), slabs.end(), [](const Slab & a, const Slab & b) { return a.offset < b.offset; });
    uint64_t end_of_previous = layout.data_offset;
    for (const auto & s : slabs) {
        if (s.offset < layout.data_offset) Violated("slab before the tensor data");
        if (s.length > layout.file_size || s.offset > layout.file_size - s.length) {
            Violated("slab [" + std::to_string(s.offset) + ", +" + std::to_string(s.length) + ") outside the " +
                     std::to_string(layout.file_size) + "-byte file");
        }
        if (s.length > 0 && s.offset < end_of_previous) Violated("overlapping slabs");
        if (s.length > 0) end_of_previous = s.offset + s.length;
    }
}

}  // namespace moeflash::fuzz
