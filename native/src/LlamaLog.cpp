// Routes llama.cpp/ggml logging: silent by default (a service logs through its own logger), everything to stderr
// with MOEFLASH_LLAMA_LOG=1, and error/warning lines kept per thread so a failed call can say why.
#include "addon.h"

#ifdef MOEFLASH_IO_ONLY
#include "ggml.h"  // the I/O addon has ggml's base library only: its log is the gguf reader's
#else
#include "llama.h"
#endif

#include <atomic>
#include <cstdio>
#include <cstdlib>

static std::atomic<bool> g_verbose{false};
static thread_local std::string t_errors;
static thread_local ggml_log_level t_last_level = GGML_LOG_LEVEL_NONE;

static void OnLlamaLog(ggml_log_level level, const char * text, void * /*user_data*/) {
    if (level == GGML_LOG_LEVEL_CONT) {
        level = t_last_level;
    }
    t_last_level = level;
    if (level == GGML_LOG_LEVEL_ERROR && t_errors.size() < 4096) {
        t_errors += text;
    }
    if (g_verbose.load(std::memory_order_relaxed)) {
        fputs(text, stderr);
    }
}

std::string TakeLlamaErrors() {
    std::string out;
    out.swap(t_errors);
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
        out.pop_back();
    }
    return out;
}

static Napi::Value SetLlamaLogVerbose(const Napi::CallbackInfo & info) {
    g_verbose = info[0].ToBoolean().Value();
    return info.Env().Undefined();
}

void InitLlamaLog(Napi::Env env, Napi::Object exports) {
    const char * env_flag = getenv("MOEFLASH_LLAMA_LOG");
    g_verbose = env_flag != nullptr && env_flag[0] == '1';
#ifdef MOEFLASH_IO_ONLY
    ggml_log_set(OnLlamaLog, nullptr);
#else
    llama_log_set(OnLlamaLog, nullptr);  // llama.cpp's log, and ggml's through it
#endif
    exports.Set("setLlamaLogVerbose", Napi::Function::New(env, SetLlamaLogVerbose));
}
