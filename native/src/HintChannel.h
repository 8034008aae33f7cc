// The expert hint channel (layout and protocol: HintChannelLayout.h, docs/EXPERT_STORE.md).
//
// HintWriter: the producer, header-only and dependency-free (POSIX + the layout), for the engine's scheduler thread.
// publish() is wait-free: no locks, no allocation, no system calls (clock_gettime goes through the vDSO). Nobody
// reading is fine: old records are overwritten and readers count what they missed.
//
// HintConsumer: the expert-store side (HintChannel.cpp). Maps the segment read-only, validates it, and on its own
// native thread turns every record into page-cache prefetches of those experts' byte ranges (demand before
// predicted), keeping the counters the service reports. It waits for a segment that does not exist yet and follows
// a segment that is replaced (engine restarted).
#pragma once

#include "ExpertIo.h"
#include "HintChannelLayout.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace moeflash {

// The file of a hint channel: /dev/shm/<name> for a bare name (letters, digits, '.', '_', '-'; not starting with
// '.'), or the name itself when it is an absolute path. Throws std::invalid_argument for anything else.
inline std::string HintSegmentPath(const std::string & name) {
    if (!name.empty() && name[0] == '/') return name;
    bool ok = !name.empty() && name.size() <= 200 && name[0] != '.';
    for (char c : name) {
        ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-');
    }
    if (!ok) {
        throw std::invalid_argument("invalid hint channel name '" + name +
                                    "': use 1-200 letters, digits, '.', '_' or '-' (not starting with '.'), or an absolute path");
    }
    return "/dev/shm/" + name;
}

// Parses a W3C trace id (32 hex characters) into the 16 bytes a record carries; false (out zeroed) otherwise.
inline bool HintTraceIdFromHex(const char * hex, uint8_t out[16]) noexcept {
    memset(out, 0, 16);
    if (hex == nullptr) return false;
    auto nibble = [](char c) -> int {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    };
    for (int i = 0; i < 16; i++) {
        const int hi = nibble(hex[2 * i]);
        const int lo = hi < 0 ? -1 : nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            memset(out, 0, 16);
            return false;
        }
        out[i] = (uint8_t) (hi << 4 | lo);
    }
    if (hex[32] != '\0') {
        memset(out, 0, 16);
        return false;
    }
    return true;
}

struct HintWriterOptions {
    uint32_t capacity = hint::kDefaultCapacity;  // records; a power of two in 16..kMaxCapacity
    uint32_t n_layer = 0;                        // written to the header so consumers can check the model (0: unknown)
    uint32_t n_expert = 0;
    std::string model;                           // informational tag (e.g. the GGUF file name), truncated to 63 bytes
    bool unlink_on_close = true;                 // remove the segment on close() (not on a crash)
    bool heat_only = false;                      // hint::kHeaderHeatOnly: consumers count, read nothing ahead
};

class HintWriter {
  public:
    // Opens /dev/shm/<name> (creating it, mode 0600, if absent; replacing it if it has another version or shape) and
    // holds an exclusive flock on it: one writer per channel. Throws std::runtime_error / std::invalid_argument with
    // a message that names the file. Construct it off the hot path.
    explicit HintWriter(const std::string & name, const HintWriterOptions & options = HintWriterOptions())
        : path_(HintSegmentPath(name)), options_(options) {
        const uint32_t cap = options.capacity;
        if (cap < 16 || cap > hint::kMaxCapacity || (cap & (cap - 1)) != 0) {
            throw std::invalid_argument("hint channel capacity must be a power of two in 16.." + std::to_string(hint::kMaxCapacity));
        }
        for (int attempt = 0; attempt < 8 && fd_ < 0; attempt++) {
            const int fd = ::open(path_.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
            if (fd >= 0) {
                if (OpenExisting(fd)) break;
                continue;  // it was not ours to reuse and was unlinked: create a fresh one
            }
            if (errno != ENOENT) throw std::runtime_error("cannot open hint channel '" + path_ + "': " + strerror(errno));
            Create();
        }
        if (fd_ < 0) throw std::runtime_error("cannot create hint channel '" + path_ + "': other writers keep racing for it");
    }

    ~HintWriter() { close(); }
    HintWriter(const HintWriter &) = delete;
    HintWriter & operator=(const HintWriter &) = delete;

    // Publishes the expert ids one step routed to at `layer` (the engine's layer index, blk.N), the ids predicted for
    // layer + 1 (may be null/0) and the request's 16-byte trace id (may be null). More than kMaxIds ids are split over
    // several records (all but the last flagged kFlagContinued); predicted ids beyond kMaxPredicted are dropped;
    // ids outside 0..65535 are skipped. Wait-free; call it from one thread at a time.
    void publish(uint32_t layer, const int32_t * ids, size_t n_ids, const int32_t * predicted, size_t n_predicted,
                 const uint8_t * trace_id) noexcept {
        if (header_ == nullptr) return;
        timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        const uint64_t now = (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
        size_t i = 0;
        bool first = true;
        do {
            const uint64_t n = next_index_++;
            hint::Record * r = reinterpret_cast<hint::Record *>(base_ + hint::kHeaderSize + (n & mask_) * hint::kRecordSize);
            r->seq.store(0, std::memory_order_relaxed);
            std::atomic_thread_fence(std::memory_order_release);
            r->timestamp_ns = now;
            if (trace_id != nullptr) {
                memcpy(r->trace_id, trace_id, sizeof(r->trace_id));
            } else {
                memset(r->trace_id, 0, sizeof(r->trace_id));
            }
            r->layer = layer;
            uint16_t k = 0;
            for (; i < n_ids && k < hint::kMaxIds; i++) {
                if (ids[i] >= 0 && ids[i] <= 0xffff) r->ids[k++] = (uint16_t) ids[i];
            }
            r->n_ids = k;
            uint16_t p = 0;
            if (first && predicted != nullptr) {
                for (size_t j = 0; j < n_predicted && p < hint::kMaxPredicted; j++) {
                    if (predicted[j] >= 0 && predicted[j] <= 0xffff) r->predicted[p++] = (uint16_t) predicted[j];
                }
            }
            r->n_predicted = p;
            r->flags = i < n_ids ? hint::kFlagContinued : 0;
            r->reserved0 = 0;
            r->seq.store(n + 1, std::memory_order_release);
            header_->write_index.store(n + 1, std::memory_order_release);
            first = false;
        } while (i < n_ids);
    }

    // Records this writer has written since it opened the channel.
    uint64_t published() const noexcept { return next_index_ - first_index_; }
    const std::string & path() const noexcept { return path_; }
    bool is_open() const noexcept { return header_ != nullptr; }

    // Unmaps, releases the lock and (unlink_on_close) removes the segment if it is still ours. Idempotent; must not
    // race with publish().
    void close() noexcept {
        if (base_ != nullptr) {
            munmap(base_, size_);
            base_ = nullptr;
            header_ = nullptr;
        }
        if (fd_ >= 0) {
            struct stat mine, now;
            if (options_.unlink_on_close && fstat(fd_, &mine) == 0 && ::stat(path_.c_str(), &now) == 0 &&
                mine.st_dev == now.st_dev && mine.st_ino == now.st_ino) {
                ::unlink(path_.c_str());
            }
            ::close(fd_);
            fd_ = -1;
        }
    }

  private:
    static uint64_t RealtimeNs() {
        timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
    }

    void SetIdentity() {
        header_->producer_pid = (int32_t) getpid();
        if (options_.n_layer != 0) header_->n_layer = options_.n_layer;
        if (options_.n_expert != 0) header_->n_expert = options_.n_expert;
        __atomic_store_n(&header_->flags, options_.heat_only ? hint::kHeaderHeatOnly : 0u, __ATOMIC_RELEASE);
        if (!options_.model.empty()) {
            memset(header_->model, 0, sizeof(header_->model));
            memcpy(header_->model, options_.model.data(), std::min(options_.model.size(), sizeof(header_->model) - 1));
        }
    }

    bool Map(int fd) {
        size_ = hint::SegmentSize(options_.capacity);
        void * p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) return false;
        base_ = static_cast<uint8_t *>(p);
        header_ = reinterpret_cast<hint::Header *>(base_);
        mask_ = options_.capacity - 1;
        return true;
    }

    // Reuses an existing segment of our version and shape (write_index continues, so readers see no reset); replaces
    // anything else. False when the segment was unlinked for replacement.
    bool OpenExisting(int fd) {
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            const int err = errno;
            int32_t pid = 0;
            if (pread(fd, &pid, sizeof(pid), offsetof(hint::Header, producer_pid)) != (ssize_t) sizeof(pid)) pid = 0;
            ::close(fd);
            if (err == EWOULDBLOCK) {
                throw std::runtime_error("hint channel '" + path_ + "' is in use by another writer (pid " + std::to_string(pid) + ")");
            }
            throw std::runtime_error("cannot lock hint channel '" + path_ + "': " + strerror(err));
        }
        struct stat st;
        alignas(64) uint8_t raw[sizeof(hint::Header)] = {0};
        const hint::Header & h = *reinterpret_cast<const hint::Header *>(raw);
        const bool same = fstat(fd, &st) == 0 && (uint64_t) st.st_size == hint::SegmentSize(options_.capacity) &&
                          pread(fd, raw, sizeof(raw), 0) == (ssize_t) sizeof(raw) && memcmp(h.magic, hint::kMagic, 8) == 0 &&
                          h.version == hint::kVersion && h.header_size == hint::kHeaderSize &&
                          h.record_size == hint::kRecordSize && h.capacity == options_.capacity &&
                          h.max_ids == hint::kMaxIds && h.max_predicted == hint::kMaxPredicted;
        if (same && Map(fd)) {
            fd_ = fd;
            SetIdentity();
            header_->writer_opens++;
            next_index_ = first_index_ = header_->write_index.load(std::memory_order_acquire);
            return true;
        }
        // Another version, another capacity or not ours at all: readers of the old one keep their mapping (no
        // SIGBUS from a shrinking file) and move to the new inode.
        struct stat now;
        if (::stat(path_.c_str(), &now) == 0 && now.st_ino == st.st_ino && now.st_dev == st.st_dev) ::unlink(path_.c_str());
        ::close(fd);
        return false;
    }

    // Makes a complete segment under a temporary name and links it into place, so a reader never sees a half-made
    // one. Returns with fd_ set, or with fd_ < 0 when another writer linked first.
    void Create() {
        const std::string tmp = path_ + ".tmp-" + std::to_string(getpid());
        ::unlink(tmp.c_str());
        const int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) throw std::runtime_error("cannot create hint channel '" + tmp + "': " + strerror(errno));
        auto fail = [&](const std::string & what, int err) {
            ::close(fd);
            ::unlink(tmp.c_str());
            return std::runtime_error("cannot create hint channel '" + path_ + "': " + what + ": " + strerror(err));
        };
        fchmod(fd, 0600);
        // Reserve the memory now: a full tmpfs must fail here, not with SIGBUS on the first publish.
        const int e = posix_fallocate(fd, 0, (off_t) hint::SegmentSize(options_.capacity));
        if (e != 0) throw fail("posix_fallocate", e);
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) throw fail("flock", errno);
        const int saved_fd = fd_;
        if (!Map(fd)) throw fail("mmap", errno);
        hint::Header * h = header_;
        h->version = hint::kVersion;
        h->header_size = hint::kHeaderSize;
        h->record_size = hint::kRecordSize;
        h->capacity = options_.capacity;
        h->max_ids = hint::kMaxIds;
        h->max_predicted = hint::kMaxPredicted;
        h->created_ns = RealtimeNs();
        h->writer_opens = 1;
        h->write_index.store(0, std::memory_order_relaxed);
        SetIdentity();
        std::atomic_thread_fence(std::memory_order_release);
        memcpy(h->magic, hint::kMagic, sizeof(hint::kMagic));
        if (::link(tmp.c_str(), path_.c_str()) != 0) {
            const int err = errno;
            munmap(base_, size_);
            base_ = nullptr;
            header_ = nullptr;
            fd_ = saved_fd;
            if (err == EEXIST) {  // another writer was faster: open theirs next round (and find it locked)
                ::close(fd);
                ::unlink(tmp.c_str());
                return;
            }
            throw fail("link", err);
        }
        ::unlink(tmp.c_str());
        fd_ = fd;
        next_index_ = first_index_ = 0;
    }

    std::string path_;
    HintWriterOptions options_;
    int fd_ = -1;
    uint8_t * base_ = nullptr;
    hint::Header * header_ = nullptr;
    size_t size_ = 0;
    uint64_t mask_ = 0;
    uint64_t next_index_ = 0;
    uint64_t first_index_ = 0;
};

// What a consumer prefetches for each (layer, expert): ranges[first[i] .. first[i + 1]) with i = layer * n_expert +
// expert, offsets into `files`.
struct ExpertRangeTable {
    uint32_t n_layer = 0;
    uint32_t n_expert = 0;
    std::vector<std::string> files;
    std::vector<uint32_t> first;
    std::vector<ByteRange> ranges;
};

struct HintConsumerOptions {
    std::string name;                 // channel name or absolute path (HintSegmentPath)
    IoMode mode = IoMode::Auto;
    unsigned queue_depth = 32;
    uint32_t chunk_bytes = 1u << 20;
    uint32_t recent_ms = 2000;        // an expert prefetched this recently is not prefetched again
    bool skip_resident = true;        // check the page cache (cachestat) before reading an expert
    unsigned predicted_max_in_flight = 0;  // reads in flight for predicted hints; 0: half the queue depth
    uint32_t attach_retry_ms = 200;   // how often to look for an absent segment
    uint32_t check_ms = 500;          // how often to check that the attached segment was not replaced
    uint32_t poll_max_us = 2000;      // longest idle sleep between polls of the ring
};

struct HintConsumerStats {
    bool attached = false;
    std::string path;
    int32_t producer_pid = 0;
    uint64_t write_index = 0, read_index = 0, attaches = 0;
    uint64_t records = 0;           // records read (valid or not)
    uint64_t hints = 0;             // valid records
    uint64_t steps = 0;             // complete records of the first MoE layer: engine steps seen
    uint64_t dropped = 0;           // records overwritten before they were read
    uint64_t malformed = 0;         // records rejected (n_ids too large, layer or expert out of range)
    uint64_t demand_ids = 0, predicted_ids = 0;
    uint64_t prefetched_experts = 0, prefetched_bytes = 0;
    uint64_t already_resident = 0;  // experts due for prefetch that the page cache already held
    uint64_t deduplicated = 0;      // ids skipped because the expert was prefetched recently
    uint64_t useful = 0;            // experts we prefetched that a later hint used
    uint64_t late = 0;              // hints for experts whose prefetch had not completed
    uint64_t io_errors = 0;
    uint64_t in_flight = 0, queued = 0;
    bool heat_only = false;         // the writer reads its experts itself (hint::kHeaderHeatOnly): nothing is read ahead
    std::string mode, fallback_reason, last_error;
    std::string last_trace_id;      // hex of the last non-zero trace id seen
};

// The header of a segment, once validated.
struct HintSegmentInfo {
    std::string path;
    uint32_t version = 0, capacity = 0, n_layer = 0, n_expert = 0;
    int32_t producer_pid = 0;
    uint64_t write_index = 0, created_ns = 0, writer_opens = 0;
    std::string model;
};

// Reads and validates a segment's header: std::runtime_error with a clear message for a missing file, a foreign
// magic or version, a record size or capacity this build cannot read, a truncated file, or (when given, non-zero) a
// layer or expert count that differs from the model's.
HintSegmentInfo InspectHintSegment(const std::string & name, uint32_t n_layer = 0, uint32_t n_expert = 0);

class HintConsumer {
  public:
    // Opens the model files (std::runtime_error if one cannot be opened) and sets up the reader; Start() runs it.
    HintConsumer(ExpertRangeTable table, HintConsumerOptions options);
    ~HintConsumer();
    HintConsumer(const HintConsumer &) = delete;
    HintConsumer & operator=(const HintConsumer &) = delete;

    void Start();
    // Stops the thread after the reads in flight complete. Idempotent.
    void Stop();
    HintConsumerStats Stats() const;
    // Forgets which experts were prefetched (after an eviction), so the next hints read them again.
    void Forget();
    // Demand uses per (layer, expert) (index layer * n_expert + expert) since the last call.
    std::vector<uint64_t> TakeCounts();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace moeflash
