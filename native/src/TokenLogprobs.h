// Log-probabilities of sampled tokens, for clients that ask for them (GenerateRequest.top_logprobs).
#pragma once

#include "llama.h"

#include <utility>
#include <vector>

// A sampled token's log-probability and the `top` most likely tokens of the same step with theirs, most likely
// first. From the model's raw distribution (softmax of the logits), before temperature, penalties or a grammar.
struct TokenLogprob {
    llama_token token = 0;
    float logprob = 0;
    std::vector<std::pair<llama_token, float>> top;
};

TokenLogprob TokenLogprobOf(const float * logits, int32_t n_vocab, llama_token token, int32_t top_n);
