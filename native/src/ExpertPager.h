// ExpertPager: reads a MoE model's experts from disk as the router picks them, for the expert tensors llama.cpp maps
// without populating them and without read-around (LLAMA_LAZY_MODE_EXPERTS, patches/llama.cpp/0012).
//
// It is the context's eval callback (llama_context_params.cb_eval). The scheduler shows it every node before computing
// it; the pager asks for each MoE layer's router output (ffn_moe_topk), which stops the CPU graph there, before the
// layer's expert matmuls. At that point it
//   - counts, per routed expert, whether its pages are in the page cache (the RAM tier) or must come from disk,
//   - asks the kernel for exactly the missing pages of the routed experts (MADV_WILLNEED: queued at once, all of them,
//     so the disk sees a deep queue instead of the matmul's one fault at a time),
//   - predicts the next layer's experts (that layer's router applied to this layer's FFN input; the residual stream
//     changes little between layers) and publishes the routed and predicted experts on the hint channel, where the
//     expert-store reads the predicted ones while this layer computes; without an expert-store the pager reads them
//     ahead itself.
// With a RAM budget (LoadOptions.expertRam) the experts live in memory the engine owns instead of the page cache and
// are read with O_DIRECT (ExpertRam.h); the steps above are the same, the page cache is out of the way.
// Only layers computed on the CPU from host memory are paged: a node on a GPU is never asked for (that would stop
// the device). With the expert cache the pager instead serves the cache's host-read callback
// (patches/llama.cpp/0013): the experts a layer misses in its slots (VRAM) are read from the page cache (RAM) or the
// disk, and the pager queues those reads and counts the tiers the same way. Results do not change: the pager only
// decides when pages are read.
#pragma once

#include "ExpertRam.h"
#include "ggml.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace moeflash {

class HintWriter;

struct ExpertPagerStats {
    uint64_t layer_steps = 0;      // MoE layer evaluations paged (with the expert cache: its batches of host reads)
    uint64_t experts = 0;          // routed experts (distinct per layer evaluation)
    uint64_t page_cache_hits = 0;  // of those, with every page already in the page cache
    uint64_t bytes_routed = 0;     // bytes of the routed experts
    uint64_t bytes_missing = 0;    // of those, not in the page cache when routed: read from disk during the step
    uint64_t predicted = 0;        // distinct experts predicted for a layer
    uint64_t predicted_used = 0;   // of those, routed there
    uint64_t predicted_read = 0;   // predicted experts the engine read ahead itself (no expert-store attached)
    uint64_t bytes_read_ahead = 0;      // bytes of guessed experts (predictions, the cache's speculative copies) not in
                                        // the page cache when the engine queued their reads
    uint64_t bytes_read_ahead_used = 0; // of those, bytes of experts the layer then needed (a guess counts as used
                                        // when the layer's next routing or miss list has it)
    double paging_ms = 0;          // time the decode thread spent counting, advising and predicting
    uint64_t ram_resident_bytes = 0; // experts held in the engine's own memory (ExpertRam), resident or on their way
};

class ExpertPager {
  public:
    // read_predicted: read the predicted experts ahead from the engine (when no expert-store consumes the hints).
    // ram_bytes > 0: hold the experts of CPU layers in memory of the engine's own, at most that many bytes (ExpertRam),
    // instead of the page cache.
    ExpertPager(int32_t n_layer, int32_t n_expert, bool read_predicted, uint64_t ram_bytes = 0);

    // llama_context_params.cb_eval; user_data is the pager
    static bool Eval(struct ggml_tensor * t, bool ask, void * user_data);

    // llama_expert_cache_set_host_read_callback (the expert cache's misses and guesses); user_data is the pager. Marks
    // in ready the experts with a page not in memory, which the cache does not copy on a guess. Call
    // serve_expert_cache() first: the graph path then stays out of the way (the layers run on slots).
    static void HostRead(int32_t il, const int32_t * experts, int32_t n_experts, bool speculative,
                         const void * const * src, const size_t * expert_bytes, int32_t n_src, uint8_t * ready,
                         void * user_data);
    void serve_expert_cache() { graph_path_ = false; }

    // Hints go here from the next decode on (nullptr: none). Publishing happens on the decode thread.
    void set_hints(HintWriter * hints) { hints_ = hints; }
    // whether routing reaches the hint channel from here, during the step (the graph path; with the expert cache the
    // scheduler publishes after the step as without a pager)
    bool publishes_hints() const { return hints_ != nullptr && graph_path_; }

    ExpertPagerStats stats() const;
    // whether experts can live in the engine's own memory here (ExpertRam: io_uring works)
    bool ram_active() const { return ram_ && ram_->usable(); }

  private:
    enum class Node { other, router_logits, routed_ids, expert_matmul };
    // what ReadSlabs measures (mincore) before it queues the reads: nothing, a need (the tiers of routed or missed
    // experts) or a guess (how many bytes a read ahead takes from the disk)
    enum class Measure { nothing, need, guess };

    struct Layer {
        const ggml_tensor * router = nullptr;       // ffn_gate_inp weight (src0 of the router logits)
        const ggml_tensor * ffn_input = nullptr;    // src1 of the router logits in the graph being computed
        std::vector<const ggml_tensor *> experts;   // the expert weight tensors the layer's matmuls read (host only)
        std::vector<const ggml_tensor *> paged;     // of those, the ones read through the page cache (not ExpertRam's)
        std::vector<int32_t> routed;                // distinct experts of the current evaluation
        std::vector<int32_t> predicted;             // predicted for this layer by the layer before
        std::vector<uint64_t> guessed_bytes;        // per expert: bytes its last guess read ahead from disk, until
                                                    // the layer's next need uses or drops it
    };

    static Node Classify(const ggml_tensor * t, int32_t * il);
    bool Ask(ggml_tensor * t);
    void OnRouted(int32_t il, const ggml_tensor * ids);
    void Predict(int32_t il, int32_t n_used);
    void ReadExperts(const ggml_tensor * w, const std::vector<int32_t> & experts, Measure measure);
    void ReadSlabs(const void * base, size_t slab, const std::vector<int32_t> & experts, Measure measure);
    void CountTiers(const std::vector<int32_t> & experts);
    void NeedRam(int32_t il);
    void CountRam(const ExpertRam::Needed & n);
    bool HostReadFromRam(int32_t il, const std::vector<int32_t> & list, bool speculative, const void * const * src,
                         const size_t * expert_bytes, int32_t n_src, uint8_t * ready);
    void HostReadFromPageCache(int32_t il, const std::vector<int32_t> & list, bool speculative, const void * const * src,
                               const size_t * expert_bytes, int32_t n_src, uint8_t * ready);
    void RecordGuesses(int32_t il, const std::vector<int32_t> & experts);
    void CountUsedGuesses(int32_t il, const std::vector<int32_t> & experts);

    int32_t n_layer_;
    int32_t n_expert_;
    bool read_predicted_;
    bool graph_path_ = true;
    HintWriter * hints_ = nullptr;
    std::vector<Layer> layers_;
    std::vector<unsigned char> residency_;  // mincore scratch
    std::vector<float> logits_, row_;       // prediction scratch
    std::vector<int32_t> host_read_;        // HostRead scratch
    std::vector<uint8_t> seen_;             // OnRouted scratch: experts of the current evaluation

    std::atomic<uint64_t> layer_steps_{0}, experts_{0}, page_cache_hits_{0}, bytes_routed_{0}, bytes_missing_{0},
        predicted_{0}, predicted_used_{0}, predicted_read_{0}, bytes_read_ahead_{0}, bytes_read_ahead_used_{0},
        paging_ns_{0};
    // per expert of the batch being measured: bytes found missing over its tensors (zero: a page-cache hit)
    std::vector<uint64_t> missing_of_expert_;
    std::unique_ptr<ExpertRam> ram_;
    bool ram_warned_ = false;
};

}  // namespace moeflash
