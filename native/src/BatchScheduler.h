// BatchScheduler: continuous batching of many generations over one llama_context, on its own native thread.
// Each step it admits queued requests into free sequences, builds one llama_batch from every sequence's next
// tokens (prompt chunks for new requests, one token for decoding ones), decodes it, samples, and hands the step's
// events to a sink. Nothing here touches Node: AddonEngine bridges the sink to JavaScript.
#pragma once

#include "RoutingLog.h"
#include "TokenLogprobs.h"
#include "llama.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ExpertPager.h"

namespace moeflash { class HintWriter; }

struct GenerationRequest {
    uint64_t id = 0;
    uint8_t trace_id[16] = {};  // W3C trace id of the request, carried into the expert-store hints
    std::vector<llama_token> prompt;
    int32_t max_tokens = 256;
    std::vector<std::string> stops;
    std::vector<llama_token> stop_token_ids;  // sampling one ends the generation (STOP); it is not emitted
    bool ignore_eos = false;                  // end-of-generation tokens are emitted like any other
    int32_t top_logprobs = -1;                // -1: no log-probabilities; else the alternatives per token (0-20)
    llama_sampler * sampler = nullptr;  // owned: a sampler chain built for this request
    bool argmax_only = false;           // the chain is plain greedy: pick the top logit without building candidates
    std::atomic<bool> cancelled{false};
    int64_t t_submit_us = 0;

    ~GenerationRequest() {
        if (sampler != nullptr) {
            llama_sampler_free(sampler);
        }
    }
};

// One record for JavaScript: a chunk (tokens + text delta) or, when is_final, the generation's end.
struct GenerationEvent {
    uint64_t id = 0;
    bool is_final = false;
    std::vector<llama_token> tokens;
    std::vector<TokenLogprob> logprobs;  // one per token, when the request asked for them
    std::string text;
    // final only
    std::string finish_reason;  // stop | length | cancelled | error
    std::string matched_stop;
    std::string error;
    int32_t prompt_tokens = 0;
    int32_t completion_tokens = 0;
    double queue_ms = 0, prefill_ms = 0, ttft_ms = 0, decode_ms = 0;
    std::vector<uint16_t> experts_per_layer;  // distinct experts this request's tokens were routed to, per layer
    bool sampled_in_graph = false;            // its tokens were picked in the decode graph, not on the host
    // experts read on demand (ExpertPager), over the steps this request took part in
    bool paged = false;
    double paging_experts = 0, paging_page_cache_hits = 0, paging_bytes_read = 0;
    // expert cache activity of the steps this request took part in (a step shared by several requests counts for
    // each of them); empty when the cache is off
    std::vector<uint32_t> cache_hits, cache_misses;  // per layer
    double cache_bytes_copied = 0, cache_copy_ms = 0, cache_stall_ms = 0;
};

struct SchedulerStats {
    int32_t active = 0;
    int32_t queued = 0;
    int32_t parallel = 0;
    uint64_t total_requests = 0;
    uint64_t total_prompt_tokens = 0;
    uint64_t total_completion_tokens = 0;
    uint64_t steps = 0;
};

class BatchScheduler {
  public:
    using EventSink = std::function<void(std::vector<GenerationEvent> &&)>;

    // hints (optional): receives, after every step, the experts each MoE layer routed each sequence's tokens to
    //   (unless the pager publishes them during the step; the scheduler then only owns the writer)
    // routing_log (optional): every decoded token's routing, appended as JSON lines
    // pager (optional): the context's ExpertPager (experts read on demand); its counters are shared out to requests
    BatchScheduler(llama_context * ctx, const llama_model * model, int32_t n_batch, EventSink sink,
                   std::unique_ptr<moeflash::HintWriter> hints = nullptr,
                   std::unique_ptr<moeflash::RoutingLog> routing_log = nullptr,
                   const moeflash::ExpertPager * pager = nullptr);
    ~BatchScheduler();

    void submit(std::shared_ptr<GenerationRequest> request);
    // Marks a request cancelled; the scheduler ends it at its next step. False if the id is unknown (finished).
    bool cancel(uint64_t id);
    SchedulerStats stats() const;
    // Tokens routed to each expert since start, [layer * n_expert + expert]; empty for a dense model.
    std::vector<uint64_t> expert_use() const;
    int32_t n_expert() const { return n_expert_; }
    // Ends every request with an error, stops and joins the thread. Idempotent.
    void stop();

  private:
    struct Slot {
        std::shared_ptr<GenerationRequest> request;
        llama_seq_id seq = 0;
        bool prefilling = true;
        size_t n_prompt_done = 0;
        int32_t n_past = 0;
        int32_t i_batch = -1;        // index of this slot's logits in the current batch, -1 if none
        llama_token last_token = 0;
        int32_t n_generated = 0;
        std::vector<llama_token> new_tokens;  // sampled since the last chunk event
        std::vector<TokenLogprob> new_logprobs;
        std::string pending_text;             // bytes not yet emitted (incomplete UTF-8 or a possible stop prefix)
        int64_t t_admit_us = 0, t_prefill_done_us = 0, t_first_us = 0, t_last_us = 0;
        std::vector<uint64_t> expert_mask;    // [n_layer][words]: experts this request's tokens were routed to
        std::vector<uint32_t> cache_hits, cache_misses;  // per layer, see GenerationEvent
        double cache_bytes_copied = 0, cache_copy_ms = 0, cache_stall_ms = 0;
        double paging_experts = 0, paging_page_cache_hits = 0, paging_bytes_read = 0;
    };

    void run();
    static void publish_prediction(int32_t il, const int32_t * experts, int32_t n_experts, void * user_data);
    bool observe_routing();
    void observe_expert_cache();
    void publish_cache_use();
    void observe_paging();
    void use_device_sampling(const Slot & slot, bool want);
    // whether the slot's tokens are picked in the step's graph: its sequence has a greedy chain attached
    bool samples_in_graph(const Slot & slot) const { return device_greedy_[(size_t) slot.seq] != nullptr; }
    void admit_locked();
    void step();
    // step()'s phases, in order
    void finish_cancelled(std::vector<GenerationEvent> & events);
    int32_t build_batch(std::vector<GenerationEvent> & events);
    bool decode_batch(std::vector<GenerationEvent> & events);
    void sample_batch(std::vector<GenerationEvent> & events);
    void publish(std::vector<GenerationEvent> & events);
    void on_token(Slot & slot, llama_token token, TokenLogprob * logprob, std::vector<GenerationEvent> & events);
    void emit_chunk(Slot & slot, std::vector<GenerationEvent> & events, size_t text_len);
    void finish(Slot & slot, const char * reason, std::vector<GenerationEvent> & events,
                const std::string & error = "", const std::string & matched_stop = "");
    GenerationEvent final_event(const GenerationRequest & request, const Slot * slot, const char * reason,
                                const std::string & error) const;

    llama_context * ctx;
    const llama_model * model;
    const llama_vocab * vocab;
    const int32_t n_batch;
    const int32_t n_ctx_seq;
    EventSink sink;

    int32_t n_layer_ = 0;
    int32_t n_expert_ = 0;
    int32_t mask_words_ = 0;
    std::unique_ptr<moeflash::HintWriter> hints;
    std::unique_ptr<moeflash::RoutingLog> routing_log;
    std::unique_ptr<std::atomic<uint64_t>[]> expert_use_;  // [n_layer * n_expert], read by other threads
    // scratch reused every step (no allocation on the decode path)
    std::vector<int32_t> step_ids_;      // distinct ids of one (layer, sequence)
    std::vector<int32_t> slot_of_seq_;   // slot index of each sequence id, -1 if free
    std::vector<uint64_t> layer_mask_;   // experts one sequence used at one layer
    bool cache_on_ = false;
    // without recorded routing (a GPU build by default), every kCacheUseEvery steps the cache's slots say which
    // experts were used (llama_expert_cache_take_used: a small read-back per layer), for the expert-store's heat map
    static constexpr int32_t kCacheUseEvery = 16;
    int32_t cache_use_steps_ = 0;
    std::vector<int32_t> cache_use_ids_;
    const moeflash::ExpertPager * pager_ = nullptr;
    moeflash::ExpertPagerStats paging_prev_;
    std::vector<llama_expert_cache_stats> cache_prev_;  // per layer, counters after the previous step
    // per sequence: the greedy chain the context samples with in the graph while the sequence's requests are
    // argmax-only, null when none is attached; owned here (llama.cpp keeps only the pointer)
    std::vector<llama_sampler *> device_greedy_;
    bool graph_sampling_ = false;  // this process's backends may sample in the graph (GraphSamplingVerified)

    llama_batch batch;
    std::vector<Slot> slots;  // one per sequence id; only the scheduler thread touches them

    mutable std::mutex mu;
    std::condition_variable cv;
    std::deque<std::shared_ptr<GenerationRequest>> pending;
    std::unordered_map<uint64_t, std::shared_ptr<GenerationRequest>> live;  // pending + active, for cancel()
    bool stopping = false;

    std::atomic<int32_t> n_active{0};
    std::atomic<uint64_t> total_requests{0}, total_prompt_tokens{0}, total_completion_tokens{0}, n_steps{0};

    std::thread thread;
};
