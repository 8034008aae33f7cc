// Entry point of the moeflash Node-API addon.
#include "addon.h"

#include "Argmax.h"
#include "ChatTemplate.h"
#include "llama.h"

// What the loaded ggml was built with, e.g. "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | ..." (the CPU backend reports
// the instruction sets compiled in, not the host's): the CPU-build probe reads it to know what it is testing.
static Napi::Value SystemInfo(const Napi::CallbackInfo & info) {
    return Napi::String::New(info.Env(), llama_print_system_info());
}

// jsonSchemaToGrammar(schema: string) -> string (GBNF); throws "json_schema: <why>"
static Napi::Value JsonSchemaGrammar(const Napi::CallbackInfo & info) {
    try {
        return Napi::String::New(info.Env(), JsonSchemaToGrammar(info[0].As<Napi::String>().Utf8Value()));
    } catch (const ChatInputError & e) {
        throw Napi::Error::New(info.Env(), e.field + ": " + e.what());
    }
}

// argmaxOfLogits(logits: Float32Array) -> number: the scheduler's greedy pick, for its tests
static Napi::Value ArgmaxOfLogits(const Napi::CallbackInfo & info) {
    const Napi::Float32Array logits = info[0].As<Napi::Float32Array>();
    return Napi::Number::New(info.Env(), moeflash::ArgmaxOfLogits(logits.Data(), (int32_t) logits.ElementLength()));
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    llama_backend_init();
    exports.Set("systemInfo", Napi::Function::New(env, SystemInfo));
    exports.Set("jsonSchemaToGrammar", Napi::Function::New(env, JsonSchemaGrammar));
    exports.Set("argmaxOfLogits", Napi::Function::New(env, ArgmaxOfLogits));
    InitLlamaLog(env, exports);
    InitAddonModel(env, exports);
    InitAddonEngine(env, exports);
    InitGgufLayout(env, exports);
    InitModelMaker(env, exports);
    InitExpertIo(env, exports);
    InitHintChannel(env, exports);
    InitLinkBandwidth(env, exports);
    InitSyntheticRoutingTrace(env, exports);
    return exports;
}

NODE_API_MODULE(moeflash, Init)
