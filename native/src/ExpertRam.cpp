// ExpertRam: see ExpertRam.h.
#include "ExpertRam.h"

#ifdef MOEFLASH_HAVE_LIBURING

#include <liburing.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace moeflash {

namespace {

constexpr uint32_t kRingEntries = 256;
constexpr size_t kPiece = 1 << 20;  // largest single read

size_t PageSize() {
    static const size_t page = (size_t) sysconf(_SC_PAGESIZE);
    return page;
}
uintptr_t AlignDown(uintptr_t v) { return v & ~(uintptr_t) (PageSize() - 1); }
uintptr_t AlignUp(uintptr_t v) { return AlignDown(v + PageSize() - 1); }

// The file, its inode and the offset behind an address of a file mapping, from /proc/self/maps.
bool MappedFileOf(const void * addr, std::string * path, uint64_t * inode_out, int64_t * offset) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    const uintptr_t a = (uintptr_t) addr;
    while (std::getline(maps, line)) {
        std::istringstream in(line);
        std::string range, perms, off, dev, inode, file;
        in >> range >> perms >> off >> dev >> inode;
        std::getline(in >> std::ws, file);
        const size_t dash = range.find('-');
        const uintptr_t start = std::stoull(range.substr(0, dash), nullptr, 16);
        const uintptr_t end = std::stoull(range.substr(dash + 1), nullptr, 16);
        if (a >= start && a < end) {
            if (file.empty() || file[0] != '/') {
                return false;
            }
            *path = file;
            *inode_out = std::stoull(inode);
            *offset = (int64_t) std::stoull(off, nullptr, 16) + (int64_t) (a - start);
            return true;
        }
    }
    return false;
}

}  // namespace

ExpertRam::ExpertRam(int32_t n_layer, int32_t n_expert, uint64_t budget_bytes)
    : n_expert_(n_expert), budget_(budget_bytes), layers_((size_t) std::max(n_layer, 0)) {
    ring_ = new io_uring;
    const int rc = io_uring_queue_init(kRingEntries, ring_, 0);
    ring_ok_ = rc == 0;
    if (!ring_ok_) {
        error_ = std::string("io_uring: ") + strerror(-rc);
    }
}

ExpertRam::~ExpertRam() {
    if (pool_ != 0) {
        munmap((void *) pool_, pool_slots_ * slot_bytes_);
    }
    if (ring_ok_) {
        while (in_flight_ > 0) {
            Reap(true);
        }
        io_uring_queue_exit(ring_);
    }
    delete ring_;
    for (auto & [path, fd] : fds_) {
        close(fd);
    }
}

int ExpertRam::FileOf(const std::string & path, bool direct) {
    const std::string key = direct ? path : path + std::string("\0plain", 6);
    auto it = fds_.find(key);
    if (it != fds_.end()) {
        return it->second;
    }
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
    if (fd >= 0) {
        fds_[key] = fd;
    }
    return fd;
}

// The rest of a piece whose O_DIRECT read failed or came back short, read through the page cache: a file system or
// device that refuses O_DIRECT here still serves. Only a plain read failing too stops the process, as a failed page
// fault on the mapping would have (SIGBUS).
void ExpertRam::ReadPlain(const Piece & piece, int64_t done) {
    if (!warned_plain_) {
        fprintf(stderr, "moeflash: an O_DIRECT expert read came back short or failed: reading through the page cache\n");
        warned_plain_ = true;
    }
    while (done < (int64_t) piece.len) {
        const ssize_t n = pread(piece.plain_fd, (void *) (piece.addr + done), piece.len - done, piece.offset + done);
        if (n <= 0) {
            fprintf(stderr, "moeflash: expert read (layer %d, expert %d) failed: %s\n", piece.il, piece.e,
                    n == 0 ? "end of file" : strerror(errno));
            abort();
        }
        done += n;
    }
}

bool ExpertRam::Adopt(int32_t il, const ggml_tensor * w) {
    if (w->ne[2] != n_expert_ || ggml_nbytes(w) != (size_t) w->nb[2] * (size_t) n_expert_) {
        error_ = std::string("'") + ggml_get_name(w) + "' is not a contiguous expert tensor of this model";
        return false;
    }
    return AdoptRange(il, ggml_get_name(w), w->data, w->nb[2]);
}

bool ExpertRam::AdoptRange(int32_t il, const std::string & name, const void * base, size_t slab) {
    if (!ring_ok_ || il < 0 || il >= (int32_t) layers_.size()) {
        if (error_.empty()) error_ = "layer out of range";
        return false;
    }
    std::string path;
    uint64_t inode = 0;
    int64_t file_of_data = 0;
    if (!MappedFileOf(base, &path, &inode, &file_of_data)) {
        error_ = "'" + name + "' is not in a file mapping";
        return false;
    }
    const uintptr_t data = (uintptr_t) base;
    const uintptr_t lo = AlignUp(data), hi = AlignDown(data + slab * (size_t) n_expert_);
    const int64_t file_of_lo = file_of_data + (int64_t) (lo - data);
    if (hi <= lo || file_of_lo % (int64_t) PageSize() != 0) {
        error_ = "'" + name + "' does not line up with the file's pages";
        return false;
    }
    const int fd = FileOf(path, true);
    const int plain_fd = fd >= 0 ? FileOf(path, false) : -1;
    if (fd < 0 || plain_fd < 0) {
        error_ = path + (fd < 0 ? ": O_DIRECT open: " : ": open: ") + strerror(errno);
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t) st.st_ino != inode) {
        // reading by path would read another file than the one mapped
        error_ = path + " was replaced on disk after the model was loaded";
        return false;
    }
    Layer & layer = layers_[il];
    // a layer's experts are resident in all of its tensors or in none: start the layer over
    while (std::any_of(layer.experts.begin(), layer.experts.end(), [](const Expert & x) { return x.pending > 0; })) {
        Reap(true);
    }
    const uint64_t old_bytes = ExpertBytes(layer);
    for (Expert & x : layer.experts) {
        if (x.state != State::absent) {
            resident_bytes_ -= old_bytes;
        }
    }
    if (mmap((void *) lo, hi - lo, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) ==
        MAP_FAILED) {
        error_ = std::string("mmap: ") + strerror(errno);
        return false;
    }
    for (const Tensor & t : layer.tensors) {  // what the earlier tensors held goes back
        madvise((void *) t.lo, t.hi - t.lo, MADV_DONTNEED);
    }
    layer.tensors.push_back({(const char *) base, slab, lo, hi, fd, plain_fd, file_of_lo});
    if (pool_ == 0 && recycle_) {
        // room for every resident expert's pages and as many again on their way back: address space only
        slot_bytes_ = AlignUp(slab) + PageSize();
        pool_slots_ = (size_t) (2 * budget_ / slab + 64);
        void * p = mmap(nullptr, pool_slots_ * slot_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            recycle_ = false;
        } else {
            pool_ = (uintptr_t) p;
            for (size_t i = pool_slots_; i-- > 0;) {
                free_slots_.push_back((uint32_t) i);
            }
        }
    }
    layer.experts.assign((size_t) n_expert_, Expert{});
    return true;
}

uint64_t ExpertRam::ExpertBytes(const Layer & layer) const {
    uint64_t bytes = 0;
    for (const Tensor & t : layer.tensors) {
        bytes += t.slab;
    }
    return bytes;
}

// Queues the reads of expert e of layer il into place; the caller submits.
uint64_t ExpertRam::StartRead(int32_t il, int32_t e) {
    Layer & layer = layers_[il];
    Expert & x = layer.experts[e];
    uint64_t bytes = 0;
    for (const Tensor & t : layer.tensors) {
        const uintptr_t s = (uintptr_t) t.data + (uintptr_t) e * t.slab;
        const uintptr_t r0 = std::max(AlignDown(s), t.lo), r1 = std::min(AlignUp(s + t.slab), t.hi);
        const uintptr_t i0 = std::max(AlignUp(s), t.lo), i1 = std::min(AlignDown(s + t.slab), t.hi);
        if (i1 > i0) {
            TakePages(i0, (i1 - i0) / PageSize());
        }
        for (uintptr_t p = r0; p < r1; p += kPiece) {
            const unsigned len = (unsigned) std::min<uintptr_t>(kPiece, r1 - p);
            io_uring_sqe * sqe;
            while ((sqe = io_uring_get_sqe(ring_)) == nullptr) {
                io_uring_submit(ring_);
                Reap(true);
            }
            const int64_t offset = t.file_of_lo + (int64_t) (p - t.lo);
            uint32_t id;
            if (free_pieces_.empty()) {
                id = (uint32_t) pieces_.size();
                pieces_.push_back({});
            } else {
                id = free_pieces_.back();
                free_pieces_.pop_back();
            }
            pieces_[id] = {il, e, p, len, t.plain_fd, offset};
            io_uring_prep_read(sqe, t.fd, (void *) p, len, (uint64_t) offset);
            io_uring_sqe_set_data64(sqe, id);
            x.pending++;
            in_flight_++;
            bytes += len;
        }
    }
    x.state = x.pending > 0 ? State::reading : State::resident;
    resident_bytes_ += ExpertBytes(layer);
    return bytes;
}

void ExpertRam::Reap(bool wait) {
    io_uring_cqe * cqe = nullptr;
    if (wait && in_flight_ > 0) {
        const int rc = io_uring_wait_cqe(ring_, &cqe);
        if (rc < 0 && rc != -EINTR) {
            fprintf(stderr, "moeflash: expert read: io_uring_wait_cqe: %s\n", strerror(-rc));
            abort();
        }
    }
    while (io_uring_peek_cqe(ring_, &cqe) == 0 && cqe != nullptr) {
        const Piece piece = pieces_[(uint32_t) io_uring_cqe_get_data64(cqe)];
        const int res = cqe->res;
        free_pieces_.push_back((uint32_t) io_uring_cqe_get_data64(cqe));
        io_uring_cqe_seen(ring_, cqe);
        if (res != (int) piece.len) {
            ReadPlain(piece, res > 0 ? res : 0);
        }
        in_flight_--;
        Expert & x = layers_[piece.il].experts[piece.e];
        if (--x.pending == 0) {
            x.state = State::resident;
        }
    }
}

ExpertRam::Needed ExpertRam::Need(int32_t il, const std::vector<int32_t> & experts) {
    Needed n;
    if (!owns(il)) {
        return n;
    }
    Layer & layer = layers_[il];
    const uint64_t bytes = ExpertBytes(layer);
    ++clock_;
    for (int32_t e : experts) {
        if (e < 0 || e >= n_expert_) continue;
        Expert & x = layer.experts[e];
        x.last_need = clock_;
        n.experts++;
        n.bytes += bytes;
        n.resident += x.state == State::resident;
        if (x.guessed) {
            n.bytes_guessed_used += bytes;
            x.guessed = false;
        }
        if (x.state == State::absent) {
            n.bytes_read += StartRead(il, e);
        }
    }
    io_uring_submit(ring_);
    for (int32_t e : experts) {
        while (e >= 0 && e < n_expert_ && layer.experts[e].state == State::reading) {
            Reap(true);
        }
    }
    Evict();
    return n;
}

uint64_t ExpertRam::Guess(int32_t il, const std::vector<int32_t> & experts) {
    if (!owns(il)) {
        return 0;
    }
    Layer & layer = layers_[il];
    uint64_t started = 0;
    for (int32_t e : experts) {
        if (e >= 0 && e < n_expert_ && layer.experts[e].state == State::absent) {
            started += StartRead(il, e);
            layer.experts[e].guessed = true;
        }
    }
    if (started > 0) {
        io_uring_submit(ring_);
    }
    Reap(false);
    Evict();
    return started;
}

// Moves pages of the pool into [dst, dst + pages): the expert's old pages there were given away, so the range is
// empty (anonymous, unbacked). MREMAP_DONTUNMAP leaves the source mapped (empty), so no address range is ever unmapped
// for another mapping of the process to take.
void ExpertRam::TakePages(uintptr_t dst, size_t pages) {
    const size_t page = PageSize();
    while (pages > 0 && !runs_.empty()) {
        Run & run = runs_.back();
        const size_t n = std::min(pages, run.pages);
        if (mremap((void *) run.addr, n * page, n * page, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, (void *) dst) ==
            MAP_FAILED) {
            recycle_ = false;  // the rest faults in fresh, as without a pool
            return;
        }
        dst += n * page;
        pages -= n;
        run.addr += n * page;
        run.pages -= n;
        if (run.pages == 0) {
            free_slots_.push_back(run.slot);
            runs_.pop_back();
        }
    }
}

void ExpertRam::GivePages(uintptr_t src, size_t pages) {
    const size_t page = PageSize();
    if (recycle_ && !free_slots_.empty() && pages * page <= slot_bytes_) {
        const uint32_t slot = free_slots_.back();
        const uintptr_t dst = pool_ + (uintptr_t) slot * slot_bytes_;
        if (mremap((void *) src, pages * page, pages * page, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, (void *) dst) !=
            MAP_FAILED) {
            free_slots_.pop_back();
            runs_.push_back({dst, pages, slot});
            return;
        }
        recycle_ = false;
    }
    madvise((void *) src, pages * page, MADV_DONTNEED);
}

// Drops the least recently needed resident experts (guesses never needed first) until the budget holds; never one on
// its way or one the latest need asked for (stamped with the current clock): its layer's matmuls or the cache's copies
// run after the callback returns, so neither that need nor a guess after it may take their pages.
void ExpertRam::Evict() {
    while (resident_bytes_ > budget_) {
        int32_t best_l = -1, best_e = -1;
        uint64_t best = UINT64_MAX;
        for (int32_t l = 0; l < (int32_t) layers_.size(); l++) {
            const Layer & layer = layers_[l];
            for (int32_t e = 0; e < (int32_t) layer.experts.size(); e++) {
                const Expert & x = layer.experts[e];
                if (x.state != State::resident || x.last_need == clock_) continue;
                if (x.last_need < best) {
                    best = x.last_need;
                    best_l = l;
                    best_e = e;
                }
            }
        }
        if (best_l < 0) {
            return;
        }
        Layer & layer = layers_[best_l];
        for (const Tensor & t : layer.tensors) {
            // only the pages this expert has to itself: a page shared with a neighbour's slab stays
            const uintptr_t s = (uintptr_t) t.data + (uintptr_t) best_e * t.slab;
            const uintptr_t r0 = std::max(AlignUp(s), t.lo), r1 = std::min(AlignDown(s + t.slab), t.hi);
            if (r1 > r0) {
                GivePages(r0, (r1 - r0) / PageSize());
            }
        }
        layer.experts[best_e] = Expert{};
        resident_bytes_ -= ExpertBytes(layer);
    }
}

}  // namespace moeflash

#else  // no liburing: nothing is adopted, the page cache serves

namespace moeflash {

ExpertRam::ExpertRam(int32_t n_layer, int32_t n_expert, uint64_t budget_bytes)
    : n_expert_(n_expert), budget_(budget_bytes), layers_((size_t) (n_layer > 0 ? n_layer : 0)),
      error_("this build has no liburing (io_uring)") {}
ExpertRam::~ExpertRam() = default;
bool ExpertRam::Adopt(int32_t, const ggml_tensor *) { return false; }
bool ExpertRam::AdoptRange(int32_t, const std::string &, const void *, size_t) { return false; }
ExpertRam::Needed ExpertRam::Need(int32_t, const std::vector<int32_t> &) { return {}; }
uint64_t ExpertRam::Guess(int32_t, const std::vector<int32_t> &) { return 0; }

}  // namespace moeflash

#endif
