// libFuzzer target for moeflash's GGUF load path: the input bytes become a file that is read exactly the way
// the addon's readGgufLayout reads a model (native/src/GgufReader.cpp, the same code: gguf_init_from_file with
// no_alloc and a metadata context, then every key, value, tensor info and tensor shape), and the layout is then
// turned into the expert index the way services/expert-store/ExpertIndex.ts does (ExpertIndexMirror.h). Memory errors are found by ASan/UBSan;
// broken invariants of the index (a slab outside the file, overlapping slabs) abort with a message.
//
// Built by scripts/fuzz-gguf.sh against ggml's own sources compiled with the sanitizers.
#include "ExpertIndexMirror.h"
#include "GgufReader.h"

#include "ggml.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

int g_fd = -1;
std::string g_path;

void Quiet(ggml_log_level, const char *, void *) {}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    // ggml logs every rejected file; the fuzzer would spend its time printing.
    if (getenv("GGUF_FUZZ_VERBOSE") == nullptr) ggml_log_set(Quiet, nullptr);
    // An in-memory file: gguf_init_from_file takes a path, and /proc/self/fd/N opens the memfd afresh.
    g_fd = memfd_create("gguf-fuzz", MFD_CLOEXEC);
    if (g_fd < 0) {
        perror("memfd_create");
        abort();
    }
    g_path = "/proc/self/fd/" + std::to_string(g_fd);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (ftruncate(g_fd, 0) != 0) abort();
    for (size_t done = 0; done < size;) {
        const ssize_t n = pwrite(g_fd, data + done, size - done, (off_t) done);
        if (n <= 0) abort();
        done += (size_t) n;
    }
    moeflash::GgufLayout layout;
    std::string error;
    if (moeflash::ReadGgufLayout(g_path, layout, error) != moeflash::GgufReadError::none) return 0;
    // what the addon then exports by name: ggml_type_name of every type gguf accepted
    for (const auto & t : layout.tensors) {
        if (ggml_type_name(t.type) == nullptr) abort();
    }
    moeflash::fuzz::ExpertIndex index;
    if (!moeflash::fuzz::BuildExpertIndex(layout, index, error)) return 0;
    moeflash::fuzz::CheckExpertIndex(layout, index);
    return 0;
}
