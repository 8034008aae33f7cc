// syntheticRoutingTrace(spec): the routing SyntheticRouting generates, without a model, so bench:cache can show its
// locality (LRU hit curve, reuse between tokens) next to published routing of real models.
// spec: { layers, experts, expertsUsed, tokens, seed?, reusePrevious?, reuseWindow? } -> Int32Array
// [tokens][layers][expertsUsed], the order a decode produces it in.
#include "addon.h"

#include "SyntheticRouting.h"

#include <vector>

namespace {

int32_t PositiveInt(Napi::Env env, const Napi::Object & o, const char * field, int32_t max) {
    Napi::Value v = o.Get(field);
    if (!v.IsNumber() || v.As<Napi::Number>().DoubleValue() < 1 || v.As<Napi::Number>().DoubleValue() > max) {
        throw Napi::RangeError::New(env, std::string("syntheticRoutingTrace: ") + field + " must be an integer in [1, " +
                                             std::to_string(max) + "]");
    }
    return v.As<Napi::Number>().Int32Value();
}

Napi::Value SyntheticRoutingTrace(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
        throw Napi::TypeError::New(env, "syntheticRoutingTrace(spec): spec must be an object");
    }
    const Napi::Object o = info[0].As<Napi::Object>();
    const int32_t layers = PositiveInt(env, o, "layers", 1024);
    const int32_t experts = PositiveInt(env, o, "experts", 4096);
    const int32_t used = PositiveInt(env, o, "expertsUsed", experts);
    const int32_t tokens = PositiveInt(env, o, "tokens", 1 << 20);
    moeflash::SyntheticRoutingOptions options;
    if (o.Get("seed").IsNumber()) options.seed = o.Get("seed").As<Napi::Number>().Uint32Value();
    if (o.Get("reusePrevious").IsNumber()) options.reuse_previous = o.Get("reusePrevious").As<Napi::Number>().DoubleValue();
    if (o.Get("reuseWindow").IsNumber()) options.reuse_window = o.Get("reuseWindow").As<Napi::Number>().DoubleValue();
    if (o.Get("zipf").IsNumber()) options.zipf_s = o.Get("zipf").As<Napi::Number>().DoubleValue();
    moeflash::SyntheticRouting routing(layers, experts, options);
    Napi::Int32Array out = Napi::Int32Array::New(env, (size_t) tokens * layers * used);
    for (int32_t t = 0; t < tokens; t++) {
        for (int32_t il = 0; il < layers; il++) {
            routing.route(il, out.Data() + ((size_t) t * layers + il) * used, used, 1);
        }
    }
    return out;
}

}  // namespace

void InitSyntheticRoutingTrace(Napi::Env env, Napi::Object exports) {
    exports.Set("syntheticRoutingTrace", Napi::Function::New(env, SyntheticRoutingTrace));
}
