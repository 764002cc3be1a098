//===- Communicator.cpp - Element types and shared checks -----------------===//

#include "CommDetail.h"

#include "moe/Runtime/BFloat16.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <type_traits>

namespace moe::rt {

Communicator::~Communicator() = default;

bool underMpiLauncher() {
  for (const char *var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                          "SLURM_PROCID", "MPI_LOCALNRANKS"})
    if (std::getenv(var))
      return true;
  return false;
}

size_t commDTypeSize(CommDType dtype) {
  switch (dtype) {
  case CommDType::F32:
  case CommDType::I32:
    return 4;
  case CommDType::I64:
    return 8;
  case CommDType::BF16:
    return 2;
  }
  throw std::runtime_error("communicator: unknown element type " +
                           std::to_string(static_cast<int>(dtype)));
}

const char *commDTypeName(CommDType dtype) {
  switch (dtype) {
  case CommDType::F32:
    return "f32";
  case CommDType::I32:
    return "i32";
  case CommDType::I64:
    return "i64";
  case CommDType::BF16:
    return "bf16";
  }
  return "unknown";
}

namespace detail {

void fail(const char *backend, const char *op, const std::string &message) {
  throw std::runtime_error(std::string(backend) + " communicator: " + op +
                           ": " + message);
}

std::string checkCount(int rank, const char *what, int64_t count) {
  if (count >= 0)
    return "";
  return "rank " + std::to_string(rank) + " passes " + what + " " +
         std::to_string(count) + ", which is negative";
}

std::string checkBuffer(int rank, const char *what, const void *buf,
                        int64_t count) {
  if (buf || count <= 0)
    return "";
  return "rank " + std::to_string(rank) + " passes a null " + what +
         " buffer for " + std::to_string(count) + " elements";
}

std::string checkRoot(int rank, int root, int size) {
  if (root >= 0 && root < size)
    return "";
  return "rank " + std::to_string(rank) + " passes root " +
         std::to_string(root) + ", expected one in [0, " +
         std::to_string(size) + ")";
}

std::string checkCountsAndOffsets(int rank, const char *side,
                                  const int64_t *counts, const int64_t *offsets,
                                  int n) {
  if (n > 0 && (!counts || !offsets))
    return "rank " + std::to_string(rank) + " passes null " + side +
           " counts or offsets";
  for (int j = 0; j < n; ++j) {
    if (counts[j] < 0 || offsets[j] < 0)
      return "rank " + std::to_string(rank) + " passes " + side + " count " +
             std::to_string(counts[j]) + " at offset " +
             std::to_string(offsets[j]) + " for peer " + std::to_string(j) +
             ", expected non-negative values";
  }
  return "";
}

namespace {

// Integers add as unsigned so that overflow wraps instead of being undefined.
template <typename T> T addInOrder(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
  } else {
    return a + b;
  }
}

// Rank-outer over cache-sized blocks, so the inner loop vectorises; each
// element still sees the additions in rank order.
template <typename T>
void sumTyped(const void *const *src, int n, void *dst, int64_t count) {
  constexpr int64_t block = 4096;
  T *out = static_cast<T *>(dst);
  for (int64_t begin = 0; begin < count; begin += block) {
    int64_t end = std::min(count, begin + block);
    const T *first = static_cast<const T *>(src[0]);
    if (first != out)
      std::copy(first + begin, first + end, out + begin);
    for (int r = 1; r < n; ++r) {
      const T *in = static_cast<const T *>(src[r]);
      for (int64_t i = begin; i < end; ++i)
        out[i] = addInOrder(out[i], in[i]);
    }
  }
}

// bf16: every element is summed in fp32 in rank order and rounded once.
void sumBf16(const void *const *src, int n, void *dst, int64_t count) {
  auto *out = static_cast<uint16_t *>(dst);
  for (int64_t i = 0; i < count; ++i) {
    float sum = bf16ToF32(static_cast<const uint16_t *>(src[0])[i]);
    for (int r = 1; r < n; ++r)
      sum += bf16ToF32(static_cast<const uint16_t *>(src[r])[i]);
    out[i] = f32ToBf16(sum);
  }
}

} // namespace

void sumInRankOrder(const void *const *src, int n, void *dst, int64_t count,
                    CommDType dtype) {
  switch (dtype) {
  case CommDType::F32:
    return sumTyped<float>(src, n, dst, count);
  case CommDType::I32:
    return sumTyped<int32_t>(src, n, dst, count);
  case CommDType::I64:
    return sumTyped<int64_t>(src, n, dst, count);
  case CommDType::BF16:
    return sumBf16(src, n, dst, count);
  }
}

} // namespace detail
} // namespace moe::rt
