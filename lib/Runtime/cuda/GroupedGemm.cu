//===- GroupedGemm.cu - Segmented GEMMs of the routed experts -------------===//
//
// See GroupedGemm.h. Two kernels do the work:
//   - rowTiledGemm: C[r, :] (+)= A[r, :] @ B_e for the rows of each segment,
//     B_e either W_e^T (forward) or W_e (backward data), or the forward's
//     gate and up projections at once with SwiGLU applied before the store;
//     grid.x covers an upper bound of the row tiles of all segments, grid.y
//     the column tiles.
//   - weightGradGemm: dW_e = sum over e's segments of dY_g^T @ X_g; one block
//     per (expert, 64 x 64 output tile) walks all of the expert's rows, so
//     each output is one thread's fp32 sum in row order (deterministic, no
//     atomics, no split-K).
// Both use 64 x 64 output tiles, a 16-deep shared-memory reduction step and
// 256 threads computing 4 x 4 outputs each at a stride of 16 (so that a
// warp's shared-memory reads are broadcasts or conflict-free and its global
// stores are 64-byte contiguous runs).
//
//===----------------------------------------------------------------------===//

#include "DeviceMath.cuh"
#include "GroupedGemm.h"

#include <cub/block/block_scan.cuh>

#include <limits>
#include <stdexcept>
#include <string>

namespace moe::cuda::grouped {

namespace {

constexpr int kTM = static_cast<int>(kTileRows); // rows of a tile
constexpr int kTN = 64;                          // columns of a tile
constexpr int kTJ = 16;                          // reduction step
constexpr int kThreads = 256;                    // 16 x 16 threads
constexpr int kLoads = kTM * kTJ / kThreads;     // elements per thread
static_assert(kTM == 64 && kTN == 64 && kTJ == 16 && kThreads == 256,
              "the index arithmetic below assumes these tile sizes");

void checkSegments(const char *kernel, const Segments &s) {
  checkSize(kernel, "rows", s.rows);
  checkSize(kernel, "segments", s.segments);
  if (s.experts < 1)
    fail(kernel, "experts must be positive, got " + std::to_string(s.experts));
}

/// The clamped row range [begin, end) of segment g.
__device__ __forceinline__ void segmentRange(const int64_t *offsets, int64_t g,
                                             int64_t rows, int64_t &begin,
                                             int64_t &end) {
  begin = max(offsets[g], int64_t(0));
  end = min(offsets[g + 1], rows);
}

/// One block: per-segment tile counts, scanned in chunks of kThreads with a
/// running carry.
__global__ void __launch_bounds__(kThreads)
    tileMapKernel(const int64_t *offsets, int64_t segments, int64_t rows,
                  int64_t *tileStart) {
  using Scan = cub::BlockScan<long long, kThreads>;
  __shared__ typename Scan::TempStorage temp;
  long long carry = 0;
  if (threadIdx.x == 0)
    tileStart[0] = 0;
  for (int64_t base = 0; base < segments; base += kThreads) {
    int64_t g = base + threadIdx.x;
    long long tiles = 0;
    if (g < segments) {
      int64_t begin, end;
      segmentRange(offsets, g, rows, begin, end);
      tiles = end > begin ? (end - begin + kTM - 1) / kTM : 0;
    }
    long long inclusive, total;
    Scan(temp).InclusiveSum(tiles, inclusive, total);
    if (g < segments)
      tileStart[g + 1] = carry + inclusive;
    carry += total;
    __syncthreads(); // temp is reused by the next chunk
  }
}

/// acc[i][q] += sum over the reduction step jj of a[jj][ty + 16 i] *
/// b[jj][tx + 16 q]: each thread's 4 x 4 outputs of one shared-memory step,
/// the inner loop of every GEMM here.
__device__ __forceinline__ void accumulateTile(const float (*a)[kTM + 1],
                                               const float (*b)[kTN + 1],
                                               int tx, int ty,
                                               float (&acc)[4][4]) {
#pragma unroll
  for (int jj = 0; jj < kTJ; ++jj) {
    float av[4], bv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      av[i] = a[jj][ty + 16 * i];
      bv[i] = b[jj][tx + 16 * i];
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int q = 0; q < 4; ++q)
        acc[i][q] += av[i] * bv[q];
  }
}

/// C[r, c] (+)= sum_j A[r, j] * B_e(j, c) over the rows r of each segment;
/// A is [rows, J] row-major; B_e(j, c) = W_e[c, j] when kWTransposed (W_e
/// [cols, J], the forward x @ W^T), else W_e[j, c] (W_e [J, cols], the
/// backward dy @ W). Block (x, y) computes row tile x of the concatenated
/// segment tiles, column tile y.
///
/// kSwiGLU (with kWTransposed, not accumulating): the fused gate/up
/// projection of the expert FFN. `w` is the gate and `w2` the up weight set;
/// the block computes both products of its tile from one A tile and writes
/// C = silu(A W_e^T) * (A W2_e^T), so neither product reaches memory.
template <typename TA, typename TW, typename TC, bool kWTransposed,
          bool kSwiGLU>
__global__ void __launch_bounds__(kThreads)
    rowTiledGemm(const int64_t *offsets, const int64_t *tileStart,
                 int64_t segments, int64_t experts, int64_t rows, const TA *a,
                 int64_t J, const TW *w, const TW *w2, int64_t cols, TC *c,
                 bool accumulate) {
  static_assert(!kSwiGLU || kWTransposed, "SwiGLU fuses the forward only");
  const int64_t tile = blockIdx.x;
  if (tile >= tileStart[segments])
    return; // past the last real tile (the grid is an upper bound)
  // The segment holding this tile: the largest g with tileStart[g] <= tile
  // (empty segments share their tileStart with the next one, so the largest
  // such g is non-empty).
  int64_t lo = 0, hi = segments - 1;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo + 1) / 2;
    if (tileStart[mid] <= tile)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int64_t g = lo;
  int64_t begin, end;
  segmentRange(offsets, g, rows, begin, end);
  const int64_t row0 = begin + (tile - tileStart[g]) * kTM;
  const int64_t rowEnd = min(row0 + kTM, end);
  const int64_t col0 = int64_t(blockIdx.y) * kTN;
  const TW *we = w + (g % experts) * cols * J;
  const TW *we2 = kSwiGLU ? w2 + (g % experts) * cols * J : nullptr;

  __shared__ float as[kTJ][kTM + 1];
  __shared__ float bs[kSwiGLU ? 2 : 1][kTJ][kTN + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[kSwiGLU ? 2 : 1][4][4] = {};
  // The B tile of weight set `wt` at reduction step j0 into `dst`, read along
  // W's contiguous dimension.
  auto loadB = [&](const TW *wt, int64_t j0, float(*dst)[kTN + 1]) {
    for (int l = 0; l < kLoads; ++l) {
      int idx = threadIdx.x + l * kThreads;
      int cc = kWTransposed ? idx / kTJ : idx % kTN;
      int jj = kWTransposed ? idx % kTJ : idx / kTN;
      int64_t col = col0 + cc, j = j0 + jj;
      float v = 0.0f;
      if (col < cols && j < J)
        v = toF32(kWTransposed ? wt[col * J + j] : wt[j * cols + col]);
      dst[jj][cc] = v;
    }
  };
  for (int64_t j0 = 0; j0 < J; j0 += kTJ) {
    for (int l = 0; l < kLoads; ++l) {
      int idx = threadIdx.x + l * kThreads;
      int r = idx / kTJ, jj = idx % kTJ; // j fastest: contiguous in A
      int64_t row = row0 + r, j = j0 + jj;
      as[jj][r] = row < rowEnd && j < J ? toF32(a[row * J + j]) : 0.0f;
    }
    loadB(we, j0, bs[0]);
    if constexpr (kSwiGLU)
      loadB(we2, j0, bs[1]);
    __syncthreads();
    accumulateTile(as, bs[0], tx, ty, acc[0]);
    if constexpr (kSwiGLU)
      accumulateTile(as, bs[1], tx, ty, acc[1]);
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int64_t row = row0 + ty + 16 * i;
    if (row >= rowEnd)
      continue;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      int64_t col = col0 + tx + 16 * q;
      if (col >= cols)
        continue;
      TC *out = c + row * cols + col;
      float v = acc[0][i][q];
      if constexpr (kSwiGLU) {
        v = swiglu(v, acc[1][i][q]);
      } else if (accumulate) {
        v += toF32(*out);
      }
      *out = fromF32<TC>(v);
    }
  }
}

/// dw_e[n, k] = sum over the rows r of e's segments of dy[r, n] * x[r, k];
/// dy [rows, N], x [rows, K], dw [experts, N, K]. Block b is expert
/// b / (tilesN * tilesK), output tile b % (tilesN * tilesK).
template <typename TY, typename TX, typename TW>
__global__ void __launch_bounds__(kThreads)
    weightGradGemm(const int64_t *offsets, int64_t segments, int64_t experts,
                   int64_t rows, const TY *dy, int64_t N, const TX *x,
                   int64_t K, TW *dw, int64_t tilesN, int64_t tilesK) {
  const int64_t b = blockIdx.x;
  const int64_t e = b / (tilesN * tilesK);
  const int64_t rest = b % (tilesN * tilesK);
  const int64_t n0 = rest / tilesK * kTM, k0 = rest % tilesK * kTN;

  __shared__ float as[kTJ][kTM + 1]; // dy^T tile: [row][n]
  __shared__ float bs[kTJ][kTN + 1]; // x tile: [row][k]
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int64_t g = e; g < segments; g += experts) {
    int64_t begin, end; // the same for every thread of the block
    segmentRange(offsets, g, rows, begin, end);
    for (int64_t r0 = begin; r0 < end; r0 += kTJ) {
      for (int l = 0; l < kLoads; ++l) {
        int idx = threadIdx.x + l * kThreads;
        int rr = idx / kTM, cc = idx % kTM; // along the contiguous n / k
        int64_t row = r0 + rr;
        int64_t n = n0 + cc, k = k0 + cc;
        as[rr][cc] = row < end && n < N ? toF32(dy[row * N + n]) : 0.0f;
        bs[rr][cc] = row < end && k < K ? toF32(x[row * K + k]) : 0.0f;
      }
      __syncthreads();
      accumulateTile(as, bs, tx, ty, acc);
      __syncthreads();
    }
  }
  TW *dwe = dw + e * N * K;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int64_t n = n0 + ty + 16 * i;
    if (n >= N)
      continue;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      int64_t k = k0 + tx + 16 * q;
      if (k < K)
        dwe[n * K + k] = fromF32<TW>(acc[i][q]);
    }
  }
}

constexpr int64_t kMaxGridX = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxGridY = 65535;

/// The launch of rowTiledGemm shared by gemmXWt, gemmDyW and gemmXWtSwiGLU
/// (w2 null but for kSwiGLU).
template <bool kWTransposed, bool kSwiGLU, typename TA, typename TW,
          typename TC>
void launchRowTiled(Device &dev, const char *kernel, const Segments &s,
                    const TA *a, int64_t J, const TW *w, const TW *w2,
                    int64_t cols, bool accumulate, TC *c) {
  checkSegments(kernel, s);
  checkSize(kernel, "reduction size", J);
  checkSize(kernel, "columns", cols);
  if (s.rows == 0 || s.segments == 0 || cols == 0)
    return; // no row or no column to write
  int64_t rowTiles = (s.rows + kTM - 1) / kTM + s.segments;
  int64_t colTiles = (cols + kTN - 1) / kTN;
  if (rowTiles > kMaxGridX)
    fail(kernel, "too many row tiles (" + std::to_string(rowTiles) + ")");
  if (colTiles > kMaxGridY)
    fail(kernel, "too many columns (" + std::to_string(cols) + ")");
  dim3 grid(static_cast<unsigned>(rowTiles), static_cast<unsigned>(colTiles));
  rowTiledGemm<TA, TW, TC, kWTransposed, kSwiGLU>
      <<<grid, kThreads, 0, dev.stream()>>>(s.offsets, s.tileStart, s.segments,
                                            s.experts, s.rows, a, J, w, w2,
                                            cols, c, accumulate);
  checkLaunch(kernel);
}

} // namespace

void buildTileMap(Device &dev, const int64_t *offsets, int64_t segments,
                  int64_t rows, int64_t *tileStart) {
  checkSize("buildTileMap", "segments", segments);
  checkSize("buildTileMap", "rows", rows);
  tileMapKernel<<<1, kThreads, 0, dev.stream()>>>(offsets, segments, rows,
                                                  tileStart);
  checkLaunch("tileMapKernel");
}

template <typename TA, typename TW, typename TC>
void gemmXWt(Device &dev, const char *kernel, const Segments &s, const TA *x,
             int64_t k, const TW *w, int64_t n, TC *y) {
  launchRowTiled</*kWTransposed=*/true, /*kSwiGLU=*/false>(
      dev, kernel, s, x, k, w, static_cast<const TW *>(nullptr), n,
      /*accumulate=*/false, y);
}

template <typename TA, typename TW>
void gemmXWtSwiGLU(Device &dev, const char *kernel, const Segments &s,
                   const TA *x, int64_t k, const TW *gate, const TW *up,
                   int64_t n, float *act) {
  launchRowTiled</*kWTransposed=*/true, /*kSwiGLU=*/true>(
      dev, kernel, s, x, k, gate, up, n, /*accumulate=*/false, act);
}

template <typename TA, typename TW, typename TC>
void gemmDyW(Device &dev, const char *kernel, const Segments &s, const TA *dy,
             int64_t n, const TW *w, int64_t k, bool accumulate, TC *dx) {
  launchRowTiled</*kWTransposed=*/false, /*kSwiGLU=*/false>(
      dev, kernel, s, dy, n, w, static_cast<const TW *>(nullptr), k, accumulate,
      dx);
}

template <typename TY, typename TX, typename TW>
void gemmDw(Device &dev, const char *kernel, const Segments &s, const TY *dy,
            int64_t n, const TX *x, int64_t k, TW *dw) {
  checkSegments(kernel, s);
  checkSize(kernel, "n", n);
  checkSize(kernel, "k", k);
  if (n == 0 || k == 0)
    return; // dw is empty
  int64_t tilesN = (n + kTM - 1) / kTM, tilesK = (k + kTN - 1) / kTN;
  if (tilesN * tilesK > kMaxGridX / s.experts)
    fail(kernel, "too many weight tiles (" + std::to_string(s.experts) +
                     " experts of " + std::to_string(n) + " x " +
                     std::to_string(k) + ")");
  int64_t blocks = tilesN * tilesK * s.experts;
  weightGradGemm<TY, TX, TW>
      <<<static_cast<unsigned>(blocks), kThreads, 0, dev.stream()>>>(
          s.offsets, s.segments, s.experts, s.rows, dy, n, x, k, dw, tilesN,
          tilesK);
  checkLaunch(kernel);
}

// The type combinations the expert FFNs use: all fp32 under fp32 storage;
// under bf16 storage, bf16 activations and weights with fp32 intermediates.
template void gemmXWt(Device &, const char *, const Segments &, const float *,
                      int64_t, const float *, int64_t, float *);
template void gemmDyW(Device &, const char *, const Segments &, const float *,
                      int64_t, const float *, int64_t, bool, float *);
template void gemmDw(Device &, const char *, const Segments &, const float *,
                     int64_t, const float *, int64_t, float *);
template void gemmXWt(Device &, const char *, const Segments &, const bf16 *,
                      int64_t, const bf16 *, int64_t, float *);
template void gemmXWt(Device &, const char *, const Segments &, const float *,
                      int64_t, const bf16 *, int64_t, bf16 *);
template void gemmXWtSwiGLU(Device &, const char *, const Segments &,
                            const float *, int64_t, const float *,
                            const float *, int64_t, float *);
template void gemmXWtSwiGLU(Device &, const char *, const Segments &,
                            const bf16 *, int64_t, const bf16 *, const bf16 *,
                            int64_t, float *);
template void gemmDyW(Device &, const char *, const Segments &, const bf16 *,
                      int64_t, const bf16 *, int64_t, bool, float *);
template void gemmDyW(Device &, const char *, const Segments &, const float *,
                      int64_t, const bf16 *, int64_t, bool, float *);
template void gemmDw(Device &, const char *, const Segments &, const bf16 *,
                     int64_t, const float *, int64_t, bf16 *);
template void gemmDw(Device &, const char *, const Segments &, const float *,
                     int64_t, const bf16 *, int64_t, bf16 *);

} // namespace moe::cuda::grouped
