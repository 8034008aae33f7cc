// How fast can kernels read pinned host memory, against the copy engine? The device-resolved expert cache
// (GGML_OP_MOE_SLOTS, patch 0010) copies a layer's missed experts with a kernel that reads host memory directly, since
// only the device knows the misses and a copy-engine transfer would need the host to know them first. This measures
// the ceiling of that choice: copy-engine transfers against kernels of several shapes (the op's grid-stride loop,
// per-block chunks, Hopper's TMA bulk copies) from page-locked, write-combined and registered host memory, at the
// sizes one decode step's layer copies (docs/EXPERT_CACHE.md). Built and run on the GPU machine by
// `scripts/device/gpu-checks.sh zerocopy`; `tma` as the argument runs the TMA rows alone (an unsupported platform
// faults, which ends the process). `graph` runs the rows of a memcpy node in a CUDA graph, launched by the host and
// launched by a kernel (device graph launch): whether the device can start a copy-engine transfer itself, which
// would give the op copy-engine speed with no host in the step (needs -rdc=true -lcudadevrt); the last row is the
// op's pattern, a kernel of the same graph waiting for the copy's flag. `scatter [GiB]` reads one expert (2.65 MB) at
// a different place of a pool as large as a model's experts for every copy, as the op does, against re-reading one
// place as the rows above do: the GPU translates every fresh page of host memory (its page tables, and the host's
// IOMMU where it is on), which a re-read region has cached; a pool backed by transparent huge pages, registered,
// tells whether larger pages help.
#include <cuda_runtime.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CHECK(x)                                                                               \
    do {                                                                                       \
        cudaError_t err_ = (x);                                                                \
        if (err_ != cudaSuccess) {                                                             \
            std::printf("CUDA error %s at line %d\n", cudaGetErrorString(err_), __LINE__);     \
            std::exit(1);                                                                      \
        }                                                                                      \
    } while (0)

// the op's shape: grid-stride, UNROLL 16-byte loads in flight per thread before their stores
template <int UNROLL>
__global__ void copy_grid_stride(const int4 * __restrict__ src, int4 * __restrict__ dst, int64_t n) {
    const int64_t stride = (int64_t) gridDim.x * blockDim.x;
    for (int64_t base = (int64_t) blockIdx.x * blockDim.x + threadIdx.x; base < n; base += UNROLL * stride) {
        int4 v[UNROLL];
#pragma unroll
        for (int k = 0; k < UNROLL; ++k) {
            if (base + k * stride < n) v[k] = src[base + k * stride];
        }
#pragma unroll
        for (int k = 0; k < UNROLL; ++k) {
            if (base + k * stride < n) dst[base + k * stride] = v[k];
        }
    }
}

// each block reads one contiguous chunk, its warps consecutive 512-byte segments
template <int UNROLL>
__global__ void copy_chunk_per_block(const int4 * __restrict__ src, int4 * __restrict__ dst, int64_t n) {
    const int64_t per_block = (n + gridDim.x - 1) / gridDim.x;
    const int64_t begin = blockIdx.x * per_block;
    const int64_t end = begin + per_block < n ? begin + per_block : n;
    for (int64_t base = begin + threadIdx.x; base < end; base += UNROLL * blockDim.x) {
        int4 v[UNROLL];
#pragma unroll
        for (int k = 0; k < UNROLL; ++k) {
            if (base + k * blockDim.x < end) v[k] = src[base + k * blockDim.x];
        }
#pragma unroll
        for (int k = 0; k < UNROLL; ++k) {
            if (base + k * blockDim.x < end) dst[base + k * blockDim.x] = v[k];
        }
    }
}

// TMA bulk copies (cp.async.bulk) of 8 KiB chunks from host memory into shared memory, four buffers per block, then
// plain stores to device memory: the request size is the copy unit's, not a warp's
constexpr int TMA_CHUNK = 8192;
constexpr int TMA_BUFFERS = 4;

__device__ void tma_issue(uint64_t * barrier, char * buffer, const char * src) {
    const uint32_t bar = (uint32_t) __cvta_generic_to_shared(barrier);
    const uint32_t dst = (uint32_t) __cvta_generic_to_shared(buffer);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(TMA_CHUNK));
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
                 "l"(src), "r"(TMA_CHUNK), "r"(bar)
                 : "memory");
}

__global__ void copy_tma(const char * __restrict__ src, char * __restrict__ dst, int64_t n_bytes) {
    __shared__ alignas(128) char buffers[TMA_BUFFERS][TMA_CHUNK];
    __shared__ alignas(8) uint64_t barriers[TMA_BUFFERS];
    const int64_t n_chunks = n_bytes / TMA_CHUNK;
    if (threadIdx.x == 0) {
        for (int b = 0; b < TMA_BUFFERS; ++b) {
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"((uint32_t) __cvta_generic_to_shared(&barriers[b])));
        }
        asm volatile("fence.mbarrier_init.release.cluster;");
        for (int b = 0; b < TMA_BUFFERS; ++b) {
            const int64_t chunk = blockIdx.x + (int64_t) b * gridDim.x;
            if (chunk < n_chunks) tma_issue(&barriers[b], buffers[b], src + chunk * TMA_CHUNK);
        }
    }
    __syncthreads();
    uint32_t phase[TMA_BUFFERS] = {};
    for (int it = 0;; ++it) {
        const int b = it % TMA_BUFFERS;
        const int64_t chunk = blockIdx.x + (int64_t) it * gridDim.x;
        if (chunk >= n_chunks) break;
        const uint32_t bar = (uint32_t) __cvta_generic_to_shared(&barriers[b]);
        uint32_t done = 0;
        while (!done) {
            asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                         : "=r"(done)
                         : "r"(bar), "r"(phase[b])
                         : "memory");
        }
        phase[b] ^= 1;
        const int4 * in = (const int4 *) buffers[b];
        int4 * out = (int4 *) (dst + chunk * TMA_CHUNK);
        for (int i = threadIdx.x; i < TMA_CHUNK / 16; i += blockDim.x) out[i] = in[i];
        __syncthreads();  // the buffer is read before it is refilled
        const int64_t next = chunk + (int64_t) TMA_BUFFERS * gridDim.x;
        if (threadIdx.x == 0 && next < n_chunks) tma_issue(&barriers[b], buffers[b], src + next * TMA_CHUNK);
    }
}

// a kernel that starts a device-launchable graph: as the op would start the copy of one missed expert
__global__ void launch_graph(cudaGraphExec_t graph, int tail) {
    cudaGraphLaunch(graph, tail ? cudaStreamGraphTailLaunch : cudaStreamGraphFireAndForget);
}

// the pattern the op would use: clear the copy's flag, launch its graph, and (in the next kernel of the same graph)
// wait for the flag its last node sets; a wait longer than a second is counted, not waited out
__global__ void launch_graph_flagged(cudaGraphExec_t graph, int * flag) {
    *flag = 0;
    __threadfence();
    cudaGraphLaunch(graph, cudaStreamGraphFireAndForget);
}

__global__ void wait_flag(const int * flag, int * timeouts) {
    uint64_t t0;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    while (*(volatile const int *) flag == 0) {
        uint64_t t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        if (t - t0 > 1000000000ull) {
            atomicAdd(timeouts, 1);
            return;
        }
    }
}

// a graph of one memcpy node (host -> device), then, with `flag`, a memset node setting it to 1; instantiated for
// launch from the host or the device
static cudaGraphExec_t memcpy_graph(void * dst, const void * src, size_t bytes, bool device_launch, cudaStream_t stream,
                                    int * flag = nullptr) {
    cudaGraph_t graph;
    CHECK(cudaGraphCreate(&graph, 0));
    cudaGraphNode_t node;
    CHECK(cudaGraphAddMemcpyNode1D(&node, graph, nullptr, 0, dst, src, bytes, cudaMemcpyHostToDevice));
    if (flag != nullptr) {
        cudaMemsetParams set = {};
        set.dst = flag;
        set.value = 1;
        set.elementSize = sizeof(int);
        set.width = 1;
        set.height = 1;
        cudaGraphNode_t done;
        CHECK(cudaGraphAddMemsetNode(&done, graph, &node, 1, &set));
    }
    cudaGraphExec_t exec;
    CHECK(cudaGraphInstantiate(&exec, graph, device_launch ? cudaGraphInstantiateFlagDeviceLaunch : 0));
    if (device_launch) CHECK(cudaGraphUpload(exec, stream));
    CHECK(cudaGraphDestroy(graph));
    return exec;
}

// a one-thread kernel node after `dep` (none: a root)
static cudaGraphNode_t add_thread_node(cudaGraph_t graph, void * func, void ** args, const cudaGraphNode_t * dep) {
    cudaKernelNodeParams params = {};
    params.func = func;
    params.gridDim = dim3(1);
    params.blockDim = dim3(1);
    params.kernelParams = args;
    cudaGraphNode_t node;
    CHECK(cudaGraphAddKernelNode(&node, graph, dep, dep != nullptr ? 1 : 0, &params));
    return node;
}

static cudaGraphExec_t instantiate_for_host(cudaGraph_t graph) {
    cudaGraphExec_t exec;
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CHECK(cudaGraphDestroy(graph));
    return exec;
}

// a host-launched graph of one kernel node that device-launches `child` (device launch works only from a graph)
static cudaGraphExec_t launcher_graph(cudaGraphExec_t child, int tail) {
    cudaGraph_t graph;
    CHECK(cudaGraphCreate(&graph, 0));
    void * args[] = {&child, &tail};
    add_thread_node(graph, (void *) launch_graph, args, nullptr);
    return instantiate_for_host(graph);
}

// a host-launched graph of two kernels: the first device-launches `child` (which sets `flag` when done), the second
// waits for the flag
static cudaGraphExec_t launch_and_wait_graph(cudaGraphExec_t child, int * flag, int * timeouts) {
    cudaGraph_t graph;
    CHECK(cudaGraphCreate(&graph, 0));
    void * launch_args[] = {&child, &flag};
    const cudaGraphNode_t launch = add_thread_node(graph, (void *) launch_graph_flagged, launch_args, nullptr);
    void * wait_args[] = {&flag, &timeouts};
    add_thread_node(graph, (void *) wait_flag, wait_args, &launch);
    return instantiate_for_host(graph);
}

// a stream and the two events that time work on it
struct Timer {
    cudaStream_t stream;
    cudaEvent_t  start, stop;
    Timer() {
        CHECK(cudaStreamCreate(&stream));
        CHECK(cudaEventCreate(&start));
        CHECK(cudaEventCreate(&stop));
    }
};

// one expert of 30b-a3b (gate, up and down slabs of 2048 x 768 q4_0) read from a fresh place of a large pool per copy
static int run_scatter(size_t pool_bytes, int n_sm) {
    const size_t bytes = 2654208;
    const int reps = 400;
    char * device;
    CHECK(cudaMalloc(&device, bytes));
    const Timer timer;
    const cudaStream_t stream = timer.stream;
    const cudaEvent_t start = timer.start, stop = timer.stop;
    std::vector<size_t> offsets(reps);
    uint64_t x = 88172645463325252ull;
    for (size_t & o : offsets) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        o = (x % ((pool_bytes - bytes) / 4096)) * 4096;
    }
    char * pinned;
    CHECK(cudaHostAlloc(&pinned, pool_bytes, cudaHostAllocDefault));  // as ggml-cuda's host buffer type allocates
    char * huge = (char *) mmap(nullptr, pool_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (huge == MAP_FAILED) return std::printf("mmap of %zu bytes failed\n", pool_bytes), 1;
    madvise(huge, pool_bytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < pool_bytes; i += 4096) pinned[i] = huge[i] = (char) (i >> 12);
    CHECK(cudaHostRegister(huge, pool_bytes, cudaHostRegisterPortable));
    // how much of the process's anonymous memory the kernel backs with huge pages (the THP pool's share of it)
    char line[256] = "AnonHugePages: unknown";
    if (FILE * f = std::fopen("/proc/self/smaps_rollup", "r")) {
        while (std::fgets(line, sizeof line, f) && std::strncmp(line, "AnonHugePages:", 14) != 0) {}
        std::fclose(f);
    }
    std::printf("pool %.1f GiB each; %s", pool_bytes / 1073741824.0, line);
    std::printf("%-22s %-34s %9s %7s\n", "host memory", "copy of one expert (2.65 MB)", "us/copy", "GB/s");
    struct Pool {
        const char * name;
        char * data;
    } pools[] = {{"cudaHostAlloc", pinned}, {"THP + registered", huge}};
    for (const Pool & pool : pools) {
        for (int fresh = 0; fresh < 2; ++fresh) {
            auto time = [&](const char * name, auto launch) {
                for (int i = 0; i < 5; ++i) launch(pool.data);
                CHECK(cudaEventRecord(start, stream));
                for (int i = 0; i < reps; ++i) launch(pool.data + (fresh ? offsets[i] : 0));
                CHECK(cudaEventRecord(stop, stream));
                CHECK(cudaEventSynchronize(stop));
                CHECK(cudaGetLastError());
                float ms;
                CHECK(cudaEventElapsedTime(&ms, start, stop));
                const double us = ms * 1000.0 / reps;
                char row[64];
                std::snprintf(row, sizeof row, "%s, %s", name, fresh ? "fresh place" : "same place");
                std::printf("%-22s %-34s %9.1f %7.1f\n", pool.name, row, us, bytes / us / 1e3);
            };
            time("copy engine", [&](const char * src) { CHECK(cudaMemcpyAsync(device, src, bytes, cudaMemcpyHostToDevice, stream)); });
            time("op's kernel", [&](const char * src) {
                copy_grid_stride<4><<<4 * n_sm, 256, 0, stream>>>((const int4 *) src, (int4 *) device, (int64_t) (bytes / 16));
            });
        }
    }
    return 0;
}

int main(int argc, char ** argv) {
    if (argc > 1 && std::strcmp(argv[1], "scatter") == 0) {
        cudaDeviceProp prop;
        CHECK(cudaGetDeviceProperties(&prop, 0));
        std::printf("%s, %d SMs\n", prop.name, prop.multiProcessorCount);
        return run_scatter((size_t) (argc > 2 ? std::atof(argv[2]) : 8.0) * 1073741824.0, prop.multiProcessorCount);
    }
    const bool tma_only = argc > 1 && std::strcmp(argv[1], "tma") == 0;
    const bool graph_only = argc > 1 && std::strcmp(argv[1], "graph") == 0;
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    const int n_sm = prop.multiProcessorCount;
    std::printf("%s, %d SMs\n", prop.name, n_sm);

    const size_t max_bytes = 64ull << 20;
    char * page_locked;
    char * write_combined;
    CHECK(cudaHostAlloc(&page_locked, max_bytes, cudaHostAllocDefault));
    CHECK(cudaHostAlloc(&write_combined, max_bytes, cudaHostAllocWriteCombined));
    char * registered = (char *) std::aligned_alloc(4096, max_bytes);  // as a model file's mapping would be
    for (size_t i = 0; i < max_bytes; ++i) {
        page_locked[i] = write_combined[i] = registered[i] = (char) (i * 7 + 3);
    }
    CHECK(cudaHostRegister(registered, max_bytes, cudaHostRegisterPortable | cudaHostRegisterReadOnly));
    char * device;
    CHECK(cudaMalloc(&device, max_bytes));
    const Timer timer;
    const cudaStream_t stream = timer.stream;
    const cudaEvent_t start = timer.start, stop = timer.stop;

    // one layer's misses at 50 % of 30b-a3b's experts (0.73 experts of 2.65 MB), two experts, eight experts
    const size_t sizes[] = {1925120, 5308416, 21233664};
    struct Host {
        const char * name;
        char * data;
    } hosts[] = {{"page-locked", page_locked}, {"write-combined", write_combined}, {"registered RO", registered}};

    std::printf("%-15s %-34s %10s %9s %7s\n", "host memory", "copy", "bytes", "us/copy", "GB/s");
    for (const Host & host : hosts) {
        for (size_t bytes : sizes) {
            const int64_t n16 = (int64_t) (bytes / 16);
            const int4 * src = (const int4 *) host.data;
            int4 * dst = (int4 *) device;
            auto time = [&](const char * name, auto launch) {
                for (int i = 0; i < 5; ++i) launch();
                CHECK(cudaMemsetAsync(device, 0, bytes, stream));
                const int reps = 200;
                CHECK(cudaEventRecord(start, stream));
                for (int i = 0; i < reps; ++i) launch();
                CHECK(cudaEventRecord(stop, stream));
                CHECK(cudaEventSynchronize(stop));
                CHECK(cudaGetLastError());
                float ms;
                CHECK(cudaEventElapsedTime(&ms, start, stop));
                std::vector<char> back(bytes);
                CHECK(cudaMemcpy(back.data(), device, bytes, cudaMemcpyDeviceToHost));
                const bool exact = std::memcmp(back.data(), host.data, bytes) == 0;
                const double us = ms * 1000.0 / reps;
                std::printf("%-15s %-34s %10zu %9.1f %7.1f%s\n", host.name, name, bytes, us, bytes / us / 1e3,
                            exact ? "" : "  WRONG BYTES");
            };
            if (tma_only) {
                time("TMA 8 KiB x4, 1 block/SM x256", [&] { copy_tma<<<n_sm, 256, 0, stream>>>(host.data, device, bytes); });
                time("TMA 8 KiB x4, 2 blocks/SM x256", [&] { copy_tma<<<2 * n_sm, 256, 0, stream>>>(host.data, device, bytes); });
                continue;
            }
            if (graph_only) {
                cudaGraphExec_t host_copy = memcpy_graph(device, host.data, bytes, false, stream);
                cudaGraphExec_t device_copy = memcpy_graph(device, host.data, bytes, true, stream);
                cudaGraphExec_t fire = launcher_graph(device_copy, 0);
                cudaGraphExec_t tail = launcher_graph(device_copy, 1);
                time("memcpy node, host-launched graph", [&] { CHECK(cudaGraphLaunch(host_copy, stream)); });
                time("memcpy node, device fire-and-forget", [&] { CHECK(cudaGraphLaunch(fire, stream)); });
                time("memcpy node, device tail launch", [&] { CHECK(cudaGraphLaunch(tail, stream)); });
                // the op's pattern: the wait in the same graph sees the copy done (timeouts: the child never ran
                // while the waiting kernel held the stream)
                int * flags;  // [0] the copy's flag, [1] waits that timed out
                CHECK(cudaMalloc(&flags, 2 * sizeof(int)));
                CHECK(cudaMemset(flags, 0, 2 * sizeof(int)));
                cudaGraphExec_t flagged = memcpy_graph(device, host.data, bytes, true, stream, flags);
                cudaGraphExec_t waited = launch_and_wait_graph(flagged, flags, flags + 1);
                time("memcpy node, device launch, waited", [&] { CHECK(cudaGraphLaunch(waited, stream)); });
                int timeouts = 0;
                CHECK(cudaMemcpy(&timeouts, flags + 1, sizeof(int), cudaMemcpyDeviceToHost));
                if (timeouts != 0) std::printf("  %d waits timed out after 1 s\n", timeouts);
                for (cudaGraphExec_t g : {host_copy, device_copy, fire, tail, flagged, waited}) CHECK(cudaGraphExecDestroy(g));
                CHECK(cudaFree(flags));
                continue;
            }
            time("copy engine (cudaMemcpyAsync)", [&] { CHECK(cudaMemcpyAsync(device, host.data, bytes, cudaMemcpyHostToDevice, stream)); });
            time("grid-stride 4 blocks/SM x256 u4 (op)", [&] { copy_grid_stride<4><<<4 * n_sm, 256, 0, stream>>>(src, dst, n16); });
            time("grid-stride 8 blocks/SM x256 u4", [&] { copy_grid_stride<4><<<8 * n_sm, 256, 0, stream>>>(src, dst, n16); });
            time("grid-stride 2 blocks/SM x256 u8", [&] { copy_grid_stride<8><<<2 * n_sm, 256, 0, stream>>>(src, dst, n16); });
            time("grid-stride 1 block/SM x1024 u4", [&] { copy_grid_stride<4><<<n_sm, 1024, 0, stream>>>(src, dst, n16); });
            time("chunk/block 4 blocks/SM x256 u4", [&] { copy_chunk_per_block<4><<<4 * n_sm, 256, 0, stream>>>(src, dst, n16); });
            time("chunk/block 2 blocks/SM x512 u8", [&] { copy_chunk_per_block<8><<<2 * n_sm, 512, 0, stream>>>(src, dst, n16); });
        }
    }
    return 0;
}
