// ExpertCacheSetup: sizes and enables llama.cpp's expert cache (patches/llama.cpp/0003) for one context.
#pragma once

#include "RouteReplay.h"
#include "SyntheticRouting.h"
#include "llama.h"

#include <cstdint>
#include <memory>
#include <string>

namespace moeflash {

struct ExpertCacheRequest {
    bool enabled = false;
    int32_t slots = -1;          // slots per layer; -1: from mem_bytes, or auto from free device memory
    uint64_t mem_bytes = 0;      // budget for all banks together
    llama_expert_cache_policy policy = LLAMA_EXPERT_CACHE_POLICY_LRU2;
    bool prefetch = false;           // predict the next layer's experts and copy them on a second stream
    bool device_resolve = true;      // resolve slots in the graph where the backend can (false: the host's stop)
    bool synthetic_routing = false;  // benchmarks only: replay a generated trace with realistic locality
    SyntheticRoutingOptions synthetic;
    std::vector<int32_t> replay;     // benchmarks only: a recorded trace [tokens][layers][used] to replay instead
    int32_t replay_layers = 0;
    int32_t replay_used = 0;
};

struct ExpertCacheSetup {
    int32_t slots = 0;           // per layer, 0: off
    uint64_t slot_bytes = 0;     // one slot across every cached layer
    uint64_t staging_bytes = 0;  // the staging bank for prefill-sized ubatches (per device)
    bool all_resident = false;   // a slot for every expert: all loaded once, no lookups
    std::string sized_by;        // "slots", "memory budget" or "free device memory"
    bool prefetch = false;
    std::string path;            // how decode steps find their slots: "device", "host-stop" or "all-resident"
    std::unique_ptr<SyntheticRouting> routing;  // must outlive the context's use of it
    std::unique_ptr<RouteReplay> replay;        // likewise
};

// Enables the cache on ctx as requested. Throws std::runtime_error naming the option at fault.
ExpertCacheSetup EnableExpertCache(llama_context * ctx, const llama_model * model, const ExpertCacheRequest & request);

}  // namespace moeflash
