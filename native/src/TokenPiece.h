// The text bytes of one token as generation emits them. Control tokens render as nothing (special = false),
// like llama.cpp's completion tool and server, so streamed text never contains "<s>"-style markers.
#pragma once

#include "llama.h"

#include <algorithm>
#include <string>

inline std::string TokenPiece(const llama_vocab * vocab, llama_token token) {
    char buf[256];
    int32_t n = llama_token_to_piece(vocab, token, buf, sizeof(buf), 0, false);
    if (n < 0) {
        std::string big(-n, '\0');
        n = llama_token_to_piece(vocab, token, big.data(), (int32_t) big.size(), 0, false);
        big.resize(std::max(n, 0));
        return big;
    }
    return std::string(buf, n);
}
