//===- GroupedGemm.h - Segmented GEMMs of the routed experts ----*- C++ -*-===//
//
// The GEMMs of the grouped expert FFN: activations [rows, *] split into
// `segments` row segments, segment g = rows [offsets[g], offsets[g+1]) using
// weight set g % experts (an expert-parallel rank's received rows are grouped
// by source rank, then local expert, hence the modulo).
//
// The offsets live in DEVICE memory: they come from permuteByExpert or from
// an all-to-all on the device, and reading them on the host would cost a
// synchronisation per layer. So cuBLAS's grouped batched GEMM
// (cublasGemmGroupedBatchedEx), which takes the per-group sizes on the host,
// is not used here. Instead one launch covers an upper bound of the work:
// ceil(rows / kTileRows) + segments row tiles (each segment wastes at most one
// partial tile), and each block finds its (segment, tile) by a binary search
// over per-segment tile prefix sums that buildTileMap computes on the device;
// blocks past the last real tile exit at once.
//
// Each operand and the result are fp32 or bf16 independently (tiles are
// widened to fp32 in shared memory; the result is rounded once), so the
// expert FFN keeps its intermediates in fp32 under bf16 storage; GroupedGemm.cu
// instantiates the combinations it uses.
//
// The kernels are tiled shared-memory GEMMs with fp32 accumulation (64 x 64
// output tiles, 16-deep reduction steps, 256 threads with 4 x 4 outputs
// each), clear rather than fast: this file is its own unit so that a Hopper
// kernel (TMA + wgmma, or CUTLASS's grouped GEMM with device-side problem
// sizes) can replace it without touching the callers.
//
// Every function queues its work on dev.stream() and returns; none allocates
// or calls dev.scratch() (the caller carves the tile map out of its own
// scratch block, which another scratch() call would invalidate). Sizes are
// checked on the host (std::invalid_argument naming `kernel`); offsets are
// not: rows outside [0, rows) are clamped away on the device, so bad offsets
// give wrong results but never out-of-bounds accesses.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_GROUPEDGEMM_H
#define MOE_LIB_RUNTIME_CUDA_GROUPEDGEMM_H

#include "Device.h"

#include <cstddef>
#include <cstdint>

namespace moe::cuda::grouped {

/// Rows of one tile of the row-tiled kernels.
inline constexpr int64_t kTileRows = 64;

/// A segmented row layout, all pointers device memory.
struct Segments {
  const int64_t *offsets = nullptr; ///< [segments + 1], non-decreasing from 0
  int64_t segments = 0;
  int64_t experts = 1;                ///< segment g uses weight set g % experts
  int64_t rows = 0;                   ///< rows of the activations (>= end)
  const int64_t *tileStart = nullptr; ///< [segments + 1], from buildTileMap
};

/// Bytes of device memory the tile map of `segments` segments needs.
inline size_t tileMapBytes(int64_t segments) {
  return static_cast<size_t>(segments + 1) * sizeof(int64_t);
}

/// tileStart[g] = sum over h < g of ceil(rows of segment h / kTileRows)
/// (g = 0..segments), from the device offsets; one block of one kernel.
void buildTileMap(Device &dev, const int64_t *offsets, int64_t segments,
                  int64_t rows, int64_t *tileStart);

/// y[r, :n] = x[r, :k] @ W_e^T for the rows r of every segment, W_e =
/// w + e * n * k ([n, k] row-major, e = g % experts): the forward projection.
/// Rows outside the segments are not written.
template <typename TA, typename TW, typename TC>
void gemmXWt(Device &dev, const char *kernel, const Segments &s, const TA *x,
             int64_t k, const TW *w, int64_t n, TC *y);

/// act[r, :n] = silu(x[r, :k] @ G_e^T) * (x[r, :k] @ U_e^T) for the rows of
/// every segment (G_e = gate + e * n * k and U_e = up + e * n * k, [n, k]):
/// the expert FFN's gate and up projections and SwiGLU in one pass, so the
/// two projections never reach memory (the CPU's formula, fp32 throughout).
/// Rows outside the segments are not written.
template <typename TA, typename TW>
void gemmXWtSwiGLU(Device &dev, const char *kernel, const Segments &s,
                   const TA *x, int64_t k, const TW *gate, const TW *up,
                   int64_t n, float *act);

/// dx[r, :k] (+)= dy[r, :n] @ W_e for the rows of every segment (W_e [n, k]
/// as above): the backward of gemmXWt with respect to x. Overwrites unless
/// `accumulate`. Rows outside the segments are not written.
template <typename TA, typename TW, typename TC>
void gemmDyW(Device &dev, const char *kernel, const Segments &s, const TA *dy,
             int64_t n, const TW *w, int64_t k, bool accumulate, TC *dx);

/// dw_e[n, k] = sum over the segments g of expert e, over their rows r, of
/// dy[r, n] * x[r, k], for every e < experts (0 for an expert without rows):
/// the backward of gemmXWt with respect to W. Overwrites dw [experts, n, k];
/// each output is summed by one thread in a fixed order (deterministic).
/// Does not need s.tileStart.
template <typename TY, typename TX, typename TW>
void gemmDw(Device &dev, const char *kernel, const Segments &s, const TY *dy,
            int64_t n, const TX *x, int64_t k, TW *dw);

} // namespace moe::cuda::grouped

#endif // MOE_LIB_RUNTIME_CUDA_GROUPEDGEMM_H
