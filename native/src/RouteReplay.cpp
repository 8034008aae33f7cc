#include "RouteReplay.h"

#include <algorithm>

namespace moeflash {

RouteReplay::RouteReplay(std::vector<int32_t> ids, int32_t n_layer, int32_t n_used)
    : trace(std::move(ids)), n_layer(n_layer), n_used(n_used), n_tokens(trace.size() / ((size_t) n_layer * n_used)),
      cursor((size_t) n_layer, 0) {}

void RouteReplay::route(int32_t il, int32_t * ids, int32_t used, int32_t tokens) {
    if (il < 0 || il >= n_layer || n_tokens == 0 || used != n_used) {
        return;  // validated when the trace was read: a mismatch here leaves the model's own routing
    }
    for (int32_t t = 0; t < tokens; t++) {
        const size_t row = cursor[(size_t) il]++ % n_tokens;
        std::copy_n(trace.data() + (row * n_layer + il) * n_used, n_used, ids + (size_t) t * used);
    }
}

void RouteReplay::Callback(int32_t il, int32_t * ids, int32_t n_used, int32_t n_tokens, void * user_data) {
    static_cast<RouteReplay *>(user_data)->route(il, ids, n_used, n_tokens);
}

}  // namespace moeflash
