// ExpertPager: see ExpertPager.h.
#include "ExpertPager.h"

#include "HintChannel.h"
#include "ggml-backend.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace moeflash {

namespace {

// Most tokens a step may have and still get a prediction: a prefill ubatch routes to nearly every expert anyway.
constexpr int64_t kMaxPredictTokens = 8;

bool OnHost(const ggml_tensor * t) {
    return t != nullptr && t->buffer != nullptr && ggml_backend_buffer_is_host(t->buffer) && t->data != nullptr;
}

// "<base>-<layer>" as llama.cpp's graph callbacks name their nodes
bool LayerOf(const char * name, const char * base, int32_t * il) {
    const size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || name[n] != '-') {
        return false;
    }
    char * end = nullptr;
    const long v = strtol(name + n + 1, &end, 10);
    if (end == name + n + 1 || *end != '\0' || v < 0) {
        return false;
    }
    *il = (int32_t) v;
    return true;
}

}  // namespace

ExpertPager::ExpertPager(int32_t n_layer, int32_t n_expert, bool read_predicted, uint64_t ram_bytes)
    : n_layer_(n_layer), n_expert_(n_expert), read_predicted_(read_predicted), layers_((size_t) n_layer),
      missing_of_expert_((size_t) n_expert) {
    if (ram_bytes > 0) {
        ram_ = std::make_unique<ExpertRam>(n_layer, n_expert, ram_bytes);
    }
    for (Layer & layer : layers_) {
        layer.guessed_bytes.assign((size_t) n_expert, 0);
    }
}

ExpertPager::Node ExpertPager::Classify(const ggml_tensor * t, int32_t * il) {
    const char * name = ggml_get_name(t);
    if (strncmp(name, "ffn_moe_", 8) != 0) {
        return Node::other;
    }
    if (LayerOf(name, "ffn_moe_topk", il)) {
        return Node::routed_ids;
    }
    if (LayerOf(name, "ffn_moe_logits", il)) {
        return Node::router_logits;
    }
    if (t->op == GGML_OP_MUL_MAT_ID) {
        const char * dash = strrchr(name, '-');
        char * end = nullptr;
        const long v = dash != nullptr ? strtol(dash + 1, &end, 10) : -1;
        if (v >= 0 && end != nullptr && *end == '\0') {
            *il = (int32_t) v;
            return Node::expert_matmul;
        }
    }
    return Node::other;
}

bool ExpertPager::Eval(ggml_tensor * t, bool ask, void * user_data) {
    auto * self = static_cast<ExpertPager *>(user_data);
    if (!self->graph_path_) {
        return ask ? false : true;
    }
    if (ask) {
        return self->Ask(t);
    }
    // only routed_ids nodes are asked for
    int32_t il = -1;
    if (Classify(t, &il) == Node::routed_ids && il < self->n_layer_) {
        const auto t0 = std::chrono::steady_clock::now();
        self->OnRouted(il, t);
        self->paging_ns_ += (uint64_t) std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    }
    return true;  // false would abort the graph
}

// Called for every node before it is computed: remembers where each layer's router and expert weights are, and asks
// for the router output of layers the CPU computes.
bool ExpertPager::Ask(ggml_tensor * t) {
    int32_t il = -1;
    const Node kind = Classify(t, &il);
    if (kind == Node::other || il >= n_layer_) {
        return false;
    }
    Layer & layer = layers_[il];
    switch (kind) {
        case Node::router_logits:
            layer.router = t->src[0];
            layer.ffn_input = t->src[1];
            return false;
        case Node::routed_ids:
            return OnHost(t) && t->type == GGML_TYPE_I32;
        case Node::expert_matmul: {
            const ggml_tensor * w = t->src[0];
            if (!OnHost(w) || w->ne[2] != n_expert_ ||
                std::find(layer.experts.begin(), layer.experts.end(), w) != layer.experts.end()) {
                return false;
            }
            // first sight of this tensor (the first evaluation): read the current experts now, before it computes
            layer.experts.push_back(w);
            const bool in_ram = ram_ && ram_->Adopt(il, w);
            if (ram_ && !in_ram && !ram_warned_) {
                fprintf(stderr, "moeflash: experts of '%s' stay in the page cache: %s\n", ggml_get_name(w), ram_->error().c_str());
                ram_warned_ = true;
            }
            if (!in_ram) {
                layer.paged.push_back(w);
            }
            if (!layer.routed.empty()) {
                if (in_ram) {
                    NeedRam(il);  // the layer's experts start over with each tensor adopted: all of them are read
                } else {
                    ReadExperts(w, layer.routed, Measure::need);
                }
            }
            return false;
        }
        default:
            return false;
    }
}

void ExpertPager::OnRouted(int32_t il, const ggml_tensor * ids) {
    Layer & layer = layers_[il];
    const int64_t n_used = ids->ne[0], n_tokens = ids->ne[1];
    std::vector<uint8_t> & seen = seen_;
    seen.assign((size_t) n_expert_, 0);
    layer.routed.clear();
    for (int64_t t = 0; t < n_tokens; t++) {
        const auto * row = (const int32_t *) ((const char *) ids->data + t * ids->nb[1]);
        for (int64_t k = 0; k < n_used; k++) {
            const int32_t e = row[k];
            if (e >= 0 && e < n_expert_ && !seen[e]) {
                seen[e] = 1;
                layer.routed.push_back(e);
            }
        }
    }
    std::sort(layer.routed.begin(), layer.routed.end());  // file order

    // how the last prediction for this layer did
    uint64_t used = 0;
    for (int32_t e : layer.predicted) {
        used += seen[e];
    }
    predicted_ += layer.predicted.size();
    predicted_used_ += used;
    CountUsedGuesses(il, layer.routed);

    // the routed experts' pages, all tensors of the layer queued before any of its matmuls runs
    std::fill(missing_of_expert_.begin(), missing_of_expert_.end(), 0);
    for (const ggml_tensor * w : layer.paged) {
        ReadExperts(w, layer.routed, Measure::need);
    }
    if (!layer.paged.empty()) {
        CountTiers(layer.routed);
    }
    if (ram_ && ram_->owns(il)) {
        NeedRam(il);
    }

    const bool predicts = il + 1 < n_layer_ && n_tokens <= kMaxPredictTokens;
    if (predicts) {
        Predict(il, (int32_t) n_used);
    }
    const std::vector<int32_t> & next = predicts ? layers_[il + 1].predicted : layer.predicted /* unused */;
    if (predicts && ram_ && ram_->owns(il + 1)) {
        // the engine's own memory: only the engine can read ahead into it
        bytes_read_ahead_ += ram_->Guess(il + 1, next);
        predicted_read_ += next.size();
    }
    if (predicts && read_predicted_ && hints_ == nullptr && !layers_[il + 1].paged.empty()) {
        std::fill(missing_of_expert_.begin(), missing_of_expert_.end(), 0);
        for (const ggml_tensor * w : layers_[il + 1].paged) {
            ReadExperts(w, next, Measure::guess);
        }
        RecordGuesses(il + 1, next);
        predicted_read_ += next.size();
    }
    if (hints_ != nullptr) {
        hints_->publish((uint32_t) il, layer.routed.data(), layer.routed.size(), predicts ? next.data() : nullptr,
                        predicts ? next.size() : 0, nullptr);
    }
}

// The layer's routed experts from the engine's own memory: read now what is not there, counted as the page cache's
// tiers are (a resident expert is a RAM hit).
void ExpertPager::NeedRam(int32_t il) {
    CountRam(ram_->Need(il, layers_[il].routed));
}

void ExpertPager::CountRam(const ExpertRam::Needed & n) {
    layer_steps_++;
    experts_ += n.experts;
    page_cache_hits_ += n.resident;
    bytes_routed_ += n.bytes;
    bytes_missing_ += n.bytes_read;
    bytes_read_ahead_used_ += n.bytes_guessed_used;
}

// The next layer's router applied to this layer's FFN input, top n_used per token. Needs both on the host and the
// next layer's router seen in an earlier evaluation (the first step predicts nothing).
void ExpertPager::Predict(int32_t il, int32_t n_used) {
    Layer & next = layers_[il + 1];
    next.predicted.clear();
    const ggml_tensor * x = layers_[il].ffn_input;
    const ggml_tensor * w = next.router;
    if (!OnHost(x) || !OnHost(w) || x->type != GGML_TYPE_F32 || x->nb[0] != sizeof(float) || w->ne[0] != x->ne[0] ||
        w->ne[1] != n_expert_ || x->ne[1] > kMaxPredictTokens) {
        return;
    }
    const auto * traits = ggml_get_type_traits(w->type);
    if (w->type != GGML_TYPE_F32 && traits->to_float == nullptr) {
        return;
    }
    const int64_t n_embd = w->ne[0];
    const int64_t n_tokens = x->ne[1];
    logits_.resize((size_t) (n_expert_ * n_tokens));
    row_.resize((size_t) n_embd);
    for (int32_t e = 0; e < n_expert_; e++) {
        const void * src = (const char *) w->data + e * w->nb[1];
        const float * we = (const float *) src;
        if (w->type != GGML_TYPE_F32) {
            traits->to_float(src, row_.data(), n_embd);
            we = row_.data();
        }
        for (int64_t t = 0; t < n_tokens; t++) {
            const float * xt = (const float *) ((const char *) x->data + t * x->nb[1]);
            float acc = 0.0f;
            for (int64_t i = 0; i < n_embd; i++) {
                acc += we[i] * xt[i];
            }
            logits_[(size_t) (t * n_expert_ + e)] = acc;
        }
    }
    std::vector<int32_t> order((size_t) n_expert_);
    std::vector<uint8_t> chosen((size_t) n_expert_, 0);
    const int32_t k = std::min(n_used, n_expert_);
    for (int64_t t = 0; t < n_tokens; t++) {
        const float * lt = &logits_[(size_t) (t * n_expert_)];
        for (int32_t e = 0; e < n_expert_; e++) {
            order[e] = e;
        }
        std::partial_sort(order.begin(), order.begin() + k, order.end(),
                          [lt](int32_t a, int32_t b) { return lt[a] > lt[b]; });
        for (int32_t j = 0; j < k; j++) {
            chosen[order[j]] = 1;
        }
    }
    for (int32_t e = 0; e < n_expert_; e++) {
        if (chosen[e]) {
            next.predicted.push_back(e);
        }
    }
}

void ExpertPager::HostRead(int32_t il, const int32_t * experts, int32_t n_experts, bool speculative,
                           const void * const * src, const size_t * expert_bytes, int32_t n_src, uint8_t * ready,
                           void * user_data) {
    auto * self = static_cast<ExpertPager *>(user_data);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<int32_t> & list = self->host_read_;
    list.assign(experts, experts + n_experts);
    if (!self->HostReadFromRam(il, list, speculative, src, expert_bytes, n_src, ready)) {
        self->HostReadFromPageCache(il, list, speculative, src, expert_bytes, n_src, ready);
    }
    self->paging_ns_ += (uint64_t) std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
}

// The expert cache's host reads through the page cache: the reads queued, the tiers counted, and ready measured before
// the reads were queued (an expert with a missing page would make its copy wait for the disk).
void ExpertPager::HostReadFromPageCache(int32_t il, const std::vector<int32_t> & list, bool speculative,
                                        const void * const * src, const size_t * expert_bytes, int32_t n_src,
                                        uint8_t * ready) {
    std::fill(missing_of_expert_.begin(), missing_of_expert_.end(), 0);
    for (int32_t p = 0; p < n_src; p++) {
        if (src[p] != nullptr) {
            ReadSlabs(src[p], expert_bytes[p], list, speculative ? Measure::guess : Measure::need);
        }
    }
    const bool layer_known = il >= 0 && il < n_layer_;
    if (speculative) {
        if (layer_known) {
            RecordGuesses(il, list);
        }
    } else {
        CountTiers(list);
        if (layer_known) {
            CountUsedGuesses(il, list);
        }
    }
    for (size_t i = 0; i < list.size(); i++) {
        const int32_t e = list[i];
        ready[i] = e >= 0 && e < n_expert_ && missing_of_expert_[e] == 0;
    }
}

// The expert cache's host reads from the engine's own memory (ExpertRam): the layer's experts are adopted on their
// first read, a need is read and waited for before the cache copies it, a guess is started and copied ahead only once
// resident. False where the layer stays with the page cache.
bool ExpertPager::HostReadFromRam(int32_t il, const std::vector<int32_t> & list, bool speculative, const void * const * src,
                                  const size_t * expert_bytes, int32_t n_src, uint8_t * ready) {
    if (!ram_ || il < 0 || il >= n_layer_) {
        return false;
    }
    bool all = true;
    for (int32_t p = 0; p < n_src; p++) {
        if (src[p] != nullptr && !ram_->adopted(il, src[p]) &&
            !ram_->AdoptRange(il, "layer " + std::to_string(il) + " projection " + std::to_string(p), src[p], expert_bytes[p])) {
            all = false;
            if (!ram_warned_) {
                fprintf(stderr, "moeflash: experts of layer %d stay in the page cache: %s\n", il, ram_->error().c_str());
                ram_warned_ = true;
            }
        }
    }
    if (!ram_->owns(il)) {
        return false;
    }
    // what was adopted is read here whatever happens to the rest: its pages hold nothing until read
    if (speculative) {
        bytes_read_ahead_ += ram_->Guess(il, list);
        for (size_t i = 0; i < list.size(); i++) {
            ready[i] = ram_->resident(il, list[i]);
        }
    } else {
        CountRam(ram_->Need(il, list));
    }
    return all;  // false: the page cache path serves the projections not adopted, as well
}

// One batch of experts read from host memory, their slabs just measured by ReadSlabs: an expert is a page-cache hit
// when none of its pages was missing.
void ExpertPager::CountTiers(const std::vector<int32_t> & experts) {
    uint64_t hits = 0;
    for (int32_t e : experts) {
        hits += e >= 0 && e < n_expert_ && missing_of_expert_[e] == 0;
    }
    layer_steps_++;
    experts_ += experts.size();
    page_cache_hits_ += hits;
}

// A layer's guesses just measured by ReadSlabs (Measure::guess): what each read ahead takes from the disk. They
// replace the layer's earlier guesses, which its needs since then did not use.
void ExpertPager::RecordGuesses(int32_t il, const std::vector<int32_t> & experts) {
    std::vector<uint64_t> & guessed = layers_[il].guessed_bytes;
    std::fill(guessed.begin(), guessed.end(), 0);
    for (int32_t e : experts) {
        if (e >= 0 && e < n_expert_) {
            guessed[e] = missing_of_expert_[e];
            bytes_read_ahead_ += missing_of_expert_[e];
        }
    }
}

// A layer's needs (routed experts, or the cache's misses): the bytes its guesses read ahead for these were useful.
// The guesses are spent either way: a read ahead counts as used only by the layer's next need.
void ExpertPager::CountUsedGuesses(int32_t il, const std::vector<int32_t> & experts) {
    std::vector<uint64_t> & guessed = layers_[il].guessed_bytes;
    uint64_t used = 0;
    for (int32_t e : experts) {
        if (e >= 0 && e < n_expert_) {
            used += guessed[e];
        }
    }
    bytes_read_ahead_used_ += used;
    std::fill(guessed.begin(), guessed.end(), 0);
}

// Queues the reads of the given experts' slabs of one expert tensor (MADV_WILLNEED reads exactly the range, even
// where the mapping is MADV_RANDOM, and returns once the reads are submitted), measuring first what is missing.
void ExpertPager::ReadExperts(const ggml_tensor * w, const std::vector<int32_t> & experts, Measure measure) {
    ReadSlabs(w->data, w->nb[2], experts, measure);
}

void ExpertPager::ReadSlabs(const void * base, size_t slab, const std::vector<int32_t> & experts, Measure measure) {
    static const size_t page = (size_t) sysconf(_SC_PAGESIZE);
    for (int32_t e : experts) {
        if (e < 0 || e >= n_expert_) {
            continue;
        }
        const uintptr_t beg = (uintptr_t) base + (size_t) e * slab;
        const uintptr_t a = beg & ~(uintptr_t) (page - 1);
        const size_t len = beg + slab - a;
        if (measure != Measure::nothing) {
            const size_t n_pages = (len + page - 1) / page;
            residency_.resize(n_pages);
            size_t missing = 0;
            if (mincore((void *) a, len, residency_.data()) == 0) {
                for (size_t p = 0; p < n_pages; p++) {
                    missing += (residency_[p] & 1) == 0;
                }
            }
            const size_t missing_bytes = std::min(missing * page, slab);
            missing_of_expert_[e] += missing_bytes;
            if (measure == Measure::need) {
                bytes_routed_ += slab;
                bytes_missing_ += missing_bytes;
            }
            if (missing == 0) {
                continue;
            }
        }
        madvise((void *) a, len, MADV_WILLNEED);
    }
}

ExpertPagerStats ExpertPager::stats() const {
    ExpertPagerStats s;
    s.layer_steps = layer_steps_.load();
    s.experts = experts_.load();
    s.page_cache_hits = page_cache_hits_.load();
    s.bytes_routed = bytes_routed_.load();
    s.bytes_missing = bytes_missing_.load();
    s.predicted = predicted_.load();
    s.predicted_used = predicted_used_.load();
    s.predicted_read = predicted_read_.load();
    s.bytes_read_ahead = bytes_read_ahead_.load();
    s.bytes_read_ahead_used = bytes_read_ahead_used_.load();
    s.paging_ms = (double) paging_ns_.load() / 1e6;
    s.ram_resident_bytes = ram_ ? ram_->resident_bytes() : 0;
    return s;
}

}  // namespace moeflash
