#include "GgufReader.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace moeflash {

const GgufKv * GgufLayout::find(const std::string & key) const {
    for (const auto & kv : kvs) {
        if (kv.key == key) {
            return &kv;
        }
    }
    return nullptr;
}

namespace {

GgufKv ReadKv(const gguf_context * ctx, int64_t i) {
    GgufKv kv;
    kv.key = gguf_get_key(ctx, i);
    kv.type = gguf_get_kv_type(ctx, i);
    switch (kv.type) {
        case GGUF_TYPE_STRING:  kv.str = gguf_get_val_str(ctx, i); break;
        case GGUF_TYPE_ARRAY:   kv.arr_n = gguf_get_arr_n(ctx, i); break;
        case GGUF_TYPE_UINT8:   kv.num = gguf_get_val_u8(ctx, i); break;
        case GGUF_TYPE_INT8:    kv.num = gguf_get_val_i8(ctx, i); break;
        case GGUF_TYPE_UINT16:  kv.num = gguf_get_val_u16(ctx, i); break;
        case GGUF_TYPE_INT16:   kv.num = gguf_get_val_i16(ctx, i); break;
        case GGUF_TYPE_UINT32:  kv.num = gguf_get_val_u32(ctx, i); break;
        case GGUF_TYPE_INT32:   kv.num = gguf_get_val_i32(ctx, i); break;
        case GGUF_TYPE_FLOAT32: kv.num = gguf_get_val_f32(ctx, i); break;
        case GGUF_TYPE_UINT64:  kv.num = (double) gguf_get_val_u64(ctx, i); break;
        case GGUF_TYPE_INT64:   kv.num = (double) gguf_get_val_i64(ctx, i); break;
        case GGUF_TYPE_FLOAT64: kv.num = gguf_get_val_f64(ctx, i); break;
        case GGUF_TYPE_BOOL:    kv.num = gguf_get_val_bool(ctx, i) ? 1 : 0; break;
        default: break;
    }
    return kv;
}

}  // namespace

GgufReadError ReadGgufLayout(const std::string & path, GgufLayout & out, std::string & message) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
        message = "cannot open '" + path + "': " + strerror(errno);
        return GgufReadError::cannot_open;
    }
    out.file_size = (uint64_t) st.st_size;
    ggml_context * meta = nullptr;  // receives one no-data tensor per GGUF tensor: their shapes
    gguf_init_params params = {/*no_alloc =*/ true, /*ctx =*/ &meta};
    gguf_context * ctx = gguf_init_from_file(path.c_str(), params);
    if (ctx == nullptr) {
        message = "'" + path + "' is not a valid GGUF file";
        return GgufReadError::not_gguf;
    }
    out.alignment = gguf_get_alignment(ctx);
    out.data_offset = gguf_get_data_offset(ctx);
    out.version = gguf_get_version(ctx);
    for (int64_t i = 0; i < gguf_get_n_kv(ctx); i++) {
        out.kvs.push_back(ReadKv(ctx, i));
    }
    for (int64_t i = 0; i < gguf_get_n_tensors(ctx); i++) {
        GgufTensor t;
        t.name = gguf_get_tensor_name(ctx, i);
        t.type = gguf_get_tensor_type(ctx, i);
        t.offset = out.data_offset + gguf_get_tensor_offset(ctx, i);
        t.nbytes = gguf_get_tensor_size(ctx, i);
        const ggml_tensor * tensor = ggml_get_tensor(meta, t.name.c_str());
        t.n_dims = ggml_n_dims(tensor);
        for (int d = 0; d < GGML_MAX_DIMS; d++) {
            t.ne[d] = tensor->ne[d];
        }
        out.tensors.push_back(t);
    }
    ggml_free(meta);
    gguf_free(ctx);
    for (const auto & t : out.tensors) {
        if (t.offset + t.nbytes > out.file_size) {
            message = "'" + path + "' is truncated: tensor '" + t.name + "' ends at byte " +
                      std::to_string(t.offset + t.nbytes) + " but the file has " + std::to_string(out.file_size) + " bytes";
            return GgufReadError::truncated;
        }
    }
    return GgufReadError::none;
}

}  // namespace moeflash
