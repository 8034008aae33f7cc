#include "SyntheticRouting.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moeflash {

SyntheticRouting::SyntheticRouting(int32_t n_layer, int32_t n_expert, SyntheticRoutingOptions options)
    : n_expert(n_expert), options(options), rng(options.seed), layers((size_t) n_layer) {
    double sum = 0;
    for (int32_t r = 0; r < n_expert; r++) {
        sum += 1.0 / std::pow(r + 1.0, options.zipf_s);
        zipf_cdf.push_back(sum);
    }
    for (double & c : zipf_cdf) {
        c /= sum;
    }
    for (auto & layer : layers) {
        layer.rank_to_expert.resize((size_t) n_expert);
        std::iota(layer.rank_to_expert.begin(), layer.rank_to_expert.end(), 0);
        std::shuffle(layer.rank_to_expert.begin(), layer.rank_to_expert.end(), rng);
    }
}

int32_t SyntheticRouting::pick_fresh(const Layer & layer) {
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    const size_t rank = (size_t) (std::lower_bound(zipf_cdf.begin(), zipf_cdf.end(), u) - zipf_cdf.begin());
    return layer.rank_to_expert[std::min(rank, (size_t) n_expert - 1)];
}

void SyntheticRouting::route(int32_t il, int32_t * ids, int32_t n_used, int32_t n_tokens) {
    if (il < 0 || il >= (int32_t) layers.size()) {
        return;
    }
    Layer & layer = layers[(size_t) il];
    std::uniform_real_distribution<double> coin(0.0, 1.0);
    std::vector<int32_t> row;
    for (int32_t t = 0; t < n_tokens; t++) {
        row.clear();
        // a bounded number of tries keeps a pathological history (e.g. a tiny n_expert) from looping forever
        for (int tries = 0; (int32_t) row.size() < n_used && tries < 64 * n_used; tries++) {
            const double u = coin(rng);
            int32_t e;
            if (u < options.reuse_previous && !layer.history.empty()) {
                const auto & prev = layer.history.front();
                e = prev[std::uniform_int_distribution<size_t>(0, prev.size() - 1)(rng)];
            } else if (u < options.reuse_previous + options.reuse_window && layer.history.size() > 1) {
                const auto & older = layer.history[std::uniform_int_distribution<size_t>(1, layer.history.size() - 1)(rng)];
                e = older[std::uniform_int_distribution<size_t>(0, older.size() - 1)(rng)];
            } else {
                e = pick_fresh(layer);
            }
            if (std::find(row.begin(), row.end(), e) == row.end()) {
                row.push_back(e);
            }
        }
        for (int32_t e = 0; (int32_t) row.size() < n_used; e++) {
            if (std::find(row.begin(), row.end(), e) == row.end()) {
                row.push_back(e);
            }
        }
        std::copy(row.begin(), row.end(), ids + (size_t) t * n_used);
        layer.history.push_front(row);
        if ((int32_t) layer.history.size() > options.window) {
            layer.history.pop_back();
        }
    }
}

void SyntheticRouting::Callback(int32_t il, int32_t * ids, int32_t n_used, int32_t n_tokens, void * user_data) {
    static_cast<SyntheticRouting *>(user_data)->route(il, ids, n_used, n_tokens);
}

}  // namespace moeflash
