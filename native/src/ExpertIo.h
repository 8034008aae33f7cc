// Expert I/O shared by the JavaScript bindings (ExpertIo.cpp) and the hint consumer (HintChannel.cpp): reads that
// fill the page cache through io_uring, posix_fadvise(WILLNEED) as the fallback, page-cache residency through
// cachestat(2) (mincore as the fallback) and DONTNEED eviction. Nothing here touches Node.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace moeflash {

// A byte range of one of a set of files (file = index into that set).
struct ByteRange {
    uint32_t file = 0;
    uint64_t offset = 0;
    uint64_t length = 0;
};

enum class IoMode { Auto, Uring, Fadvise };

const char * IoModeName(IoMode mode);
// "auto" | "uring" | "fadvise"; false for anything else.
bool ParseIoMode(const std::string & name, IoMode * mode);

// Whether io_uring can be used by this process: probed once (a ring is set up and torn down). False with the reason
// when the kernel lacks it, a sysctl (kernel.io_uring_disabled) or seccomp forbids it, the addon was built without
// liburing, or MOEFLASH_IO_URING=0 is set (checked on every call).
bool IoUringAvailable(std::string * reason);

// WILLNEED advice reads ahead at most max(read_ahead_kb, max_sectors_kb) per call (8 MiB on the lent machines):
// larger ranges are advised in pieces of this size.
constexpr uint64_t kFadviseMaxBytes = 8ull << 20;

// posix_fadvise(WILLNEED) over the range in pieces of at most kFadviseMaxBytes. Returns 0 or an errno value.
int AdviseWillNeed(int fd, uint64_t offset, uint64_t length);
// posix_fadvise(DONTNEED) over the range widened to whole pages (the kernel keeps partial pages otherwise). Large
// folios that straddle the range survive it: the evict binding widens further when residency shows that.
// length 0: to the end of the file. Returns 0 or an errno value.
int AdviseDontNeed(int fd, uint64_t offset, uint64_t length);

// Bytes of a file range that are in the page cache: cachestat(2) (exact to the byte: partial first and last pages
// are probed on their own), or mmap + mincore where the kernel lacks cachestat.
class ResidencyProbe {
  public:
    ResidencyProbe();
    // Resident bytes of [offset, offset + length), or -errno.
    int64_t Resident(int fd, uint64_t offset, uint64_t length);
    // "cachestat" or "mincore".
    const char * Method() const { return use_cachestat ? "cachestat" : "mincore"; }

  private:
    int64_t PagesCached(int fd, uint64_t first_page, uint64_t n_pages);  // pages in cache, or -errno
    bool use_cachestat;
    uint64_t page_size;
};

// Reads into one reusable scratch buffer through io_uring, only to fill the page cache (buffered reads, no
// O_DIRECT: the data lands in the cache and the copy is discarded). At most `queue_depth` reads in flight; short
// reads are resubmitted internally. Single-threaded: one owner thread calls everything.
class UringReader {
  public:
    // (tag, offset, length, error): error 0 when the whole read completed, an errno value, or -1 at end of file.
    using Completion = std::function<void(uint64_t tag, uint64_t offset, uint32_t length, int error)>;

    UringReader() = default;
    ~UringReader();
    UringReader(const UringReader &) = delete;
    UringReader & operator=(const UringReader &) = delete;

    // Sets up the ring and the buffer. 0, or an errno value with *why filled in.
    int Init(unsigned queue_depth, uint32_t chunk_bytes, std::string * why);
    bool Ready() const { return ring_ != nullptr; }
    uint32_t ChunkBytes() const { return chunk_bytes_; }
    unsigned InFlight() const { return in_flight_; }
    unsigned Free() const { return (unsigned) free_.size(); }

    // Prepares a read of [offset, offset + length) (length <= ChunkBytes(); needs Free() > 0). Sent by Submit().
    void Queue(int fd, uint64_t offset, uint32_t length, uint64_t tag);
    // Submits what was queued: 0 or an errno value.
    int Submit();
    // Delivers completed reads. wait_us: 0 = only those already done, > 0 = wait up to that long for one,
    // < 0 = wait for one. Returns completions delivered, or -errno.
    int Reap(const Completion & done, int64_t wait_us);
    // Waits for every read in flight (their completions are dropped).
    void Drain();

  private:
    struct Slot {
        int fd = -1;
        uint64_t offset = 0;  // of the whole read
        uint32_t length = 0;
        uint32_t done = 0;    // bytes completed so far (short reads)
        uint64_t tag = 0;
    };
    void Prep(unsigned slot);

    void * ring_ = nullptr;  // struct io_uring *
    void * buffer_ = nullptr;
    uint32_t chunk_bytes_ = 0;
    unsigned in_flight_ = 0;
    unsigned queued_ = 0;
    std::vector<Slot> slots_;
    std::vector<unsigned> free_;
};

// Opens files read-only (close-on-exec); closes them when destroyed.
class FileSet {
  public:
    FileSet() = default;
    ~FileSet();
    FileSet(const FileSet &) = delete;
    FileSet & operator=(const FileSet &) = delete;
    // Opens every path; false with *error ("cannot open 'x': reason") on the first failure.
    bool Open(const std::vector<std::string> & paths, std::string * error);
    int Fd(uint32_t file) const { return fds_[file]; }
    size_t Size() const { return fds_.size(); }
    const std::string & Path(uint32_t file) const { return paths_[file]; }
    // posix_fadvise(RANDOM) on every file: our reads are exact, the kernel's readahead would only add neighbours.
    void AdviseRandom();

  private:
    std::vector<int> fds_;
    std::vector<std::string> paths_;
};

}  // namespace moeflash
