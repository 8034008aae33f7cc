// GgufReader: a GGUF file's metadata and the absolute byte range of every tensor, read through ggml's own gguf
// parser so sizes come from ggml_row_size / ggml_nbytes and are right for every ggml type. Plain C++ (no Node-API):
// the addon's readGgufLayout and the libFuzzer target (native/fuzz) run this same code.
#pragma once

#include "ggml.h"
#include "gguf.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moeflash {

struct GgufTensor {
    std::string name;
    ggml_type type;
    int64_t ne[GGML_MAX_DIMS];
    int n_dims;
    uint64_t offset;  // absolute, from the start of the file
    uint64_t nbytes;
};

struct GgufKv {
    std::string key;
    gguf_type type;
    std::string str;     // strings
    double num = 0;      // numbers and bools
    uint64_t arr_n = 0;  // arrays: element count only
};

struct GgufLayout {
    uint64_t file_size = 0;
    uint64_t alignment = 0;
    uint64_t data_offset = 0;
    uint32_t version = 0;
    std::vector<GgufKv> kvs;
    std::vector<GgufTensor> tensors;

    const GgufKv * find(const std::string & key) const;
};

enum class GgufReadError { none, cannot_open, not_gguf, truncated };

// Fills `out`, or returns why not with a message naming the file (for not_gguf, ggml's own log says more).
GgufReadError ReadGgufLayout(const std::string & path, GgufLayout & out, std::string & message);

}  // namespace moeflash
