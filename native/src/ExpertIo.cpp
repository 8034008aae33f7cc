// Expert I/O: io_uring reads that fill the page cache, posix_fadvise fallback, cachestat/mincore residency and
// DONTNEED eviction (ExpertIo.h), plus their JavaScript bindings:
//   ioUringStatus() -> { available, reason }
//   prefetchRanges(files, ranges, options, onProgress?) -> Promise<{ mode, fallbackReason, bytes, spans, requests,
//                                                                    ms, groupsDone, cancelled }>
//   residency(files, ranges) -> Promise<{ method, resident: Float64Array }>
//   evict(files, ranges | null) -> Promise<{ bytes }>
// `ranges` is a Float64Array of (file index, offset, length) triples.
#include "ExpertIo.h"

#include "addon.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef MOEFLASH_HAVE_LIBURING
#include <liburing.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <numeric>

namespace moeflash {

const char * IoModeName(IoMode mode) {
    switch (mode) {
        case IoMode::Uring: return "uring";
        case IoMode::Fadvise: return "fadvise";
        default: return "auto";
    }
}

bool ParseIoMode(const std::string & name, IoMode * mode) {
    if (name == "auto") *mode = IoMode::Auto;
    else if (name == "uring") *mode = IoMode::Uring;
    else if (name == "fadvise") *mode = IoMode::Fadvise;
    else return false;
    return true;
}

static std::string ErrnoText(int err) {
    return std::string(strerror(err)) + " (errno " + std::to_string(err) + ")";
}

bool IoUringAvailable(std::string * reason) {
    const char * env = getenv("MOEFLASH_IO_URING");
    if (env != nullptr && strcmp(env, "0") == 0) {
        if (reason) *reason = "disabled by MOEFLASH_IO_URING=0";
        return false;
    }
    static std::once_flag once;
    static bool available = false;
    static std::string why;
    std::call_once(once, [] {
        UringReader probe;
        available = probe.Init(4, 4096, &why) == 0;
    });
    if (!available && reason) *reason = why;
    return available;
}

int AdviseWillNeed(int fd, uint64_t offset, uint64_t length) {
    for (uint64_t done = 0; done < length;) {
        const uint64_t n = std::min(kFadviseMaxBytes, length - done);
        const int r = posix_fadvise(fd, (off_t) (offset + done), (off_t) n, POSIX_FADV_WILLNEED);
        if (r != 0) return r;
        done += n;
    }
    return 0;
}

int AdviseDontNeed(int fd, uint64_t offset, uint64_t length) {
    if (length == 0) return posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    const uint64_t page = (uint64_t) sysconf(_SC_PAGESIZE);
    const uint64_t start = offset / page * page;
    const uint64_t end = (offset + length + page - 1) / page * page;
    return posix_fadvise(fd, (off_t) start, (off_t) (end - start), POSIX_FADV_DONTNEED);
}

// ---- residency ---------------------------------------------------------------------------------------------------

#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif

namespace {
struct CachestatRange {
    uint64_t off;
    uint64_t len;
};
struct Cachestat {
    uint64_t nr_cache;
    uint64_t nr_dirty;
    uint64_t nr_writeback;
    uint64_t nr_evicted;
    uint64_t nr_recently_evicted;
};
std::atomic<bool> g_cachestat_works{true};
}  // namespace

ResidencyProbe::ResidencyProbe() : use_cachestat(g_cachestat_works.load()), page_size((uint64_t) sysconf(_SC_PAGESIZE)) {}

int64_t ResidencyProbe::PagesCached(int fd, uint64_t first_page, uint64_t n_pages) {
    if (use_cachestat) {
        CachestatRange range = {first_page * page_size, n_pages * page_size};
        Cachestat cs = {};
        if (syscall(__NR_cachestat, fd, &range, &cs, 0) == 0) return (int64_t) cs.nr_cache;
        if (errno != ENOSYS && errno != EOPNOTSUPP) return -errno;
        use_cachestat = false;  // the kernel (or the filesystem) lacks it: mincore from now on
        if (errno == ENOSYS) g_cachestat_works = false;
    }
    int64_t cached = 0;
    const uint64_t window = 1u << 16;  // pages mapped at a time
    std::vector<unsigned char> vec;
    for (uint64_t p = 0; p < n_pages; p += window) {
        const uint64_t n = std::min(window, n_pages - p);
        void * addr = mmap(nullptr, n * page_size, PROT_READ, MAP_SHARED, fd, (off_t) ((first_page + p) * page_size));
        if (addr == MAP_FAILED) return -errno;
        vec.assign(n, 0);
        const int r = mincore(addr, n * page_size, vec.data());
        const int err = errno;
        munmap(addr, n * page_size);
        if (r != 0) return -err;
        for (unsigned char v : vec) cached += v & 1;
    }
    return cached;
}

int64_t ResidencyProbe::Resident(int fd, uint64_t offset, uint64_t length) {
    if (length == 0) return 0;
    const uint64_t first = offset / page_size;
    const uint64_t last = (offset + length - 1) / page_size;
    if (first == last) {
        const int64_t c = PagesCached(fd, first, 1);
        return c < 0 ? c : (c > 0 ? (int64_t) length : 0);
    }
    const int64_t all = PagesCached(fd, first, last - first + 1);
    if (all < 0) return all;
    int64_t bytes = all * (int64_t) page_size;
    // Partial first and last pages count only for the bytes of the range they hold.
    if (offset % page_size != 0) {
        const int64_t c = PagesCached(fd, first, 1);
        if (c < 0) return c;
        if (c > 0) bytes -= (int64_t) (offset % page_size);
    }
    const uint64_t end = offset + length;
    if (end % page_size != 0) {
        const int64_t c = PagesCached(fd, last, 1);
        if (c < 0) return c;
        if (c > 0) bytes -= (int64_t) (page_size - end % page_size);
    }
    return bytes;
}

// ---- io_uring reader ---------------------------------------------------------------------------------------------

#ifdef MOEFLASH_HAVE_LIBURING

static io_uring * Ring(void * p) { return static_cast<io_uring *>(p); }

static std::string UringDisabledSysctl() {
    std::ifstream f("/proc/sys/kernel/io_uring_disabled");
    int v = 0;
    if (f >> v && v != 0) return "; sysctl kernel.io_uring_disabled=" + std::to_string(v);
    return "";
}

int UringReader::Init(unsigned queue_depth, uint32_t chunk_bytes, std::string * why) {
    if (queue_depth < 1 || queue_depth > 4096 || chunk_bytes < 4096) {
        if (why) *why = "invalid queue depth or chunk size";
        return EINVAL;
    }
    auto * ring = new io_uring;
    const int r = io_uring_queue_init(queue_depth, ring, 0);
    if (r < 0) {
        delete ring;
        if (why) {
            *why = "io_uring_queue_init failed: " + ErrnoText(-r) + UringDisabledSysctl();
            if (-r == ENOSYS) *why += "; the kernel lacks io_uring or seccomp blocks it";
            if (-r == EPERM) *why += "; io_uring is disabled for this process (sysctl or seccomp)";
        }
        return -r;
    }
    // Buffered reads that miss the cache run on io-wq workers, at most 4 per CPU by default: allow one per slot, so
    // the queue depth asked for is the depth the disk sees even on small machines (best effort: older kernels lack it).
    unsigned workers[2] = {queue_depth, 0};
    io_uring_register_iowq_max_workers(ring, workers);
    if (posix_memalign(&buffer_, 4096, chunk_bytes) != 0) {
        io_uring_queue_exit(ring);
        delete ring;
        if (why) *why = "out of memory for the read buffer";
        return ENOMEM;
    }
    ring_ = ring;
    chunk_bytes_ = chunk_bytes;
    slots_.assign(queue_depth, Slot());
    free_.resize(queue_depth);
    std::iota(free_.rbegin(), free_.rend(), 0u);
    return 0;
}

UringReader::~UringReader() {
    if (ring_ != nullptr) {
        Drain();
        io_uring_queue_exit(Ring(ring_));
        delete Ring(ring_);
    }
    free(buffer_);
}

void UringReader::Prep(unsigned slot) {
    Slot & s = slots_[slot];
    io_uring_sqe * sqe = io_uring_get_sqe(Ring(ring_));
    // Every read lands in the same scratch buffer: only the page cache keeps the data.
    io_uring_prep_read(sqe, s.fd, buffer_, s.length - s.done, s.offset + s.done);
    io_uring_sqe_set_data(sqe, reinterpret_cast<void *>((uintptr_t) slot));
    queued_++;
}

void UringReader::Queue(int fd, uint64_t offset, uint32_t length, uint64_t tag) {
    const unsigned slot = free_.back();
    free_.pop_back();
    slots_[slot] = Slot{fd, offset, std::min(length, chunk_bytes_), 0, tag};
    Prep(slot);
}

int UringReader::Submit() {
    if (queued_ == 0) return 0;
    const int r = io_uring_submit(Ring(ring_));
    if (r < 0) return -r;
    in_flight_ += (unsigned) r;
    queued_ -= std::min(queued_, (unsigned) r);
    return 0;
}

int UringReader::Reap(const Completion & done, int64_t wait_us) {
    if (in_flight_ == 0) return 0;
    io_uring * ring = Ring(ring_);
    io_uring_cqe * cqe = nullptr;
    if (wait_us != 0) {
        int r;
        if (wait_us < 0) {
            r = io_uring_wait_cqe(ring, &cqe);
        } else {
            __kernel_timespec ts = {(long long) (wait_us / 1000000), (long long) (wait_us % 1000000) * 1000};
            r = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
        }
        if (r == -ETIME || r == -EINTR || r == -EAGAIN) return 0;
        if (r < 0) return r;
    }
    int n = 0;
    bool resubmit = false;
    while (io_uring_peek_cqe(ring, &cqe) == 0) {
        const unsigned slot = (unsigned) (uintptr_t) io_uring_cqe_get_data(cqe);
        const int res = cqe->res;
        io_uring_cqe_seen(ring, cqe);
        in_flight_--;
        Slot & s = slots_[slot];
        int error = 0;
        if (res == -EAGAIN || res == -EINTR) {
            if (done) {
                Prep(slot);
                resubmit = true;
                continue;
            }
            error = -res;
        } else if (res < 0) {
            error = -res;
        } else if (res == 0) {
            error = -1;  // end of file before the range ended
        } else {
            s.done += (uint32_t) res;
            if (s.done < s.length && done) {
                Prep(slot);  // short read: read the rest
                resubmit = true;
                continue;
            }
        }
        free_.push_back(slot);
        n++;
        if (done) done(s.tag, s.offset, s.length, error);
    }
    if (resubmit) {
        const int r = Submit();
        if (r != 0) return -r;
    }
    return n;
}

void UringReader::Drain() {
    if (ring_ == nullptr) return;
    if (queued_ > 0) Submit();
    while (in_flight_ > 0) {
        if (Reap(nullptr, -1) < 0) break;
    }
}

#else  // built without liburing: every Init fails and the callers fall back to fadvise

int UringReader::Init(unsigned, uint32_t, std::string * why) {
    if (why) *why = "the addon was built without liburing (install liburing-dev and rebuild)";
    return ENOSYS;
}
UringReader::~UringReader() {}
void UringReader::Prep(unsigned) {}
void UringReader::Queue(int, uint64_t, uint32_t, uint64_t) {}
int UringReader::Submit() { return ENOSYS; }
int UringReader::Reap(const Completion &, int64_t) { return 0; }
void UringReader::Drain() {}

#endif

// ---- files -------------------------------------------------------------------------------------------------------

FileSet::~FileSet() {
    for (int fd : fds_) {
        if (fd >= 0) close(fd);
    }
}

bool FileSet::Open(const std::vector<std::string> & paths, std::string * error) {
    for (const auto & p : paths) {
        const int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            *error = "cannot open '" + p + "': " + strerror(errno);
            return false;
        }
        fds_.push_back(fd);
        paths_.push_back(p);
    }
    return true;
}

void FileSet::AdviseRandom() {
    for (int fd : fds_) posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
}

}  // namespace moeflash

// ---- JavaScript bindings -----------------------------------------------------------------------------------------

namespace {

using namespace moeflash;

double NowMs() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<std::string> ParseFiles(const Napi::Env & env, const Napi::Value & v) {
    if (!v.IsArray()) throw Napi::TypeError::New(env, "files must be an array of paths");
    Napi::Array a = v.As<Napi::Array>();
    std::vector<std::string> files;
    for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value f = a.Get(i);
        if (!f.IsString()) throw Napi::TypeError::New(env, "files must be an array of paths");
        files.push_back(f.As<Napi::String>().Utf8Value());
    }
    return files;
}

std::vector<ByteRange> ParseRanges(const Napi::Env & env, const Napi::Value & v, size_t n_files) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
        throw Napi::TypeError::New(env, "ranges must be a Float64Array of (file, offset, length) triples");
    }
    Napi::Float64Array a = v.As<Napi::Float64Array>();
    if (a.ElementLength() % 3 != 0) throw Napi::RangeError::New(env, "ranges must hold (file, offset, length) triples");
    std::vector<ByteRange> out(a.ElementLength() / 3);
    const double max_safe = 9007199254740991.0;
    for (size_t i = 0; i < out.size(); i++) {
        const double f = a[3 * i], o = a[3 * i + 1], l = a[3 * i + 2];
        if (!(f >= 0 && f < (double) n_files && f == (double) (uint32_t) f)) {
            throw Napi::RangeError::New(env, "range " + std::to_string(i) + ": file index out of range");
        }
        if (!(o >= 0 && l >= 0 && o + l <= max_safe && o == (double) (uint64_t) o && l == (double) (uint64_t) l)) {
            throw Napi::RangeError::New(env, "range " + std::to_string(i) + ": offset and length must be non-negative integers");
        }
        out[i] = ByteRange{(uint32_t) f, (uint64_t) o, (uint64_t) l};
    }
    return out;
}

// Consecutive ranges of the same file that touch or overlap become one span (ranges [r_first, r_last) of `order`).
struct Span {
    uint32_t file;
    uint64_t start, end;
    size_t r_first, r_last;
};

std::vector<Span> BuildSpans(const std::vector<ByteRange> & ranges, const std::vector<size_t> & order) {
    std::vector<Span> spans;
    for (size_t pos = 0; pos < order.size(); pos++) {
        const ByteRange & r = ranges[order[pos]];
        if (r.length == 0) continue;
        if (!spans.empty() && spans.back().file == r.file && r.offset <= spans.back().end && r.offset >= spans.back().start) {
            spans.back().end = std::max(spans.back().end, r.offset + r.length);
            spans.back().r_last = pos + 1;
        } else {
            spans.push_back(Span{r.file, r.offset, r.offset + r.length, pos, pos + 1});
        }
    }
    return spans;
}

struct Progress {
    double bytes;
    double groups;
};

class PrefetchWorker : public Napi::AsyncWorker {
  public:
    PrefetchWorker(Napi::Env env, std::vector<std::string> files, std::vector<ByteRange> ranges)
        : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), files(std::move(files)),
          ranges(std::move(ranges)) {}

    Napi::Promise Promise() { return deferred.Promise(); }
    size_t Ranges() const { return ranges.size(); }

    IoMode mode = IoMode::Auto;
    unsigned queue_depth = 32;
    uint32_t chunk_bytes = 1u << 20;
    bool sort = false;
    bool wait = true;  // fadvise mode: count bytes once resident, not once advised
    bool uring_disabled_by_env = false;
    std::vector<int32_t> groups;  // per range, or empty
    Napi::Reference<Napi::Int32Array> cancel_ref;
    int32_t * cancel_flag = nullptr;
    Napi::ThreadSafeFunction progress_fn;
    bool has_progress = false;

    void Execute() override {
        const double t0 = NowMs();
        FileSet fs;
        std::string err;
        if (!fs.Open(files, &err)) {
            SetError(err);
            return;
        }
        std::vector<size_t> order(ranges.size());
        std::iota(order.begin(), order.end(), 0);
        if (sort) {
            std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
                return ranges[a].file != ranges[b].file ? ranges[a].file < ranges[b].file : ranges[a].offset < ranges[b].offset;
            });
        }
        const std::vector<Span> spans = BuildSpans(ranges, order);
        n_spans = spans.size();
        InitGroups(order);

        IoMode run = mode;
        if (mode != IoMode::Fadvise) {
            std::string why;
            if (IoUringAvailable(&why)) {
                run = IoMode::Uring;
            } else if (mode == IoMode::Uring) {
                SetError("io_uring is not available: " + why);
                return;
            } else {
                run = IoMode::Fadvise;
                fallback_reason = why;
            }
        }
        if (run == IoMode::Uring) {
            UringReader reader;
            std::string why;
            if (reader.Init(queue_depth, chunk_bytes, &why) != 0) {
                if (mode == IoMode::Uring) {
                    SetError("io_uring is not available: " + why);
                    return;
                }
                run = IoMode::Fadvise;
                fallback_reason = why;
            } else {
                fs.AdviseRandom();
                ReadUring(fs, spans, order, reader);
            }
        }
        if (run == IoMode::Fadvise) AdviseAll(fs, spans, order);
        ran = run;
        ms = NowMs() - t0;
        if (has_progress) ReportProgress(true);
        if (!error.empty()) SetError(error);
    }

    void OnOK() override {
        Napi::Env env = Env();
        Release();
        Napi::Object out = Napi::Object::New(env);
        out.Set("mode", IoModeName(ran));
        out.Set("fallbackReason", fallback_reason.empty() ? env.Null() : Napi::String::New(env, fallback_reason));
        out.Set("bytes", (double) bytes_done);
        out.Set("spans", (double) n_spans);
        out.Set("requests", (double) requests);
        out.Set("ms", ms);
        out.Set("groupsDone", (double) groups_done);
        out.Set("cancelled", cancelled);
        deferred.Resolve(out);
    }

    void OnError(const Napi::Error & e) override {
        Release();
        deferred.Reject(e.Value());
    }

  private:
    bool Cancelled() {
        if (cancel_flag != nullptr && __atomic_load_n(cancel_flag, __ATOMIC_RELAXED) != 0) cancelled = true;
        return cancelled;
    }

    void InitGroups(const std::vector<size_t> & order) {
        if (groups.empty()) return;
        int32_t max_group = -1;
        for (int32_t g : groups) max_group = std::max(max_group, g);
        group_left.assign((size_t) max_group + 1, 0);
        range_left.assign(order.size(), 0);
        for (size_t pos = 0; pos < order.size(); pos++) {
            const ByteRange & r = ranges[order[pos]];
            const int32_t g = groups[order[pos]];
            range_left[pos] = r.length;
            if (g >= 0 && r.length > 0) group_left[(size_t) g]++;
        }
        for (uint32_t left : group_left) {
            if (left == 0) groups_done++;  // groups whose ranges are all empty
        }
    }

    // Bytes [a, b) of span s are in the cache: settle the ranges (and groups) they complete.
    void Account(const Span & s, const std::vector<size_t> & order, uint64_t a, uint64_t b) {
        bytes_done += b - a;
        if (groups.empty()) return;
        for (size_t pos = s.r_first; pos < s.r_last; pos++) {
            const ByteRange & r = ranges[order[pos]];
            if (r.length == 0 || range_left[pos] == 0) continue;
            const uint64_t lo = std::max(a, r.offset), hi = std::min(b, r.offset + r.length);
            if (hi <= lo) continue;
            range_left[pos] -= std::min<uint64_t>(range_left[pos], hi - lo);
            const int32_t g = groups[order[pos]];
            if (range_left[pos] == 0 && g >= 0 && --group_left[(size_t) g] == 0) groups_done++;
        }
    }

    void ReadUring(FileSet & fs, const std::vector<Span> & spans, const std::vector<size_t> & order, UringReader & reader) {
        size_t span = 0;
        uint64_t pos = spans.empty() ? 0 : spans[0].start;
        auto on_done = [&](uint64_t tag, uint64_t offset, uint32_t length, int e) {
            if (e != 0) {
                if (error.empty()) {
                    const Span & s = spans[tag];
                    error = e == -1 ? "'" + fs.Path(s.file) + "' ends before byte " + std::to_string(offset + length) +
                                          ": the file is shorter than its index says (truncated?)"
                                    : "reading '" + fs.Path(s.file) + "' at byte " + std::to_string(offset) + ": " + ErrnoText(e);
                }
                return;
            }
            Account(spans[tag], order, offset, offset + length);
        };
        while (true) {
            // Keep the queue full.
            while (error.empty() && !Cancelled() && span < spans.size() && reader.Free() > 0) {
                const Span & s = spans[span];
                const uint32_t n = (uint32_t) std::min<uint64_t>(reader.ChunkBytes(), s.end - pos);
                reader.Queue(fs.Fd(s.file), pos, n, span);
                requests++;
                pos += n;
                if (pos >= s.end && ++span < spans.size()) pos = spans[span].start;
            }
            const int r = reader.Submit();
            if (r != 0 && error.empty()) error = "io_uring submit failed: " + ErrnoText(r);
            if (reader.InFlight() == 0) break;
            const int reaped = reader.Reap(on_done, 100000);
            if (reaped < 0 && error.empty()) error = "io_uring wait failed: " + ErrnoText(-reaped);
            if (has_progress) ReportProgress(false);
        }
    }

    // WILLNEED advice in pieces of at most 8 MiB. The kernel reads asynchronously; with `wait`, pieces are advised at
    // most `queue_depth` x 8 MiB ahead of the first one not yet resident (cachestat), and a piece counts as done only
    // once all of it is in the cache, so progress and the result mean "read", as with io_uring. A piece that does
    // not arrive is advised again every 200 ms and, after 5 s, counted as done anyway (memory pressure may evict it
    // as fast as it comes).
    void AdviseAll(FileSet & fs, const std::vector<Span> & spans, const std::vector<size_t> & order) {
        struct Piece {
            size_t span;
            uint64_t a, b;
            double advised_ms, first_ms;
        };
        std::deque<Piece> window;
        uint64_t window_bytes = 0;
        const uint64_t max_window = (uint64_t) queue_depth * kFadviseMaxBytes;
        ResidencyProbe probe;
        size_t span = 0;
        uint64_t pos = spans.empty() ? 0 : spans[0].start;
        auto advise = [&](const Piece & p) {
            const Span & s = spans[p.span];
            const int e = posix_fadvise(fs.Fd(s.file), (off_t) p.a, (off_t) (p.b - p.a), POSIX_FADV_WILLNEED);
            if (e != 0 && error.empty()) error = "posix_fadvise(WILLNEED) on '" + fs.Path(s.file) + "' failed: " + ErrnoText(e);
            requests++;
        };
        while (error.empty() && !Cancelled()) {
            while (span < spans.size() && (window.empty() || window_bytes < max_window || !wait)) {
                const Span & s = spans[span];
                const uint64_t n = std::min(kFadviseMaxBytes, s.end - pos);
                const double now = NowMs();
                Piece p{span, pos, pos + n, now, now};
                advise(p);
                if (wait) {
                    window.push_back(p);
                    window_bytes += n;
                } else {
                    Account(s, order, p.a, p.b);
                }
                pos += n;
                if (pos >= s.end && ++span < spans.size()) pos = spans[span].start;
                if (!error.empty()) break;
            }
            if (has_progress) ReportProgress(false);
            if (window.empty()) break;
            bool progressed = false;
            while (!window.empty()) {
                Piece & p = window.front();
                const Span & s = spans[p.span];
                const int64_t r = probe.Resident(fs.Fd(s.file), p.a, p.b - p.a);
                const double now = NowMs();
                if (r != (int64_t) (p.b - p.a) && now - p.first_ms < 5000) {
                    if (now - p.advised_ms >= 200) {
                        p.advised_ms = now;
                        advise(p);
                    }
                    break;
                }
                Account(s, order, p.a, p.b);
                window_bytes -= p.b - p.a;
                window.pop_front();
                progressed = true;
            }
            if (!progressed && !window.empty()) usleep(500);
        }
    }

    void ReportProgress(bool force) {
        const double now = NowMs();
        if (!force && now - last_progress_ms < 100) return;
        last_progress_ms = now;
        auto * p = new Progress{(double) bytes_done, (double) groups_done};
        if (progress_fn.NonBlockingCall(p, [](Napi::Env env, Napi::Function fn, Progress * p) {
                if (env != nullptr && fn != nullptr) fn.Call({Napi::Number::New(env, p->bytes), Napi::Number::New(env, p->groups)});
                delete p;
            }) != napi_ok) {
            delete p;
        }
    }

    void Release() {
        if (has_progress) {
            progress_fn.Release();
            has_progress = false;
        }
        if (!cancel_ref.IsEmpty()) cancel_ref.Reset();
    }

    Napi::Promise::Deferred deferred;
    std::vector<std::string> files;
    std::vector<ByteRange> ranges;
    std::vector<uint64_t> range_left;   // by position in order
    std::vector<uint32_t> group_left;   // ranges not yet complete, per group
    uint64_t bytes_done = 0, requests = 0, groups_done = 0;
    size_t n_spans = 0;
    double ms = 0, last_progress_ms = 0;
    bool cancelled = false;
    IoMode ran = IoMode::Auto;
    std::string fallback_reason;
    std::string error;
};

// prefetchRanges(files, ranges, { mode, queueDepth, chunkBytes, sort, groups, cancel }, onProgress?)
Napi::Value PrefetchRanges(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::vector<std::string> files = ParseFiles(env, info[0]);
    std::vector<ByteRange> ranges = ParseRanges(env, info[1], files.size());
    auto * worker = new PrefetchWorker(env, std::move(files), std::move(ranges));
    try {
        if (info.Length() > 2 && info[2].IsObject()) {
            Napi::Object o = info[2].As<Napi::Object>();
            if (o.Has("mode") && !o.Get("mode").IsUndefined()) {
                const std::string m = o.Get("mode").ToString().Utf8Value();
                if (!ParseIoMode(m, &worker->mode)) throw Napi::RangeError::New(env, "mode must be auto, uring or fadvise (got '" + m + "')");
            }
            if (o.Has("queueDepth") && o.Get("queueDepth").IsNumber()) {
                const int32_t qd = o.Get("queueDepth").As<Napi::Number>().Int32Value();
                if (qd < 1 || qd > 4096) throw Napi::RangeError::New(env, "queueDepth must be in 1..4096");
                worker->queue_depth = (unsigned) qd;
            }
            if (o.Has("chunkBytes") && o.Get("chunkBytes").IsNumber()) {
                const int64_t c = o.Get("chunkBytes").As<Napi::Number>().Int64Value();
                if (c < 4096 || c > (64 << 20) || c % 4096 != 0) throw Napi::RangeError::New(env, "chunkBytes must be a multiple of 4096 in 4 KiB..64 MiB");
                worker->chunk_bytes = (uint32_t) c;
            }
            worker->sort = o.Has("sort") && o.Get("sort").ToBoolean().Value();
            if (o.Has("wait") && !o.Get("wait").IsUndefined()) worker->wait = o.Get("wait").ToBoolean().Value();
            if (o.Has("groups") && o.Get("groups").IsTypedArray()) {
                Napi::TypedArray t = o.Get("groups").As<Napi::TypedArray>();
                if (t.TypedArrayType() != napi_int32_array || t.ElementLength() != worker->Ranges()) {
                    throw Napi::TypeError::New(env, "groups must be an Int32Array with one entry per range");
                }
                Napi::Int32Array g = t.As<Napi::Int32Array>();
                worker->groups.assign(g.Data(), g.Data() + g.ElementLength());
            }
            if (o.Has("cancel") && o.Get("cancel").IsTypedArray()) {
                Napi::TypedArray t = o.Get("cancel").As<Napi::TypedArray>();
                if (t.TypedArrayType() != napi_int32_array || t.ElementLength() < 1) {
                    throw Napi::TypeError::New(env, "cancel must be an Int32Array over a SharedArrayBuffer");
                }
                Napi::Int32Array c = t.As<Napi::Int32Array>();
                worker->cancel_ref = Napi::Persistent(c);
                worker->cancel_flag = c.Data();
            }
        }
        if (info.Length() > 3 && info[3].IsFunction()) {
            worker->progress_fn = Napi::ThreadSafeFunction::New(env, info[3].As<Napi::Function>(), "moeflash-prefetch-progress", 0, 1);
            worker->progress_fn.Unref(env);
            worker->has_progress = true;
        }
    } catch (...) {
        delete worker;
        throw;
    }
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
}

class ResidencyWorker : public Napi::AsyncWorker {
  public:
    ResidencyWorker(Napi::Env env, std::vector<std::string> files, std::vector<ByteRange> ranges)
        : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), files(std::move(files)),
          ranges(std::move(ranges)) {}
    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute() override {
        FileSet fs;
        std::string err;
        if (!fs.Open(files, &err)) {
            SetError(err);
            return;
        }
        ResidencyProbe probe;
        resident.resize(ranges.size());
        for (size_t i = 0; i < ranges.size(); i++) {
            const int64_t r = probe.Resident(fs.Fd(ranges[i].file), ranges[i].offset, ranges[i].length);
            if (r < 0) {
                SetError("residency of '" + fs.Path(ranges[i].file) + "' failed: " + ErrnoText((int) -r));
                return;
            }
            resident[i] = (double) r;
        }
        method = probe.Method();
    }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::Object out = Napi::Object::New(env);
        out.Set("method", method);
        Napi::Float64Array a = Napi::Float64Array::New(env, resident.size());
        std::copy(resident.begin(), resident.end(), a.Data());
        out.Set("resident", a);
        deferred.Resolve(out);
    }
    void OnError(const Napi::Error & e) override { deferred.Reject(e.Value()); }

  private:
    Napi::Promise::Deferred deferred;
    std::vector<std::string> files;
    std::vector<ByteRange> ranges;
    std::vector<double> resident;
    std::string method;
};

Napi::Value Residency(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::vector<std::string> files = ParseFiles(env, info[0]);
    auto * worker = new ResidencyWorker(env, files, ParseRanges(env, info[1], files.size()));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
}

class EvictWorker : public Napi::AsyncWorker {
  public:
    EvictWorker(Napi::Env env, std::vector<std::string> files, std::vector<ByteRange> ranges, bool whole)
        : Napi::AsyncWorker(env), deferred(Napi::Promise::Deferred::New(env)), files(std::move(files)),
          ranges(std::move(ranges)), whole(whole) {}
    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute() override {
        FileSet fs;
        std::string err;
        if (!fs.Open(files, &err)) {
            SetError(err);
            return;
        }
        if (whole) {
            for (uint32_t f = 0; f < fs.Size(); f++) {
                struct stat st;
                if (fstat(fs.Fd(f), &st) == 0) bytes += (uint64_t) st.st_size;
                ranges.push_back(ByteRange{f, 0, 0});
            }
        }
        ResidencyProbe probe;
        for (const ByteRange & r : ranges) {
            int e = AdviseDontNeed(fs.Fd(r.file), r.offset, r.length);
            // The kernel drops a large folio only when the range covers all of it: one shared with a neighbour
            // (ext4 caches written and faulted-in data in folios of up to 2 MiB) survives. Widen to the 2 MiB
            // blocks around the range, which hold any folio that touches it, and drop those with it.
            if (e == 0 && r.length != 0 && probe.Resident(fs.Fd(r.file), r.offset, r.length) > 0) {
                const uint64_t block = 2ull << 20;
                const uint64_t start = r.offset / block * block;
                const uint64_t end = (r.offset + r.length + block - 1) / block * block;
                e = AdviseDontNeed(fs.Fd(r.file), start, end - start);
            }
            if (e != 0) {
                SetError("posix_fadvise(DONTNEED) on '" + fs.Path(r.file) + "' failed: " + ErrnoText(e));
                return;
            }
            if (!whole) bytes += r.length;
        }
    }
    void OnOK() override {
        Napi::Object out = Napi::Object::New(Env());
        out.Set("bytes", (double) bytes);
        deferred.Resolve(out);
    }
    void OnError(const Napi::Error & e) override { deferred.Reject(e.Value()); }

  private:
    Napi::Promise::Deferred deferred;
    std::vector<std::string> files;
    std::vector<ByteRange> ranges;
    bool whole;
    uint64_t bytes = 0;
};

Napi::Value Evict(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::vector<std::string> files = ParseFiles(env, info[0]);
    const bool whole = info.Length() < 2 || info[1].IsNull() || info[1].IsUndefined();
    std::vector<ByteRange> ranges = whole ? std::vector<ByteRange>() : ParseRanges(env, info[1], files.size());
    auto * worker = new EvictWorker(env, std::move(files), std::move(ranges), whole);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
}

Napi::Value IoUringStatus(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::string why;
    const bool ok = IoUringAvailable(&why);
    Napi::Object out = Napi::Object::New(env);
    out.Set("available", ok);
    out.Set("reason", ok ? env.Null() : Napi::String::New(env, why));
    out.Set("residencyMethod", ResidencyProbe().Method());
    return out;
}

}  // namespace

void InitExpertIo(Napi::Env env, Napi::Object exports) {
    exports.Set("ioUringStatus", Napi::Function::New(env, IoUringStatus));
    exports.Set("prefetchRanges", Napi::Function::New(env, PrefetchRanges));
    exports.Set("residency", Napi::Function::New(env, Residency));
    exports.Set("evict", Napi::Function::New(env, Evict));
}
