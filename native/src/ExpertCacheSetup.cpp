#include "ExpertCacheSetup.h"

#include "ModelMeta.h"

#include "ggml-backend.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace moeflash {

namespace {

constexpr uint64_t kGiB = 1ull << 30;

// Free memory of the first GPU, measured after the context exists (weights, KV cache and compute buffers are
// already allocated), less headroom for allocator slack and a second context's buffers.
uint64_t DeviceBudget(std::string * device_name) {
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        const auto type = ggml_backend_dev_type(dev);
        if (type != GGML_BACKEND_DEVICE_TYPE_GPU && type != GGML_BACKEND_DEVICE_TYPE_IGPU) {
            continue;
        }
        size_t free = 0, total = 0;
        ggml_backend_dev_memory(dev, &free, &total);
        *device_name = ggml_backend_dev_name(dev);
        const uint64_t headroom = std::max<uint64_t>(kGiB, total / 20);
        return free > headroom ? free - headroom : 0;
    }
    return 0;
}

}  // namespace

ExpertCacheSetup EnableExpertCache(llama_context * ctx, const llama_model * model, const ExpertCacheRequest & request) {
    ExpertCacheSetup setup;
    setup.slot_bytes = llama_model_expert_slot_bytes(model);
    if (setup.slot_bytes == 0) {
        throw std::runtime_error(
            "expertCache: the model has no MoE layer whose expert weights are in plain host memory to cache");
    }
    // a budget covers the staging bank too (one layer's experts, for prefill-sized ubatches), then the slots
    setup.staging_bytes = llama_model_expert_staging_bytes(model);
    auto slots_within = [&](uint64_t budget) {
        return budget > setup.staging_bytes ? (int32_t) std::min<uint64_t>((budget - setup.staging_bytes) / setup.slot_bytes, INT32_MAX) : 0;
    };
    int32_t slots = request.slots;
    setup.sized_by = "slots";
    if (slots < 0 && request.mem_bytes > 0) {
        slots = slots_within(request.mem_bytes);
        setup.sized_by = "memory budget";
    } else if (slots < 0) {
        std::string device;
        const uint64_t budget = DeviceBudget(&device);
        if (device.empty()) {
            throw std::runtime_error("expertCache.slots: automatic sizing needs a GPU; give slots or a memory budget");
        }
        slots = slots_within(budget);
        setup.sized_by = "free device memory (" + device + ")";
    }
    const int32_t n_used = (int32_t) ArchMetaInt(model, "expert_used_count");
    if (slots < n_used) {
        throw std::runtime_error("expertCache: " + std::to_string(slots) + " slots per layer by " + setup.sized_by +
                                 " is fewer than the " + std::to_string(n_used) +
                                 " experts a token uses; the cache needs at least that many (one slot is " +
                                 std::to_string(setup.slot_bytes >> 20) + " MiB over all layers, plus " +
                                 std::to_string(setup.staging_bytes >> 20) + " MiB of staging bank)");
    }
    const int32_t enabled = llama_expert_cache_enable(ctx, slots, request.policy);
    if (enabled <= 0) {
        throw std::runtime_error("expertCache: llama.cpp could not allocate the expert slots (" +
                                 std::to_string(slots) + " per layer)");
    }
    setup.slots = enabled;
    // with a slot for every expert the cache loads them all once and adds nothing per step (no staging bank either)
    setup.all_resident = enabled >= (int32_t) ArchMetaInt(model, "expert_count");
    if (setup.all_resident) {
        setup.staging_bytes = 0;
    }
    fprintf(stderr, "moeflash: expert cache %d slots per layer x %.1f MiB = %.2f GiB + %.1f MiB staging bank, sized by %s%s\n",
            enabled, setup.slot_bytes / 1048576.0, (double) enabled * setup.slot_bytes / kGiB,
            setup.staging_bytes / 1048576.0, setup.sized_by.c_str(),
            setup.all_resident ? " (every expert resident: loaded once, no per-layer stops)" : "");
    if (request.prefetch) {
        if (!llama_expert_cache_set_prefetch(ctx, true)) {
            throw std::runtime_error("expertCache.prefetch: llama.cpp could not create the copy streams for prefetching");
        }
        setup.prefetch = true;
    }
    switch (llama_expert_cache_set_device_resolve(ctx, request.device_resolve)) {
        case LLAMA_EXPERT_CACHE_PATH_DEVICE:       setup.path = "device"; break;
        case LLAMA_EXPERT_CACHE_PATH_ALL_RESIDENT: setup.path = "all-resident"; break;
        default:                                   setup.path = "host-stop"; break;
    }
    if (!request.replay.empty()) {
        setup.replay = std::make_unique<RouteReplay>(request.replay, request.replay_layers, request.replay_used);
        llama_expert_cache_set_route_override(ctx, RouteReplay::Callback, setup.replay.get());
    } else if (request.synthetic_routing) {
        setup.routing = std::make_unique<SyntheticRouting>(llama_model_n_layer(model), (int32_t) ArchMetaInt(model, "expert_count"),
                                                           request.synthetic);
        llama_expert_cache_set_route_override(ctx, SyntheticRouting::Callback, setup.routing.get());
    }
    return setup;
}

}  // namespace moeflash
