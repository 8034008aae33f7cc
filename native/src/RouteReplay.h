// RouteReplay: benchmark-only replacement of a model's routing with a recorded trace (RoutingLog's format, read and
// validated in TypeScript). Each cached layer step takes the layer's next recorded token, wrapping around at the
// end; installed through llama_expert_cache_set_route_override like SyntheticRouting.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moeflash {

class RouteReplay {
  public:
    // ids: [tokens][layers][n_used]
    RouteReplay(std::vector<int32_t> ids, int32_t n_layer, int32_t n_used);

    void route(int32_t il, int32_t * ids, int32_t n_used, int32_t n_tokens);

    static void Callback(int32_t il, int32_t * ids, int32_t n_used, int32_t n_tokens, void * user_data);

  private:
    std::vector<int32_t> trace;
    int32_t n_layer;
    int32_t n_used;
    size_t n_tokens;
    std::vector<size_t> cursor;  // per layer: the next recorded token
};

}  // namespace moeflash
