//===- Safetensors.h - Read and write safetensors checkpoints ---*- C++ -*-===//
//
// The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian uint64 N, N bytes of UTF-8 JSON mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
// first byte after the header) plus an optional "__metadata__" object of
// string -> string, then the row-major little-endian tensor data.
//
// SafetensorsReader validates the whole header when it opens a file, so that a
// malformed or truncated checkpoint fails at once, naming the file and the
// tensor; reads then check the name, the shape and the dtype the caller
// expects. writeSafetensors writes atomically (temporary file, fsync, rename).
// Every failure throws SafetensorsError with a one-line message of the form
// "<path>: tensor 'name' has shape [32], expected [64]".
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_SAFETENSORS_H
#define MOE_RUNTIME_SAFETENSORS_H

#include "moe/Runtime/BFloat16.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::io {

/// The element types of safetensors that the runtime knows.
enum class DType { F32, BF16, F16, F64, I64, I32, I16, I8, U8, Bool };

/// The name safetensors uses for `dtype` ("F32", "BF16", ..., "BOOL").
const char *dtypeName(DType dtype);
/// Bytes per element.
size_t dtypeSize(DType dtype);

using moe::rt::bf16ToF32;
using moe::rt::f32ToBf16;

/// IEEE binary16 bits -> fp32 (exact, subnormals and NaN payloads included).
inline float f16ToF32(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0x1f) {
    out = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    out = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    out = sign;
  } else {
    // Subnormal: mantissa * 2^-24; normalise it for fp32.
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    out = sign | ((113u - shift) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &out, sizeof f);
  return f;
}

/// One tensor of an opened file.
struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape; ///< Empty for a 0-d scalar.
  uint64_t offset;            ///< Absolute byte offset of the data in the file.
  uint64_t bytes;             ///< product(shape) * dtypeSize(dtype).
};

/// Any malformed file, missing tensor, mismatched shape or dtype, or I/O
/// failure. The message is one line naming the file (and the tensor).
class SafetensorsError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// An opened, validated safetensors file. The file stays open (so a file
/// renamed over it later does not change what is read); reads use pread and
/// may run concurrently from several threads. Move-only.
class SafetensorsReader {
public:
  /// Opens `path` and validates its header: sizes, JSON, every entry's fields,
  /// dtypes, shapes, offsets inside the data section, byte sizes matching the
  /// shapes, no overlapping tensors, no duplicate names.
  static SafetensorsReader open(const std::string &path);

  SafetensorsReader(SafetensorsReader &&other) noexcept;
  SafetensorsReader &operator=(SafetensorsReader &&other) noexcept;
  SafetensorsReader(const SafetensorsReader &) = delete;
  SafetensorsReader &operator=(const SafetensorsReader &) = delete;
  ~SafetensorsReader();

  const std::string &path() const { return path_; }
  bool contains(const std::string &name) const;
  /// Throws SafetensorsError "no tensor 'name'" when absent.
  const TensorInfo &info(const std::string &name) const;
  /// Every tensor name, sorted.
  std::vector<std::string> names() const;
  /// The "__metadata__" object (empty when the file has none).
  const std::map<std::string, std::string> &metadata() const {
    return metadata_;
  }

  /// Reads tensor `name` of shape `expectedShape` into `dst` as fp32. F32 is
  /// read as is; BF16 and F16 are converted exactly; any other dtype, another
  /// shape or a missing tensor throws.
  void readF32(const std::string &name,
               const std::vector<int64_t> &expectedShape, float *dst) const;
  /// Reads tensor `name` of shape `expectedShape` into `dst` as int32. I32 is
  /// read as is; I64 is narrowed, and a value outside the int32 range throws.
  void readI32(const std::string &name,
               const std::vector<int64_t> &expectedShape, int32_t *dst) const;
  /// Copies the raw little-endian bytes of tensor `name` (info(name).bytes of
  /// them) into `dst`, whatever its dtype.
  void readBytes(const std::string &name, void *dst) const;

private:
  SafetensorsReader() = default;
  void readAt(const TensorInfo &tensor, void *dst) const;
  const TensorInfo &checked(const std::string &name,
                            const std::vector<int64_t> &expectedShape) const;

  std::string path_;
  int fd_ = -1;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// A Hugging Face checkpoint: one safetensors file, or the shards a
/// `model.safetensors.index.json` names ("weight_map": tensor name -> shard
/// file, relative to the index's folder), as save_pretrained writes them.
/// open() takes a safetensors file, an index, or a folder holding
/// model.safetensors.index.json or model.safetensors. Every shard must exist
/// when it opens; a shard's header is read on the first read of one of its
/// tensors, so a rank that reads only its experts opens only their shards.
/// Not for concurrent use (one per thread). Move-only.
class SafetensorsCheckpoint {
public:
  static SafetensorsCheckpoint open(const std::string &path);

  /// The file or index that was opened.
  const std::string &path() const { return path_; }
  bool contains(const std::string &name) const;
  /// Every tensor name, sorted.
  std::vector<std::string> names() const;
  /// SafetensorsReader::readF32 on the shard holding `name`; an index that
  /// lists a tensor its shard lacks, or a missing tensor, throws naming the
  /// files.
  void readF32(const std::string &name,
               const std::vector<int64_t> &expectedShape, float *dst) const;

private:
  SafetensorsCheckpoint() = default;
  const SafetensorsReader &shardOf(const std::string &name) const;

  std::string path_;
  std::string folder_;
  /// Tensor name -> shard file; empty for a single file.
  std::map<std::string, std::string> weightMap_;
  mutable std::map<std::string, SafetensorsReader> shards_;
};

/// One tensor for writeSafetensors; `data` holds product(shape) elements of
/// `dtype`, row-major, little-endian (may be null when that is zero).
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void *data;
};

/// Writes `tensors` and `metadata` to `path`: header keys sorted, data in that
/// order, the header padded with spaces so that the data starts 8-byte
/// aligned. Atomic: the bytes go to `path + ".tmp.<pid>"` in the same
/// directory, are fsynced, and the temporary file is renamed over `path`, so
/// a failure or a crash leaves any previous file intact. Invalid input
/// (duplicate or empty names, the reserved name "__metadata__", negative
/// dims, null data) throws before anything is written; an I/O failure removes
/// the temporary file and throws.
void writeSafetensors(const std::string &path,
                      const std::vector<TensorToWrite> &tensors,
                      const std::map<std::string, std::string> &metadata = {});

/// Bytes to write.
struct ByteSpan {
  const void *data;
  uint64_t size;
};

/// Writes `pieces`, in order, to `path` atomically: a temporary file beside
/// it, fsynced, renamed over `path`, the directory fsynced (best effort).
/// On failure SafetensorsError naming `path`, with the temporary file gone.
void writeFileAtomically(const std::string &path,
                         const std::vector<ByteSpan> &pieces);

/// How a Hugging Face checkpoint is written.
struct CheckpointLayout {
  /// At most this many bytes of tensor data per file (a larger tensor gets a
  /// file of its own, as save_pretrained does); 5 GB like save_pretrained's
  /// default.
  uint64_t maxShardBytes = 5'000'000'000ull;
  /// F32, or BF16 (rounded to nearest even) for F32 tensors.
  DType dtype = DType::F32;
  /// The text of a config.json to write into a folder beside the weights
  /// (empty: none; not written beside a lone .safetensors file).
  std::string config;
};

/// Writes `tensors` as Hugging Face does: to `target` itself when it ends in
/// ".safetensors" (the tensors must fit in one shard), else into the folder
/// `target` (created if needed) as model.safetensors, or, when they do not
/// fit in one shard, as model-00001-of-0000N.safetensors ... in the given
/// order plus model.safetensors.index.json ({"metadata": {"total_size"},
/// "weight_map"}), which from_pretrained and SafetensorsCheckpoint read.
/// With layout.config, config.json is written too. Each file is written
/// atomically, the index last; then an earlier
/// checkpoint's model.safetensors or index (whichever was not written now)
/// is removed so that no loader picks it. Other files are left alone.
void writeCheckpoint(const std::string &target,
                     const std::vector<TensorToWrite> &tensors,
                     const CheckpointLayout &layout = {});

} // namespace moe::io

#endif // MOE_RUNTIME_SAFETENSORS_H
