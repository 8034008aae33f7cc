// makeModel(spec, onProgress?): writes a random-weight qwen3moe GGUF for tests and benchmarks.
//
// The file is built with ggml's own gguf API (so llama.cpp reads exactly what it writes) but only the metadata goes
// through it: tensor data is generated chunk by chunk and streamed to disk, because the 30b-a3b shape is ~16 GiB and
// must never sit in memory. Weights come from a counter-based hash of (seed, tensor name, element index), so a seed
// gives byte-identical files whatever the thread count or chunk size.
#include "addon.h"

#include "ggml.h"
#include "gguf.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <future>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace {

// Page-aligned tensor starts: the expert-store reads and fadvises whole experts, and mmap'd slabs line up with pages.
constexpr uint32_t kAlignment = 4096;
constexpr size_t kDefaultChunkBytes = 32u << 20;  // output bytes generated per write; two such buffers are live
constexpr int64_t kBlockFloats = 1 << 16;          // floats generated per quantize call, per thread
constexpr int64_t kParallelMinFloats = 1 << 18;    // below this a chunk is generated on the calling thread

// Token ids fixed by the SPM ("llama") tokenizer convention llama.cpp defaults to.
constexpr int32_t kUnkId = 0;
constexpr int32_t kBosId = 1;
constexpr int32_t kEosId = 2;
constexpr int32_t kFirstPieceId = 3 + 256;  // after <unk>, <s>, </s> and the 256 byte tokens
constexpr uint32_t kMinVocab = kFirstPieceId + 1;
constexpr uint32_t kMaxVocab = 262144;

// llama.cpp's token types (llama_token_type in llama.h, mirrored as ints in GGUF).
constexpr int32_t kTypeNormal = 1;
constexpr int32_t kTypeUnknown = 2;
constexpr int32_t kTypeControl = 3;
constexpr int32_t kTypeByte = 6;

// llama_ftype values (llama.h) for general.file_type.
constexpr uint32_t kFtypeF16 = 1;
constexpr uint32_t kFtypeQ4_0 = 2;
constexpr uint32_t kFtypeQ8_0 = 7;

// ---------------------------------------------------------------------------------------------------------------
// Spec

struct Spec {
    std::string path;
    std::string name;
    std::string type_name;
    ggml_type type = GGML_TYPE_Q8_0;
    uint32_t layers = 0;
    uint32_t experts = 0;
    uint32_t experts_used = 0;
    uint32_t embd = 0;
    uint32_t expert_ff = 0;
    uint32_t heads = 0;
    uint32_t kv_heads = 0;
    uint32_t head_dim = 0;
    uint32_t vocab = 0;
    uint32_t context_length = 0;
    float rope_freq_base = 1e6f;
    float rms_norm_eps = 1e-6f;
    uint64_t seed = 0;
    unsigned threads = 0;
    size_t chunk_bytes = kDefaultChunkBytes;
    std::string chat_template;  // tokenizer.chat_template; empty: none
};

// A spec error names the field as the TypeScript ModelSpec spells it, so callers (the CLI) can point at the flag.
[[noreturn]] void ThrowSpecError(Napi::Env env, const std::string & field, const std::string & description) {
    Napi::Error err = Napi::RangeError::New(env, "invalid model spec: " + field + " " + description);
    err.Set("field", Napi::String::New(env, field));
    err.Set("description", Napi::String::New(env, description));
    throw err;
}

double GetNumber(Napi::Env env, const Napi::Object & obj, const char * field, double min, double max) {
    Napi::Value v = obj.Get(field);
    if (!v.IsNumber()) {
        ThrowSpecError(env, field, "must be a number");
    }
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d < min || d > max) {
        char buf[160];
        snprintf(buf, sizeof buf, "must be between %.10g and %.10g (got %.10g)", min, max, d);
        ThrowSpecError(env, field, buf);
    }
    return d;
}

uint32_t GetUint(Napi::Env env, const Napi::Object & obj, const char * field, uint32_t min, uint32_t max) {
    const double d = GetNumber(env, obj, field, min, max);
    if (d != std::floor(d)) {
        ThrowSpecError(env, field, "must be an integer (got " + std::to_string(d) + ")");
    }
    return (uint32_t) d;
}

Spec ParseSpec(Napi::Env env, const Napi::Value & value) {
    if (!value.IsObject()) {
        throw Napi::TypeError::New(env, "makeModel(spec, onProgress?): spec must be an object");
    }
    const Napi::Object obj = value.As<Napi::Object>();
    Spec s;

    Napi::Value path = obj.Get("path");
    if (!path.IsString() || path.As<Napi::String>().Utf8Value().empty()) {
        ThrowSpecError(env, "path", "must be a non-empty string");
    }
    s.path = path.As<Napi::String>().Utf8Value();
    Napi::Value name = obj.Get("name");
    s.name = name.IsString() ? name.As<Napi::String>().Utf8Value() : "moeflash-random";
    Napi::Value chat_template = obj.Get("chatTemplate");
    s.chat_template = chat_template.IsString() ? chat_template.As<Napi::String>().Utf8Value() : "";

    Napi::Value type = obj.Get("type");
    s.type_name = type.IsString() ? type.As<Napi::String>().Utf8Value() : "";
    if (s.type_name == "f16") {
        s.type = GGML_TYPE_F16;
    } else if (s.type_name == "q8_0") {
        s.type = GGML_TYPE_Q8_0;
    } else if (s.type_name == "q4_0") {
        s.type = GGML_TYPE_Q4_0;
    } else {
        ThrowSpecError(env, "type", "must be one of f16, q8_0, q4_0");
    }

    // Upper bounds are llama.cpp's own limits (LLAMA_MAX_LAYERS, LLAMA_MAX_EXPERTS) or sanity caps that keep every
    // product below 2^63.
    s.layers = GetUint(env, obj, "layers", 1, 512);
    s.experts = GetUint(env, obj, "experts", 1, 1024);
    s.experts_used = GetUint(env, obj, "expertsUsed", 1, 1024);
    s.embd = GetUint(env, obj, "embd", 1, 65536);
    s.expert_ff = GetUint(env, obj, "expertFf", 1, 262144);
    s.heads = GetUint(env, obj, "heads", 1, 1024);
    s.kv_heads = GetUint(env, obj, "kvHeads", 1, 1024);
    s.head_dim = GetUint(env, obj, "headDim", 2, 4096);
    s.vocab = GetUint(env, obj, "vocabSize", kMinVocab, kMaxVocab);
    s.context_length = GetUint(env, obj, "contextLength", 1, 1u << 24);
    if (!obj.Get("ropeFreqBase").IsUndefined()) {
        s.rope_freq_base = (float) GetNumber(env, obj, "ropeFreqBase", 1e-3, 1e12);
    }
    if (!obj.Get("rmsNormEps").IsUndefined()) {
        s.rms_norm_eps = (float) GetNumber(env, obj, "rmsNormEps", 1e-12, 1.0);
    }
    Napi::Value seed = obj.Get("seed");
    if (!seed.IsUndefined()) {
        const double d = GetNumber(env, obj, "seed", 0, 9007199254740991.0);
        if (d != std::floor(d)) {
            ThrowSpecError(env, "seed", "must be an integer");
        }
        s.seed = (uint64_t) d;
    }
    if (!obj.Get("threads").IsUndefined()) {
        s.threads = GetUint(env, obj, "threads", 1, 1024);
    }
    if (!obj.Get("chunkBytes").IsUndefined()) {
        s.chunk_bytes = GetUint(env, obj, "chunkBytes", 1, 1u << 30);
    }

    // Relations llama.cpp asserts on (GGML_ASSERT aborts the process) or that make tensors unrepresentable.
    if (s.experts_used > s.experts) {
        ThrowSpecError(env, "expertsUsed", "must be <= experts (" + std::to_string(s.experts_used) + " > " +
                                               std::to_string(s.experts) + ")");
    }
    if (s.kv_heads > s.heads || s.heads % s.kv_heads != 0) {
        ThrowSpecError(env, "kvHeads", "must divide heads (" + std::to_string(s.heads) + " heads, " +
                                           std::to_string(s.kv_heads) + " kv heads)");
    }
    if (s.head_dim % 2 != 0) {
        ThrowSpecError(env, "headDim", "must be even (RoPE rotates pairs), got " + std::to_string(s.head_dim));
    }
    // Quantized rows are made of 32-element blocks: every row length (ne[0]) of a quantized tensor must divide.
    const int64_t blck = ggml_blck_size(s.type);
    if (blck > 1) {
        const std::string why = "must be a multiple of " + std::to_string(blck) + " for " + s.type_name;
        if (s.embd % blck != 0) {
            ThrowSpecError(env, "embd", why + " (got " + std::to_string(s.embd) + ")");
        }
        if (s.expert_ff % blck != 0) {
            ThrowSpecError(env, "expertFf", why + " (got " + std::to_string(s.expert_ff) + ")");
        }
        if ((s.heads * s.head_dim) % blck != 0) {
            ThrowSpecError(env, "headDim", "must make heads x headDim a multiple of " + std::to_string(blck) +
                                               " for " + s.type_name + " (got " + std::to_string(s.heads) + " x " +
                                               std::to_string(s.head_dim) + ")");
        }
    }
    return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Tokenizer: a small SentencePiece-style vocabulary llama.cpp's SPM tokenizer accepts.

// Most frequent English words first, so a truncated vocabulary keeps the useful ones.
const char * const kWords[] = {
    // the sample prompts of the docs and tests first
    "quick", "brown", "fox", "jumps", "jumped", "lazy", "dog", "hello", "world", "once", "upon", "time", "model",
    "expert", "language", "computer", "data", "system", "program", "yes",
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as",
    "I", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "not", "word", "but", "what",
    "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an",
    "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write",
    "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more",
    "day", "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water",
    "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part",
    "take", "get", "place", "made", "live", "where", "after", "back", "little", "only", "round", "man", "year",
    "came", "show", "every", "good", "me", "give", "our", "under", "name", "very", "through", "just", "form",
    "great", "think", "say", "help", "low", "line", "before", "turn", "cause", "same", "mean", "move", "right",
    "boy", "old", "too", "does", "tell", "sentence", "set", "three", "want", "air", "well", "also", "play",
    "small", "end", "put", "home", "read", "hand", "port", "large", "spell", "add", "even", "land", "here", "must",
    "big", "high", "such", "follow", "act", "why", "ask", "men", "change", "went", "light", "kind", "off", "need",
    "house", "picture", "try", "us", "again", "animal", "point", "mother", "world", "near", "build", "self",
    "earth", "father", "head", "stand", "own", "page", "should", "country", "found", "answer", "school", "grow",
    "study", "still", "learn", "plant", "cover", "food", "sun", "four", "thought", "let", "keep", "eye", "never",
    "last", "door", "between", "city", "tree", "cross", "since", "hard", "start", "might", "story", "saw", "far",
    "sea", "draw", "left", "late", "run", "while", "press", "close", "night", "real", "life", "few", "stop",
    "open", "seem", "together", "next", "white", "children", "begin", "got", "walk", "example", "ease", "paper",
    "often", "always", "music", "those", "both", "mark", "book", "letter", "until", "mile", "river", "car", "feet",
    "care", "second", "group", "carry", "took", "rain", "eat", "room", "friend", "began", "idea", "fish",
    "mountain", "north", "once", "base", "hear", "horse", "cut", "sure", "watch", "color", "face", "wood", "main",
    "enough", "plain", "girl", "usual", "young", "ready", "above", "ever", "red", "list", "though", "feel", "talk",
    "bird", "soon", "body", "dog", "family", "direct", "pose", "leave", "song", "measure", "state", "product",
    "black", "short", "numeral", "class", "wind", "question", "happen", "complete", "ship", "area", "half", "rock",
    "order", "fire", "south", "problem", "piece", "told", "knew", "pass", "farm", "top", "whole", "king", "size",
    "heard", "best", "hour", "better", "true", "during", "hundred", "am", "remember", "step", "early", "hold",
    "west", "ground", "interest", "reach", "fast", "five", "sing", "listen", "six", "table", "travel", "less",
    "morning", "ten", "simple", "several", "vowel", "toward", "war", "lay", "against", "pattern", "slow",
    "center", "love", "person", "money", "serve", "appear", "road", "map", "science", "rule", "govern", "pull",
    "cold", "notice", "voice", "fall", "power", "town", "fine", "certain", "fly", "unit", "lead", "cry", "dark",
    "machine", "note", "wait", "plan", "figure", "star", "box", "noun", "field", "rest", "correct", "able",
    "pound", "done", "beauty", "drive", "stood", "contain", "front", "teach", "week", "final", "gave", "green",
};

// Capitalised forms that start sentences and prompts.
const char * const kCapitalised[] = {
    "The", "A", "I", "It", "He", "She", "We", "They", "You", "This", "That", "In", "On", "Once", "Hello", "What",
    "How", "Why", "When", "There", "My", "Our", "If", "But", "And", "Yes", "No", "One", "Today", "Tell", "Write",
};

// Subwords that attach to a previous piece (no word-start marker).
const char * const kSuffixes[] = {
    "s", "ing", "ed", "er", "ly", "es", "est", "ers", "ion", "tion", "ment", "ness", "able", "ful", "less", "al",
    "ity", "ize", "ous", "ive", "th", "he", "in", "an", "re", "on", "at", "en", "nd", "ou", "st", "or", "te",
    "ti", "ar", "is", "it", "ng", "nt", "ve", "le", "se", "me", "de", "'s", "'t", "'re", "'ll", "'ve", "n't",
};

// Word-start punctuation and numbers that show up in prompts.
const char * const kMarked[] = {"(", "\"", "-", "'", "1", "2", "3", "10", "100", "2024", "2025", "2026"};

const char * const kWordStart = "\xe2\x96\x81";  // U+2581, SentencePiece's word-start marker (a space)

struct Vocab {
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    size_t first_filler = 0;  // tokens from here on are letter n-grams that only pad the vocabulary to its size
};

// Pieces are added with every prefix first: llama.cpp's SPM tokenizer builds a word by merging adjacent pieces only
// when the merged text is itself in the vocabulary, and a prefix-closed set lets every listed word merge into one
// token. Earlier pieces get higher scores, so they merge first (like BPE ranks) and truncation keeps prefixes.
class VocabBuilder {
  public:
    explicit VocabBuilder(uint32_t n_vocab) : n_vocab(n_vocab) { v.first_filler = n_vocab; }

    void AddSpecial(const std::string & text, int32_t type) {
        seen.insert(text);
        v.tokens.push_back(text);
        v.scores.push_back(0.0f);
        v.types.push_back(type);
    }

    // Adds `piece` and its prefixes (on UTF-8 character boundaries); false once the vocabulary is full.
    bool Add(const std::string & piece) {
        for (size_t len = 1; len <= piece.size(); len++) {
            if (len < piece.size() && (static_cast<unsigned char>(piece[len]) & 0xC0) == 0x80) {
                continue;  // inside a multi-byte character
            }
            if (Full()) {
                return false;
            }
            std::string prefix = piece.substr(0, len);
            if (seen.insert(prefix).second) {
                v.scores.push_back(-(float) (v.tokens.size() - kFirstPieceId));
                v.tokens.push_back(std::move(prefix));
                v.types.push_back(kTypeNormal);
            }
        }
        return !Full();
    }

    bool Full() const { return v.tokens.size() >= n_vocab; }

    void MarkFiller() { v.first_filler = v.tokens.size(); }

    Vocab Take() { return std::move(v); }

  private:
    uint32_t n_vocab;
    Vocab v;
    std::unordered_set<std::string> seen;
};

Vocab BuildVocab(uint32_t n_vocab) {
    VocabBuilder b(n_vocab);
    b.AddSpecial("<unk>", kTypeUnknown);
    b.AddSpecial("<s>", kTypeControl);
    b.AddSpecial("</s>", kTypeControl);
    for (int i = 0; i < 256; i++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", i);
        b.AddSpecial(buf, kTypeByte);
    }
    const std::string ws = kWordStart;
    auto fill = [&]() {
        if (!b.Add(ws)) return;
        for (int c = 0x21; c < 0x7f; c++) {  // every printable ASCII character, so text rarely needs byte tokens
            if (!b.Add(std::string(1, (char) c))) return;
        }
        for (char c = 'a'; c <= 'z'; c++) {
            if (!b.Add(ws + c)) return;
        }
        for (const char * w : kCapitalised) {
            if (!b.Add(ws + w)) return;
        }
        for (const char * w : kSuffixes) {
            if (!b.Add(w)) return;
        }
        for (const char * w : kMarked) {
            if (!b.Add(ws + w)) return;
        }
        for (const char * w : kWords) {
            if (!b.Add(ws + w)) return;
        }
        for (char c = 'A'; c <= 'Z'; c++) {
            if (!b.Add(ws + c)) return;
        }
        // Pad a large vocabulary with letter n-grams (in and at the start of words), shortest first so the set stays
        // prefix-closed. 2..4 letters give ~950k pieces, more than kMaxVocab.
        b.MarkFiller();
        std::string gram;
        for (int len = 2; len <= 4; len++) {
            gram.assign(len, 'a');
            for (;;) {
                if (!b.Add(gram) || !b.Add(ws + gram)) return;
                int i = len - 1;
                while (i >= 0 && gram[i] == 'z') {
                    gram[i--] = 'a';
                }
                if (i < 0) break;
                gram[i]++;
            }
        }
    };
    fill();
    return b.Take();
}

// ---------------------------------------------------------------------------------------------------------------
// Deterministic weights

// splitmix64's finaliser: a good 64-bit mixer, so hash(key + index) is a counter-based generator.
inline uint64_t Mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t Fnv1a(const std::string & s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) {
        h = (h ^ c) * 0x100000001b3ull;
    }
    return h;
}

// Sum of two uniforms (triangular): zero mean, unit variance, bounded, cheap; close enough to a normal for random
// weights and never produces the outliers that would blow up q4_0 block scales.
inline float Triangular(uint64_t h) {
    constexpr float kInv24 = 1.0f / 16777216.0f;
    const float u1 = (float) (h >> 40) * kInv24;
    const float u2 = (float) ((h >> 16) & 0xFFFFFF) * kInv24;
    return (u1 + u2 - 1.0f) * 2.4494897f;  // sqrt(6): Var(u1 + u2) = 1/6
}

enum class Fill { Ones, Random };

struct TensorPlan {
    std::string name;
    ggml_type type;
    int n_dims;
    int64_t ne[3];
    Fill fill;
    float sigma;        // standard deviation of Random weights
    int64_t keep_begin; // rows outside [keep_begin, keep_end) are scaled by kDamp (see BuildPlan)
    int64_t keep_end;
    uint64_t key;       // PRNG key from (seed, name)
};

constexpr float kDamp = 0.25f;

std::vector<TensorPlan> BuildPlan(const Spec & s, const Vocab & vocab) {
    std::vector<TensorPlan> plan;
    auto add = [&](std::string name, ggml_type type, std::initializer_list<int64_t> ne, Fill fill, double fan_in,
                   int64_t keep_begin = 0, int64_t keep_end = INT64_MAX) {
        TensorPlan t;
        t.name = std::move(name);
        t.type = type;
        t.n_dims = (int) ne.size();
        std::fill(std::begin(t.ne), std::end(t.ne), 1);
        std::copy(ne.begin(), ne.end(), t.ne);
        t.fill = fill;
        // N(0, 1/sqrt(fan_in)): each projection keeps its input's scale, so the residual stream neither dies nor
        // explodes across layers and the token's identity survives to the output.
        t.sigma = fan_in > 0 ? (float) (1.0 / std::sqrt(fan_in)) : 1.0f;
        t.keep_begin = keep_begin;
        t.keep_end = keep_end;
        t.key = Mix(s.seed ^ Mix(Fnv1a(t.name)));
        plan.push_back(std::move(t));
    };
    const int64_t d = s.embd;
    const int64_t q_dim = (int64_t) s.heads * s.head_dim;
    const int64_t kv_dim = (int64_t) s.kv_heads * s.head_dim;
    const int64_t ff = s.expert_ff;
    const int64_t ne = s.experts;
    const ggml_type w = s.type;

    // Embeddings of unit scale (fan_in 1): attn_norm rescales anyway, and unit scale makes the token dominate the
    // residual stream so different prompts give different continuations.
    add("token_embd.weight", w, {d, s.vocab}, Fill::Random, 1.0);
    for (uint32_t il = 0; il < s.layers; il++) {
        const std::string p = "blk." + std::to_string(il) + ".";
        add(p + "attn_norm.weight", GGML_TYPE_F32, {d}, Fill::Ones, 0);
        add(p + "attn_q.weight", w, {d, q_dim}, Fill::Random, d);
        add(p + "attn_k.weight", w, {d, kv_dim}, Fill::Random, d);
        add(p + "attn_v.weight", w, {d, kv_dim}, Fill::Random, d);
        add(p + "attn_output.weight", w, {q_dim, d}, Fill::Random, q_dim);
        add(p + "attn_q_norm.weight", GGML_TYPE_F32, {s.head_dim}, Fill::Ones, 0);
        add(p + "attn_k_norm.weight", GGML_TYPE_F32, {s.head_dim}, Fill::Ones, 0);
        add(p + "ffn_norm.weight", GGML_TYPE_F32, {d}, Fill::Ones, 0);
        // The router stays F32 like llama-quantize leaves it; logits of unit scale spread tokens over experts.
        add(p + "ffn_gate_inp.weight", GGML_TYPE_F32, {d, ne}, Fill::Random, d);
        add(p + "ffn_gate_exps.weight", w, {d, ff, ne}, Fill::Random, d);
        add(p + "ffn_up_exps.weight", w, {d, ff, ne}, Fill::Random, d);
        add(p + "ffn_down_exps.weight", w, {ff, d, ne}, Fill::Random, ff);
    }
    add("output_norm.weight", GGML_TYPE_F32, {d}, Fill::Ones, 0);
    // The output rows of <unk>/<s>/</s>, the byte tokens and the n-gram filler are damped so greedy text is made of
    // word pieces: no early end of sequence, no stray invalid UTF-8 bytes, fewer nonsense letter groups.
    add("output.weight", w, {d, s.vocab}, Fill::Random, d, kFirstPieceId, (int64_t) vocab.first_filler);
    return plan;
}

// Generates rows [row0, row0 + nrows) of `t` (rows run over ne[1] * ne[2]) and converts them to t.type into `dst`.
void GenerateRows(const TensorPlan & t, int64_t row0, int64_t nrows, uint8_t * dst) {
    const int64_t n_per_row = t.ne[0];
    const size_t row_size = ggml_row_size(t.type, n_per_row);
    const int64_t rows_per_block = std::max<int64_t>(1, kBlockFloats / n_per_row);
    std::vector<float> scratch((size_t) (std::min(rows_per_block, nrows) * n_per_row));
    constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;
    for (int64_t r = 0; r < nrows; r += rows_per_block) {
        const int64_t n = std::min(rows_per_block, nrows - r);
        float * f = scratch.data();
        for (int64_t i = 0; i < n; i++) {
            const int64_t row = row0 + r + i;
            float * out = f + i * n_per_row;
            if (t.fill == Fill::Ones) {
                std::fill(out, out + n_per_row, 1.0f);
                continue;
            }
            const float scale = t.sigma * (row < t.keep_begin || row >= t.keep_end ? kDamp : 1.0f);
            // The element's flat index is the counter: chunking and threads cannot change the value.
            uint64_t ctr = t.key + (uint64_t) row * (uint64_t) n_per_row * kGolden;
            for (int64_t c = 0; c < n_per_row; c++) {
                out[c] = scale * Triangular(Mix(ctr));
                ctr += kGolden;
            }
        }
        uint8_t * out = dst + (size_t) r * row_size;
        switch (t.type) {
            case GGML_TYPE_F32: memcpy(out, f, (size_t) n * n_per_row * sizeof(float)); break;
            case GGML_TYPE_F16: ggml_fp32_to_fp16_row(f, (ggml_fp16_t *) out, n * n_per_row); break;
            default: ggml_quantize_chunk(t.type, f, out, 0, n, n_per_row, nullptr); break;
        }
    }
}

// Splits the rows over `threads` threads; each writes its own disjoint slice of dst.
void GenerateRowsParallel(const TensorPlan & t, int64_t row0, int64_t nrows, uint8_t * dst, unsigned threads) {
    const int64_t floats = nrows * t.ne[0];
    const int64_t n_threads = std::min<int64_t>(threads, nrows);
    if (n_threads <= 1 || floats < kParallelMinFloats) {
        GenerateRows(t, row0, nrows, dst);
        return;
    }
    const size_t row_size = ggml_row_size(t.type, t.ne[0]);
    std::vector<std::thread> workers;
    auto join_all = [&workers]() {
        for (auto & w : workers) {
            w.join();
        }
    };
    try {
        int64_t begin = 0;
        for (int64_t i = 0; i < n_threads; i++) {
            const int64_t end = nrows * (i + 1) / n_threads;
            uint8_t * out = dst + (size_t) begin * row_size;
            if (i + 1 == n_threads) {
                GenerateRows(t, row0 + begin, end - begin, out);  // the calling thread takes the last share
            } else {
                workers.emplace_back(GenerateRows, std::cref(t), row0 + begin, end - begin, out);
            }
            begin = end;
        }
    } catch (...) {
        join_all();  // a joinable std::thread destroyed by the unwind would terminate the process
        throw;
    }
    join_all();
}

// ---------------------------------------------------------------------------------------------------------------
// GGUF metadata

struct GgufDeleter {
    void operator()(gguf_context * c) const { gguf_free(c); }
};
struct GgmlDeleter {
    void operator()(ggml_context * c) const { ggml_free(c); }
};
using GgufPtr = std::unique_ptr<gguf_context, GgufDeleter>;
using GgmlPtr = std::unique_ptr<ggml_context, GgmlDeleter>;

// gguf_init_empty() fixes the context's alignment at 32 and setting general.alignment afterwards does not change it
// (only the reader applies that key), yet gguf_add_tensor lays out offsets with the context's alignment. So the
// key-value section is written to memory and read back: the parsed context carries alignment 4096 and the tensors
// added to it get page-aligned offsets.
GgufPtr WithAlignment(const gguf_context * kv_only) {
    std::vector<uint8_t> buf(gguf_get_meta_size(kv_only));
    gguf_get_meta_data(kv_only, buf.data());
    gguf_init_params params = {/*no_alloc =*/ true, /*ctx =*/ nullptr};
    GgufPtr ctx(gguf_init_from_buffer(buf.data(), buf.size(), params));
    if (!ctx) {
        throw std::runtime_error("ggml could not re-read the generated GGUF metadata");
    }
    if (gguf_get_alignment(ctx.get()) != kAlignment) {
        throw std::runtime_error("ggml did not apply general.alignment = " + std::to_string(kAlignment));
    }
    return ctx;
}

GgufPtr BuildMetadata(const Spec & s, const Vocab & vocab) {
    GgufPtr kv(gguf_init_empty());
    gguf_context * c = kv.get();
    const std::string a = "qwen3moe";
    auto key = [&](const char * k) { return a + "." + k; };

    gguf_set_val_str(c, "general.architecture", a.c_str());
    gguf_set_val_str(c, "general.name", s.name.c_str());
    const std::string description = "random weights (moeflash make-model, " + s.type_name + ", seed " +
                                    std::to_string(s.seed) + "): for tests and benchmarks, not a language model";
    gguf_set_val_str(c, "general.description", description.c_str());
    gguf_set_val_u32(c, "general.file_type",
                     s.type == GGML_TYPE_F16 ? kFtypeF16 : s.type == GGML_TYPE_Q4_0 ? kFtypeQ4_0 : kFtypeQ8_0);
    gguf_set_val_u32(c, "general.quantization_version", GGML_QNT_VERSION);
    gguf_set_val_u32(c, "general.alignment", kAlignment);
    gguf_set_val_u64(c, "moeflash.seed", s.seed);

    gguf_set_val_u32(c, key("block_count").c_str(), s.layers);
    gguf_set_val_u32(c, key("context_length").c_str(), s.context_length);
    gguf_set_val_u32(c, key("embedding_length").c_str(), s.embd);
    // Qwen3 MoE checkpoints carry the dense width as experts_used * expert width (6144 for 30B-A3B); unused here.
    gguf_set_val_u32(c, key("feed_forward_length").c_str(), s.experts_used * s.expert_ff);
    gguf_set_val_u32(c, key("attention.head_count").c_str(), s.heads);
    gguf_set_val_u32(c, key("attention.head_count_kv").c_str(), s.kv_heads);
    gguf_set_val_u32(c, key("attention.key_length").c_str(), s.head_dim);
    gguf_set_val_u32(c, key("attention.value_length").c_str(), s.head_dim);
    gguf_set_val_f32(c, key("rope.freq_base").c_str(), s.rope_freq_base);
    gguf_set_val_f32(c, key("attention.layer_norm_rms_epsilon").c_str(), s.rms_norm_eps);
    gguf_set_val_u32(c, key("expert_count").c_str(), s.experts);
    gguf_set_val_u32(c, key("expert_used_count").c_str(), s.experts_used);
    gguf_set_val_u32(c, key("expert_feed_forward_length").c_str(), s.expert_ff);

    gguf_set_val_str(c, "tokenizer.ggml.model", "llama");
    std::vector<const char *> tokens(vocab.tokens.size());
    for (size_t i = 0; i < tokens.size(); i++) {
        tokens[i] = vocab.tokens[i].c_str();
    }
    gguf_set_arr_str(c, "tokenizer.ggml.tokens", tokens.data(), tokens.size());
    gguf_set_arr_data(c, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, vocab.scores.data(), vocab.scores.size());
    gguf_set_arr_data(c, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, vocab.types.data(), vocab.types.size());
    gguf_set_val_u32(c, "tokenizer.ggml.unknown_token_id", kUnkId);
    gguf_set_val_u32(c, "tokenizer.ggml.bos_token_id", kBosId);
    gguf_set_val_u32(c, "tokenizer.ggml.eos_token_id", kEosId);
    gguf_set_val_bool(c, "tokenizer.ggml.add_bos_token", true);
    gguf_set_val_bool(c, "tokenizer.ggml.add_eos_token", false);
    if (!s.chat_template.empty()) {
        gguf_set_val_str(c, "tokenizer.chat_template", s.chat_template.c_str());
    }

    return WithAlignment(c);
}

// ---------------------------------------------------------------------------------------------------------------
// Output file

std::string ErrnoText(const std::string & what, const std::string & path) {
    return what + " '" + path + "': " + strerror(errno);
}

// The temporary file is removed unless Commit() renamed it into place: no half-written model survives an error.
class TempFile {
  public:
    TempFile(std::string final_path) : final_path(std::move(final_path)), path(this->final_path + ".tmp") {
        fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            throw std::runtime_error(ErrnoText("cannot create", path));
        }
    }
    ~TempFile() {
        if (fd >= 0) {
            close(fd);
        }
        if (!committed) {
            unlink(path.c_str());
        }
    }
    TempFile(const TempFile &) = delete;
    TempFile & operator=(const TempFile &) = delete;

    void WriteAll(const uint8_t * data, size_t n) {
        while (n > 0) {
            const ssize_t w = write(fd, data, std::min<size_t>(n, 1u << 30));
            if (w < 0) {
                if (errno == EINTR) continue;
                throw std::runtime_error(ErrnoText("cannot write", path));
            }
            data += w;
            n -= (size_t) w;
        }
    }

    // fsync before rename so a crash leaves either no file or the whole file, then fsync the directory entry.
    void Commit() {
        if (fsync(fd) != 0) {
            throw std::runtime_error(ErrnoText("cannot fsync", path));
        }
        const int rc = close(fd);
        fd = -1;
        if (rc != 0) {
            throw std::runtime_error(ErrnoText("cannot close", path));
        }
        if (rename(path.c_str(), final_path.c_str()) != 0) {
            throw std::runtime_error(ErrnoText("cannot rename to '" + final_path + "':", path));
        }
        committed = true;
        const size_t slash = final_path.find_last_of('/');
        const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : final_path.substr(0, slash);
        const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);  // best effort: the data itself is already durable
            close(dfd);
        }
    }

  private:
    std::string final_path;
    std::string path;
    int fd = -1;
    bool committed = false;
};

struct Progress {
    double done;
    double total;
};

class MakeModelWorker : public Napi::AsyncProgressWorker<Progress> {
  public:
    MakeModelWorker(Napi::Env env, Spec spec, Napi::Function on_progress)
        : Napi::AsyncProgressWorker<Progress>(env, "moeflash.makeModel"),
          deferred(Napi::Promise::Deferred::New(env)),
          spec(std::move(spec)) {
        if (!on_progress.IsEmpty()) {
            progress_cb = Napi::Persistent(on_progress);
        }
    }

    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute(const ExecutionProgress & progress) override {
        try {
            Run(progress);
        } catch (const std::exception & e) {
            SetError(e.what());
        }
    }

    void OnProgress(const Progress * data, size_t count) override {
        if (progress_cb.IsEmpty() || count == 0) {
            return;
        }
        Napi::Env env = Env();
        progress_cb.Call({Napi::Number::New(env, data[count - 1].done), Napi::Number::New(env, data[count - 1].total)});
    }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::Object out = Napi::Object::New(env);
        out.Set("path", spec.path);
        out.Set("bytes", (double) bytes);
        out.Set("tensors", (double) n_tensors);
        out.Set("params", (double) n_params);
        deferred.Resolve(out);
    }

    void OnError(const Napi::Error & e) override { deferred.Reject(e.Value()); }

  private:
    static void SendProgress(const ExecutionProgress & progress, uint64_t done, uint64_t total) {
        const Progress p = {(double) done, (double) total};
        progress.Send(&p, 1);  // copied; the JS side sees only the latest value
    }

    void Run(const ExecutionProgress & progress) {
        const unsigned threads = spec.threads ? spec.threads : std::max(1u, std::thread::hardware_concurrency());
        const Vocab vocab = BuildVocab(spec.vocab);
        std::vector<TensorPlan> plan = BuildPlan(spec, vocab);
        GgufPtr gguf = BuildMetadata(spec, vocab);

        // Shapes only: the no_alloc ggml context holds tensor headers, the data is streamed below.
        ggml_init_params ip = {/*mem_size =*/ ggml_tensor_overhead() * (plan.size() + 1), /*mem_buffer =*/ nullptr,
                               /*no_alloc =*/ true};
        GgmlPtr meta(ggml_init(ip));
        if (!meta) {
            throw std::runtime_error("ggml_init failed");
        }
        for (const auto & t : plan) {
            ggml_tensor * tensor = ggml_new_tensor(meta.get(), t.type, t.n_dims, t.ne);
            ggml_set_name(tensor, t.name.c_str());
            gguf_add_tensor(gguf.get(), tensor);
            n_params += (uint64_t) ggml_nelements(tensor);
        }
        n_tensors = plan.size();

        std::vector<uint8_t> header(gguf_get_meta_size(gguf.get()));
        gguf_get_meta_data(gguf.get(), header.data());
        // The header ends padded to the alignment, where the data section starts; each tensor must start where the
        // header says, so check rather than trust our own arithmetic.
        if (header.size() % kAlignment != 0) {
            throw std::runtime_error("GGUF header is not padded to the alignment");
        }
        uint64_t offset = 0;
        std::vector<uint64_t> padded(plan.size());
        for (size_t i = 0; i < plan.size(); i++) {
            if (gguf_get_tensor_offset(gguf.get(), (int64_t) i) != offset) {
                throw std::runtime_error("unexpected GGUF offset for tensor '" + plan[i].name + "'");
            }
            const uint64_t nbytes = gguf_get_tensor_size(gguf.get(), (int64_t) i);
            padded[i] = GGML_PAD(nbytes, kAlignment);
            offset += padded[i];
        }
        const uint64_t total = header.size() + offset;
        gguf.reset();
        meta.reset();

        TempFile file(spec.path);
        std::atomic<uint64_t> done{0};
        file.WriteAll(header.data(), header.size());
        done += header.size();
        SendProgress(progress, done, total);

        // Two buffers: chunk k is generated while chunk k-1 is being written. A future's destructor waits for its
        // write, and it is declared after `file`, so an error never closes the file under a running write.
        std::vector<uint8_t> bufs[2];
        std::future<void> pending;
        int cur = 0;
        for (size_t i = 0; i < plan.size(); i++) {
            const TensorPlan & t = plan[i];
            const size_t row_size = ggml_row_size(t.type, t.ne[0]);
            const int64_t nrows = t.ne[1] * t.ne[2];
            const int64_t rows_per_chunk = std::max<int64_t>(1, (int64_t) (spec.chunk_bytes / row_size));
            const size_t pad = padded[i] - (size_t) nrows * row_size;
            for (int64_t row0 = 0; row0 < nrows; row0 += rows_per_chunk) {
                const int64_t n = std::min(rows_per_chunk, nrows - row0);
                const bool last = row0 + n == nrows;
                std::vector<uint8_t> & buf = bufs[cur];
                const size_t data_bytes = (size_t) n * row_size;
                buf.resize(data_bytes + (last ? pad : 0));
                GenerateRowsParallel(t, row0, n, buf.data(), threads);
                std::fill(buf.begin() + (ptrdiff_t) data_bytes, buf.end(), 0);  // alignment padding
                if (pending.valid()) {
                    pending.get();
                    SendProgress(progress, done, total);
                }
                pending = std::async(std::launch::async, [&file, &done, &buf]() {
                    file.WriteAll(buf.data(), buf.size());
                    done += buf.size();
                });
                cur ^= 1;
            }
        }
        if (pending.valid()) {
            pending.get();
        }
        if (done != total) {
            throw std::runtime_error("wrote " + std::to_string(done) + " bytes, expected " + std::to_string(total));
        }
        file.Commit();
        bytes = total;
        SendProgress(progress, done, total);
    }

    Napi::Promise::Deferred deferred;
    Napi::FunctionReference progress_cb;
    Spec spec;
    uint64_t bytes = 0;
    uint64_t n_tensors = 0;
    uint64_t n_params = 0;
};

Napi::Value MakeModel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Spec spec = ParseSpec(env, info[0]);
    Napi::Function on_progress;
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
        if (!info[1].IsFunction()) {
            throw Napi::TypeError::New(env, "makeModel(spec, onProgress?): onProgress must be a function");
        }
        on_progress = info[1].As<Napi::Function>();
    }
    auto * worker = new MakeModelWorker(env, std::move(spec), on_progress);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
}

}  // namespace

void InitModelMaker(Napi::Env env, Napi::Object exports) {
    exports.Set("makeModel", Napi::Function::New(env, MakeModel));
}
