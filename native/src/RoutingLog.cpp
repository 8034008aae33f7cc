#include "RoutingLog.h"

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace moeflash {

RoutingLog::RoutingLog(const std::string & path) : file(fopen(path.c_str(), "a")) {
    if (file == nullptr) {
        throw std::runtime_error("routingLog: cannot open '" + path + "' for appending: " + strerror(errno));
    }
}

RoutingLog::~RoutingLog() {
    fclose(file);
}

void RoutingLog::write(int32_t seq, int32_t layer, const int32_t * experts, int32_t n) {
    uint64_t & token = next_token[{seq, layer}];
    fprintf(file, "{\"seq\":%d,\"token\":%llu,\"layer\":%d,\"experts\":[", seq, (unsigned long long) token++, layer);
    for (int32_t k = 0; k < n; k++) {
        fprintf(file, k ? ",%d" : "%d", experts[k]);
    }
    fputs("]}\n", file);
}

void RoutingLog::reset(int32_t seq) {
    for (auto it = next_token.begin(); it != next_token.end();) {
        it = it->first.first == seq ? next_token.erase(it) : std::next(it);
    }
}

}  // namespace moeflash
