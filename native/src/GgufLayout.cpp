// readGgufLayout(path): the file's metadata and the absolute byte range of every tensor, read through ggml's own
// gguf parser so sizes come from ggml_row_size / ggml_nbytes and are right for every ggml type.
// The expert-store builds its expert index from this; the engine reports expert bytes from it.
#include "GgufReader.h"
#include "addon.h"

namespace {

class LayoutWorker : public Napi::AsyncWorker {
  public:
    LayoutWorker(Napi::Env env, std::string path)
        : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), path(std::move(path)) {}

    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute() override {
        TakeLlamaErrors();
        std::string message;
        const auto error = moeflash::ReadGgufLayout(path, layout, message);
        if (error == moeflash::GgufReadError::not_gguf) {
            const std::string why = TakeLlamaErrors();
            message += why.empty() ? "" : ": " + why;
        }
        if (error != moeflash::GgufReadError::none) {
            SetError(message);
        }
    }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::Object out = Napi::Object::New(env);
        out.Set("path", path);
        out.Set("version", layout.version);
        out.Set("fileSize", (double) layout.file_size);
        out.Set("alignment", (double) layout.alignment);
        out.Set("dataOffset", (double) layout.data_offset);
        Napi::Object kv = Napi::Object::New(env);
        for (const auto & e : layout.kvs) {
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
        Napi::Array arr = Napi::Array::New(env, layout.tensors.size());
        for (size_t i = 0; i < layout.tensors.size(); i++) {
            const auto & t = layout.tensors[i];
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
    moeflash::GgufLayout layout;
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
