//===- KernelLaunch.cuh - Launch shapes and column sums ---------*- CUDA
//-*-===//
//
// Private to lib/Runtime/cuda: what several kernel families share. Grid
// sizes for grid-stride and per-row loops, the int32 slot range check, and
// the deterministic column sum (per-chunk partial sums in double, then the
// chunks in order, so the result does not depend on the launch).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_KERNELLAUNCH_CUH
#define MOE_LIB_RUNTIME_CUDA_KERNELLAUNCH_CUH

#include "Device.h"
#include "DeviceMath.cuh"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

namespace moe::cuda {

/// Threads per block of the launches below.
inline constexpr int kLaunchThreads = 256;

/// Blocks of a grid-stride loop over n elements (capped: each thread then
/// handles several).
inline unsigned elementGrid(const Device &dev, int64_t n) {
  int64_t cap = std::max<int64_t>(1, int64_t(dev.smCount()) * 32);
  return static_cast<unsigned>(
      std::min<int64_t>(gridFor(n, kLaunchThreads), cap));
}

/// Blocks of a one-block-per-row loop over `rows` rows.
inline unsigned rowGrid(int64_t rows) {
  return static_cast<unsigned>(std::clamp<int64_t>(rows, 1, int64_t(1) << 20));
}

//===----------------------------------------------------------------------===//
// Deterministic column sums
//===----------------------------------------------------------------------===//

/// Rows per chunk of a column reduction: at least 64, and at most 4096
/// chunks (gridDim.y).
inline int64_t chunkRows(int64_t rows) {
  return std::max<int64_t>(64, (rows + 4095) / 4096);
}

inline int64_t chunkCount(int64_t rows) {
  return (rows + chunkRows(rows) - 1) / chunkRows(rows);
}

/// Stage 1: partial[c, j] = sum over the rows r of chunk c (ascending) of
/// term(r, j), in double. Grid (column blocks, chunks), a thread per column.
template <typename Term>
__global__ void columnPartialsKernel(Term term, int64_t rows, int64_t cols,
                                     int64_t rowsPerChunk, double *partial) {
  int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= cols)
    return;
  int64_t first = blockIdx.y * rowsPerChunk;
  int64_t last = first + rowsPerChunk < rows ? first + rowsPerChunk : rows;
  double sum = 0.0;
  for (int64_t r = first; r < last; ++r)
    sum += term(r, j);
  partial[blockIdx.y * cols + j] = sum;
}

/// Stage 2: out[j] = sum over the chunks (ascending) of partial[c, j].
template <typename T>
__global__ void columnFinishKernel(const double *partial, int64_t chunks,
                                   int64_t cols, T *out) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < cols;
       j += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0.0;
    for (int64_t c = 0; c < chunks; ++c)
      sum += partial[c * cols + j];
    out[j] = fromF32<T>(float(sum));
  }
}

/// out[j] = float(sum over rows of term(r, j)), deterministic; `partial`
/// holds chunkCount(rows) * cols doubles.
template <typename Term, typename T>
void columnSum(Device &dev, const Term &term, int64_t rows, int64_t cols,
               double *partial, T *out) {
  if (cols == 0)
    return;
  int64_t chunks = chunkCount(rows);
  if (chunks > 0) {
    dim3 grid(gridFor(cols, kLaunchThreads), static_cast<unsigned>(chunks));
    columnPartialsKernel<<<grid, kLaunchThreads, 0, dev.stream()>>>(
        term, rows, cols, chunkRows(rows), partial);
    checkLaunch("columnPartialsKernel");
  }
  columnFinishKernel<<<elementGrid(dev, cols), kLaunchThreads, 0,
                       dev.stream()>>>(partial, chunks, cols, out);
  checkLaunch("columnFinishKernel");
}

//===----------------------------------------------------------------------===//
// Host-side helpers
//===----------------------------------------------------------------------===//

/// Slots are indexed by int32 (indices, rowToSlot): tokens * topK must fit.
inline int64_t checkSlots(const char *kernel, int64_t tokens, int64_t topK) {
  if (tokens > std::numeric_limits<int32_t>::max() / std::max<int64_t>(topK, 1))
    fail(kernel, "tokens * topK (" + std::to_string(tokens) + " * " +
                     std::to_string(topK) + ") exceeds the int32 slot range");
  return tokens * topK;
}

/// Blocks of kLaunchThreads for a grid-stride loop over n items: enough to fill
/// the GPU, at least one.
inline unsigned strideBlocks(const Device &dev, int64_t n) {
  int64_t blocks = (n + kLaunchThreads - 1) / kLaunchThreads;
  int64_t cap = int64_t(std::max(dev.smCount(), 1)) * 32;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, cap)));
}

} // namespace moe::cuda

#endif // MOE_LIB_RUNTIME_CUDA_KERNELLAUNCH_CUH
