//===- Tokens.h - Token ids and characters on the command line --*- C++ -*-===//
//
// Token ids come from --tokens/--labels/--prompt as text; character-level
// models (a manifest with "vocab_chars") map each UTF-8 character to its
// index in vocab_chars. Malformed text is a UsageError; ids that do not fit
// the model are a std::runtime_error naming the position and the value.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_TOKENS_H
#define MOE_LIB_RUNTIME_DRIVER_TOKENS_H

#include <cstdint>
#include <string>
#include <vector>

namespace moe::driver {

/// Whole [batch, seq] tokens and labels, row-major.
struct Batch {
  std::vector<int32_t> tokens, labels;
};

/// Integers separated by commas and/or whitespace ("1, 2,3 4"). An empty item
/// (",,", a leading or trailing comma) or a non-integer throws UsageError
/// naming `flag` and the item.
std::vector<int64_t> parseIds(const std::string &flag, const std::string &text);

/// Throws std::runtime_error unless `ids` has batch*seq ids.
void checkIdCount(const std::string &flag, const std::vector<int64_t> &ids,
                  int64_t batch, int64_t seq);

/// Checks 0 <= id < vocab (or id == `ignoreIndex` when `allowIgnore`) and
/// narrows to int32; throws std::runtime_error naming `flag`, the position
/// (with its row and column when `seq` > 0) and the value.
std::vector<int32_t> checkIds(const std::string &flag,
                              const std::vector<int64_t> &ids, int64_t vocab,
                              bool allowIgnore, int64_t ignoreIndex,
                              int64_t seq = 0);

/// The labels of causal language modelling: tokens shifted left by one within
/// each row, `ignoreIndex` at the end of every row.
std::vector<int32_t> defaultLabels(const std::vector<int32_t> &tokens,
                                   int64_t batch, int64_t seq,
                                   int64_t ignoreIndex);

/// Splits UTF-8 text into its characters (code points, 1 to 4 bytes each);
/// invalid UTF-8 throws std::runtime_error("<what>: invalid UTF-8 at byte N").
std::vector<std::string> splitUtf8(const std::string &text,
                                   const std::string &what);

/// A character for an error message: 'a', '\n', '\x01'.
std::string quoteChar(const std::string &character);

/// Encodes `text` with a character vocabulary; the first character not in it
/// throws std::runtime_error naming `flag`, the character and its position.
std::vector<int32_t> encodeChars(const std::string &flag,
                                 const std::string &text,
                                 const std::vector<std::string> &vocabChars);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_TOKENS_H
