// A decode-step profile of any CUDA process from CUPTI activity records: build it as a shared library and LD_PRELOAD it
// (scripts/device/gpu-checks.sh profile does both). At exit, over the window from the CK_SKIP-th (default 24) kernel
// whose name contains CK_MARK (default argmax: greedy tokens are sampled in the graph, one per step) to the last one,
// it prints per step: the time per kernel name, how long the device was busy, the gaps between device activities by
// size and by the kernel before them, the memcpys, and the CUDA runtime calls the host made. Loading, warm-up and
// prefill fall outside the window. CK_OUT=<file> appends the report there instead of stderr.
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_SIZE (16u << 20)

enum record_kind { K_KERNEL, K_MEMCPY, K_HOST_API };

typedef struct {
    unsigned long long start, end; // ns, one clock for device and host records
    int name;                      // index into names
    int kind;
    unsigned long long bytes;      // memcpys
} record;

typedef struct {
    double ns;
    long   n;
    int    name;
} total;

static record * records;
static size_t   n_records, cap_records;
static char **  names;
static int      n_names, cap_names;

// a few hundred distinct names (kernels, API calls): a linear search is enough
static int name_id(const char * s) {
    for (int i = n_names - 1; i >= 0; i--) {
        if (strcmp(names[i], s) == 0) {
            return i;
        }
    }
    if (n_names == cap_names) {
        cap_names = cap_names ? 2 * cap_names : 256;
        names = realloc(names, cap_names * sizeof(char *));
    }
    names[n_names] = strdup(s);
    return n_names++;
}

static void add(unsigned long long start, unsigned long long end, int name, int kind, unsigned long long bytes) {
    if (n_records == cap_records) {
        cap_records = cap_records ? 2 * cap_records : 1 << 20;
        records = realloc(records, cap_records * sizeof(record));
    }
    records[n_records++] = (record) { start, end, name, kind, bytes };
}

static void CUPTIAPI buffer_requested(uint8_t ** buffer, size_t * size, size_t * max_records) {
    *buffer      = aligned_alloc(8, BUF_SIZE);
    *size        = BUF_SIZE;
    *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t * buffer, size_t size, size_t valid) {
    (void) ctx;
    (void) stream;
    (void) size;
    CUpti_Activity * r = NULL;
    char name[192];
    while (cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || r->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
            const CUpti_ActivityKernel10 * k = (const CUpti_ActivityKernel10 *) r;
            add(k->start, k->end, name_id(k->name), K_KERNEL, 0);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            const CUpti_ActivityMemcpy6 * m = (const CUpti_ActivityMemcpy6 *) r;
            snprintf(name, sizeof name, "memcpy kind %d", (int) m->copyKind);
            add(m->start, m->end, name_id(name), K_MEMCPY, m->bytes);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_RUNTIME) {
            const CUpti_ActivityAPI * a = (const CUpti_ActivityAPI *) r;
            const char * api = NULL;
            cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &api);
            snprintf(name, sizeof name, "%s", api ? api : "?");
            add(a->start, a->end, name_id(name), K_HOST_API, 0);
        }
    }
    free(buffer);
}

static int by_start(const void * a, const void * b) {
    const record * x = a;
    const record * y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static int by_time_desc(const void * a, const void * b) {
    const total * x = a;
    const total * y = b;
    return x->ns < y->ns ? 1 : x->ns > y->ns ? -1 : 0;
}

static void print_top(FILE * f, const char * what, total * t, double steps, int limit) {
    qsort(t, n_names, sizeof(total), by_time_desc);
    for (int i = 0; i < n_names && i < limit; i++) {
        if (t[i].n > 0) {
            fprintf(f, "ck %s: %8.2f us/step %7.2f calls/step %8.2f us/call  %.140s\n", what, t[i].ns / 1e3 / steps,
                    t[i].n / steps, t[i].ns / 1e3 / t[i].n, names[t[i].name]);
        }
    }
}

static void report(void) {
    cuptiActivityFlushAll(1);
    if (n_records == 0) {
        return;
    }
    FILE * f = getenv("CK_OUT") ? fopen(getenv("CK_OUT"), "a") : NULL;
    if (f == NULL) {
        f = stderr;
    }
    qsort(records, n_records, sizeof(record), by_start);

    // the window: from the end of the CK_SKIP-th marker kernel to the end of the last one
    const char * mark = getenv("CK_MARK") ? getenv("CK_MARK") : "argmax";
    const long   skip = getenv("CK_SKIP") ? atol(getenv("CK_SKIP")) : 24;
    long n_marks = 0;
    unsigned long long w0 = 0, w1 = 0;
    for (size_t i = 0; i < n_records; i++) {
        if (records[i].kind == K_KERNEL && strstr(names[records[i].name], mark)) {
            if (++n_marks == skip) {
                w0 = records[i].end;
            } else if (n_marks > skip) {
                w1 = records[i].end;
            }
        }
    }
    const double steps = (double) (n_marks - skip);
    if (steps <= 0) {
        fprintf(f, "ck: %ld kernels named like %s, not more than CK_SKIP=%ld\n", n_marks, mark, skip);
        if (f != stderr) {
            fclose(f);
        }
        return;
    }

    total * device = calloc(n_names, sizeof(total));
    total * host   = calloc(n_names, sizeof(total));
    total * before = calloc(n_names, sizeof(total)); // gaps of 3 us or more, by the device activity they follow
    for (int i = 0; i < n_names; i++) {
        device[i].name = host[i].name = before[i].name = i;
    }
    static const unsigned long long edge[] = { 1000, 3000, 10000, 30000, 100000, ~0ull };
    static const char * const edge_name[] = { "<1us", "1-3us", "3-10us", "10-30us", "30-100us", ">=100us" };
    unsigned long long gap_ns[6] = { 0 }, gap_n[6] = { 0 };
    unsigned long long busy = 0, run_start = 0, run_end = 0, copy_bytes = 0, copy_ns = 0;
    long n_copies = 0;
    int  previous = -1;
    for (size_t i = 0; i < n_records; i++) {
        const record * r = &records[i];
        if (r->start < w0 || r->end > w1) {
            continue;
        }
        if (r->kind == K_HOST_API) {
            host[r->name].ns += r->end - r->start;
            host[r->name].n++;
            continue;
        }
        device[r->name].ns += r->end - r->start;
        device[r->name].n++;
        if (r->kind == K_MEMCPY) {
            copy_bytes += r->bytes;
            copy_ns += r->end - r->start;
            n_copies++;
        }
        // device activities are merged into busy runs; what separates two runs is a gap
        if (previous < 0 || r->start > run_end) {
            if (previous >= 0) {
                busy += run_end - run_start;
                const unsigned long long gap = r->start - run_end;
                int b = 0;
                while (gap >= edge[b]) {
                    b++;
                }
                gap_ns[b] += gap;
                gap_n[b]++;
                if (gap >= 3000) {
                    before[previous].ns += gap;
                    before[previous].n++;
                }
            }
            run_start = r->start;
            run_end   = r->end;
        } else if (r->end > run_end) {
            run_end = r->end;
        }
        previous = r->name;
    }
    busy += run_end - run_start;

    fprintf(f, "ck: %.0f steps (%s kernels %ld..%ld): %.1f us/step, device busy %.1f us/step; memcpy %.2f/step, "
            "%.1f KB/step, %.2f us/step\n", steps, mark, skip, n_marks, (w1 - w0) / 1e3 / steps, busy / 1e3 / steps,
            n_copies / steps, copy_bytes / 1e3 / steps, copy_ns / 1e3 / steps);
    for (int b = 0; b < 6; b++) {
        fprintf(f, "ck gaps %-8s %8.2f/step %8.2f us/step\n", edge_name[b], gap_n[b] / steps, gap_ns[b] / 1e3 / steps);
    }
    print_top(f, "gap>=3us after", before, steps, 12);
    print_top(f, "device", device, steps, 30);
    print_top(f, "host api", host, steps, 16);
    if (f != stderr) {
        fclose(f);
    }
}

__attribute__((constructor)) static void kernel_profile_init(void) {
    cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME);
    atexit(report);
}
