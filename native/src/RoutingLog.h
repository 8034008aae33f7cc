// RoutingLog: appends the routing of every token the engine decodes to a file, one JSON line per (token, layer):
//   {"seq":0,"token":12,"layer":3,"experts":[17,4,88,...]}
// token counts that sequence's tokens at that layer (prompt tokens included; llama.cpp's last layer computes only
// the rows whose output is used, so there it sees a prompt's last token only). bench:cache replays such a file
// (BENCH_ROUTING_FILE) so the expert cache can be measured on a user's own traffic and model.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <utility>

namespace moeflash {

class RoutingLog {
  public:
    // Throws std::runtime_error naming the file when it cannot be opened for appending.
    explicit RoutingLog(const std::string & path);
    ~RoutingLog();
    RoutingLog(const RoutingLog &) = delete;
    RoutingLog & operator=(const RoutingLog &) = delete;

    void write(int32_t seq, int32_t layer, const int32_t * experts, int32_t n);
    // A sequence slot was reused by a new request: its token count starts again.
    void reset(int32_t seq);

  private:
    FILE * file;
    std::map<std::pair<int32_t, int32_t>, uint64_t> next_token;  // (seq, layer) -> token index
};

}  // namespace moeflash
