// ModelMeta: integers from a model's architecture-scoped metadata ("<general.architecture>.<key>").
#pragma once

#include "llama.h"

#include <cstdint>
#include <cstdlib>
#include <string>

namespace moeflash {

// 0 when the architecture or the key is absent
inline int64_t ArchMetaInt(const llama_model * model, const char * key) {
    char arch[64], buf[32];
    if (llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch)) <= 0) {
        return 0;
    }
    if (llama_model_meta_val_str(model, (std::string(arch) + "." + key).c_str(), buf, sizeof(buf)) <= 0) {
        return 0;
    }
    return std::strtoll(buf, nullptr, 10);
}

}  // namespace moeflash
