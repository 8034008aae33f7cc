// Binary layout of the expert hint channel: a shared-memory segment (a file under /dev/shm, mode 0600) through
// which the engine (one producer) tells the expert-store (consumers) which experts each MoE layer of each step
// routed to. The layout is the contract between two processes that may be built from different revisions: every
// field has a fixed offset and size, all integers are little-endian (the only byte order this runs on), and the
// header carries a magic, a version and the sizes a reader must check before it trusts anything else.
// docs/EXPERT_STORE.md describes the same layout and the protocol; keep the two in step.
//
// Segment = header (kHeaderSize bytes) followed by `capacity` records of `record_size` bytes; capacity is a power of
// two and record n (n = 0, 1, ...) lives in slot n % capacity.
//
// Protocol (single producer, any number of read-only consumers, nothing ever blocks the producer):
//   writer, for record n:  slot.seq = 0 (relaxed); release fence; write the payload;
//                          slot.seq = n + 1 (release); header.write_index = n + 1 (release)
//   reader, for record n < write_index:  s1 = slot.seq (acquire); copy the payload; acquire fence;
//                          s2 = slot.seq (relaxed); the copy is record n only if s1 == s2 == n + 1, otherwise
//                          the writer lapped the reader (counted as dropped).
//   A reader more than `capacity` records behind skips ahead (those records are dropped). A write_index that goes
//   down means the segment was re-initialised: the reader restarts from it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace moeflash {
namespace hint {

// "MFHINTS" and a NUL, at offset 0.
constexpr char kMagic[8] = {'M', 'F', 'H', 'I', 'N', 'T', 'S', '\0'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kHeaderSize = 256;
constexpr uint32_t kMaxIds = 64;        // expert ids per record; a layer with more is split over several records
constexpr uint32_t kMaxPredicted = 64;  // predicted ids for the next layer per record
constexpr uint32_t kDefaultCapacity = 4096;
constexpr uint32_t kMaxCapacity = 1u << 20;

// Record flags.
constexpr uint32_t kFlagContinued = 1u;  // more ids of the same layer and step follow in the next record

// Header flags (set by the writer that opened the segment last).
constexpr uint32_t kHeaderHeatOnly = 1u;  // the engine reads its experts itself, not through the page cache (ExpertRam):
                                          // the hints are for the heat map; reading them ahead would be wasted

struct alignas(64) Header {
    char magic[8];                    //   0: kMagic; written last when a segment is created
    uint32_t version;                 //   8: kVersion
    uint32_t header_size;             //  12: kHeaderSize (offset of slot 0)
    uint32_t record_size;             //  16: sizeof(Record)
    uint32_t capacity;                //  20: slots, a power of two
    uint32_t max_ids;                 //  24: kMaxIds
    uint32_t max_predicted;           //  28: kMaxPredicted
    int32_t producer_pid;             //  32: pid of the writer that opened the segment last
    uint32_t n_layer;                 //  36: layers of the model (0: not told)
    uint32_t n_expert;                //  40: experts per layer (0: not told)
    uint32_t flags;                   //  44: kHeader* (atomic access: a new writer may change it)
    uint64_t created_ns;              //  48: CLOCK_REALTIME when the segment was created
    uint64_t writer_opens;            //  56: times a writer opened the segment (1 after creation)
    std::atomic<uint64_t> write_index;  //  64: records written so far (the next record's number); own cache line
    uint8_t pad0[56];                 //  72
    char model[64];                   // 128: NUL-terminated model tag (informational: file name)
    uint8_t reserved[64];             // 192: zero
};

struct alignas(64) Record {
    std::atomic<uint64_t> seq;        //   0: n + 1 once record n is complete; 0 while it is written
    uint64_t timestamp_ns;            //   8: CLOCK_MONOTONIC when published
    uint8_t trace_id[16];             //  16: W3C trace id of the request (zero: none)
    uint32_t layer;                   //  32: layer index (blk.N)
    uint16_t n_ids;                   //  36: valid entries of ids (<= max_ids)
    uint16_t n_predicted;             //  38: valid entries of predicted (<= max_predicted)
    uint32_t flags;                   //  40: kFlag*
    uint32_t reserved0;               //  44: zero
    uint16_t ids[kMaxIds];            //  48: expert ids the step routed to at this layer
    uint16_t predicted[kMaxPredicted];  // 176: expert ids predicted for layer + 1
    uint8_t reserved1[16];            // 304: zero
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "the hint channel needs lock-free 64-bit atomics");
static_assert(sizeof(std::atomic<uint64_t>) == 8, "atomic<uint64_t> must be a plain 8-byte word");
static_assert(sizeof(Header) == kHeaderSize, "hint header layout changed");
static_assert(offsetof(Header, version) == 8 && offsetof(Header, record_size) == 16 && offsetof(Header, capacity) == 20,
              "hint header layout changed");
static_assert(offsetof(Header, producer_pid) == 32 && offsetof(Header, created_ns) == 48, "hint header layout changed");
static_assert(offsetof(Header, write_index) == 64 && offsetof(Header, model) == 128, "hint header layout changed");
static_assert(sizeof(Record) == 320, "hint record layout changed");
static_assert(offsetof(Record, trace_id) == 16 && offsetof(Record, layer) == 32 && offsetof(Record, n_ids) == 36,
              "hint record layout changed");
static_assert(offsetof(Record, ids) == 48 && offsetof(Record, predicted) == 176, "hint record layout changed");

constexpr uint32_t kRecordSize = sizeof(Record);

// Bytes of a segment with `capacity` slots.
constexpr uint64_t SegmentSize(uint32_t capacity) {
    return (uint64_t) kHeaderSize + (uint64_t) capacity * kRecordSize;
}

}  // namespace hint
}  // namespace moeflash
