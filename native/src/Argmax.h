// The greedy pick over a step's logits.
#pragma once

#include "llama.h"

#include <cstdint>

namespace moeflash {

// The first highest logit, the token llama.cpp's greedy sampler picks, without building its candidate array.
llama_token ArgmaxOfLogits(const float * logits, int32_t n_vocab);

}  // namespace moeflash
