// What one byte of an expert read from disk costs the CPU, by the path it takes into memory.
//
//   expertReadPaths <file> <mode> <bytes> <range-bytes> <batch> <ram-bytes>
//
// Reads `bytes` in ranges of `range-bytes` at random page-aligned offsets of the file (the same ranges for every
// mode: a fixed seed), `batch` ranges at a time (one layer's routed experts), and prints one JSON line with the wall
// time and this process's user and system CPU time. Modes:
//   willneed  the engine's on-demand path today: the file mapped MADV_RANDOM, MADV_WILLNEED on each range of the
//             batch, then every page touched (the matmul's faults). The pages land in the page cache, which under a
//             memory limit reclaims others to make room.
//   direct    an engine-owned RAM tier: O_DIRECT reads through io_uring (queue depth 32, pieces of at most 1 MiB)
//             into slots of an anonymous buffer of `ram-bytes`, allocated and touched once; no page cache.
// Run it in a memory cgroup after dropping the page cache (bench/benchReadPaths.ts does both).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define PIECE (1u << 20)
#define QD 32u

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double tv_s(struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void) {  // xorshift64*: the same ranges in every mode
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

static void die(const char * what) {
    fprintf(stderr, "expertReadPaths: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t touch(const volatile uint8_t * p, size_t len) {
    uint64_t sum = 0;
    for (size_t i = 0; i < len; i += PAGE) sum += p[i];
    return sum;
}

int main(int argc, char ** argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s <file> willneed|direct <bytes> <range-bytes> <batch> <ram-bytes>\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const char * mode = argv[2];
    const uint64_t total = strtoull(argv[3], NULL, 10);
    const uint64_t range = (strtoull(argv[4], NULL, 10) + PAGE - 1) / PAGE * PAGE;
    const int batch = atoi(argv[5]);
    const uint64_t ram = strtoull(argv[6], NULL, 10) / range * range;
    const int direct = strcmp(mode, "direct") == 0;
    if ((!direct && strcmp(mode, "willneed") != 0) || range == 0 || batch <= 0 || batch > 64 || (direct && ram < range * batch)) {
        fprintf(stderr, "expertReadPaths: bad arguments\n");
        return 2;
    }
    const int fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
    if (fd < 0) die(path);
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    const uint64_t n_ranges = total / range;
    const uint64_t slots = (uint64_t) (st.st_size / PAGE) - range / PAGE;

    uint8_t * map = NULL;
    uint8_t * tier = NULL;
    struct io_uring ring;
    if (direct) {
        tier = mmap(NULL, ram, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (tier == MAP_FAILED) die("mmap tier");
        if (io_uring_queue_init(QD, &ring, 0) != 0) die("io_uring_queue_init");
    } else {
        map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) die("mmap file");
        madvise(map, st.st_size, MADV_RANDOM);
    }

    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    const double t0 = now_s();
    uint64_t sum = 0, slot = 0;
    for (uint64_t i = 0; i < n_ranges; i += batch) {
        const uint64_t n = (n_ranges - i) < (uint64_t) batch ? (n_ranges - i) : (uint64_t) batch;
        uint64_t off[64];
        for (uint64_t j = 0; j < n; j++) off[j] = (next_random() % slots) * PAGE;
        if (!direct) {
            for (uint64_t j = 0; j < n; j++) madvise(map + off[j], range, MADV_WILLNEED);
            for (uint64_t j = 0; j < n; j++) sum += touch(map + off[j], range);
            continue;
        }
        // the batch's pieces, QD in flight, into the next slots of the tier
        uint64_t done = 0, submitted = 0;
        const uint64_t piece_total = n * ((range + PIECE - 1) / PIECE);
        while (done < piece_total) {
            while (submitted < piece_total && submitted - done < QD) {
                const uint64_t j = submitted / ((range + PIECE - 1) / PIECE);
                const uint64_t k = submitted % ((range + PIECE - 1) / PIECE);
                const uint64_t len = range - k * PIECE < PIECE ? range - k * PIECE : PIECE;
                uint8_t * dst = tier + ((slot + j) % (ram / range)) * range + k * PIECE;
                struct io_uring_sqe * sqe = io_uring_get_sqe(&ring);
                io_uring_prep_read(sqe, fd, dst, (unsigned) len, off[j] + k * PIECE);
                submitted++;
            }
            io_uring_submit(&ring);
            struct io_uring_cqe * cqe;
            if (io_uring_wait_cqe(&ring, &cqe) != 0) die("io_uring_wait_cqe");
            if (cqe->res < 0) {
                errno = -cqe->res;
                die("O_DIRECT read");
            }
            io_uring_cqe_seen(&ring, cqe);
            done++;
        }
        for (uint64_t j = 0; j < n; j++) sum += touch(tier + ((slot + j) % (ram / range)) * range, range);
        slot += n;
    }
    const double wall = now_s() - t0;
    getrusage(RUSAGE_SELF, &r1);
    const double gb = (double) (n_ranges * range) / 1e9;
    printf("{\"mode\":\"%s\",\"bytes\":%llu,\"rangeBytes\":%llu,\"batch\":%d,\"seconds\":%.4f,\"GBps\":%.4f,"
           "\"userSecondsPerGB\":%.4f,\"systemSecondsPerGB\":%.4f,\"minorFaults\":%ld,\"majorFaults\":%ld,\"checksum\":%llu}\n",
           mode, (unsigned long long) (n_ranges * range), (unsigned long long) range, batch, wall, gb / wall,
           (tv_s(r1.ru_utime) - tv_s(r0.ru_utime)) / gb, (tv_s(r1.ru_stime) - tv_s(r0.ru_stime)) / gb,
           r1.ru_minflt - r0.ru_minflt, r1.ru_majflt - r0.ru_majflt, (unsigned long long) sum);
    return 0;
}
