#include "TokenLogprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

TokenLogprob TokenLogprobOf(const float * logits, int32_t n_vocab, llama_token token, int32_t top_n) {
    // log softmax: logit - (max + log sum exp(logit - max)), summed from the max for stability
    const float max = *std::max_element(logits, logits + n_vocab);
    double sum = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        sum += std::exp((double) (logits[i] - max));
    }
    const float log_z = max + (float) std::log(sum);

    TokenLogprob out;
    out.token = token;
    out.logprob = logits[token] - log_z;
    const int32_t n = std::min(top_n, n_vocab);
    if (n > 0) {
        std::vector<llama_token> ids(n_vocab);
        std::iota(ids.begin(), ids.end(), 0);
        // ties broken by id, so that the list is the same on every backend and run
        std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](llama_token a, llama_token b) {
            return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
        });
        for (int32_t i = 0; i < n; i++) {
            out.top.emplace_back(ids[i], logits[ids[i]] - log_z);
        }
    }
    return out;
}
