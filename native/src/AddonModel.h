// AddonModel: one loaded llama_model (weights + vocabulary), shared by the engines created on it.
#pragma once

#include <napi.h>

#include "ChatTemplate.h"
#include "llama.h"

#include <exception>
#include <memory>
#include <string>

class AddonModel : public Napi::ObjectWrap<AddonModel> {
  public:
    static Napi::Function Init(Napi::Env env);
    explicit AddonModel(const Napi::CallbackInfo & info);
    ~AddonModel() override;

    llama_model * model = nullptr;
    const llama_vocab * vocab = nullptr;
    std::string path;
    bool lazy_experts = false;  // expert tensors mapped without populate or read-around (expertRead: demand)

  private:
    Napi::Value Load(const Napi::CallbackInfo & info);
    Napi::Value Info(const Napi::CallbackInfo & info);
    Napi::Value Tokenize(const Napi::CallbackInfo & info);
    Napi::Value Detokenize(const Napi::CallbackInfo & info);
    Napi::Value TokenBytes(const Napi::CallbackInfo & info);
    Napi::Value ApplyChatTemplate(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);

    void Free();
    Napi::Error TokenizerError(Napi::Env env, const char * what, const std::exception & e) const;
    int64_t reported_bytes = 0;
    std::unique_ptr<ChatTemplates> chat;  // created on first use, after load
};
