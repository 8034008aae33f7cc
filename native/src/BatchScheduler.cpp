#include "BatchScheduler.h"

#include "Argmax.h"
#include "ModelMeta.h"

#include "HintChannel.h"
#include "TokenPiece.h"

#include "ggml.h"
#include "ggml-backend.h"

#include <algorithm>
#include <cstdlib>

namespace {

// Length of the longest prefix of `s` that does not end inside a multi-byte UTF-8 sequence.
size_t CompleteUtf8Prefix(const std::string & s) {
    const size_t n = s.size();
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        const unsigned char c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80) {
            continue;  // continuation byte: keep looking for the lead byte
        }
        const size_t need = (c & 0x80) == 0x00 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return need > back ? n - back : n;
    }
    return n;
}

// Bytes at the end of `text` that could still grow into one of `stops`: they are held back until they can't.
size_t StopPrefixHold(const std::string & text, const std::vector<std::string> & stops) {
    size_t hold = 0;
    for (const auto & stop : stops) {
        for (size_t k = std::min(stop.size() - 1, text.size()); k > hold; k--) {
            if (text.compare(text.size() - k, k, stop, 0, k) == 0) {
                hold = k;
                break;
            }
        }
    }
    return hold;
}

// Whether the graph may sample: not where the Vulkan backend can hold the logits. Its argmax graph crashed lavapipe
// (Mesa 22.3, the Vulkan device CI has) in the driver's worker thread, as stock llama.cpp does there on other
// graphs (docs/EXPERT_CACHE.md), and it has not run on a Vulkan GPU yet.
bool GraphSamplingVerified() {
    ggml_backend_reg_t vulkan = ggml_backend_reg_by_name("Vulkan");
    return vulkan == nullptr || ggml_backend_reg_dev_count(vulkan) == 0;
}

double Ms(int64_t from_us, int64_t to_us) {
    return from_us > 0 && to_us >= from_us ? (to_us - from_us) / 1000.0 : 0.0;
}

}  // namespace

BatchScheduler::BatchScheduler(llama_context * ctx, const llama_model * model, int32_t n_batch, EventSink sink,
                               std::unique_ptr<moeflash::HintWriter> hints, std::unique_ptr<moeflash::RoutingLog> routing_log,
                               const moeflash::ExpertPager * pager)
    : ctx(ctx), model(model), vocab(llama_model_get_vocab(model)), n_batch(n_batch),
      n_ctx_seq((int32_t) llama_n_ctx_seq(ctx)), sink(std::move(sink)), hints(std::move(hints)),
      routing_log(std::move(routing_log)), pager_(pager) {
    n_expert_ = (int32_t) moeflash::ArchMetaInt(model, "expert_count");
    n_layer_ = llama_model_n_layer(model);
    mask_words_ = (n_expert_ + 63) / 64;
    if (n_expert_ > 0) {
        expert_use_.reset(new std::atomic<uint64_t>[(size_t) n_layer_ * n_expert_]());
    }
    llama_expert_cache_stats total;
    cache_on_ = llama_expert_cache_get_stats(ctx, -1, &total);
    if (cache_on_) {
        cache_prev_.assign((size_t) n_layer_, {});
        for (int32_t il = 0; il < n_layer_; il++) {
            llama_expert_cache_get_stats(ctx, il, &cache_prev_[il]);  // warm-up activity belongs to no request
        }
        if (this->hints) {
            llama_expert_cache_set_predict_callback(ctx, publish_prediction, this);
        }
    }
    const int32_t n_seq = (int32_t) llama_n_seq_max(ctx);
    batch = llama_batch_init(n_batch, 0, 1);
    slots.resize(n_seq);
    for (int32_t i = 0; i < n_seq; i++) {
        slots[i].seq = i;
    }
    device_greedy_.assign(n_seq, nullptr);
    graph_sampling_ = GraphSamplingVerified();
    thread = std::thread([this] { run(); });
}

BatchScheduler::~BatchScheduler() {
    stop();
    if (cache_on_ && hints) {
        llama_expert_cache_set_predict_callback(ctx, nullptr, nullptr);
    }
    for (size_t seq = 0; seq < device_greedy_.size(); seq++) {
        if (device_greedy_[seq] != nullptr) {
            llama_set_sampler(ctx, (llama_seq_id) seq, nullptr);
            llama_sampler_free(device_greedy_[seq]);
        }
    }
    llama_batch_free(batch);
}

void BatchScheduler::submit(std::shared_ptr<GenerationRequest> request) {
    {
        std::lock_guard<std::mutex> lock(mu);
        live[request->id] = request;
        pending.push_back(std::move(request));
    }
    cv.notify_one();
}

bool BatchScheduler::cancel(uint64_t id) {
    {
        std::lock_guard<std::mutex> lock(mu);
        auto it = live.find(id);
        if (it == live.end()) {
            return false;
        }
        it->second->cancelled = true;
    }
    cv.notify_one();
    return true;
}

std::vector<uint64_t> BatchScheduler::expert_use() const {
    std::vector<uint64_t> out((size_t) n_layer_ * n_expert_);
    for (size_t i = 0; i < out.size(); i++) {
        out[i] = expert_use_[i].load(std::memory_order_relaxed);
    }
    return out;
}

// After a decode: the expert cache's activity in this step, added to every request that took part in it.
void BatchScheduler::observe_expert_cache() {
    if (!cache_on_) {
        return;
    }
    for (int32_t il = 0; il < n_layer_; il++) {
        llama_expert_cache_stats now;
        if (!llama_expert_cache_get_stats(ctx, il, &now)) {
            continue;
        }
        llama_expert_cache_stats & prev = cache_prev_[il];
        const uint32_t hits = (uint32_t) (now.hits - prev.hits);
        const uint32_t misses = (uint32_t) (now.misses - prev.misses);
        const double bytes = (double) (now.bytes_copied - prev.bytes_copied);
        const double copy_ms = now.copy_ms - prev.copy_ms;
        const double stall_ms = now.stall_ms - prev.stall_ms;
        prev = now;
        for (auto & slot : slots) {
            if (!slot.request || (slot.i_batch < 0 && !slot.prefilling)) {
                continue;
            }
            slot.cache_hits[il] += hits;
            slot.cache_misses[il] += misses;
            slot.cache_bytes_copied += bytes;
            slot.cache_copy_ms += copy_ms;
            slot.cache_stall_ms += stall_ms;
        }
    }
}

// After a decode: what the pager found in the page cache and read from disk in this step, added to every request
// that took part in it.
void BatchScheduler::observe_paging() {
    if (pager_ == nullptr) {
        return;
    }
    const moeflash::ExpertPagerStats now = pager_->stats();
    const double experts = (double) (now.experts - paging_prev_.experts);
    const double hits = (double) (now.page_cache_hits - paging_prev_.page_cache_hits);
    const double bytes = (double) (now.bytes_missing - paging_prev_.bytes_missing);
    paging_prev_ = now;
    for (auto & slot : slots) {
        if (!slot.request || (slot.i_batch < 0 && !slot.prefilling)) {
            continue;
        }
        slot.paging_experts += experts;
        slot.paging_page_cache_hits += hits;
        slot.paging_bytes_read += bytes;
    }
}

// After a decode: count every token's experts, mark them on its request, and publish each (layer, sequence)'s
// distinct experts to the expert-store. The routing was copied out with the logits: reading it costs no sync.
// Returns whether the step recorded routing.
bool BatchScheduler::observe_routing() {
    if (n_expert_ == 0) {
        return false;
    }
    bool recorded = false;
    std::vector<int32_t> & slot_of_seq = slot_of_seq_;
    slot_of_seq.assign(slots.size(), -1);
    for (size_t i = 0; i < slots.size(); i++) {
        if (slots[i].request) {
            slot_of_seq[slots[i].seq] = (int32_t) i;
        }
    }
    std::vector<uint64_t> & layer_mask = layer_mask_;
    layer_mask.resize(mask_words_);
    for (int32_t il = 0; il < n_layer_; il++) {
        const int32_t * ids = nullptr;
        const llama_seq_id * seqs = nullptr;
        int32_t stride = 0, n_used = 0;
        const int32_t n_tokens = llama_get_moe_routing(ctx, il, &ids, &stride, &n_used, &seqs);
        if (n_tokens <= 0) {
            continue;
        }
        recorded = true;
        if (routing_log) {
            for (int32_t t = 0; t < n_tokens; t++) {
                routing_log->write(seqs[t], il, ids + (size_t) t * stride, n_used);
            }
        }
        std::atomic<uint64_t> * use = &expert_use_[(size_t) il * n_expert_];
        for (size_t s = 0; s < slot_of_seq.size(); s++) {
            std::fill(layer_mask.begin(), layer_mask.end(), 0);
            bool any = false;
            for (int32_t t = 0; t < n_tokens; t++) {
                if (seqs[t] != (llama_seq_id) s) {
                    continue;
                }
                any = true;
                for (int32_t k = 0; k < n_used; k++) {
                    const int32_t e = ids[(size_t) t * stride + k];
                    if (e >= 0 && e < n_expert_) {
                        use[e].fetch_add(1, std::memory_order_relaxed);
                        layer_mask[e / 64] |= 1ull << (e % 64);
                    }
                }
            }
            if (!any) {
                continue;
            }
            Slot * slot = slot_of_seq[s] >= 0 ? &slots[slot_of_seq[s]] : nullptr;
            if (slot != nullptr) {
                for (int32_t w = 0; w < mask_words_; w++) {
                    slot->expert_mask[(size_t) il * mask_words_ + w] |= layer_mask[w];
                }
            }
            if (hints && !(pager_ != nullptr && pager_->publishes_hints())) {
                step_ids_.clear();
                for (int32_t e = 0; e < n_expert_; e++) {
                    if (layer_mask[e / 64] >> (e % 64) & 1) {
                        step_ids_.push_back(e);
                    }
                }
                hints->publish((uint32_t) il, step_ids_.data(), step_ids_.size(), nullptr, 0,
                               slot != nullptr ? slot->request->trace_id : nullptr);
            }
        }
    }
    return recorded;
}

// Without recorded routing, the expert-store's heat map learns from the cache's slots which experts were used
// (those used since the last ask, every kCacheUseEvery steps; an expert used and evicted in between is missed).
void BatchScheduler::publish_cache_use() {
    if (!cache_on_ || !hints || (pager_ != nullptr && pager_->publishes_hints()) || ++cache_use_steps_ < kCacheUseEvery) {
        return;
    }
    cache_use_steps_ = 0;
    cache_use_ids_.resize((size_t) n_expert_);
    for (int32_t il = 0; il < n_layer_; il++) {
        const int32_t n = llama_expert_cache_take_used(ctx, il, cache_use_ids_.data(), n_expert_);
        if (n > 0) {
            hints->publish((uint32_t) il, cache_use_ids_.data(), (size_t) n, nullptr, 0, nullptr);
        }
    }
}

// With the expert cache's prefetch on: its prediction of layer il's experts, made while the layer before it runs,
// goes to the expert-store as that layer's "predicted for the next layer" hint (called on the decode thread, the
// only thread that publishes).
void BatchScheduler::publish_prediction(int32_t il, const int32_t * experts, int32_t n_experts, void * user_data) {
    auto * self = static_cast<BatchScheduler *>(user_data);
    if (il > 0) {
        self->hints->publish((uint32_t) (il - 1), nullptr, 0, experts, (size_t) n_experts, nullptr);
    }
}

SchedulerStats BatchScheduler::stats() const {
    SchedulerStats s;
    {
        std::lock_guard<std::mutex> lock(mu);
        s.queued = (int32_t) pending.size();
    }
    s.active = n_active;
    s.parallel = (int32_t) slots.size();
    s.total_requests = total_requests;
    s.total_prompt_tokens = total_prompt_tokens;
    s.total_completion_tokens = total_completion_tokens;
    s.steps = n_steps;
    return s;
}

void BatchScheduler::stop() {
    {
        std::lock_guard<std::mutex> lock(mu);
        if (stopping && !thread.joinable()) {
            return;
        }
        stopping = true;
    }
    cv.notify_one();
    if (thread.joinable()) {
        thread.join();
    }
}

void BatchScheduler::run() {
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(mu);
            cv.wait(lock, [&] { return stopping || !pending.empty() || n_active > 0; });
            if (stopping) {
                break;
            }
            admit_locked();
        }
        step();
    }
    // shutting down: every request still known gets its final record
    std::vector<GenerationEvent> events;
    for (auto & slot : slots) {
        if (slot.request) {
            finish(slot, "error", events, "engine closed");
        }
    }
    std::lock_guard<std::mutex> lock(mu);
    for (auto & request : pending) {
        events.push_back(final_event(*request, nullptr, "error", "engine closed"));
    }
    pending.clear();
    live.clear();
    if (!events.empty()) {
        sink(std::move(events));
    }
}

// Greedy requests without log-probabilities take their token from the graph (an argmax on the device that holds the
// logits), so a step reads back one id per sequence instead of the whole vocabulary's logits and scans none of them
// on the host: on a GPU that copy and scan are a few percent of a decode step. Attaching or detaching makes the
// context re-reserve its graphs, so a sequence keeps its sampler while consecutive requests agree. A chain is attached
// once in its life (llama.cpp initialises its device state on attach), so each attach gets a new one. A backend that
// cannot run the sampler's ops keeps the host path.
void BatchScheduler::use_device_sampling(const Slot & slot, bool want) {
    llama_sampler *& chain = device_greedy_[(size_t) slot.seq];
    if (want && chain == nullptr) {
        chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
        if (!llama_set_sampler(ctx, slot.seq, chain)) {
            llama_sampler_free(chain);
            chain = nullptr;
        }
    } else if (!want && chain != nullptr) {
        llama_set_sampler(ctx, slot.seq, nullptr);
        llama_sampler_free(chain);
        chain = nullptr;
    }
}

// Moves queued requests into free sequences. Cancelled ones never take a sequence.
void BatchScheduler::admit_locked() {
    while (!pending.empty()) {
        auto & front = pending.front();
        if (front->cancelled) {
            std::vector<GenerationEvent> events{final_event(*front, nullptr, "cancelled", "")};
            live.erase(front->id);
            pending.pop_front();
            sink(std::move(events));
            continue;
        }
        auto free_slot = std::find_if(slots.begin(), slots.end(), [](const Slot & s) { return !s.request; });
        if (free_slot == slots.end()) {
            return;
        }
        Slot & slot = *free_slot;
        const llama_seq_id seq = slot.seq;
        slot = Slot{};
        slot.seq = seq;
        slot.request = std::move(front);
        slot.t_admit_us = ggml_time_us();
        if (routing_log) {
            routing_log->reset(seq);  // a new request's tokens count from 0
        }
        slot.expert_mask.assign((size_t) n_layer_ * mask_words_, 0);
        slot.cache_hits.assign(cache_on_ ? (size_t) n_layer_ : 0, 0);
        slot.cache_misses.assign(cache_on_ ? (size_t) n_layer_ : 0, 0);
        slot.cache_bytes_copied = slot.cache_copy_ms = slot.cache_stall_ms = 0;
        use_device_sampling(slot, graph_sampling_ && slot.request->argmax_only && slot.request->top_logprobs < 0);
        pending.pop_front();
        n_active++;
        total_requests++;
        total_prompt_tokens += slot.request->prompt.size();
    }
}

// One scheduler step in named phases, as vLLM's EngineCore.step: cancelled requests leave, the batch is built,
// decoded, its logits sampled, and what the step produced is published. The phases share the slots and this step's
// events; admission runs before each step (run()).
void BatchScheduler::step() {
    std::vector<GenerationEvent> events;
    finish_cancelled(events);
    if (build_batch(events) > 0 && decode_batch(events)) {
        sample_batch(events);
    }
    publish(events);
}

void BatchScheduler::finish_cancelled(std::vector<GenerationEvent> & events) {
    for (auto & slot : slots) {
        if (slot.request && slot.request->cancelled) {
            finish(slot, "cancelled", events);
        }
    }
}

// Decoding sequences first (one token each), then prompt chunks in the space that is left. Sets each slot's
// i_batch (where its logits will be, -1 for none) and returns the batch's tokens.
int32_t BatchScheduler::build_batch(std::vector<GenerationEvent> & events) {
    batch.n_tokens = 0;
    auto add = [&](llama_token token, llama_pos pos, llama_seq_id seq, bool logits) {
        const int32_t i = batch.n_tokens++;
        batch.token[i] = token;
        batch.pos[i] = pos;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = seq;
        batch.logits[i] = logits;
        return i;
    };
    for (auto & slot : slots) {
        slot.i_batch = -1;
        if (!slot.request || slot.prefilling) {
            continue;
        }
        if (slot.n_past >= n_ctx_seq) {
            finish(slot, "length", events);
            continue;
        }
        slot.i_batch = add(slot.last_token, slot.n_past, slot.seq, true);
    }
    for (auto & slot : slots) {
        if (!slot.request || !slot.prefilling || batch.n_tokens >= n_batch) {
            continue;
        }
        const auto & prompt = slot.request->prompt;
        const size_t n = std::min(prompt.size() - slot.n_prompt_done, (size_t) (n_batch - batch.n_tokens));
        for (size_t k = 0; k < n; k++) {
            const size_t pos = slot.n_prompt_done + k;
            const int32_t i = add(prompt[pos], (llama_pos) pos, slot.seq, pos + 1 == prompt.size());
            if (pos + 1 == prompt.size()) {
                slot.i_batch = i;
            }
        }
        slot.n_prompt_done += n;
    }
    return batch.n_tokens;
}

// Runs the batch; on failure every request in it ends with the error. Afterwards the routing and the expert cache
// counters of the step are taken.
bool BatchScheduler::decode_batch(std::vector<GenerationEvent> & events) {
    const int32_t ret = llama_decode(ctx, batch);
    n_steps++;
    if (ret != 0) {
        const std::string why = "llama_decode failed with code " + std::to_string(ret);
        for (auto & slot : slots) {
            if (slot.request && (slot.i_batch >= 0 || slot.prefilling)) {
                finish(slot, "error", events, why);
            }
        }
        return false;
    }
    if (!observe_routing()) {
        publish_cache_use();
    }
    observe_expert_cache();
    observe_paging();
    return true;
}

// Samples a token for every slot with logits in the batch and hands it to on_token.
void BatchScheduler::sample_batch(std::vector<GenerationEvent> & events) {
    bool graph_sampling_failed = false;
    for (auto & slot : slots) {
        if (!slot.request || slot.i_batch < 0) {
            continue;
        }
        // sampling reads the logits, which waits for an asynchronous backend: time after it
        const llama_token token = samples_in_graph(slot) ? llama_get_sampled_token_ith(ctx, slot.i_batch)
                                  : slot.request->argmax_only
                                      ? moeflash::ArgmaxOfLogits(llama_get_logits_ith(ctx, slot.i_batch), llama_vocab_n_tokens(vocab))
                                      : llama_sampler_sample(slot.request->sampler, ctx, slot.i_batch);
        if (token == LLAMA_TOKEN_NULL) {
            // the backend took the sampler but produced no token (its logits were not copied back either): this
            // request fails, and from the next step every sequence samples on the host
            finish(slot, "error", events, "sampling in the graph returned no token; later requests sample on the host");
            graph_sampling_failed = true;
            continue;
        }
        TokenLogprob logprob;
        const bool with_logprob = slot.request->top_logprobs >= 0;
        if (with_logprob) {
            logprob = TokenLogprobOf(llama_get_logits_ith(ctx, slot.i_batch), llama_vocab_n_tokens(vocab), token, slot.request->top_logprobs);
        }
        const int64_t now = ggml_time_us();
        if (slot.prefilling) {
            slot.prefilling = false;
            slot.n_past = (int32_t) slot.request->prompt.size();
            slot.t_prefill_done_us = now;
        } else {
            slot.n_past++;
        }
        if (slot.t_first_us == 0) {
            slot.t_first_us = now;
        }
        slot.t_last_us = now;
        on_token(slot, token, with_logprob ? &logprob : nullptr, events);
    }
    if (graph_sampling_failed) {
        // every chain goes, not only the failed sequence's: the others would meet the same backend on their next step.
        // After the loop, because a sequence's token of this step can only be read the way it was computed.
        graph_sampling_ = false;
        for (auto & slot : slots) {
            use_device_sampling(slot, false);
        }
    }
}

// Emits each slot's new tokens with the text that is complete (whole UTF-8, no possible stop string prefix), then
// hands the step's events to JavaScript.
void BatchScheduler::publish(std::vector<GenerationEvent> & events) {
    for (auto & slot : slots) {
        if (slot.request && (!slot.new_tokens.empty() || !slot.pending_text.empty())) {
            size_t emit = CompleteUtf8Prefix(slot.pending_text);
            emit -= std::min(emit, StopPrefixHold(slot.pending_text.substr(0, emit), slot.request->stops));
            if (!slot.new_tokens.empty() || emit > 0) {
                emit_chunk(slot, events, emit);
            }
        }
    }
    if (!events.empty()) {
        sink(std::move(events));
    }
}

void BatchScheduler::on_token(Slot & slot, llama_token token, TokenLogprob * logprob, std::vector<GenerationEvent> & events) {
    const auto & stop_ids = slot.request->stop_token_ids;
    if ((!slot.request->ignore_eos && llama_vocab_is_eog(vocab, token)) || std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
        finish(slot, "stop", events);
        return;
    }
    slot.n_generated++;
    total_completion_tokens++;
    slot.new_tokens.push_back(token);
    if (logprob != nullptr) {
        slot.new_logprobs.push_back(std::move(*logprob));
    }
    slot.last_token = token;
    slot.pending_text += TokenPiece(vocab, token);

    const auto & stops = slot.request->stops;
    size_t best = std::string::npos;
    const std::string * matched = nullptr;
    for (const auto & stop : stops) {
        const size_t at = slot.pending_text.find(stop);
        if (at != std::string::npos && at < best) {
            best = at;
            matched = &stop;
        }
    }
    if (matched != nullptr) {
        slot.pending_text.resize(best);
        finish(slot, "stop", events, "", *matched);
        return;
    }
    if (slot.n_generated >= slot.request->max_tokens) {
        finish(slot, "length", events);
    }
}

void BatchScheduler::emit_chunk(Slot & slot, std::vector<GenerationEvent> & events, size_t text_len) {
    GenerationEvent e;
    e.id = slot.request->id;
    e.tokens.swap(slot.new_tokens);
    e.logprobs.swap(slot.new_logprobs);
    e.text = slot.pending_text.substr(0, text_len);
    slot.pending_text.erase(0, text_len);
    events.push_back(std::move(e));
}

GenerationEvent BatchScheduler::final_event(const GenerationRequest & request, const Slot * slot, const char * reason,
                                            const std::string & error) const {
    GenerationEvent e;
    e.id = request.id;
    e.is_final = true;
    e.finish_reason = reason;
    e.error = error;
    e.prompt_tokens = (int32_t) request.prompt.size();
    const int64_t now = ggml_time_us();
    if (slot == nullptr) {
        e.queue_ms = Ms(request.t_submit_us, now);
        return e;
    }
    e.completion_tokens = slot->n_generated;
    e.queue_ms = Ms(request.t_submit_us, slot->t_admit_us);
    e.prefill_ms = Ms(slot->t_admit_us, slot->t_prefill_done_us);
    e.ttft_ms = Ms(request.t_submit_us, slot->t_first_us);
    e.decode_ms = Ms(slot->t_first_us, slot->t_last_us);
    e.sampled_in_graph = samples_in_graph(*slot);
    for (int32_t il = 0; il < n_layer_ && n_expert_ > 0; il++) {
        uint16_t n = 0;
        for (int32_t w = 0; w < mask_words_; w++) {
            n += (uint16_t) __builtin_popcountll(slot->expert_mask[(size_t) il * mask_words_ + w]);
        }
        e.experts_per_layer.push_back(n);
    }
    e.cache_hits = slot->cache_hits;
    e.cache_misses = slot->cache_misses;
    e.cache_bytes_copied = slot->cache_bytes_copied;
    e.cache_copy_ms = slot->cache_copy_ms;
    e.cache_stall_ms = slot->cache_stall_ms;
    e.paged = pager_ != nullptr;
    e.paging_experts = slot->paging_experts;
    e.paging_page_cache_hits = slot->paging_page_cache_hits;
    e.paging_bytes_read = slot->paging_bytes_read;
    return e;
}

void BatchScheduler::finish(Slot & slot, const char * reason, std::vector<GenerationEvent> & events,
                            const std::string & error, const std::string & matched_stop) {
    if (!slot.new_tokens.empty() || !slot.pending_text.empty()) {
        emit_chunk(slot, events, slot.pending_text.size());
    }
    GenerationEvent e = final_event(*slot.request, &slot, reason, error);
    e.matched_stop = matched_stop;
    events.push_back(std::move(e));

    // the sequence's KV cells go back to the pool before the slot can be reused
    llama_memory_seq_rm(llama_get_memory(ctx), slot.seq, -1, -1);
    {
        std::lock_guard<std::mutex> lock(mu);
        live.erase(slot.request->id);
    }
    slot.request.reset();
    slot.i_batch = -1;
    n_active--;
}
