// AddonModel: loading (off the event loop), model facts, tokenizer.
#include "AddonModel.h"

#include "ModelMeta.h"

#include "TokenPiece.h"
#include "VocabCheck.h"
#include "addon.h"

#include "ggml-backend.h"

#include <cstdlib>
#include <exception>
#include <memory>
#include <vector>

namespace {

struct TensorOverride {
    std::string pattern;
    ggml_backend_buffer_type_t buft;
};

class LoadWorker : public Napi::AsyncWorker {
  public:
    LoadWorker(Napi::Env env, AddonModel * owner, Napi::Object owner_obj, std::string path,
               llama_model_params params, std::vector<TensorOverride> overrides)
        : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), owner(owner), path(std::move(path)),
          params(params), overrides(std::move(overrides)) {
        owner_ref = Napi::Persistent(owner_obj);
    }

    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute() override {
        // llama.cpp keeps pointers into this list for the duration of the load only
        std::vector<llama_model_tensor_buft_override> list;
        for (const auto & o : overrides) {
            list.push_back({o.pattern.c_str(), o.buft});
        }
        list.push_back({nullptr, nullptr});
        params.tensor_buft_overrides = overrides.empty() ? nullptr : list.data();
        // llama.cpp asserts on a vocabulary with duplicate tokens: reject it before calling in
        std::string bad = moeflash::CheckVocabularyFile(path);
        if (!bad.empty()) {
            SetError(bad);
            return;
        }
        TakeLlamaErrors();
        model = llama_model_load_from_file(path.c_str(), params);
        if (model == nullptr) {
            std::string why = TakeLlamaErrors();
            SetError(why.empty() ? "llama.cpp could not load the model" : why);
            return;
        }
        bad = moeflash::CheckByteFallback(llama_model_get_vocab(model));
        if (!bad.empty()) {
            llama_model_free(model);
            model = nullptr;
            SetError(bad);
        }
    }

    void OnOK() override {
        owner->model = model;
        owner->vocab = llama_model_get_vocab(model);
        owner->path = path;
        deferred.Resolve(Env().Undefined());
    }

    void OnError(const Napi::Error & e) override { deferred.Reject(e.Value()); }

  private:
    Napi::Promise::Deferred deferred;
    AddonModel * owner;
    Napi::ObjectReference owner_ref;  // keeps the JS object alive while loading
    std::string path;
    llama_model_params params;
    std::vector<TensorOverride> overrides;
    llama_model * model = nullptr;
};

std::string MetaString(const llama_model * model, const std::string & key) {
    char buf[512];
    int32_t n = llama_model_meta_val_str(model, key.c_str(), buf, sizeof(buf));
    return n < 0 ? std::string() : std::string(buf);
}

}  // namespace

// llama.cpp's tokenizer reports some bad vocabularies by throwing (std::out_of_range from an unordered_map::at):
// node-addon-api passes only Napi::Error through, anything else would terminate the process.
Napi::Error AddonModel::TokenizerError(Napi::Env env, const char * what, const std::exception & e) const {
    return Napi::Error::New(env, "model '" + path + "': " + what + " failed: " + e.what());
}

AddonModel::AddonModel(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonModel>(info) {}

AddonModel::~AddonModel() { Free(); }

void AddonModel::Free() {
    chat.reset();
    if (model != nullptr) {
        llama_model_free(model);
        model = nullptr;
        vocab = nullptr;
    }
}

// load(path, { nGpuLayers, loadMode, expertRead, overrides: [{pattern, bufferType}], checkTensors }) -> Promise<void>
Napi::Value AddonModel::Load(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (model != nullptr) {
        throw Napi::Error::New(env, "model already loaded");
    }
    std::string file = info[0].As<Napi::String>().Utf8Value();
    Napi::Object opts = info[1].As<Napi::Object>();

    llama_model_params params = llama_model_default_params();
    params.n_gpu_layers = opts.Get("nGpuLayers").As<Napi::Number>().Int32Value();
    std::string mode = opts.Get("loadMode").As<Napi::String>().Utf8Value();
    params.load_mode = mode == "none"  ? LLAMA_LOAD_MODE_NONE
                     : mode == "mlock" ? LLAMA_LOAD_MODE_MMAP_MLOCK
                                       : LLAMA_LOAD_MODE_MMAP;
    // experts read on demand (patches/llama.cpp/0012): only where they are mapped, so never with loadMode none
    lazy_experts = opts.Get("expertRead").IsString() && opts.Get("expertRead").As<Napi::String>().Utf8Value() == "demand" &&
                   params.load_mode != LLAMA_LOAD_MODE_NONE;
    if (lazy_experts) {
        params.lazy_mode = LLAMA_LAZY_MODE_EXPERTS;
    }

    std::vector<TensorOverride> overrides;
    Napi::Array list = opts.Get("overrides").As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) {
        Napi::Object o = list.Get(i).As<Napi::Object>();
        std::string buft_name = o.Get("bufferType").As<Napi::String>().Utf8Value();
        if (buft_name != "cpu" && buft_name != "pinned") {
            throw Napi::TypeError::New(env, "tensorOverrides: unsupported buffer type '" + buft_name + "'");
        }
        ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(cpu);
        if (buft_name == "pinned") {
            // host memory the GPU can DMA from (copies at link speed, asynchronously); plain host memory without a GPU
            ggml_backend_dev_t gpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
            ggml_backend_buffer_type_t host = gpu != nullptr ? ggml_backend_dev_host_buffer_type(gpu) : nullptr;
            buft = host != nullptr ? host : buft;
        }
        overrides.push_back({o.Get("pattern").As<Napi::String>().Utf8Value(), buft});
    }

    auto * worker = new LoadWorker(env, this, Value(), file, params, std::move(overrides));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
}

Napi::Value AddonModel::Info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (model == nullptr) {
        throw Napi::Error::New(env, "model not loaded");
    }
    const std::string arch = MetaString(model, "general.architecture");
    auto meta_int = [&](const char * key) { return moeflash::ArchMetaInt(model, key); };
    char desc[256];
    llama_model_desc(model, desc, sizeof(desc));

    Napi::Object out = Napi::Object::New(env);
    out.Set("architecture", arch);
    out.Set("description", std::string(desc));
    out.Set("nLayer", llama_model_n_layer(model));
    out.Set("nEmbd", llama_model_n_embd(model));
    out.Set("nVocab", llama_vocab_n_tokens(vocab));
    out.Set("nCtxTrain", llama_model_n_ctx_train(model));
    out.Set("nExpert", static_cast<double>(meta_int("expert_count")));
    out.Set("nExpertUsed", static_cast<double>(meta_int("expert_used_count")));
    out.Set("totalBytes", static_cast<double>(llama_model_size(model)));
    out.Set("nParams", static_cast<double>(llama_model_n_params(model)));
    out.Set("addBos", llama_vocab_get_add_bos(vocab));
    return out;
}

// applyChatTemplate(messages: [{ role, content }], template: string ('' = the model's own),
//                   kwargs: { name: JSON text }) -> string, the prompt ending with the assistant's turn.
// Throws "<field>: <why>" (messages, chat_template) for the caller to turn into INVALID_ARGUMENT.
Napi::Value AddonModel::ApplyChatTemplate(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (model == nullptr) {
        throw Napi::Error::New(env, "model not loaded");
    }
    std::vector<ChatMessage> messages;
    Napi::Array list = info[0].As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) {
        Napi::Object m = list.Get(i).As<Napi::Object>();
        messages.push_back({m.Get("role").As<Napi::String>().Utf8Value(), m.Get("content").As<Napi::String>().Utf8Value()});
    }
    std::map<std::string, std::string> kwargs;
    Napi::Object k = info[2].As<Napi::Object>();
    Napi::Array names = k.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
        const std::string name = names.Get(i).As<Napi::String>().Utf8Value();
        kwargs[name] = k.Get(name).As<Napi::String>().Utf8Value();
    }
    if (!chat) {
        chat = std::make_unique<ChatTemplates>(model);
    }
    try {
        return Napi::String::New(env, chat->render(messages, info[1].As<Napi::String>().Utf8Value(), kwargs));
    } catch (const ChatInputError & e) {
        throw Napi::Error::New(env, e.field + ": " + e.what());
    }
}

// tokenize(text, addSpecial, parseSpecial) -> Int32Array
Napi::Value AddonModel::Tokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (vocab == nullptr) {
        throw Napi::Error::New(env, "model not loaded");
    }
    std::string text = info[0].As<Napi::String>().Utf8Value();
    bool add_special = info[1].ToBoolean().Value();
    bool parse_special = info[2].ToBoolean().Value();
    std::vector<llama_token> tokens;
    try {
        int32_t n = -llama_tokenize(vocab, text.data(), (int32_t) text.size(), nullptr, 0, add_special, parse_special);
        tokens.resize(std::max(n, 0));
        if (n > 0 && llama_tokenize(vocab, text.data(), (int32_t) text.size(), tokens.data(), n, add_special, parse_special) < 0) {
            throw Napi::Error::New(env, "model '" + path + "': tokenization failed");
        }
    } catch (const Napi::Error &) {
        throw;
    } catch (const std::exception & e) {
        throw TokenizerError(env, "tokenization", e);
    }
    Napi::Int32Array out = Napi::Int32Array::New(env, tokens.size());
    std::copy(tokens.begin(), tokens.end(), out.Data());
    return out;
}

// detokenize(Int32Array) -> string (special tokens rendered, like llama.cpp's examples print them)
Napi::Value AddonModel::Detokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (vocab == nullptr) {
        throw Napi::Error::New(env, "model not loaded");
    }
    Napi::Int32Array tokens = info[0].As<Napi::Int32Array>();
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    for (size_t i = 0; i < tokens.ElementLength(); i++) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            throw Napi::RangeError::New(env, "token id " + std::to_string(tokens[i]) + " out of range [0, " + std::to_string(n_vocab) + ")");
        }
    }
    std::string text;
    try {
        text.resize(tokens.ElementLength() * 8 + 16);
        int32_t n = llama_detokenize(vocab, tokens.Data(), (int32_t) tokens.ElementLength(), text.data(), (int32_t) text.size(), false, false);
        if (n < 0) {
            text.resize(-n);
            n = llama_detokenize(vocab, tokens.Data(), (int32_t) tokens.ElementLength(), text.data(), (int32_t) text.size(), false, false);
        }
        text.resize(std::max(n, 0));
    } catch (const std::exception & e) {
        throw TokenizerError(env, "detokenization", e);
    }
    return Napi::String::New(env, text);
}

// tokenBytes(Int32Array) -> Buffer: the raw bytes the tokens' pieces concatenate to, exactly as generation emits
// them (no UTF-8 repair), so output can be compared byte for byte with llama.cpp's own tools.
Napi::Value AddonModel::TokenBytes(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (vocab == nullptr) {
        throw Napi::Error::New(env, "model not loaded");
    }
    Napi::Int32Array tokens = info[0].As<Napi::Int32Array>();
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    std::string bytes;
    for (size_t i = 0; i < tokens.ElementLength(); i++) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            throw Napi::RangeError::New(env, "token id " + std::to_string(tokens[i]) + " out of range");
        }
        try {
            bytes += TokenPiece(vocab, tokens[i]);
        } catch (const std::exception & e) {
            throw TokenizerError(env, "detokenization", e);
        }
    }
    return Napi::Buffer<char>::Copy(env, bytes.data(), bytes.size());
}

Napi::Value AddonModel::Dispose(const Napi::CallbackInfo & info) {
    Free();
    return info.Env().Undefined();
}

Napi::Function AddonModel::Init(Napi::Env env) {
    return DefineClass(env, "AddonModel",
                       {
                           InstanceMethod("load", &AddonModel::Load),
                           InstanceMethod("info", &AddonModel::Info),
                           InstanceMethod("tokenize", &AddonModel::Tokenize),
                           InstanceMethod("detokenize", &AddonModel::Detokenize),
                           InstanceMethod("tokenBytes", &AddonModel::TokenBytes),
                           InstanceMethod("applyChatTemplate", &AddonModel::ApplyChatTemplate),
                           InstanceMethod("dispose", &AddonModel::Dispose),
                       });
}

void InitAddonModel(Napi::Env env, Napi::Object exports) {
    exports.Set("AddonModel", AddonModel::Init(env));
}
