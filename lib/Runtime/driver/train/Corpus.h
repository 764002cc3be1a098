//===- Corpus.h - The tokens a model trains on ------------------*- C++ -*-===//
//
// `train --data FILE` reads the file as characters of the model's vocabulary
// (vocab_chars) or, with --data-format u16|u32, as a flat little-endian array
// of token ids (the layout nanoGPT and many data pipelines write): the first
// 90% of the tokens are the training split, the rest the validation split. A
// batch is `batch` windows of seq + 1 characters: tokens are a window's first
// seq, labels its last seq. The training windows of a step start at positions
// drawn from a generator seeded by (seed, step) alone, so a resumed run sees
// exactly the batches an uninterrupted one would; the validation windows are
// fixed and evenly spaced.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_CORPUS_H
#define MOE_LIB_RUNTIME_DRIVER_CORPUS_H

#include "driver/model/Tokens.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moe::driver {

class Corpus {
public:
  /// Splits `ids` 90/10; throws std::runtime_error naming `what` when either
  /// split is shorter than one window of seq + 1 tokens.
  Corpus(std::vector<int32_t> ids, int64_t seq, const std::string &what);

  /// Reads and encodes the file at `path`; a character that is not in
  /// `vocabChars` throws std::runtime_error naming it and its byte offset.
  static Corpus readFile(const std::string &path,
                         const std::vector<std::string> &vocabChars,
                         int64_t seq);

  /// Reads the file at `path` as little-endian token ids of `idBytes` (2 or
  /// 4) bytes each; a file that is not a whole number of ids, or an id that
  /// is not below `vocab`, throws std::runtime_error naming the file (and
  /// the id's index and value).
  static Corpus readTokenFile(const std::string &path, int idBytes,
                              int64_t vocab, int64_t seq);

  int64_t trainSize() const { return trainSize_; }
  int64_t validationSize() const {
    return static_cast<int64_t>(ids_.size()) - trainSize_;
  }
  /// The validation split's tokens.
  const int32_t *validation() const { return ids_.data() + trainSize_; }

  /// The start positions (in the training split) of step `step`'s windows.
  std::vector<int64_t> trainWindowStarts(uint64_t seed, int64_t step,
                                         int64_t batch) const;
  Batch trainBatch(uint64_t seed, int64_t step, int64_t batch) const;
  /// Validation batch `index` of `count`: windows spread evenly over the
  /// validation split, the same for every call.
  Batch validationBatch(int64_t index, int64_t count, int64_t batch) const;

private:
  Batch gather(int64_t base, const std::vector<int64_t> &starts) const;

  std::vector<int32_t> ids_;
  int64_t seq_;
  int64_t trainSize_;
};

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_CORPUS_H
