// The expert-store side of the hint channel (HintChannel.h) and the JavaScript bindings:
//   new HintWriter(name, { capacity, nLayer, nExpert, model, unlinkOnClose }) .publish(layer, ids, predicted?,
//       traceId?) .published() .path .close()
//   new HintConsumer({ name, files, nLayer, nExpert, ranges, mode, queueDepth, ... }) .start() .stop() .stats()
//       .forget() .takeCounts()
//   inspectHintChannel(name, { nLayer, nExpert }?)
#include "HintChannel.h"

#include "addon.h"

#include <chrono>
#include <deque>
#include <mutex>
#include <thread>

namespace moeflash {

namespace {

double NowMs() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A record as read out of the ring (plain data, no atomics).
struct RecordCopy {
    uint64_t timestamp_ns;
    uint8_t trace_id[16];
    uint32_t layer;
    uint16_t n_ids;
    uint16_t n_predicted;
    uint32_t flags;
    uint16_t ids[hint::kMaxIds];
    uint16_t predicted[hint::kMaxPredicted];
};

void CopyRecord(const uint8_t * src, RecordCopy * out) {
    memcpy(&out->timestamp_ns, src + offsetof(hint::Record, timestamp_ns), 8);
    memcpy(out->trace_id, src + offsetof(hint::Record, trace_id), 16);
    memcpy(&out->layer, src + offsetof(hint::Record, layer), 4);
    memcpy(&out->n_ids, src + offsetof(hint::Record, n_ids), 2);
    memcpy(&out->n_predicted, src + offsetof(hint::Record, n_predicted), 2);
    memcpy(&out->flags, src + offsetof(hint::Record, flags), 4);
    memcpy(out->ids, src + offsetof(hint::Record, ids), sizeof(out->ids));
    memcpy(out->predicted, src + offsetof(hint::Record, predicted), sizeof(out->predicted));
}

std::string Hex(const uint8_t * p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; i++) {
        s += digits[p[i] >> 4];
        s += digits[p[i] & 15];
    }
    return s;
}

HintSegmentInfo ValidateHeader(const std::string & path, const hint::Header & h, uint64_t file_size, uint32_t n_layer,
                               uint32_t n_expert) {
    if (memcmp(h.magic, hint::kMagic, sizeof(hint::kMagic)) != 0) {
        throw std::runtime_error("'" + path + "' is not a moeflash hint channel (bad magic)");
    }
    if (h.version != hint::kVersion) {
        throw std::runtime_error("'" + path + "' is hint channel version " + std::to_string(h.version) +
                                 "; this expert-store reads version " + std::to_string(hint::kVersion) +
                                 " (run the engine and the expert-store from the same moeflash release)");
    }
    if (h.header_size != hint::kHeaderSize || h.record_size != hint::kRecordSize || h.max_ids != hint::kMaxIds ||
        h.max_predicted != hint::kMaxPredicted) {
        throw std::runtime_error("'" + path + "' has record size " + std::to_string(h.record_size) + " (header " +
                                 std::to_string(h.header_size) + ", " + std::to_string(h.max_ids) + " ids, " +
                                 std::to_string(h.max_predicted) + " predicted); version " + std::to_string(hint::kVersion) +
                                 " has record size " + std::to_string(hint::kRecordSize) + " (header " +
                                 std::to_string(hint::kHeaderSize) + ", " + std::to_string(hint::kMaxIds) + " ids, " +
                                 std::to_string(hint::kMaxPredicted) + " predicted)");
    }
    if (h.capacity < 16 || h.capacity > hint::kMaxCapacity || (h.capacity & (h.capacity - 1)) != 0) {
        throw std::runtime_error("'" + path + "' has capacity " + std::to_string(h.capacity) +
                                 ": not a power of two in 16.." + std::to_string(hint::kMaxCapacity));
    }
    if (file_size < hint::SegmentSize(h.capacity)) {
        throw std::runtime_error("'" + path + "' is truncated: " + std::to_string(file_size) + " bytes, its header needs " +
                                 std::to_string(hint::SegmentSize(h.capacity)));
    }
    if ((n_layer != 0 && h.n_layer != 0 && h.n_layer != n_layer) || (n_expert != 0 && h.n_expert != 0 && h.n_expert != n_expert)) {
        throw std::runtime_error("'" + path + "' is for a model with " + std::to_string(h.n_layer) + " layers x " +
                                 std::to_string(h.n_expert) + " experts, but this expert-store serves " +
                                 std::to_string(n_layer) + " x " + std::to_string(n_expert) + " (another model's channel?)");
    }
    HintSegmentInfo info;
    info.path = path;
    info.version = h.version;
    info.capacity = h.capacity;
    info.n_layer = h.n_layer;
    info.n_expert = h.n_expert;
    info.producer_pid = h.producer_pid;
    info.write_index = h.write_index.load(std::memory_order_relaxed);
    info.created_ns = h.created_ns;
    info.writer_opens = h.writer_opens;
    info.model = std::string(h.model, strnlen(h.model, sizeof(h.model)));
    return info;
}

// Opens and validates; returns the fd (caller closes) and fills info. Throws std::runtime_error; ENOENT is reported
// through *absent instead when absent != nullptr.
int OpenSegment(const std::string & path, uint32_t n_layer, uint32_t n_expert, HintSegmentInfo * info, bool * absent) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        const int err = errno;
        if (err == ENOENT && absent != nullptr) {
            *absent = true;
            return -1;
        }
        if (err == ENOENT) throw std::runtime_error("hint channel '" + path + "' does not exist (no engine is publishing hints)");
        throw std::runtime_error("cannot open hint channel '" + path + "': " + strerror(err));
    }
    struct stat st;
    alignas(64) uint8_t raw[sizeof(hint::Header)];
    if (fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        throw std::runtime_error("cannot stat hint channel '" + path + "': " + strerror(err));
    }
    if ((uint64_t) st.st_size < hint::kHeaderSize || pread(fd, raw, sizeof(raw), 0) != (ssize_t) sizeof(raw)) {
        ::close(fd);
        throw std::runtime_error("'" + path + "' is " + std::to_string(st.st_size) + " bytes: too small for a hint channel header (" +
                                 std::to_string(hint::kHeaderSize) + " bytes)");
    }
    try {
        *info = ValidateHeader(path, *reinterpret_cast<const hint::Header *>(raw), (uint64_t) st.st_size, n_layer, n_expert);
    } catch (...) {
        ::close(fd);
        throw;
    }
    return fd;
}

}  // namespace

HintSegmentInfo InspectHintSegment(const std::string & name, uint32_t n_layer, uint32_t n_expert) {
    HintSegmentInfo info;
    const int fd = OpenSegment(HintSegmentPath(name), n_layer, n_expert, &info, nullptr);
    ::close(fd);
    return info;
}

struct HintConsumer::Impl {
    enum : uint8_t { kIdle, kQueued, kInFlight, kDone };
    struct Cursor {
        bool active = false;
        uint32_t ex = 0;   // expert index (layer * n_expert + expert)
        uint32_t r = 0;    // range of the expert being queued
        uint64_t pos = 0;  // next byte of that range
    };

    ExpertRangeTable table;
    HintConsumerOptions opt;
    std::string path;
    FileSet files;
    ResidencyProbe probe;
    UringReader reader;
    bool use_uring = false;
    unsigned predicted_max = 16;
    uint32_t first_moe_layer = 0;

    std::thread thread;
    std::atomic<bool> stopping{false};
    // The consumer's state. The thread holds it while it works, never while it sleeps; Forget/Stats/TakeCounts take it.
    mutable std::mutex mu;

    // segment
    int seg_fd = -1;
    uint8_t * seg = nullptr;
    size_t seg_size = 0;
    dev_t seg_dev = 0;
    ino_t seg_ino = 0;
    uint64_t seg_mask = 0;
    uint64_t next = 0;
    double next_attach_ms = 0, next_check_ms = 0;

    // per expert
    std::vector<uint8_t> state, demand, credited;
    std::vector<uint32_t> chunks_left;
    std::vector<double> done_ms;
    std::vector<uint32_t> seen;  // stamp of the last record that named the expert (de-duplicates ids in a record)
    uint32_t stamp = 0;
    std::deque<uint32_t> demand_q, predicted_q;
    Cursor cur[2];  // 0: demand, 1: predicted
    unsigned predicted_in_flight = 0;
    std::vector<uint64_t> counts;

    HintConsumerStats st;

    Impl(ExpertRangeTable t, HintConsumerOptions o) : table(std::move(t)), opt(std::move(o)) {
        path = HintSegmentPath(opt.name);
        const size_t n = (size_t) table.n_layer * table.n_expert;
        if (table.n_layer == 0 || table.n_expert == 0 || table.first.size() != n + 1 || table.first.back() != table.ranges.size()) {
            throw std::invalid_argument("hint consumer: the expert table is empty or inconsistent");
        }
        std::string err;
        if (!files.Open(table.files, &err)) throw std::runtime_error("hint consumer: " + err);
        if (opt.mode != IoMode::Fadvise) {
            std::string why;
            if (IoUringAvailable(&why) && reader.Init(opt.queue_depth, opt.chunk_bytes, &why) == 0) {
                use_uring = true;
                files.AdviseRandom();
            } else if (opt.mode == IoMode::Uring) {
                throw std::runtime_error("io_uring is not available: " + why);
            } else {
                st.fallback_reason = why;
            }
        }
        st.mode = use_uring ? "uring" : "fadvise";
        st.path = path;
        predicted_max = opt.predicted_max_in_flight != 0 ? opt.predicted_max_in_flight : std::max(1u, opt.queue_depth / 2);
        state.assign(n, kIdle);
        demand.assign(n, 0);
        credited.assign(n, 0);
        chunks_left.assign(n, 0);
        done_ms.assign(n, 0);
        seen.assign(n, 0);
        counts.assign(n, 0);
        while (first_moe_layer + 1 < table.n_layer && !LayerHasExperts(first_moe_layer)) first_moe_layer++;
    }

    ~Impl() { Detach(); }

    // ---- segment -------------------------------------------------------------------------------------------------

    void Attach() {
        HintSegmentInfo info;
        bool absent = false;
        int fd = -1;
        try {
            fd = OpenSegment(path, table.n_layer, table.n_expert, &info, &absent);
        } catch (const std::exception & e) {
            st.last_error = e.what();
            return;
        }
        if (fd < 0) return;  // no engine yet: look again later
        struct stat s;
        fstat(fd, &s);
        const size_t size = hint::SegmentSize(info.capacity);
        void * p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            st.last_error = "cannot map hint channel '" + path + "': " + strerror(errno);
            ::close(fd);
            return;
        }
        seg_fd = fd;
        seg = static_cast<uint8_t *>(p);
        seg_size = size;
        seg_dev = s.st_dev;
        seg_ino = s.st_ino;
        seg_mask = info.capacity - 1;
        // Hints written before we came are about steps already done: start from the present.
        next = Header()->write_index.load(std::memory_order_acquire);
        st.attached = true;
        st.attaches++;
        st.producer_pid = info.producer_pid;
        st.last_error.clear();
    }

    void Detach() {
        if (seg != nullptr) munmap(seg, seg_size);
        if (seg_fd >= 0) ::close(seg_fd);
        seg = nullptr;
        seg_fd = -1;
        st.attached = false;
    }

    const hint::Header * Header() const { return reinterpret_cast<const hint::Header *>(seg); }

    // The writer removed the segment (clean shutdown) or replaced it (restart with another version or shape).
    void CheckReplaced() {
        struct stat s;
        if (::stat(path.c_str(), &s) != 0) {
            Detach();
            return;
        }
        if (s.st_ino != seg_ino || s.st_dev != seg_dev) {
            Detach();
            Attach();
            return;
        }
        st.producer_pid = Header()->producer_pid;
    }

    // ---- records -------------------------------------------------------------------------------------------------

    int DrainRecords() {
        const uint64_t capacity = seg_mask + 1;
        const uint64_t w = Header()->write_index.load(std::memory_order_acquire);
        st.write_index = w;
        if (w < next) next = w;  // the segment was re-initialised
        if (w - next > capacity) {
            st.dropped += w - next - capacity;
            next = w - capacity;
        }
        int n = 0;
        RecordCopy rec;
        st.heat_only = (__atomic_load_n(&Header()->flags, __ATOMIC_ACQUIRE) & hint::kHeaderHeatOnly) != 0;
        while (next < w && n < 4096) {
            const uint8_t * slot = seg + hint::kHeaderSize + (next & seg_mask) * hint::kRecordSize;
            const auto * seq = reinterpret_cast<const std::atomic<uint64_t> *>(slot);
            const uint64_t s1 = seq->load(std::memory_order_acquire);
            CopyRecord(slot, &rec);
            std::atomic_thread_fence(std::memory_order_acquire);
            const uint64_t s2 = seq->load(std::memory_order_relaxed);
            st.records++;
            if (s1 != next + 1 || s2 != s1) {
                st.dropped++;  // overwritten before (or while) we read it
            } else {
                Process(rec, next);
            }
            next++;
            n++;
        }
        st.read_index = next;
        return n;
    }

    bool LayerHasExperts(uint32_t layer) const {
        const size_t i = (size_t) layer * table.n_expert;
        return table.first[i + table.n_expert] > table.first[i];
    }

    void Malformed(uint64_t n, const std::string & why) {
        st.malformed++;
        st.last_error = "hint record " + std::to_string(n) + " from pid " + std::to_string(st.producer_pid) + " rejected: " + why;
    }

    void Process(const RecordCopy & rec, uint64_t n) {
        if (rec.n_ids > hint::kMaxIds) {
            return Malformed(n, "n_ids " + std::to_string(rec.n_ids) + " exceeds the maximum of " + std::to_string(hint::kMaxIds));
        }
        if (rec.n_predicted > hint::kMaxPredicted) {
            return Malformed(n, "n_predicted " + std::to_string(rec.n_predicted) + " exceeds the maximum of " +
                                    std::to_string(hint::kMaxPredicted));
        }
        if (rec.layer >= table.n_layer) {
            return Malformed(n, "layer " + std::to_string(rec.layer) + " is out of range (the model has " +
                                    std::to_string(table.n_layer) + " layers)");
        }
        if (!LayerHasExperts(rec.layer)) return Malformed(n, "layer " + std::to_string(rec.layer) + " has no routed experts");
        for (uint16_t i = 0; i < rec.n_ids; i++) {
            if (rec.ids[i] >= table.n_expert) {
                return Malformed(n, "expert id " + std::to_string(rec.ids[i]) + " is out of range (layers have " +
                                        std::to_string(table.n_expert) + " experts)");
            }
        }
        const bool next_layer = rec.layer + 1 < table.n_layer && LayerHasExperts(rec.layer + 1);
        for (uint16_t i = 0; next_layer && i < rec.n_predicted; i++) {
            if (rec.predicted[i] >= table.n_expert) {
                return Malformed(n, "predicted expert id " + std::to_string(rec.predicted[i]) + " is out of range (layers have " +
                                        std::to_string(table.n_expert) + " experts)");
            }
        }
        st.hints++;
        if (rec.layer == first_moe_layer && (rec.flags & hint::kFlagContinued) == 0) st.steps++;
        bool traced = false;
        for (uint8_t b : rec.trace_id) traced = traced || b != 0;
        if (traced) st.last_trace_id = Hex(rec.trace_id, 16);
        const double now = NowMs();
        if (++stamp == 0) {
            std::fill(seen.begin(), seen.end(), 0);
            stamp = 1;
        }
        for (uint16_t i = 0; i < rec.n_ids; i++) {
            const uint32_t ex = rec.layer * table.n_expert + rec.ids[i];
            if (seen[ex] == stamp) continue;
            seen[ex] = stamp;
            OnDemand(ex, now);
        }
        for (uint16_t i = 0; next_layer && i < rec.n_predicted; i++) {
            const uint32_t ex = (rec.layer + 1) * table.n_expert + rec.predicted[i];
            if (seen[ex] == stamp) continue;
            seen[ex] = stamp;
            OnPredicted(ex, now);
        }
    }

    void Enqueue(uint32_t ex, bool is_demand) {
        state[ex] = kQueued;
        demand[ex] = is_demand;
        (is_demand ? demand_q : predicted_q).push_back(ex);
    }

    void OnDemand(uint32_t ex, double now) {
        counts[ex]++;
        st.demand_ids++;
        if (st.heat_only) return;  // the engine reads its experts itself: the heat map is all these are for
        switch (state[ex]) {
            case kQueued:
                st.late++;
                if (!demand[ex]) {  // predicted, not started: move it ahead of every predicted read
                    demand[ex] = 1;
                    demand_q.push_back(ex);
                }
                break;
            case kInFlight:
                st.late++;
                break;
            case kDone:
                if (credited[ex]) {
                    st.useful++;
                    credited[ex] = 0;
                }
                if (now - done_ms[ex] >= opt.recent_ms) {
                    Enqueue(ex, true);
                } else {
                    st.deduplicated++;
                }
                break;
            default:
                Enqueue(ex, true);
        }
    }

    void OnPredicted(uint32_t ex, double now) {
        st.predicted_ids++;
        if (st.heat_only) return;
        if (state[ex] == kIdle || (state[ex] == kDone && now - done_ms[ex] >= opt.recent_ms)) {
            Enqueue(ex, false);
        } else {
            st.deduplicated++;
        }
    }

    // ---- reads ---------------------------------------------------------------------------------------------------

    void Complete(uint32_t ex, bool read) {
        state[ex] = kDone;
        done_ms[ex] = NowMs();
        credited[ex] = read;
        if (read) st.prefetched_experts++;
    }

    // Whether expert ex must be read: false (and marked done) when the page cache already holds all of it.
    bool NeedsRead(uint32_t ex) {
        if (!opt.skip_resident) return true;
        for (uint32_t i = table.first[ex]; i < table.first[ex + 1]; i++) {
            const ByteRange & r = table.ranges[i];
            if (probe.Resident(files.Fd(r.file), r.offset, r.length) != (int64_t) r.length) return true;
        }
        st.already_resident++;
        Complete(ex, false);
        return false;
    }

    bool NextJob(int k) {
        std::deque<uint32_t> & q = k == 0 ? demand_q : predicted_q;
        while (!q.empty()) {
            const uint32_t ex = q.front();
            q.pop_front();
            if (state[ex] != kQueued || (k == 1 && demand[ex])) continue;  // stale, or promoted to the demand queue
            if (!NeedsRead(ex)) continue;
            state[ex] = kInFlight;
            Cursor & c = cur[k];
            c.active = true;
            c.ex = ex;
            c.r = 0;
            c.pos = table.ranges[table.first[ex]].offset;
            if (!SkipEmpty(c)) {
                Complete(ex, false);  // nothing to read
                continue;
            }
            return true;
        }
        return false;
    }

    // Moves the cursor past finished or empty ranges; false when the expert has no more ranges.
    bool SkipEmpty(Cursor & c) {
        const uint32_t count = table.first[c.ex + 1] - table.first[c.ex];
        while (c.r < count) {
            const ByteRange & r = table.ranges[table.first[c.ex] + c.r];
            if (c.pos < r.offset + r.length) return true;
            if (++c.r < count) c.pos = table.ranges[table.first[c.ex] + c.r].offset;
        }
        c.active = false;
        return false;
    }

    int Fill(int k) {
        int n = 0;
        while (reader.Free() > 0 && (k == 0 || predicted_in_flight < predicted_max)) {
            Cursor & c = cur[k];
            if (!c.active && !NextJob(k)) break;
            const ByteRange & r = table.ranges[table.first[c.ex] + c.r];
            const uint32_t len = (uint32_t) std::min<uint64_t>(reader.ChunkBytes(), r.offset + r.length - c.pos);
            reader.Queue(files.Fd(r.file), c.pos, len, ((uint64_t) c.ex << 1) | (uint64_t) k);
            chunks_left[c.ex]++;
            if (k == 1) predicted_in_flight++;
            c.pos += len;
            SkipEmpty(c);
            n++;
        }
        return n;
    }

    void OnRead(uint64_t tag, uint64_t offset, uint32_t length, int error) {
        const uint32_t ex = (uint32_t) (tag >> 1);
        if (tag & 1) predicted_in_flight--;
        if (error != 0) {
            st.io_errors++;
            const uint32_t file = table.ranges[table.first[ex]].file;
            st.last_error = error == -1 ? "'" + files.Path(file) + "' ends before byte " + std::to_string(offset + length) + " (truncated?)"
                                        : "prefetch read of '" + files.Path(file) + "' at byte " + std::to_string(offset) + " failed: " + strerror(error);
        } else {
            st.prefetched_bytes += length;
        }
        if (--chunks_left[ex] == 0 && !(cur[0].active && cur[0].ex == ex) && !(cur[1].active && cur[1].ex == ex)) {
            Complete(ex, true);
        }
    }

    // fadvise mode: WILLNEED over every range of the next jobs (the kernel reads asynchronously).
    int AdviseJobs() {
        int n = 0;
        for (int k = 0; k < 2 && n < 256; k++) {
            while (n < 256 && NextJob(k)) {
                Cursor & c = cur[k];
                for (uint32_t i = table.first[c.ex]; i < table.first[c.ex + 1]; i++) {
                    const ByteRange & r = table.ranges[i];
                    const int e = AdviseWillNeed(files.Fd(r.file), r.offset, r.length);
                    if (e != 0) {
                        st.io_errors++;
                        st.last_error = "posix_fadvise(WILLNEED) on '" + files.Path(r.file) + "' failed: " + strerror(e);
                    } else {
                        st.prefetched_bytes += r.length;
                    }
                }
                c.active = false;
                Complete(c.ex, true);
                n++;
            }
        }
        return n;
    }

    int Pump(int64_t wait_us) {
        if (!use_uring) return AdviseJobs();
        int n = 0;
        if (reader.InFlight() > 0) {
            const int r = reader.Reap([this](uint64_t tag, uint64_t offset, uint32_t length, int error) { OnRead(tag, offset, length, error); },
                                      wait_us);
            if (r > 0) n += r;
        }
        const int queued = Fill(0) + Fill(1);
        if (queued > 0) {
            const int e = reader.Submit();
            if (e != 0) {
                st.io_errors++;
                st.last_error = std::string("io_uring submit failed: ") + strerror(e);
            }
        }
        return n + queued;
    }

    void Run() {
        uint32_t backoff_us = 20;
        while (!stopping.load(std::memory_order_relaxed)) {
            int worked = 0;
            {
                std::lock_guard<std::mutex> lock(mu);
                const double now = NowMs();
                if (seg == nullptr) {
                    if (now >= next_attach_ms) {
                        Attach();
                        next_attach_ms = now + opt.attach_retry_ms;
                        next_check_ms = now + opt.check_ms;
                    }
                } else if (now >= next_check_ms) {
                    CheckReplaced();
                    next_check_ms = now + opt.check_ms;
                }
                if (seg != nullptr) worked += DrainRecords();
                worked += Pump(0);
            }
            if (worked > 0) {
                backoff_us = 20;
                continue;
            }
            if (use_uring && reader.InFlight() > 0) {
                std::lock_guard<std::mutex> lock(mu);
                Pump(backoff_us);  // sleep in the ring until a read completes or the backoff ends
            } else {
                std::this_thread::sleep_for(std::chrono::microseconds(backoff_us));
            }
            backoff_us = std::min(backoff_us * 2, std::max<uint32_t>(opt.poll_max_us, 20));
        }
        std::lock_guard<std::mutex> lock(mu);
        reader.Drain();
    }

};

HintConsumer::HintConsumer(ExpertRangeTable table, HintConsumerOptions options)
    : impl_(new Impl(std::move(table), std::move(options))) {}

HintConsumer::~HintConsumer() { Stop(); }

void HintConsumer::Start() {
    if (impl_->thread.joinable()) return;
    impl_->stopping = false;
    impl_->thread = std::thread([this] { impl_->Run(); });
}

void HintConsumer::Stop() {
    impl_->stopping = true;
    if (impl_->thread.joinable()) impl_->thread.join();
}

HintConsumerStats HintConsumer::Stats() const {
    std::lock_guard<std::mutex> lock(impl_->mu);
    HintConsumerStats s = impl_->st;
    s.in_flight = impl_->reader.InFlight();
    s.queued = impl_->demand_q.size() + impl_->predicted_q.size();
    return s;
}

void HintConsumer::Forget() {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (size_t i = 0; i < impl_->state.size(); i++) {
        if (impl_->state[i] == Impl::kDone) impl_->state[i] = Impl::kIdle;
        impl_->credited[i] = 0;
    }
}

std::vector<uint64_t> HintConsumer::TakeCounts() {
    std::lock_guard<std::mutex> lock(impl_->mu);
    std::vector<uint64_t> out(impl_->counts.size(), 0);
    out.swap(impl_->counts);
    return out;
}

}  // namespace moeflash

// ---- JavaScript bindings -----------------------------------------------------------------------------------------

namespace {

using namespace moeflash;

uint32_t OptU32(const Napi::Object & o, const char * key, uint32_t fallback) {
    if (!o.Has(key)) return fallback;
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() || v.IsNull()) return fallback;
    if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= 4294967295.0 && d == (double) (uint32_t) d)) {
        throw Napi::RangeError::New(o.Env(), std::string(key) + " must be a non-negative 32-bit integer");
    }
    return (uint32_t) d;
}

std::vector<int32_t> ParseIds(const Napi::Env & env, const Napi::Value & v, const char * what) {
    std::vector<int32_t> out;
    if (v.IsUndefined() || v.IsNull()) return out;
    if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
        Napi::Int32Array a = v.As<Napi::Int32Array>();
        out.assign(a.Data(), a.Data() + a.ElementLength());
        return out;
    }
    if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an Int32Array or an array of expert ids");
    Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value x = a.Get(i);
        if (!x.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + " must hold numbers");
        out.push_back(x.As<Napi::Number>().Int32Value());
    }
    return out;
}

class JsHintWriter : public Napi::ObjectWrap<JsHintWriter> {
  public:
    static Napi::Function Init(Napi::Env env) {
        return DefineClass(env, "HintWriter",
                           {
                               InstanceMethod("publish", &JsHintWriter::Publish),
                               InstanceMethod("published", &JsHintWriter::Published),
                               InstanceMethod("close", &JsHintWriter::Close),
                               InstanceAccessor("path", &JsHintWriter::Path, nullptr),
                           });
    }

    // new HintWriter(name, { capacity, nLayer, nExpert, model, unlinkOnClose })
    explicit JsHintWriter(const Napi::CallbackInfo & info) : Napi::ObjectWrap<JsHintWriter>(info) {
        Napi::Env env = info.Env();
        if (!info[0].IsString()) throw Napi::TypeError::New(env, "HintWriter(name): name must be a string");
        HintWriterOptions o;
        if (info.Length() > 1 && info[1].IsObject()) {
            Napi::Object opts = info[1].As<Napi::Object>();
            o.capacity = OptU32(opts, "capacity", o.capacity);
            o.n_layer = OptU32(opts, "nLayer", 0);
            o.n_expert = OptU32(opts, "nExpert", 0);
            if (opts.Has("model") && opts.Get("model").IsString()) o.model = opts.Get("model").As<Napi::String>().Utf8Value();
            if (opts.Has("unlinkOnClose") && !opts.Get("unlinkOnClose").IsUndefined()) o.unlink_on_close = opts.Get("unlinkOnClose").ToBoolean();
        }
        try {
            writer = std::make_unique<HintWriter>(info[0].As<Napi::String>().Utf8Value(), o);
        } catch (const std::exception & e) {
            throw Napi::Error::New(env, e.what());
        }
    }

  private:
    // publish(layer, ids, predicted?, traceId?) -> records written
    Napi::Value Publish(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!writer || !writer->is_open()) throw Napi::Error::New(env, "HintWriter is closed");
        if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "layer must be a number");
        const double layer = info[0].As<Napi::Number>().DoubleValue();
        if (!(layer >= 0 && layer <= 4294967295.0 && layer == (double) (uint32_t) layer)) {
            throw Napi::RangeError::New(env, "layer must be a non-negative 32-bit integer");
        }
        const std::vector<int32_t> ids = ParseIds(env, info[1], "ids");
        const std::vector<int32_t> predicted = ParseIds(env, info.Length() > 2 ? info[2] : env.Undefined(), "predicted");
        uint8_t trace[16] = {0};
        bool has_trace = false;
        if (info.Length() > 3 && info[3].IsBuffer()) {
            Napi::Buffer<uint8_t> b = info[3].As<Napi::Buffer<uint8_t>>();
            if (b.Length() != 16) throw Napi::RangeError::New(env, "traceId must be 16 bytes");
            memcpy(trace, b.Data(), 16);
            has_trace = true;
        } else if (info.Length() > 3 && info[3].IsString()) {
            const std::string hex = info[3].As<Napi::String>().Utf8Value();
            if (!HintTraceIdFromHex(hex.c_str(), trace)) throw Napi::RangeError::New(env, "traceId must be 32 hex characters");
            has_trace = true;
        }
        const uint64_t before = writer->published();
        writer->publish((uint32_t) layer, ids.data(), ids.size(), predicted.empty() ? nullptr : predicted.data(),
                        predicted.size(), has_trace ? trace : nullptr);
        return Napi::Number::New(env, (double) (writer->published() - before));
    }

    Napi::Value Published(const Napi::CallbackInfo & info) {
        return Napi::Number::New(info.Env(), writer ? (double) writer->published() : 0);
    }

    Napi::Value Path(const Napi::CallbackInfo & info) {
        return writer ? Napi::String::New(info.Env(), writer->path()) : info.Env().Null();
    }

    Napi::Value Close(const Napi::CallbackInfo & info) {
        writer.reset();
        return info.Env().Undefined();
    }

    std::unique_ptr<HintWriter> writer;
};

class JsHintConsumer : public Napi::ObjectWrap<JsHintConsumer> {
  public:
    static Napi::Function Init(Napi::Env env) {
        return DefineClass(env, "HintConsumer",
                           {
                               InstanceMethod("start", &JsHintConsumer::Start),
                               InstanceMethod("stop", &JsHintConsumer::Stop),
                               InstanceMethod("stats", &JsHintConsumer::Stats),
                               InstanceMethod("forget", &JsHintConsumer::Forget),
                               InstanceMethod("takeCounts", &JsHintConsumer::TakeCounts),
                           });
    }

    // new HintConsumer({ name, files, nLayer, nExpert, ranges: Float64Array of (layer, expert, file, offset, length),
    //                    mode, queueDepth, chunkBytes, recentMs, skipResident, predictedMaxInFlight, attachRetryMs,
    //                    checkMs, pollMaxUs })
    explicit JsHintConsumer(const Napi::CallbackInfo & info) : Napi::ObjectWrap<JsHintConsumer>(info) {
        Napi::Env env = info.Env();
        if (!info[0].IsObject()) throw Napi::TypeError::New(env, "HintConsumer(options): options must be an object");
        Napi::Object o = info[0].As<Napi::Object>();
        HintConsumerOptions opt;
        if (!o.Get("name").IsString()) throw Napi::TypeError::New(env, "name must be a string");
        opt.name = o.Get("name").As<Napi::String>().Utf8Value();
        if (o.Has("mode") && o.Get("mode").IsString()) {
            const std::string m = o.Get("mode").As<Napi::String>().Utf8Value();
            if (!ParseIoMode(m, &opt.mode)) throw Napi::RangeError::New(env, "mode must be auto, uring or fadvise (got '" + m + "')");
        }
        opt.queue_depth = OptU32(o, "queueDepth", opt.queue_depth);
        if (opt.queue_depth < 1 || opt.queue_depth > 4096) throw Napi::RangeError::New(env, "queueDepth must be in 1..4096");
        opt.chunk_bytes = OptU32(o, "chunkBytes", opt.chunk_bytes);
        if (opt.chunk_bytes < 4096 || opt.chunk_bytes % 4096 != 0) throw Napi::RangeError::New(env, "chunkBytes must be a multiple of 4096");
        opt.recent_ms = OptU32(o, "recentMs", opt.recent_ms);
        if (o.Has("skipResident") && !o.Get("skipResident").IsUndefined()) opt.skip_resident = o.Get("skipResident").ToBoolean();
        opt.predicted_max_in_flight = OptU32(o, "predictedMaxInFlight", 0);
        opt.attach_retry_ms = OptU32(o, "attachRetryMs", opt.attach_retry_ms);
        opt.check_ms = OptU32(o, "checkMs", opt.check_ms);
        opt.poll_max_us = OptU32(o, "pollMaxUs", opt.poll_max_us);

        ExpertRangeTable table;
        table.n_layer = OptU32(o, "nLayer", 0);
        table.n_expert = OptU32(o, "nExpert", 0);
        if (table.n_layer == 0 || table.n_expert == 0 || (uint64_t) table.n_layer * table.n_expert > (1u << 24)) {
            throw Napi::RangeError::New(env, "nLayer and nExpert must be positive (and their product at most 2^24)");
        }
        if (!o.Get("files").IsArray()) throw Napi::TypeError::New(env, "files must be an array of paths");
        Napi::Array files = o.Get("files").As<Napi::Array>();
        for (uint32_t i = 0; i < files.Length(); i++) table.files.push_back(files.Get(i).ToString().Utf8Value());
        Napi::Value rv = o.Get("ranges");
        if (!rv.IsTypedArray() || rv.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
            rv.As<Napi::Float64Array>().ElementLength() % 5 != 0) {
            throw Napi::TypeError::New(env, "ranges must be a Float64Array of (layer, expert, file, offset, length) tuples");
        }
        Napi::Float64Array ra = rv.As<Napi::Float64Array>();
        const size_t n_ranges = ra.ElementLength() / 5;
        const size_t n = (size_t) table.n_layer * table.n_expert;
        std::vector<std::vector<ByteRange>> per(n);
        for (size_t i = 0; i < n_ranges; i++) {
            const double l = ra[5 * i], e = ra[5 * i + 1], f = ra[5 * i + 2], off = ra[5 * i + 3], len = ra[5 * i + 4];
            if (!(l >= 0 && l < table.n_layer && e >= 0 && e < table.n_expert && f >= 0 && f < table.files.size() && off >= 0 && len >= 0)) {
                throw Napi::RangeError::New(env, "range " + std::to_string(i) + " is out of bounds");
            }
            per[(size_t) l * table.n_expert + (size_t) e].push_back(ByteRange{(uint32_t) f, (uint64_t) off, (uint64_t) len});
        }
        table.first.reserve(n + 1);
        for (size_t i = 0; i < n; i++) {
            table.first.push_back((uint32_t) table.ranges.size());
            table.ranges.insert(table.ranges.end(), per[i].begin(), per[i].end());
        }
        table.first.push_back((uint32_t) table.ranges.size());
        try {
            consumer = std::make_unique<HintConsumer>(std::move(table), std::move(opt));
        } catch (const std::exception & e) {
            throw Napi::Error::New(env, e.what());
        }
    }

  private:
    HintConsumer & Get(const Napi::Env & env) {
        if (!consumer) throw Napi::Error::New(env, "HintConsumer is stopped");
        return *consumer;
    }

    Napi::Value Start(const Napi::CallbackInfo & info) {
        Get(info.Env()).Start();
        return info.Env().Undefined();
    }

    // stop(): joins the thread (after reads in flight finish) and releases the files; the object is dead afterwards.
    Napi::Value Stop(const Napi::CallbackInfo & info) {
        consumer.reset();
        return info.Env().Undefined();
    }

    Napi::Value Forget(const Napi::CallbackInfo & info) {
        Get(info.Env()).Forget();
        return info.Env().Undefined();
    }

    Napi::Value TakeCounts(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        const std::vector<uint64_t> counts = Get(env).TakeCounts();
        Napi::Float64Array a = Napi::Float64Array::New(env, counts.size());
        for (size_t i = 0; i < counts.size(); i++) a[i] = (double) counts[i];
        return a;
    }

    Napi::Value Stats(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        const HintConsumerStats s = Get(env).Stats();
        Napi::Object o = Napi::Object::New(env);
        o.Set("attached", s.attached);
        o.Set("path", s.path);
        o.Set("producerPid", s.producer_pid);
        o.Set("writeIndex", (double) s.write_index);
        o.Set("readIndex", (double) s.read_index);
        o.Set("attaches", (double) s.attaches);
        o.Set("records", (double) s.records);
        o.Set("hints", (double) s.hints);
        o.Set("steps", (double) s.steps);
        o.Set("dropped", (double) s.dropped);
        o.Set("malformed", (double) s.malformed);
        o.Set("demandIds", (double) s.demand_ids);
        o.Set("predictedIds", (double) s.predicted_ids);
        o.Set("prefetchedExperts", (double) s.prefetched_experts);
        o.Set("prefetchedBytes", (double) s.prefetched_bytes);
        o.Set("alreadyResident", (double) s.already_resident);
        o.Set("deduplicated", (double) s.deduplicated);
        o.Set("useful", (double) s.useful);
        o.Set("heatOnly", s.heat_only);
        o.Set("late", (double) s.late);
        o.Set("ioErrors", (double) s.io_errors);
        o.Set("inFlight", (double) s.in_flight);
        o.Set("queued", (double) s.queued);
        o.Set("mode", s.mode);
        o.Set("fallbackReason", s.fallback_reason.empty() ? env.Null() : Napi::String::New(env, s.fallback_reason));
        o.Set("lastTraceId", s.last_trace_id.empty() ? env.Null() : Napi::String::New(env, s.last_trace_id));
        o.Set("lastError", s.last_error.empty() ? env.Null() : Napi::String::New(env, s.last_error));
        return o;
    }

    std::unique_ptr<HintConsumer> consumer;
};

// inspectHintChannel(name, { nLayer, nExpert }?) -> header fields; throws with the reason a consumer would refuse it.
Napi::Value InspectHintChannel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "name must be a string");
    uint32_t n_layer = 0, n_expert = 0;
    if (info.Length() > 1 && info[1].IsObject()) {
        n_layer = OptU32(info[1].As<Napi::Object>(), "nLayer", 0);
        n_expert = OptU32(info[1].As<Napi::Object>(), "nExpert", 0);
    }
    HintSegmentInfo h;
    try {
        h = InspectHintSegment(info[0].As<Napi::String>().Utf8Value(), n_layer, n_expert);
    } catch (const std::exception & e) {
        throw Napi::Error::New(env, e.what());
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("path", h.path);
    o.Set("version", h.version);
    o.Set("capacity", h.capacity);
    o.Set("nLayer", h.n_layer);
    o.Set("nExpert", h.n_expert);
    o.Set("producerPid", h.producer_pid);
    o.Set("writeIndex", (double) h.write_index);
    o.Set("createdNs", (double) h.created_ns);
    o.Set("writerOpens", (double) h.writer_opens);
    o.Set("model", h.model);
    o.Set("recordSize", hint::kRecordSize);
    o.Set("headerSize", hint::kHeaderSize);
    return o;
}

}  // namespace

void InitHintChannel(Napi::Env env, Napi::Object exports) {
    exports.Set("HintWriter", JsHintWriter::Init(env));
    exports.Set("HintConsumer", JsHintConsumer::Init(env));
    exports.Set("inspectHintChannel", Napi::Function::New(env, InspectHintChannel));
}
