// ExpertRam: the experts of a model larger than memory, held in memory the engine owns instead of the page cache.
//
// Why: reading an expert through the page cache (MADV_WILLNEED on the file mapping) allocates, charges to the memory
// cgroup and, at the limit, reclaims one 4 KiB page for every page read; on the 2-core dev VM that kernel work was most
// of a token's time (bench:readpaths: 0.49 CPU s/GB against 0.067 for O_DIRECT into memory the reader owns).
//
// How: on first sight of a layer's expert tensor (the pager sees it before its first matmul), the whole pages inside
// the tensor's part of the file mapping are replaced by anonymous memory at the same addresses (MAP_FIXED), so ggml
// computes from the same pointers. An expert is read there with O_DIRECT io_uring reads straight into place (the
// mapping starts at file offset 0 on a page boundary, so every page of memory lines up with a page of the file; no
// copy), and dropped again (MADV_DONTNEED of the pages only it uses) when the resident experts exceed the budget, least
// recently needed first. The tensor's first and last pages, which it may share with a neighbour, stay file-backed.
// An evicted expert's pages are not freed but moved (mremap, page tables only) into a pool, and the next expert read
// takes them from there: a fresh page would cost an allocation, a cgroup charge, a fault and zeroing, which is what
// made the page cache expensive in the first place.
// A need (a routed expert) is read and waited for before its layer's matmuls; a guess (a predicted expert) is started
// and waited for only if it is then needed. Everything runs on the decode thread (the pager's eval callback).
#pragma once

#include "ggml.h"

#include <atomic>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

struct io_uring;

namespace moeflash {

// Without liburing at build time (MOEFLASH_HAVE_LIBURING) it adopts nothing: the page cache serves.
class ExpertRam {
  public:
    ExpertRam(int32_t n_layer, int32_t n_expert, uint64_t budget_bytes);
    ~ExpertRam();
    ExpertRam(const ExpertRam &) = delete;
    ExpertRam & operator=(const ExpertRam &) = delete;

    // First sight of expert tensor w of layer il (host memory mapped from the model file): its experts now come from
    // here. False (with the reason in error()) where it cannot: then the page cache serves the tensor as before.
    bool Adopt(int32_t il, const ggml_tensor * w);
    // The same for the slabs of n_expert experts from base, slab bytes each (the expert cache's host reads know no
    // tensor); name is for errors.
    bool AdoptRange(int32_t il, const std::string & name, const void * base, size_t slab);
    // whether the layer's experts at base are already ours
    bool adopted(int32_t il, const void * base) const {
        if (!owns(il)) return false;
        for (const Tensor & t : layers_[il].tensors) {
            if (t.data == base) return true;
        }
        return false;
    }
    // expert e of layer il is in memory now (not absent, not on its way)
    bool resident(int32_t il, int32_t e) const {
        return owns(il) && e >= 0 && e < n_expert_ && layers_[il].experts[e].state == State::resident;
    }
    bool usable() const { return ring_ok_; }
    bool owns(int32_t il) const { return il >= 0 && il < (int32_t) layers_.size() && !layers_[il].tensors.empty(); }

    struct Needed {
        uint64_t experts = 0, resident = 0;  // experts asked for, and of those already resident (the RAM tier's hits)
        uint64_t bytes = 0, bytes_read = 0;  // their bytes, and the bytes read from disk for them now
        uint64_t bytes_guessed_used = 0;     // bytes of them read ahead as guesses
    };
    // The layer's needs: reads those not resident, waits for them and for guesses of them still in flight.
    Needed Need(int32_t il, const std::vector<int32_t> & experts);
    // Guesses for the layer: starts reading those neither resident nor on their way. Returns the bytes started.
    uint64_t Guess(int32_t il, const std::vector<int32_t> & experts);

    uint64_t resident_bytes() const { return resident_bytes_; }
    const std::string & error() const { return error_; }

  private:
    struct Tensor {
        const char * data;
        size_t slab;        // bytes per expert
        uintptr_t lo, hi;   // the anonymous pages: whole pages inside the tensor
        int fd;             // the model file, O_DIRECT
        int plain_fd;       // the same without O_DIRECT: where an O_DIRECT read fails or comes back short
        int64_t file_of_lo; // file offset of lo
    };
    // one read in flight (io_uring user data: its index)
    struct Piece {
        int32_t il, e;
        uintptr_t addr;
        uint32_t len;
        int plain_fd;
        int64_t offset;
    };
    enum class State : uint8_t { absent, reading, resident };
    struct Expert {
        State state = State::absent;
        bool guessed = false;      // read as a guess and not needed since
        uint32_t pending = 0;      // reads in flight
        uint64_t last_need = 0;
    };
    struct Layer {
        std::vector<Tensor> tensors;
        std::vector<Expert> experts;
    };

    // the pool of pages evicted experts left: runs of whole pages, each in a slot of a reserved area
    struct Run {
        uintptr_t addr;
        size_t pages;
        uint32_t slot;
    };
    void TakePages(uintptr_t dst, size_t pages);  // into [dst, +pages): from the pool, else left to fault in fresh
    void GivePages(uintptr_t src, size_t pages);  // out of [src, +pages) into the pool, else freed

    uint64_t ExpertBytes(const Layer & layer) const;
    uint64_t StartRead(int32_t il, int32_t e);
    void Reap(bool wait);
    void Evict();
    int FileOf(const std::string & path, bool direct);
    void ReadPlain(const Piece & piece, int64_t done);

    int32_t n_expert_;
    uint64_t budget_;
    std::atomic<uint64_t> resident_bytes_{0};  // resident and on their way (stats read it from another thread)
    uint64_t clock_ = 1;  // Need stamps; 0 is "never needed"
    std::vector<Layer> layers_;
    std::unordered_map<std::string, int> fds_;  // key: path, then "\0plain" for the buffered one
    std::vector<Piece> pieces_;
    std::vector<uint32_t> free_pieces_;
    bool warned_plain_ = false;
    struct io_uring * ring_ = nullptr;
    bool ring_ok_ = false;
    uint32_t in_flight_ = 0;
    std::string error_;
    uintptr_t pool_ = 0;        // reserved area, slot_bytes_ per slot
    size_t pool_slots_ = 0, slot_bytes_ = 0;
    std::vector<uint32_t> free_slots_;
    std::vector<Run> runs_;
    bool recycle_ = true;        // mremap works here
};

}  // namespace moeflash
