// Entry point of moeflash's I/O addon (moeflash_io.node): what the expert-store needs and nothing of llama.cpp's
// engine. GGUF layout through ggml's gguf reader, expert byte ranges through io_uring or posix_fadvise, page-cache
// residency, and the consumer side of the hint channel. No llama_backend_init: loading it starts no backend, no
// threads and maps no model.
#include "addon.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    InitLlamaLog(env, exports);  // ggml's log only here (MOEFLASH_IO_ONLY): a bad GGUF's reason reaches the caller
    InitGgufLayout(env, exports);
    InitExpertIo(env, exports);
    InitHintChannel(env, exports);
    return exports;
}

NODE_API_MODULE(moeflash_io, Init)
