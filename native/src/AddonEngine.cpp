// AddonEngine: a llama_context on a loaded AddonModel plus the BatchScheduler that drives it. JavaScript submits
// requests and receives each step's events through one ThreadSafeFunction; nothing here blocks the event loop.
#include "AddonModel.h"
#include "BatchScheduler.h"
#include "ExpertCacheSetup.h"
#include "ExpertPager.h"
#include "ModelMeta.h"
#include "HintChannel.h"
#include "addon.h"

#include "ggml.h"
#include "ggml-cpu.h"

#include <cmath>
#include <cstdlib>
#include <memory>

namespace {

class AddonEngine : public Napi::ObjectWrap<AddonEngine> {
  public:
    static Napi::Function Init(Napi::Env env) {
        return DefineClass(env, "AddonEngine",
                           {
                               InstanceMethod("start", &AddonEngine::Start),
                               InstanceMethod("submit", &AddonEngine::Submit),
                               InstanceMethod("cancel", &AddonEngine::Cancel),
                               InstanceMethod("stats", &AddonEngine::Stats),
                               InstanceMethod("expertUse", &AddonEngine::ExpertUse),
                               InstanceMethod("expertCacheStats", &AddonEngine::ExpertCacheStats),
                               InstanceMethod("expertPagingStats", &AddonEngine::ExpertPagingStats),
                               InstanceMethod("close", &AddonEngine::Close),
                           });
    }

    // new AddonEngine(model: AddonModel, onEvents: (events) => void)
    explicit AddonEngine(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonEngine>(info) {
        Napi::Env env = info.Env();
        Napi::Object model_obj = info[0].As<Napi::Object>();
        model = Napi::ObjectWrap<AddonModel>::Unwrap(model_obj);
        if (model->model == nullptr) {
            throw Napi::Error::New(env, "model not loaded");
        }
        model_ref = Napi::Persistent(model_obj);  // the model must outlive its context
        events_fn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "moeflash-engine-events", 0, 1);
        events_fn.Unref(env);
    }

    ~AddonEngine() override {
        Shutdown();
        ReleaseEvents();
    }

    llama_context * ctx = nullptr;
    ggml_threadpool * threadpool = nullptr;  // persistent CPU workers: without one, ggml spawns threads per graph
    moeflash::ExpertCacheSetup cache;        // slots 0: the expert cache is off
    std::unique_ptr<BatchScheduler> scheduler;
    std::unique_ptr<moeflash::ExpertPager> pager;  // the context's eval callback when experts are read on demand
    Napi::ThreadSafeFunction events_fn;
    bool released = false;
    int32_t n_batch = 512;

    void StartScheduler(std::unique_ptr<moeflash::HintWriter> hints, std::unique_ptr<moeflash::RoutingLog> routing_log) {
        Napi::ThreadSafeFunction fn = events_fn;
        scheduler = std::make_unique<BatchScheduler>(ctx, model->model, n_batch, [fn](std::vector<GenerationEvent> && events) {
            auto * data = new std::vector<GenerationEvent>(std::move(events));
            if (fn.NonBlockingCall(data, DeliverEvents) != napi_ok) {
                delete data;  // the engine is being torn down: nobody is listening any more
            }
        }, std::move(hints), std::move(routing_log), pager.get());
    }

    void Shutdown() {
        if (scheduler) {
            scheduler->stop();
            scheduler.reset();
        }
        if (ctx != nullptr) {
            llama_free(ctx);
            ctx = nullptr;
        }
        cache = {};
        pager.reset();  // after the context: it was its eval callback
        if (threadpool != nullptr) {
            ggml_threadpool_free(threadpool);
            threadpool = nullptr;
        }
    }

    void ReleaseEvents() {
        if (!released) {
            released = true;
            events_fn.Release();
        }
    }

  private:
    // [{ token, logprob, top: [{ token, logprob }] }], one per token of the chunk
    static Napi::Array LogprobsToJs(Napi::Env env, const std::vector<TokenLogprob> & logprobs) {
        Napi::Array out = Napi::Array::New(env, logprobs.size());
        for (size_t i = 0; i < logprobs.size(); i++) {
            Napi::Object lp = Napi::Object::New(env);
            lp.Set("token", logprobs[i].token);
            lp.Set("logprob", logprobs[i].logprob);
            Napi::Array top = Napi::Array::New(env, logprobs[i].top.size());
            for (size_t k = 0; k < logprobs[i].top.size(); k++) {
                Napi::Object alt = Napi::Object::New(env);
                alt.Set("token", logprobs[i].top[k].first);
                alt.Set("logprob", logprobs[i].top[k].second);
                top.Set(k, alt);
            }
            lp.Set("top", top);
            out.Set(i, lp);
        }
        return out;
    }

    static void DeliverEvents(Napi::Env env, Napi::Function callback, std::vector<GenerationEvent> * data) {
        std::unique_ptr<std::vector<GenerationEvent>> events(data);
        if (env == nullptr) {
            return;
        }
        Napi::Array out = Napi::Array::New(env, events->size());
        for (size_t i = 0; i < events->size(); i++) {
            const auto & e = (*events)[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("id", (double) e.id);
            o.Set("final", e.is_final);
            Napi::Int32Array tokens = Napi::Int32Array::New(env, e.tokens.size());
            std::copy(e.tokens.begin(), e.tokens.end(), tokens.Data());
            o.Set("tokens", tokens);
            if (!e.logprobs.empty()) {
                o.Set("logprobs", LogprobsToJs(env, e.logprobs));
            }
            o.Set("text", Napi::String::New(env, e.text));
            if (e.is_final) {
                o.Set("finishReason", e.finish_reason);
                o.Set("matchedStop", e.matched_stop);
                o.Set("error", e.error);
                o.Set("promptTokens", e.prompt_tokens);
                o.Set("completionTokens", e.completion_tokens);
                o.Set("queueMs", e.queue_ms);
                o.Set("prefillMs", e.prefill_ms);
                o.Set("ttftMs", e.ttft_ms);
                o.Set("decodeMs", e.decode_ms);
                o.Set("sampledInGraph", e.sampled_in_graph);
                Napi::Uint16Array experts = Napi::Uint16Array::New(env, e.experts_per_layer.size());
                std::copy(e.experts_per_layer.begin(), e.experts_per_layer.end(), experts.Data());
                o.Set("expertsPerLayer", experts);
                if (!e.cache_hits.empty()) {
                    Napi::Object c = Napi::Object::New(env);
                    Napi::Uint32Array hits = Napi::Uint32Array::New(env, e.cache_hits.size());
                    std::copy(e.cache_hits.begin(), e.cache_hits.end(), hits.Data());
                    Napi::Uint32Array misses = Napi::Uint32Array::New(env, e.cache_misses.size());
                    std::copy(e.cache_misses.begin(), e.cache_misses.end(), misses.Data());
                    c.Set("hits", hits);
                    c.Set("misses", misses);
                    c.Set("bytesCopied", e.cache_bytes_copied);
                    c.Set("copyMs", e.cache_copy_ms);
                    c.Set("stallMs", e.cache_stall_ms);
                    o.Set("expertCache", c);
                }
                if (e.paged) {
                    Napi::Object p = Napi::Object::New(env);
                    p.Set("experts", e.paging_experts);
                    p.Set("pageCacheHits", e.paging_page_cache_hits);
                    p.Set("bytesRead", e.paging_bytes_read);
                    o.Set("expertPaging", p);
                }
            }
            out.Set(i, o);
        }
        callback.Call({out});
    }

    // start({ nCtxPerSeq, nSeq, nBatch, nUbatch, nThreads, warmup }) -> Promise<{ contextSize, parallel }>
    Napi::Value Start(const Napi::CallbackInfo & info);

    // submit(id, promptTokens: Int32Array, { maxTokens, stops, stopTokenIds: Int32Array, ignoreEos, topLogprobs
    //        (-1: none), temperature, topK, topP, minP, repeatPenalty, presencePenalty, frequencyPenalty, seed,
    //        grammar }) -> void; throws on an invalid grammar
    Napi::Value Submit(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!scheduler) {
            throw Napi::Error::New(env, "engine is not running");
        }
        auto request = std::make_shared<GenerationRequest>();
        request->id = (uint64_t) info[0].As<Napi::Number>().Int64Value();
        Napi::Int32Array prompt = info[1].As<Napi::Int32Array>();
        request->prompt.assign(prompt.Data(), prompt.Data() + prompt.ElementLength());
        Napi::Object p = info[2].As<Napi::Object>();
        request->max_tokens = p.Get("maxTokens").As<Napi::Number>().Int32Value();
        Napi::Array stops = p.Get("stops").As<Napi::Array>();
        for (uint32_t i = 0; i < stops.Length(); i++) {
            request->stops.push_back(stops.Get(i).As<Napi::String>().Utf8Value());
        }
        Napi::Int32Array stop_ids = p.Get("stopTokenIds").As<Napi::Int32Array>();
        request->stop_token_ids.assign(stop_ids.Data(), stop_ids.Data() + stop_ids.ElementLength());
        request->ignore_eos = p.Get("ignoreEos").As<Napi::Boolean>().Value();
        request->top_logprobs = p.Get("topLogprobs").As<Napi::Number>().Int32Value();
        request->sampler = BuildSampler(env, p, &request->argmax_only);
        Napi::Value trace = p.Get("traceId");
        if (trace.IsString()) {
            const std::string hex = trace.As<Napi::String>().Utf8Value();
            for (size_t i = 0; i + 1 < hex.size() && i / 2 < sizeof(request->trace_id); i += 2) {
                request->trace_id[i / 2] = (uint8_t) std::strtoul(hex.substr(i, 2).c_str(), nullptr, 16);
            }
        }
        request->t_submit_us = ggml_time_us();
        scheduler->submit(std::move(request));
        return env.Undefined();
    }

    llama_sampler * BuildSampler(Napi::Env env, Napi::Object p, bool * argmax_only) {
        auto num = [&](const char * key) { return p.Get(key).As<Napi::Number>().DoubleValue(); };
        const float temperature = (float) num("temperature");
        const float repeat_penalty = (float) num("repeatPenalty");
        const float presence_penalty = (float) num("presencePenalty");
        const float frequency_penalty = (float) num("frequencyPenalty");

        llama_sampler * chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
        if (repeat_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f) {
            llama_sampler_chain_add(chain, llama_sampler_init_penalties(llama_vocab_n_tokens(model->vocab), 64, repeat_penalty, frequency_penalty, presence_penalty));
        }
        Napi::Value grammar = p.Get("grammar");
        if (grammar.IsString() && !grammar.As<Napi::String>().Utf8Value().empty()) {
            TakeLlamaErrors();
            llama_sampler * g = llama_sampler_init_grammar(model->vocab, grammar.As<Napi::String>().Utf8Value().c_str(), "root");
            if (g == nullptr) {
                llama_sampler_free(chain);
                std::string why = TakeLlamaErrors();
                throw Napi::Error::New(env, "grammar: invalid GBNF grammar" + (why.empty() ? "" : ": " + why));
            }
            llama_sampler_chain_add(chain, g);
        }
        if (temperature <= 0.0f) {
            *argmax_only = llama_sampler_chain_n(chain) == 0;  // no penalties, no grammar
            llama_sampler_chain_add(chain, llama_sampler_init_greedy());
            return chain;
        }
        const int32_t top_k = (int32_t) num("topK");
        if (top_k > 0) {
            llama_sampler_chain_add(chain, llama_sampler_init_top_k(top_k));
        }
        llama_sampler_chain_add(chain, llama_sampler_init_top_p((float) num("topP"), 1));
        llama_sampler_chain_add(chain, llama_sampler_init_min_p((float) num("minP"), 1));
        llama_sampler_chain_add(chain, llama_sampler_init_temp(temperature));
        llama_sampler_chain_add(chain, llama_sampler_init_dist((uint32_t) num("seed")));
        return chain;
    }

    // expertUse() -> { nExpert, counts: Float64Array [layer * nExpert + expert] }: tokens routed since start
    Napi::Value ExpertUse(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        Napi::Object o = Napi::Object::New(env);
        std::vector<uint64_t> use = scheduler ? scheduler->expert_use() : std::vector<uint64_t>();
        Napi::Float64Array counts = Napi::Float64Array::New(env, use.size());
        std::copy(use.begin(), use.end(), counts.Data());
        o.Set("nExpert", scheduler ? scheduler->n_expert() : 0);
        o.Set("counts", counts);
        return o;
    }

    // expertCacheStats() -> null | { slots, slotBytes, sizedBy, total, layers: [] } with counters since start
    Napi::Value ExpertCacheStats(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        llama_expert_cache_stats total;
        if (ctx == nullptr || cache.slots == 0 || !llama_expert_cache_get_stats(ctx, -1, &total)) {
            return env.Null();
        }
        auto to_js = [&](const llama_expert_cache_stats & s) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("hits", (double) s.hits);
            o.Set("misses", (double) s.misses);
            o.Set("evictions", (double) s.evictions);
            o.Set("bytesCopied", (double) s.bytes_copied);
            o.Set("steps", (double) s.steps);
            o.Set("bypassed", (double) s.bypassed);
            o.Set("copyMs", s.copy_ms);
            o.Set("stallMs", s.stall_ms);
            o.Set("predicted", (double) s.predicted);
            o.Set("predictedUsed", (double) s.predicted_used);
            o.Set("prefetched", (double) s.prefetched);
            o.Set("prefetchedUsed", (double) s.prefetched_used);
            o.Set("bytesPrefetched", (double) s.bytes_prefetched);
            o.Set("prefetchDeferred", (double) s.prefetch_deferred);
            o.Set("bytesStaged", (double) s.bytes_staged);
            o.Set("bytesStagedOnDevice", (double) s.bytes_staged_on_device);
            return o;
        };
        Napi::Object o = Napi::Object::New(env);
        o.Set("slots", cache.slots);
        o.Set("slotBytes", (double) cache.slot_bytes);
        o.Set("sizedBy", cache.sized_by);
        o.Set("total", to_js(total));
        Napi::Array layers = Napi::Array::New(env);
        const int32_t n_layer = llama_model_n_layer(model->model);
        for (int32_t il = 0; il < n_layer; il++) {
            llama_expert_cache_stats s;
            if (llama_expert_cache_get_stats(ctx, il, &s)) {
                Napi::Object l = to_js(s);
                l.Set("layer", il);
                layers.Set(layers.Length(), l);
            }
        }
        o.Set("layers", layers);
        return o;
    }

    // expertPagingStats() -> null | counters since start (experts read on demand: ExpertPager.h)
    Napi::Value ExpertPagingStats(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!pager) {
            return env.Null();
        }
        const moeflash::ExpertPagerStats s = pager->stats();
        Napi::Object o = Napi::Object::New(env);
        o.Set("layerSteps", (double) s.layer_steps);
        o.Set("experts", (double) s.experts);
        o.Set("pageCacheHits", (double) s.page_cache_hits);
        o.Set("bytesRouted", (double) s.bytes_routed);
        o.Set("bytesMissing", (double) s.bytes_missing);
        o.Set("predicted", (double) s.predicted);
        o.Set("predictedUsed", (double) s.predicted_used);
        o.Set("predictedRead", (double) s.predicted_read);
        o.Set("bytesReadAhead", (double) s.bytes_read_ahead);
        o.Set("bytesReadAheadUsed", (double) s.bytes_read_ahead_used);
        o.Set("pagingMs", s.paging_ms);
        o.Set("ramResidentBytes", (double) s.ram_resident_bytes);
        o.Set("hintsInStep", pager->publishes_hints());
        return o;
    }

    Napi::Value Cancel(const Napi::CallbackInfo & info) {
        const bool known = scheduler && scheduler->cancel((uint64_t) info[0].As<Napi::Number>().Int64Value());
        return Napi::Boolean::New(info.Env(), known);
    }

    Napi::Value Stats(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        SchedulerStats s = scheduler ? scheduler->stats() : SchedulerStats{};
        Napi::Object o = Napi::Object::New(env);
        o.Set("activeSequences", s.active);
        o.Set("queuedRequests", s.queued);
        o.Set("parallel", s.parallel);
        o.Set("totalRequests", (double) s.total_requests);
        o.Set("totalPromptTokens", (double) s.total_prompt_tokens);
        o.Set("totalCompletionTokens", (double) s.total_completion_tokens);
        o.Set("steps", (double) s.steps);
        return o;
    }

    // close() -> Promise<void>: ends every request ("engine closed"), joins the thread, frees the context.
    Napi::Value Close(const Napi::CallbackInfo & info);

    AddonModel * model = nullptr;
    Napi::ObjectReference model_ref;

    friend class StartWorker;
    friend class CloseWorker;
};

class StartWorker : public Napi::AsyncWorker {
  public:
    StartWorker(Napi::Env env, AddonEngine * engine, Napi::Object engine_obj, llama_context_params params, bool warmup,
                bool record_routing, std::string hint_channel, std::string routing_log_path,
                moeflash::ExpertCacheRequest cache_request, uint64_t expert_ram_bytes)
        : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), engine(engine), params(params), warmup(warmup),
          record_routing(record_routing), hint_channel(std::move(hint_channel)),
          routing_log_path(std::move(routing_log_path)), cache_request(std::move(cache_request)),
          expert_ram_bytes(expert_ram_bytes) {
        engine_ref = Napi::Persistent(engine_obj);
    }
    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute() override {
        TakeLlamaErrors();
        if (engine->model->lazy_experts) {
            const llama_model * m = engine->model->model;
            // reading the predictions ahead is the expert-store's job when it is attached (hint channel)
            pager = std::make_unique<moeflash::ExpertPager>(llama_model_n_layer(m), (int32_t) moeflash::ArchMetaInt(m, "expert_count"),
                                                            /*read_predicted=*/hint_channel.empty(), expert_ram_bytes);
            params.cb_eval = moeflash::ExpertPager::Eval;
            params.cb_eval_user_data = pager.get();
        }
        ctx = llama_init_from_model(engine->model->model, params);
        if (ctx == nullptr) {
            std::string why = TakeLlamaErrors();
            SetError("cannot create the llama context" + (why.empty() ? "" : ": " + why));
            return;
        }
        ggml_threadpool_params tpp = ggml_threadpool_params_default(params.n_threads);
        if (pager) {
            // a step stops after every MoE layer's router and then waits on reads: workers that spin between the
            // pieces of the graph take the cores the kernel needs for those reads (bench:prefetch:limited decodes
            // 1.3-1.6x faster with them sleeping)
            tpp.poll = 0;
        }
        threadpool = ggml_threadpool_new(&tpp);
        if (threadpool == nullptr) {
            llama_free(ctx);
            ctx = nullptr;
            SetError("cannot create a CPU threadpool of " + std::to_string(params.n_threads) + " threads");
            return;
        }
        llama_attach_threadpool(ctx, threadpool, threadpool);
        if (cache_request.enabled) {
            // sized after the context exists, so free device memory already excludes the KV cache
            try {
                cache = moeflash::EnableExpertCache(ctx, engine->model->model, cache_request);
            } catch (const std::exception & e) {
                FailStart(e.what());
                return;
            }
            if (pager) {
                // the layers run on slots: the pager reads what the cache misses, before it copies
                pager->serve_expert_cache();
                llama_expert_cache_set_host_read_callback(ctx, moeflash::ExpertPager::HostRead, pager.get());
            }
        }
        // routing is recorded before the first graph is built (it changes the graph's outputs)
        llama_set_moe_routing_record(ctx, record_routing);
        if (!hint_channel.empty()) {
            try {
                moeflash::HintWriterOptions options;
                options.n_layer = (uint32_t) llama_model_n_layer(engine->model->model);
                options.model = engine->model->path.substr(engine->model->path.find_last_of('/') + 1);
                // experts in the engine's own memory: an expert-store reading them into the page cache would waste the disk
                options.heat_only = pager != nullptr && pager->ram_active();
                hints = std::make_unique<moeflash::HintWriter>(hint_channel, options);
                if (pager) {
                    pager->set_hints(hints.get());  // owned by the scheduler from OnOK, which outlives every decode
                }
                // Publishing: the scheduler after each step (recorded routing), the pager during the step, and a
                // cache with fewer slots than experts (its predictions with prefetch on, and without recorded routing
                // its slots' uses every few steps). With none of them the expert-store would wait for hints forever
                // (a GPU build without the cache, or with a slot for every expert), so say so where the operator looks.
                const bool slots_record_use = cache.slots > 0 && !cache.all_resident;
                if (!record_routing && !(pager && pager->publishes_hints()) && !slots_record_use) {
                    hint_error = "nothing is published on it: routing is not recorded (recordRouting / "
                                 "MOEFLASH_RECORD_ROUTING, off by default on GPU backends) and no expert cache with fewer "
                                 "slots than experts records their use";
                }
            } catch (const std::exception & e) {
                // hints only speed up the expert-store: the engine serves without them (another engine process on
                // the same model holds the channel, /dev/shm is full, ...) and says why
                hint_error = e.what();
            }
        }
        if (!routing_log_path.empty()) {
            try {
                routing_log = std::make_unique<moeflash::RoutingLog>(routing_log_path);
            } catch (const std::exception & e) {
                FailStart(e.what());
                return;
            }
        }
        if (warmup) {
            // one decode so first-request latency does not include lazy allocations and first-touch page faults
            const llama_vocab * vocab = engine->model->vocab;
            llama_token tok = llama_vocab_bos(vocab) != LLAMA_TOKEN_NULL ? llama_vocab_bos(vocab) : 0;
            llama_decode(ctx, llama_batch_get_one(&tok, 1));
            llama_memory_clear(llama_get_memory(ctx), true);
            llama_synchronize(ctx);
        }
    }
    void OnOK() override {
        engine->ctx = ctx;
        engine->threadpool = threadpool;
        engine->n_batch = (int32_t) params.n_batch;
        engine->cache = std::move(cache);
        engine->pager = std::move(pager);
        engine->StartScheduler(std::move(hints), std::move(routing_log));
        Napi::Object out = Napi::Object::New(Env());
        if (engine->cache.slots > 0) {
            Napi::Object c = Napi::Object::New(Env());
            c.Set("slots", engine->cache.slots);
            c.Set("slotBytes", (double) engine->cache.slot_bytes);
            c.Set("sizedBy", engine->cache.sized_by);
            c.Set("stagingBytes", (double) engine->cache.staging_bytes);
            c.Set("allResident", engine->cache.all_resident);
            c.Set("prefetch", engine->cache.prefetch);
            c.Set("path", engine->cache.path);
            out.Set("expertCache", c);
        }
        if (!hint_error.empty()) {
            out.Set("hintChannelError", hint_error);
        }
        if (expert_ram_bytes > 0) {
            out.Set("expertRam", engine->pager != nullptr && engine->pager->ram_active());
        }
        out.Set("contextSize", (double) llama_n_ctx_seq(ctx));
        out.Set("parallel", (double) llama_n_seq_max(ctx));
        deferred.Resolve(out);
    }
    void OnError(const Napi::Error & e) override { deferred.Reject(e.Value()); }

  private:
    // a step after the context exists failed: free what was made so far and reject with why
    void FailStart(const std::string & why) {
        llama_free(ctx);
        ctx = nullptr;
        ggml_threadpool_free(threadpool);
        threadpool = nullptr;
        SetError(why);
    }

    Napi::Promise::Deferred deferred;
    AddonEngine * engine;
    Napi::ObjectReference engine_ref;
    llama_context_params params;
    bool warmup;
    bool record_routing;
    std::string hint_channel;
    std::string routing_log_path;
    moeflash::ExpertCacheRequest cache_request;
    uint64_t expert_ram_bytes;
    moeflash::ExpertCacheSetup cache;
    std::unique_ptr<moeflash::HintWriter> hints;
    std::unique_ptr<moeflash::RoutingLog> routing_log;
    std::unique_ptr<moeflash::ExpertPager> pager;
    std::string hint_error;
    llama_context * ctx = nullptr;
    ggml_threadpool * threadpool = nullptr;
};

class CloseWorker : public Napi::AsyncWorker {
  public:
    CloseWorker(Napi::Env env, AddonEngine * engine, Napi::Object engine_obj)
        : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), engine(engine) {
        engine_ref = Napi::Persistent(engine_obj);
    }
    Napi::Promise Promise() { return deferred.Promise(); }
    void Execute() override { engine->Shutdown(); }
    void OnOK() override {
        engine->ReleaseEvents();
        deferred.Resolve(Env().Undefined());
    }

  private:
    Napi::Promise::Deferred deferred;
    AddonEngine * engine;
    Napi::ObjectReference engine_ref;
};

// expertCache: undefined | { slots?, memBytes?, policy?: 'lru' | 'lru2' | 'slru', prefetch?: boolean, resolve?: 'device' | 'host', syntheticRouting?: { seed, reusePrevious,
// reuseWindow } } (validated in TypeScript)
moeflash::ExpertCacheRequest ExpertCacheRequestFrom(Napi::Value v) {
    moeflash::ExpertCacheRequest r;
    if (!v.IsObject()) {
        return r;
    }
    Napi::Object o = v.As<Napi::Object>();
    r.enabled = true;
    if (o.Get("slots").IsNumber()) {
        r.slots = o.Get("slots").As<Napi::Number>().Int32Value();
    }
    if (o.Get("memBytes").IsNumber()) {
        r.mem_bytes = (uint64_t) o.Get("memBytes").As<Napi::Number>().DoubleValue();
    }
    if (o.Get("policy").IsString()) {
        // validated in TypeScript (validateOptions): lru2 is the default
        const std::string policy = o.Get("policy").As<Napi::String>().Utf8Value();
        if (policy == "lru") {
            r.policy = LLAMA_EXPERT_CACHE_POLICY_LRU;
        } else if (policy == "slru") {
            r.policy = LLAMA_EXPERT_CACHE_POLICY_SLRU;
        }
    }
    r.prefetch = o.Get("prefetch").ToBoolean().Value();
    if (o.Get("resolve").IsString()) {
        r.device_resolve = o.Get("resolve").As<Napi::String>().Utf8Value() != "host";
    }
    Napi::Value replay = o.Get("routeReplay");
    if (replay.IsObject()) {
        // { ids: Int32Array [tokens][layers][used], layers, used }, read and checked against the model in TypeScript
        Napi::Object ro = replay.As<Napi::Object>();
        Napi::Int32Array ids = ro.Get("ids").As<Napi::Int32Array>();
        r.replay.assign(ids.Data(), ids.Data() + ids.ElementLength());
        r.replay_layers = ro.Get("layers").As<Napi::Number>().Int32Value();
        r.replay_used = ro.Get("used").As<Napi::Number>().Int32Value();
    }
    Napi::Value synthetic = o.Get("syntheticRouting");
    if (synthetic.IsObject()) {
        Napi::Object so = synthetic.As<Napi::Object>();
        r.synthetic_routing = true;
        if (so.Get("seed").IsNumber()) r.synthetic.seed = so.Get("seed").As<Napi::Number>().Uint32Value();
        if (so.Get("reusePrevious").IsNumber()) r.synthetic.reuse_previous = so.Get("reusePrevious").As<Napi::Number>().DoubleValue();
        if (so.Get("reuseWindow").IsNumber()) r.synthetic.reuse_window = so.Get("reuseWindow").As<Napi::Number>().DoubleValue();
    }
    return r;
}

Napi::Value AddonEngine::Start(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (ctx != nullptr) {
        throw Napi::Error::New(env, "engine already started");
    }
    Napi::Object o = info[0].As<Napi::Object>();
    auto u32 = [&](const char * key) { return o.Get(key).As<Napi::Number>().Uint32Value(); };
    llama_context_params params = llama_context_default_params();
    const uint32_t n_seq = u32("nSeq");
    params.n_ctx = u32("nCtxPerSeq") * n_seq;
    params.n_seq_max = n_seq;
    params.n_batch = u32("nBatch");
    params.n_ubatch = std::min<uint32_t>(params.n_batch, u32("nUbatch"));
    params.n_threads = (int32_t) u32("nThreads");
    params.n_threads_batch = (int32_t) u32("nThreads");
    params.kv_unified = false;  // each sequence gets its own KV stream of nCtxPerSeq cells
    params.no_perf = true;
    Napi::Value channel = o.Get("hintChannel");
    auto * worker = new StartWorker(env, this, Value(), params, o.Get("warmup").ToBoolean().Value(),
                                    o.Get("recordRouting").ToBoolean().Value(),
                                    channel.IsString() ? channel.As<Napi::String>().Utf8Value() : std::string(),
                                    o.Get("routingLog").IsString() ? o.Get("routingLog").As<Napi::String>().Utf8Value() : std::string(),
                                    ExpertCacheRequestFrom(o.Get("expertCache")),
                                    o.Get("expertRamBytes").IsNumber() ? (uint64_t) o.Get("expertRamBytes").As<Napi::Number>().DoubleValue() : 0);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
}

Napi::Value AddonEngine::Close(const Napi::CallbackInfo & info) {
    auto * worker = new CloseWorker(info.Env(), this, Value());
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
}

// ref()/unref(): JS holds the event loop open while any generation is in flight.
Napi::Value RefEvents(const Napi::CallbackInfo & info) {
    auto * engine = Napi::ObjectWrap<AddonEngine>::Unwrap(info[0].As<Napi::Object>());
    if (!engine->released) {
        if (info[1].ToBoolean().Value()) {
            engine->events_fn.Ref(info.Env());
        } else {
            engine->events_fn.Unref(info.Env());
        }
    }
    return info.Env().Undefined();
}

}  // namespace

void InitAddonEngine(Napi::Env env, Napi::Object exports) {
    exports.Set("AddonEngine", AddonEngine::Init(env));
    exports.Set("refEngineEvents", Napi::Function::New(env, RefEvents));
}
