//===- Tokens.cpp - Token ids and characters on the command line ----------===//

#include "driver/model/Tokens.h"

#include "driver/model/Errors.h"

#include <cctype>
#include <charconv>
#include <cstdio>
#include <map>
#include <stdexcept>

namespace moe::driver {

namespace {

bool isSpace(char c) { return std::isspace(static_cast<unsigned char>(c)); }

std::string position(int64_t index, int64_t seq) {
  std::string text = "position " + std::to_string(index);
  if (seq > 0)
    text += " (row " + std::to_string(index / seq) + ", column " +
            std::to_string(index % seq) + ")";
  return text;
}

} // namespace

std::vector<int64_t> parseIds(const std::string &flag,
                              const std::string &text) {
  std::vector<int64_t> ids;
  size_t i = 0, n = text.size();
  auto skipSpace = [&] {
    while (i < n && isSpace(text[i]))
      ++i;
  };
  skipSpace();
  while (i < n) {
    size_t start = i;
    while (i < n && !isSpace(text[i]) && text[i] != ',')
      ++i;
    std::string item = text.substr(start, i - start);
    if (item.empty())
      throw UsageError("--" + flag + ": item " + std::to_string(ids.size()) +
                       " is empty (two commas in a row, or a leading comma?)");
    int64_t value = 0;
    auto [ptr, ec] =
        std::from_chars(item.data(), item.data() + item.size(), value);
    if (ec != std::errc() || ptr != item.data() + item.size())
      throw UsageError("--" + flag + ": item " + std::to_string(ids.size()) +
                       " '" + item + "' is not an integer");
    ids.push_back(value);
    skipSpace();
    if (i < n && text[i] == ',') {
      ++i;
      skipSpace();
      if (i == n)
        throw UsageError("--" + flag + " ends with a comma");
    }
  }
  return ids;
}

void checkIdCount(const std::string &flag, const std::vector<int64_t> &ids,
                  int64_t batch, int64_t seq) {
  if (static_cast<int64_t>(ids.size()) != batch * seq)
    throw std::runtime_error(
        "--" + flag + " has " + std::to_string(ids.size()) + " ids, expected " +
        std::to_string(batch * seq) + " (batch " + std::to_string(batch) +
        " x seq " + std::to_string(seq) + " of the model)");
}

std::vector<int32_t> checkIds(const std::string &flag,
                              const std::vector<int64_t> &ids, int64_t vocab,
                              bool allowIgnore, int64_t ignoreIndex,
                              int64_t seq) {
  std::vector<int32_t> result(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    int64_t id = ids[i];
    bool ok = (id >= 0 && id < vocab) || (allowIgnore && id == ignoreIndex);
    if (!ok)
      throw std::runtime_error(
          "--" + flag + ": id at " + position(static_cast<int64_t>(i), seq) +
          " is " + std::to_string(id) + ", expected 0 <= id < " +
          std::to_string(vocab) +
          (allowIgnore ? " or the ignore index " + std::to_string(ignoreIndex)
                       : std::string()));
    result[i] = static_cast<int32_t>(id);
  }
  return result;
}

std::vector<int32_t> defaultLabels(const std::vector<int32_t> &tokens,
                                   int64_t batch, int64_t seq,
                                   int64_t ignoreIndex) {
  std::vector<int32_t> labels(tokens.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s < seq; ++s)
      labels[b * seq + s] = s + 1 < seq ? tokens[b * seq + s + 1]
                                        : static_cast<int32_t>(ignoreIndex);
  return labels;
}

std::vector<std::string> splitUtf8(const std::string &text,
                                   const std::string &what) {
  std::vector<std::string> chars;
  size_t i = 0;
  while (i < text.size()) {
    unsigned char lead = static_cast<unsigned char>(text[i]);
    size_t length = lead < 0x80           ? 1
                    : (lead >> 5) == 0x6  ? 2
                    : (lead >> 4) == 0xe  ? 3
                    : (lead >> 3) == 0x1e ? 4
                                          : 0;
    bool ok = length != 0 && i + length <= text.size();
    for (size_t k = 1; ok && k < length; ++k)
      ok = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
    if (!ok)
      throw std::runtime_error(what + ": invalid UTF-8 at byte " +
                               std::to_string(i));
    chars.push_back(text.substr(i, length));
    i += length;
  }
  return chars;
}

std::string quoteChar(const std::string &character) {
  if (character.size() == 1) {
    unsigned char c = static_cast<unsigned char>(character[0]);
    switch (c) {
    case '\n':
      return "'\\n'";
    case '\t':
      return "'\\t'";
    case '\r':
      return "'\\r'";
    case '\'':
      return "'\\''";
    case '\\':
      return "'\\\\'";
    default:
      break;
    }
    if (c < 0x20 || c == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "'\\x%02x'", c);
      return escaped;
    }
  }
  return "'" + character + "'";
}

std::vector<int32_t> encodeChars(const std::string &flag,
                                 const std::string &text,
                                 const std::vector<std::string> &vocabChars) {
  std::map<std::string, int32_t> index;
  for (size_t i = 0; i < vocabChars.size(); ++i)
    index.emplace(vocabChars[i], static_cast<int32_t>(i));
  std::vector<int32_t> ids;
  for (const std::string &c : splitUtf8(text, "--" + flag)) {
    auto it = index.find(c);
    if (it == index.end())
      throw std::runtime_error("--" + flag + ": character " + quoteChar(c) +
                               " at position " + std::to_string(ids.size()) +
                               " is not in the model's vocabulary "
                               "(vocab_chars)");
    ids.push_back(it->second);
  }
  return ids;
}

} // namespace moe::driver
