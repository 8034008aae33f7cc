// Entry point of the moeflash Node-API addon.
#include "addon.h"

#include "llama.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    llama_backend_init();
    InitLlamaLog(env, exports);
    InitAddonModel(env, exports);
    InitAddonEngine(env, exports);
    InitGgufLayout(env, exports);
    InitModelMaker(env, exports);
    InitExpertIo(env, exports);
    InitHintChannel(env, exports);
    return exports;
}

NODE_API_MODULE(moeflash, Init)
