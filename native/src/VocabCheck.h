// VocabCheck: vocabulary defects that llama.cpp does not report as errors but turns into a process abort
// (GGML_ASSERT at load) or an uncaught C++ exception (at tokenization). AddonModel's load runs them so such a file
// fails that load with a message naming the key instead of killing the process.
#pragma once

#include "llama.h"

#include <string>

namespace moeflash {

// Before llama_model_load: two entries of tokenizer.ggml.tokens with the same text (llama-vocab.cpp asserts
// id_to_token.size() == token_to_id.size()). Reads only the file's metadata. "" when fine or when the file has
// no vocabulary llama.cpp would read (llama.cpp reports those itself).
std::string CheckVocabularyFile(const std::string & path);

// After the load: a SentencePiece vocabulary must have a token for every byte ("<0xNN>" or the byte itself), or
// llama_vocab::byte_to_token throws std::out_of_range for text that falls back to bytes. "" when fine.
std::string CheckByteFallback(const llama_vocab * vocab);

}  // namespace moeflash
