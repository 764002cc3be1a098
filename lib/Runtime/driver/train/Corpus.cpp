//===- Corpus.cpp - The tokens a model trains on --------------------------===//

#include "driver/train/Corpus.h"

#include "driver/model/Tokens.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <unordered_map>

namespace moe::driver {

namespace {

uint64_t splitmix64(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// Uniform in [0, n) without modulo bias (n >= 1).
uint64_t uniformBelow(uint64_t &state, uint64_t n) {
  uint64_t threshold = (0 - n) % n;
  for (;;)
    if (uint64_t x = splitmix64(state); x >= threshold)
      return x % n;
}

} // namespace

Corpus::Corpus(std::vector<int32_t> ids, int64_t seq, const std::string &what)
    : ids_(std::move(ids)), seq_(seq),
      trainSize_(static_cast<int64_t>(ids_.size()) * 9 / 10) {
  if (trainSize_ < seq + 1 || validationSize() < seq + 1)
    throw std::runtime_error(
        what + " has " + std::to_string(ids_.size()) +
        " tokens: too short for one window of seq + 1 = " +
        std::to_string(seq + 1) +
        " in both the training split (90%: " + std::to_string(trainSize_) +
        ") and the validation split (10%: " + std::to_string(validationSize()) +
        "); need at least " + std::to_string(10 * (seq + 1) + 9) + " tokens");
}

Corpus Corpus::readFile(const std::string &path,
                        const std::vector<std::string> &vocabChars,
                        int64_t seq) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(path + ": cannot open the data file (" +
                             std::strerror(errno) + ")");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  if (in.bad())
    throw std::runtime_error(path + ": cannot read the data file");

  std::unordered_map<std::string, int32_t> index;
  for (size_t i = 0; i < vocabChars.size(); ++i)
    index.emplace(vocabChars[i], static_cast<int32_t>(i));
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  size_t offset = 0;
  for (const std::string &c : splitUtf8(text, path)) {
    auto it = index.find(c);
    if (it == index.end())
      throw std::runtime_error(path + ": character " + quoteChar(c) +
                               " at byte offset " + std::to_string(offset) +
                               " is not in the model's vocabulary "
                               "(vocab_chars)");
    ids.push_back(it->second);
    offset += c.size();
  }
  return Corpus(std::move(ids), seq, path);
}

Corpus Corpus::readTokenFile(const std::string &path, int idBytes,
                             int64_t vocab, int64_t seq) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(path + ": cannot open the data file (" +
                             std::strerror(errno) + ")");
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  if (in.bad())
    throw std::runtime_error(path + ": cannot read the data file");
  if (bytes.size() % idBytes != 0)
    throw std::runtime_error(
        path + ": " + std::to_string(bytes.size()) +
        " bytes is not a whole number of " + std::to_string(8 * idBytes) +
        "-bit token ids (--data-format u" + std::to_string(8 * idBytes) + ")");
  std::vector<int32_t> ids(bytes.size() / idBytes);
  const auto *data = reinterpret_cast<const unsigned char *>(bytes.data());
  for (size_t i = 0; i < ids.size(); ++i) {
    uint64_t id = 0;
    for (int b = idBytes - 1; b >= 0; --b) // little-endian
      id = (id << 8) | data[i * idBytes + b];
    if (id >= static_cast<uint64_t>(vocab))
      throw std::runtime_error(path + ": token id " + std::to_string(id) +
                               " at index " + std::to_string(i) +
                               " is not below the model's vocabulary size " +
                               std::to_string(vocab));
    ids[i] = static_cast<int32_t>(id);
  }
  return Corpus(std::move(ids), seq, path);
}

std::vector<int64_t> Corpus::trainWindowStarts(uint64_t seed, int64_t step,
                                               int64_t batch) const {
  uint64_t state = seed;
  state = splitmix64(state) ^ static_cast<uint64_t>(step);
  std::vector<int64_t> starts(batch);
  uint64_t choices = static_cast<uint64_t>(trainSize_ - seq_);
  for (int64_t &start : starts)
    start = static_cast<int64_t>(uniformBelow(state, choices));
  return starts;
}

Batch Corpus::trainBatch(uint64_t seed, int64_t step, int64_t batch) const {
  return gather(0, trainWindowStarts(seed, step, batch));
}

Batch Corpus::validationBatch(int64_t index, int64_t count,
                              int64_t batch) const {
  int64_t windows = count * batch, last = validationSize() - seq_ - 1;
  std::vector<int64_t> starts(batch);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t w = index * batch + b;
    starts[b] = windows > 1 ? w * last / (windows - 1) : 0;
  }
  return gather(trainSize_, starts);
}

Batch Corpus::gather(int64_t base, const std::vector<int64_t> &starts) const {
  Batch batch;
  for (int64_t start : starts) {
    const int32_t *window = ids_.data() + base + start;
    batch.tokens.insert(batch.tokens.end(), window, window + seq_);
    batch.labels.insert(batch.labels.end(), window + 1, window + seq_ + 1);
  }
  return batch;
}

} // namespace moe::driver
