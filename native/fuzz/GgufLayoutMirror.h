// The GGUF reading of native/src/GgufLayout.cpp (LayoutWorker::Execute), call for call, without Node-API: the
// same gguf_init_from_file parameters, the same getters for every key type, the same tensor info and shapes and
// the same truncation check. Keep it in step with GgufLayout.cpp: the fuzzer tests what this file does.
#pragma once

#include "ggml.h"
#include "gguf.h"

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <vector>

namespace moeflash::fuzz {

struct Tensor {
    std::string name;
    ggml_type type;
    int64_t ne[GGML_MAX_DIMS];
    int n_dims;
    uint64_t offset;  // absolute
    uint64_t nbytes;
};

struct Kv {
    std::string key;
    gguf_type type;
    std::string str;
    double num = 0;
    uint64_t arr_n = 0;
};

struct Layout {
    uint64_t file_size = 0;
    uint64_t alignment = 0;
    uint64_t data_offset = 0;
    uint32_t version = 0;
    std::vector<Kv> kvs;
    std::vector<Tensor> tensors;

    const Kv * find(const std::string & key) const {
        for (const auto & kv : kvs) {
            if (kv.key == key) return &kv;
        }
        return nullptr;
    }
};

// True with `out` filled when GgufLayout.cpp would resolve; false with the reason when it would reject.
inline bool ReadLayout(const std::string & path, Layout & out, std::string & error) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
        error = "cannot open";
        return false;
    }
    out.file_size = (uint64_t) st.st_size;
    ggml_context * meta = nullptr;
    gguf_init_params params = {/*no_alloc =*/ true, /*ctx =*/ &meta};
    gguf_context * ctx = gguf_init_from_file(path.c_str(), params);
    if (ctx == nullptr) {
        error = "not a valid GGUF file";
        return false;
    }
    out.alignment = gguf_get_alignment(ctx);
    out.data_offset = gguf_get_data_offset(ctx);
    out.version = gguf_get_version(ctx);
    for (int64_t i = 0; i < gguf_get_n_kv(ctx); i++) {
        Kv kv;
        kv.key = gguf_get_key(ctx, i);
        kv.type = gguf_get_kv_type(ctx, i);
        switch (kv.type) {
            case GGUF_TYPE_STRING: kv.str = gguf_get_val_str(ctx, i); break;
            case GGUF_TYPE_ARRAY:  kv.arr_n = gguf_get_arr_n(ctx, i); break;
            case GGUF_TYPE_UINT8:  kv.num = gguf_get_val_u8(ctx, i); break;
            case GGUF_TYPE_INT8:   kv.num = gguf_get_val_i8(ctx, i); break;
            case GGUF_TYPE_UINT16: kv.num = gguf_get_val_u16(ctx, i); break;
            case GGUF_TYPE_INT16:  kv.num = gguf_get_val_i16(ctx, i); break;
            case GGUF_TYPE_UINT32: kv.num = gguf_get_val_u32(ctx, i); break;
            case GGUF_TYPE_INT32:  kv.num = gguf_get_val_i32(ctx, i); break;
            case GGUF_TYPE_FLOAT32: kv.num = gguf_get_val_f32(ctx, i); break;
            case GGUF_TYPE_UINT64: kv.num = (double) gguf_get_val_u64(ctx, i); break;
            case GGUF_TYPE_INT64:  kv.num = (double) gguf_get_val_i64(ctx, i); break;
            case GGUF_TYPE_FLOAT64: kv.num = gguf_get_val_f64(ctx, i); break;
            case GGUF_TYPE_BOOL:   kv.num = gguf_get_val_bool(ctx, i) ? 1 : 0; break;
            default: break;
        }
        out.kvs.push_back(std::move(kv));
    }
    for (int64_t i = 0; i < gguf_get_n_tensors(ctx); i++) {
        Tensor t;
        t.name = gguf_get_tensor_name(ctx, i);
        t.type = gguf_get_tensor_type(ctx, i);
        t.offset = out.data_offset + gguf_get_tensor_offset(ctx, i);
        t.nbytes = gguf_get_tensor_size(ctx, i);
        out.tensors.push_back(t);
    }
    for (auto & t : out.tensors) {
        const ggml_tensor * tensor = ggml_get_tensor(meta, t.name.c_str());
        t.n_dims = ggml_n_dims(tensor);
        for (int d = 0; d < GGML_MAX_DIMS; d++) {
            t.ne[d] = tensor->ne[d];
        }
        // What OnOK then exports by name: ggml_type_name of every type gguf accepted.
        if (ggml_type_name(t.type) == nullptr) abort();
    }
    ggml_free(meta);
    gguf_free(ctx);
    for (const auto & t : out.tensors) {
        if (t.offset + t.nbytes > out.file_size) {
            error = "truncated";
            return false;
        }
    }
    return true;
}

}  // namespace moeflash::fuzz
