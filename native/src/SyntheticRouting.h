// SyntheticRouting: benchmark-only replacement of a model's routing with a generated trace that has the temporal
// locality and skew of real MoE routing. Random-weight models route almost uniformly, which no cache can exploit;
// published traces of Qwen3-30B-A3B show about 45% of a layer's experts reused by the next token and about 80%
// within 8 tokens. Installed through llama_expert_cache_set_route_override; output text is meaningless with it.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <vector>

namespace moeflash {

struct SyntheticRoutingOptions {
    uint32_t seed = 1;
    double reuse_previous = 0.45;  // probability that a pick comes from the previous token's experts
    double reuse_window = 0.35;    // probability that it comes from the experts of the 2nd..window-th previous tokens
    int32_t window = 8;
    double zipf_s = 0.8;           // skew of the fresh picks over a per-layer random ranking of the experts
};

class SyntheticRouting {
  public:
    SyntheticRouting(int32_t n_layer, int32_t n_expert, SyntheticRoutingOptions options);

    // rewrites n_tokens rows of n_used ids for layer il, one token after the other
    void route(int32_t il, int32_t * ids, int32_t n_used, int32_t n_tokens);

    // the installable callback (user_data: a SyntheticRouting)
    static void Callback(int32_t il, int32_t * ids, int32_t n_used, int32_t n_tokens, void * user_data);

  private:
    struct Layer {
        std::vector<int32_t> rank_to_expert;          // Zipf rank -> expert
        std::deque<std::vector<int32_t>> history;     // most recent token first
    };

    int32_t pick_fresh(const Layer & layer);

    int32_t n_expert;
    SyntheticRoutingOptions options;
    std::mt19937_64 rng;
    std::vector<double> zipf_cdf;
    std::vector<Layer> layers;
};

}  // namespace moeflash
