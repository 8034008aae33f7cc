// readGgufLayout(path): the file's metadata and the absolute byte range of every tensor, read through ggml's own
// gguf parser so sizes come from ggml_row_size / ggml_nbytes and are right for every ggml type.
// The expert-store builds its expert index from this; the engine reports expert bytes from it.
#include "addon.h"

#include "ggml.h"
#include "gguf.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include <vector>

namespace {

struct TensorEntry {
    std::string name;
    ggml_type type;
    int64_t ne[GGML_MAX_DIMS];
    int n_dims;
    uint64_t offset;  // absolute, from the start of the file
    uint64_t nbytes;
};

struct KvEntry {
    std::string key;
    gguf_type type;
    std::string str;    // strings
    double num = 0;     // numbers and bools
    uint64_t arr_n = 0; // arrays: element count only
};

class LayoutWorker : public Napi::AsyncWorker {
  public:
    LayoutWorker(Napi::Env env, std::string path)
        : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), path(std::move(path)) {}

    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute() override {
        struct stat st;
        if (stat(path.c_str(), &st) != 0) {
            SetError("cannot open '" + path + "': " + strerror(errno));
            return;
        }
        file_size = st.st_size;
        TakeLlamaErrors();
        ggml_context * meta = nullptr;  // receives one no-data tensor per GGUF tensor: their shapes
        gguf_init_params params = {/*no_alloc =*/ true, /*ctx =*/ &meta};
        gguf_context * ctx = gguf_init_from_file(path.c_str(), params);
        if (ctx == nullptr) {
            std::string why = TakeLlamaErrors();
            SetError("'" + path + "' is not a valid GGUF file" + (why.empty() ? "" : ": " + why));
            return;
        }
        alignment = gguf_get_alignment(ctx);
        data_offset = gguf_get_data_offset(ctx);
        version = gguf_get_version(ctx);
        for (int64_t i = 0; i < gguf_get_n_kv(ctx); i++) {
            KvEntry kv;
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
            kvs.push_back(std::move(kv));
        }
        for (int64_t i = 0; i < gguf_get_n_tensors(ctx); i++) {
            TensorEntry t;
            t.name = gguf_get_tensor_name(ctx, i);
            t.type = gguf_get_tensor_type(ctx, i);
            t.offset = data_offset + gguf_get_tensor_offset(ctx, i);
            t.nbytes = gguf_get_tensor_size(ctx, i);
            tensors.push_back(t);
        }
        for (auto & t : tensors) {
            const ggml_tensor * tensor = ggml_get_tensor(meta, t.name.c_str());
            t.n_dims = ggml_n_dims(tensor);
            for (int d = 0; d < GGML_MAX_DIMS; d++) {
                t.ne[d] = tensor->ne[d];
            }
        }
        ggml_free(meta);
        gguf_free(ctx);
        for (const auto & t : tensors) {
            if (t.offset + t.nbytes > file_size) {
                SetError("'" + path + "' is truncated: tensor '" + t.name + "' ends at byte " +
                         std::to_string(t.offset + t.nbytes) + " but the file has " + std::to_string(file_size) + " bytes");
                return;
            }
        }
    }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::Object out = Napi::Object::New(env);
        out.Set("path", path);
        out.Set("version", version);
        out.Set("fileSize", (double) file_size);
        out.Set("alignment", (double) alignment);
        out.Set("dataOffset", (double) data_offset);
        Napi::Object kv = Napi::Object::New(env);
        for (const auto & e : kvs) {
            if (e.type == GGUF_TYPE_STRING) {
                kv.Set(e.key, e.str);
            } else if (e.type == GGUF_TYPE_ARRAY) {
                Napi::Object a = Napi::Object::New(env);
                a.Set("arrayLength", (double) e.arr_n);
                kv.Set(e.key, a);
            } else if (e.type == GGUF_TYPE_BOOL) {
                kv.Set(e.key, e.num != 0);
            } else {
                kv.Set(e.key, e.num);
            }
        }
        out.Set("metadata", kv);
        Napi::Array arr = Napi::Array::New(env, tensors.size());
        for (size_t i = 0; i < tensors.size(); i++) {
            const auto & t = tensors[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("name", t.name);
            o.Set("type", ggml_type_name(t.type));
            Napi::Array ne = Napi::Array::New(env, t.n_dims);
            for (int d = 0; d < t.n_dims; d++) {
                ne.Set(d, (double) t.ne[d]);
            }
            o.Set("ne", ne);
            o.Set("offset", (double) t.offset);
            o.Set("nbytes", (double) t.nbytes);
            arr.Set(i, o);
        }
        out.Set("tensors", arr);
        deferred.Resolve(out);
    }

    void OnError(const Napi::Error & e) override { deferred.Reject(e.Value()); }

  private:
    Napi::Promise::Deferred deferred;
    std::string path;
    uint64_t file_size = 0;
    uint64_t alignment = 0;
    uint64_t data_offset = 0;
    uint32_t version = 0;
    std::vector<KvEntry> kvs;
    std::vector<TensorEntry> tensors;
};

Napi::Value ReadGgufLayout(const Napi::CallbackInfo & info) {
    auto * worker = new LayoutWorker(info.Env(), info[0].As<Napi::String>().Utf8Value());
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
}

}  // namespace

void InitGgufLayout(Napi::Env env, Napi::Object exports) {
    exports.Set("readGgufLayout", Napi::Function::New(env, ReadGgufLayout));
}
