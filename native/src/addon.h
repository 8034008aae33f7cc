// Shared declarations of the moeflash addon: each module registers its exports through one Init function.
#pragma once

#include <napi.h>

#include <string>

// Module initialisers (one per concern, each in its own file).
void InitLlamaLog(Napi::Env env, Napi::Object exports);     // LlamaLog.cpp
void InitAddonModel(Napi::Env env, Napi::Object exports);   // AddonModel.cpp
void InitAddonEngine(Napi::Env env, Napi::Object exports);  // AddonEngine.cpp
void InitGgufLayout(Napi::Env env, Napi::Object exports);   // GgufLayout.cpp
void InitModelMaker(Napi::Env env, Napi::Object exports);   // ModelMaker.cpp
void InitExpertIo(Napi::Env env, Napi::Object exports);     // ExpertIo.cpp
void InitHintChannel(Napi::Env env, Napi::Object exports);  // HintChannel.cpp
void InitLinkBandwidth(Napi::Env env, Napi::Object exports); // LinkBandwidth.cpp
void InitSyntheticRoutingTrace(Napi::Env env, Napi::Object exports); // SyntheticRoutingTrace.cpp

// The error lines llama.cpp logged on the calling thread since the last call, then cleared: llama.cpp reports
// why a load failed only through its log, so workers read this right after a failing call.
std::string TakeLlamaErrors();
