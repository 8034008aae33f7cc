// measureLinkBandwidth(bytes?): host -> device bandwidth of the first GPU, from its pinned host buffer type (the
// memory the expert cache copies misses from), in GB/s; 0 without a GPU or pinned memory. For bench:cache's bound
// column: a step that copies B bytes of misses cannot take less than full-GPU time + B / bandwidth.
#include "addon.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpp.h"

#include <algorithm>
#include <chrono>

namespace {

ggml_backend_buffer_ptr AllocBytes(ggml_context * ctx, ggml_backend_buffer_type_t buft, int64_t bytes, ggml_tensor ** out) {
    *out = ggml_new_tensor_1d(ctx, GGML_TYPE_I8, bytes);
    return ggml_backend_buffer_ptr(ggml_backend_buft_alloc_buffer(buft, ggml_nbytes(*out)));
}

double Measure(int64_t bytes) {
    ggml_backend_dev_t gpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
    ggml_backend_buffer_type_t host_buft = gpu ? ggml_backend_dev_host_buffer_type(gpu) : nullptr;
    if (host_buft == nullptr) {
        return 0.0;
    }
    ggml_init_params params = { 4 * ggml_tensor_overhead(), nullptr, /*.no_alloc =*/ true };
    ggml_context_ptr ctx { ggml_init(params) };
    ggml_tensor * host = nullptr;
    ggml_tensor * device = nullptr;
    ggml_backend_buffer_ptr host_buf = AllocBytes(ctx.get(), host_buft, bytes, &host);
    ggml_backend_buffer_ptr dev_buf = AllocBytes(ctx.get(), ggml_backend_dev_buffer_type(gpu), bytes, &device);
    if (!host_buf || !dev_buf) {
        return 0.0;
    }
    ggml_backend_tensor_alloc(host_buf.get(), host, ggml_backend_buffer_get_base(host_buf.get()));
    ggml_backend_tensor_alloc(dev_buf.get(), device, ggml_backend_buffer_get_base(dev_buf.get()));
    double best = 0.0;
    for (int rep = 0; rep < 5; ++rep) {  // the first touches the pages and warms the link: keep the best
        const auto t0 = std::chrono::steady_clock::now();
        ggml_backend_tensor_set(device, host->data, 0, (size_t) bytes);  // returns once the copy is done
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, bytes / s / 1e9);
    }
    return best;
}

Napi::Value MeasureLinkBandwidth(const Napi::CallbackInfo & info) {
    const int64_t bytes = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : (256ll << 20);
    if (bytes <= 0) {
        throw Napi::RangeError::New(info.Env(), "measureLinkBandwidth(bytes): bytes must be positive");
    }
    return Napi::Number::New(info.Env(), Measure(bytes));
}

}  // namespace

void InitLinkBandwidth(Napi::Env env, Napi::Object exports) {
    exports.Set("measureLinkBandwidth", Napi::Function::New(env, MeasureLinkBandwidth));
}
