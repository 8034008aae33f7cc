// SyntheticRouting: benchmark-only replacement of a model's routing with a generated trace that has the temporal
// locality and skew of real MoE routing. Random-weight models route almost uniformly, which no cache can exploit;
// published traces of Qwen3-30B-A3B show about 45% of a layer's experts reused by the next token and about 80%
// within 8 tokens. Installed through llama_expert_cache_set_route_override; output text is meaningless with it.
// The defaults are fitted to those traces (bench/routingLocality.ts measures both; bench:cache prints them):
// LRU at 8/16/32/64 of 128 slots hits 44.3/64.6/84.5/91.4% (published 42.4/64.7/81.0/91.8), next-token reuse 44%,
// reuse within 8 tokens 83%, misses over the first 64 tokens 13.9% (13.8) and 7.8% after (5.3: real routing settles
// on a hot set more than this generator does).
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <vector>

namespace moeflash {

struct SyntheticRoutingOptions {
    uint32_t seed = 1;
    double reuse_previous = 0.25;  // probability that a pick comes from the previous token's experts
    double reuse_window = 0.40;    // probability that it comes from the experts of the 2nd..window-th previous tokens
    int32_t window = 8;
    double zipf_s = 1.0;           // skew of the fresh picks over a per-layer random ranking of the experts
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
