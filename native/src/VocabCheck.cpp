// VocabCheck: see VocabCheck.h.
#include "VocabCheck.h"

#include "gguf.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <unordered_map>

namespace moeflash {

namespace {

// A token's text for an error message: printable ASCII as is, other bytes as \xNN, at most 40 bytes.
std::string Printable(const std::string & text) {
    std::string out;
    for (size_t i = 0; i < text.size() && i < 40; i++) {
        const unsigned char c = (unsigned char) text[i];
        if (c >= 0x20 && c < 0x7f && c != '\'') {
            out += (char) c;
        } else {
            char buf[8];
            snprintf(buf, sizeof buf, "\\x%02X", c);
            out += buf;
        }
    }
    return text.size() > 40 ? out + "..." : out;
}

struct GgufFree {
    void operator()(gguf_context * ctx) const { gguf_free(ctx); }
};

}  // namespace

std::string CheckVocabularyFile(const std::string & path) {
    gguf_init_params params = {/*no_alloc =*/ true, /*ctx =*/ nullptr};
    std::unique_ptr<gguf_context, GgufFree> ctx(gguf_init_from_file(path.c_str(), params));
    if (!ctx) {
        return "";  // not readable: llama.cpp says why
    }
    const int64_t model_idx = gguf_find_key(ctx.get(), "tokenizer.ggml.model");
    if (model_idx >= 0 && gguf_get_kv_type(ctx.get(), model_idx) == GGUF_TYPE_STRING) {
        const std::string model = gguf_get_val_str(ctx.get(), model_idx);
        if (model == "no_vocab" || model == "none") {
            return "";  // llama.cpp reads no tokens
        }
    }
    const int64_t idx = gguf_find_key(ctx.get(), "tokenizer.ggml.tokens");
    if (idx < 0 || gguf_get_kv_type(ctx.get(), idx) != GGUF_TYPE_ARRAY || gguf_get_arr_type(ctx.get(), idx) != GGUF_TYPE_STRING) {
        return "";  // missing or mistyped: llama.cpp rejects it with its own error
    }
    // the same keys llama_vocab::impl::load gives each token (an empty text becomes "[EMPTY_<id>]")
    const uint32_t n_tokens = (uint32_t) gguf_get_arr_n(ctx.get(), idx);
    std::unordered_map<std::string, uint32_t> seen;
    seen.reserve(n_tokens);
    for (uint32_t i = 0; i < n_tokens; i++) {
        std::string word = gguf_get_arr_str(ctx.get(), idx, i);
        if (word.empty()) {
            word = "[EMPTY_" + std::to_string(i) + "]";
        }
        auto [it, inserted] = seen.emplace(std::move(word), i);
        if (!inserted) {
            return "tokenizer.ggml.tokens: tokens " + std::to_string(it->second) + " and " + std::to_string(i) +
                   " have the same text '" + Printable(it->first) + "'";
        }
    }
    return "";
}

std::string CheckByteFallback(const llama_vocab * vocab) {
    if (llama_vocab_type(vocab) != LLAMA_VOCAB_TYPE_SPM) {
        return "";  // only the SentencePiece tokenizer falls back to byte tokens (llama_vocab::byte_to_token)
    }
    static const char * hex = "0123456789ABCDEF";
    bool covered[256] = {};
    const int32_t n = llama_vocab_n_tokens(vocab);
    for (int32_t i = 0; i < n; i++) {
        const char * text = llama_vocab_get_text(vocab, i);
        const size_t len = text != nullptr ? strlen(text) : 0;
        if (len == 1) {
            covered[(unsigned char) text[0]] = true;
        } else if (len == 6 && text[0] == '<' && text[1] == '0' && text[2] == 'x' && text[5] == '>') {
            const char * hi = strchr(hex, text[3]);
            const char * lo = strchr(hex, text[4]);
            if (hi != nullptr && lo != nullptr && *hi != '\0' && *lo != '\0') {
                covered[(hi - hex) * 16 + (lo - hex)] = true;
            }
        }
    }
    for (int b = 0; b < 256; b++) {
        if (!covered[b]) {
            const std::string byte = std::string("0x") + hex[b >> 4] + hex[b & 15];
            return "tokenizer.ggml.tokens: the SentencePiece vocabulary has no token for byte " + byte + " ('<" + byte +
                   ">' or the byte itself), which tokenization falls back to for text it has no piece for";
        }
    }
    return "";
}

}  // namespace moeflash
