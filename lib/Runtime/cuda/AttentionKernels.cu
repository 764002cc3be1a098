//===- AttentionKernels.cu - Tiled dot-product attention and backward -----===//
//
// The CUDA twins of moe::cpu::attention and moe::cpu::attentionGrad:
// q/dq [batch, seq, heads, headDim], k/dk [batch, seq, kvHeads, headDim],
// v/dv [batch, seq, kvHeads, vDim], out/dout [batch, seq, heads, vDim]
// (row-major, so the q row of (b, s, head) starts at
// ((b * seq + s) * heads + head) * headDim); query head h reads kv head
// h / (heads / kvHeads); scores are scale * (q . k); causal masks the keys
// after the query position. vDim may differ from headDim (DeepSeek's MLA).
//
// Flash-attention style, fp32 accumulation, no [seq, seq] matrix anywhere:
//   - forward: one block per (query tile, b, h); key/value tiles stream
//     through shared memory and each query row keeps a running max and sum
//     (online softmax) with its output accumulator in registers;
//   - backward: the API saves no logsumexp, so a first pass (the forward
//     kernel again, in its "stats" form) writes each query row's logsumexp
//     L and D = rowsum(dout * out) to scratch; then one kernel per key tile
//     computes dk and dv (looping over the query heads of its kv head, so no
//     atomics: deterministic), and one kernel per query tile computes dq:
//       p = exp(scale q.k - L), dv += p dout, ds = p (dout.v - D),
//       dk += scale ds q, dq += scale ds k.
//   Causal blocks skip the key (query) tiles that lie wholly after (before)
//   them.
//
// Work split: the bucket D, one of 16, 32, 64, 128, 256, covers
// max(headDim, vDim); q and k rows are zero-padded past headDim, v, out and
// dout rows past vDim, so the padding adds nothing to a dot product. A row
// (query, key, value or output) belongs to a group
// of G = D / 16 consecutive lanes, each owning 16 of its dimensions as 4
// float4 chunks (lane g of the group owns chunks g, g + G, g + 2G, g + 3G);
// a dot product is 16 fused multiply-adds per lane and a butterfly sum over
// the group (__shfl_xor_sync, so every lane of the group gets the same
// bits). A block of kThreads threads thus owns kThreads / G rows. The
// streamed tiles hold kTile rows of D floats each, two of them per block:
// kTile * D <= 4096 keeps them at 32 KiB, under the 48 KiB static limit.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"
#include "CudaKernels.h"
#include "DeviceMath.cuh"
#include "KernelLaunch.cuh"

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace moe::cuda {
namespace {

/// Head dimensions one lane owns (4 float4 chunks).
constexpr int kDimsPerLane = 16;
constexpr int kChunksPerLane = kDimsPerLane / 4;
constexpr int kMaxHeadDim = 256;

template <int D> struct AttnConfig {
  static_assert(D % kDimsPerLane == 0 && D <= kMaxHeadDim, "bad bucket");
  /// Lanes sharing one row; a power of two dividing 32.
  static constexpr int kGroup = D / kDimsPerLane;
  static constexpr int kThreads = D >= 128 ? 256 : 128;
  /// Rows (queries or keys) a block owns.
  static constexpr int kRows = kThreads / kGroup;
  /// Rows of a streamed shared-memory tile.
  static constexpr int kTile = 4096 / D < 64 ? 4096 / D : 64;
  static_assert(2 * kTile * D * sizeof(float) <= 32 * 1024, "smem budget");
};

/// Sum over the G lanes of a row group; every lane of the group gets the
/// same result (fp addition is commutative, so the butterfly's two orders
/// agree bit for bit). All lanes of the warp must call it.
template <int G> __device__ __forceinline__ float groupSum(float v) {
#pragma unroll
  for (int offset = G / 2; offset > 0; offset >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

/// The head dimension of element e (0..15) of lane g's share.
template <int G> __device__ __forceinline__ int laneDim(int g, int e) {
  return 4 * (g + G * (e / 4)) + e % 4;
}

/// Lane g's 16 dimensions of one row of `dim` dimensions (src points at the
/// row's element 0); zero past dim or when the row does not exist.
template <int G, typename T>
__device__ __forceinline__ void
loadRow(float (&dst)[kDimsPerLane], const T *src, bool valid, int g, int dim) {
#pragma unroll
  for (int e = 0; e < kDimsPerLane; ++e) {
    int d = laneDim<G>(g, e);
    dst[e] = valid && d < dim ? toF32(src[d]) : 0.0f;
  }
}

/// Writes lane g's dimensions below dim of one row.
template <int G, typename T>
__device__ __forceinline__ void
storeRow(T *dst, const float (&src)[kDimsPerLane], int g, int dim) {
#pragma unroll
  for (int e = 0; e < kDimsPerLane; ++e) {
    int d = laneDim<G>(g, e);
    if (d < dim)
      dst[d] = fromF32<T>(src[e]);
  }
}

/// dst[r * D + d] = src row (first + r), dimension d, for r < kTile and d < D:
/// zero when r >= count (past the sequence) or d >= dim (the rows' width).
/// src points at element 0 of row 0 of this head; rows are rowStride
/// elements apart. Every thread of the block calls it.
template <int D, int kTile, typename T>
__device__ __forceinline__ void loadTile(float4 *dst4, const T *src,
                                         int64_t rowStride, int first,
                                         int count, int dim) {
  float *dst = reinterpret_cast<float *>(dst4);
  for (int e = threadIdx.x; e < kTile * D; e += blockDim.x) {
    int r = e / D, d = e % D;
    float x = 0.0f;
    if (r < count && d < dim)
      x = toF32(src[int64_t(first + r) * rowStride + d]);
    dst[e] = x;
  }
}

/// Lane g's partial dot product of its share `a` with tile row `row`.
template <int D, int G>
__device__ __forceinline__ float
partialDot(const float (&a)[kDimsPerLane], const float4 *tile, int row, int g) {
  float dot = 0.0f;
#pragma unroll
  for (int c = 0; c < kChunksPerLane; ++c) {
    float4 t = tile[row * (D / 4) + g + G * c];
    dot = fmaf(a[4 * c + 0], t.x, dot);
    dot = fmaf(a[4 * c + 1], t.y, dot);
    dot = fmaf(a[4 * c + 2], t.z, dot);
    dot = fmaf(a[4 * c + 3], t.w, dot);
  }
  return dot;
}

/// acc += w * (lane g's share of tile row `row`).
template <int D, int G>
__device__ __forceinline__ void axpyRow(float (&acc)[kDimsPerLane], float w,
                                        const float4 *tile, int row, int g) {
#pragma unroll
  for (int c = 0; c < kChunksPerLane; ++c) {
    float4 t = tile[row * (D / 4) + g + G * c];
    acc[4 * c + 0] = fmaf(w, t.x, acc[4 * c + 0]);
    acc[4 * c + 1] = fmaf(w, t.y, acc[4 * c + 1]);
    acc[4 * c + 2] = fmaf(w, t.z, acc[4 * c + 2]);
    acc[4 * c + 3] = fmaf(w, t.w, acc[4 * c + 3]);
  }
}

/// The shape every kernel gets. Strides are in elements, between the rows
/// of consecutive positions: q and dq heads * headDim, k and dk
/// kvHeads * headDim, v and dv kvHeads * vDim, out and dout heads * vDim.
struct AttnShape {
  int seq, heads, kvHeads, headDim, vDim;
  int group; // heads / kvHeads
  int64_t qStride, kStride, vStride, outStride;
  bool causal;
  float scale;
};

/// Block -> (tile, b, head) for grids of tiles * batch * heads blocks. The
/// tiles of one (b, head) run last-first: under a causal mask the last query
/// tiles have the most work, so they start first.
struct BlockCoords {
  int tile;
  int64_t b;
  int head;
};
__device__ __forceinline__ BlockCoords blockCoords(int numTiles, int heads,
                                                   bool reverse) {
  int64_t block = blockIdx.x;
  int t = int(block % numTiles);
  int64_t bh = block / numTiles;
  return {reverse ? numTiles - 1 - t : t, bh / heads, int(bh % heads)};
}

/// Forward attention for one tile of kRows query rows of one (b, h); a group
/// of G lanes per row (see the file comment). Key/value tiles stream through
/// shared memory; each row keeps the running max m, the running sum l of
/// exp(s - m) and acc = sum exp(s - m) v, rescaled when m grows.
/// kStats (the backward's first pass): instead of out, writes
/// lse[bh, row] = m + log l and delta[bh, row] = dout_row . (acc / l).
template <int D, bool kStats, typename T>
__global__ void __launch_bounds__(AttnConfig<D>::kThreads)
    attentionForwardKernel(const T *__restrict__ q, const T *__restrict__ k,
                           const T *__restrict__ v, AttnShape shape,
                           int numTiles, T *__restrict__ out,
                           const T *__restrict__ dout, float *__restrict__ lse,
                           float *__restrict__ delta) {
  using C = AttnConfig<D>;
  constexpr int G = C::kGroup, kTile = C::kTile;
  __shared__ float4 sK[kTile * D / 4];
  __shared__ float4 sV[kTile * D / 4];

  const BlockCoords at = blockCoords(numTiles, shape.heads, /*reverse=*/true);
  const int kvh = at.head / shape.group;
  const int seq = shape.seq, headDim = shape.headDim, vDim = shape.vDim;
  const int qStart = at.tile * C::kRows;
  const int g = threadIdx.x % G;
  const int row = qStart + int(threadIdx.x) / G;
  const bool rowValid = row < seq;
  const int64_t token = at.b * seq + (rowValid ? row : 0);
  const int64_t qOffset = token * shape.qStride + int64_t(at.head) * headDim;
  const int64_t outOffset = token * shape.outStride + int64_t(at.head) * vDim;
  const T *kBase = k + at.b * seq * shape.kStride + int64_t(kvh) * headDim;
  const T *vBase = v + at.b * seq * shape.vStride + int64_t(kvh) * vDim;

  float qr[kDimsPerLane], acc[kDimsPerLane];
  loadRow<G>(qr, q + qOffset, rowValid, g, headDim);
#pragma unroll
  for (int e = 0; e < kDimsPerLane; ++e)
    acc[e] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  // Keys after the block's last query row are masked for all of its rows.
  const int keyEnd = shape.causal ? min(seq, qStart + C::kRows) : seq;
  for (int kStart = 0; kStart < keyEnd; kStart += kTile) {
    const int count = min(kTile, seq - kStart);
    __syncthreads(); // the previous tile is consumed
    loadTile<D, kTile>(sK, kBase, shape.kStride, kStart, count, headDim);
    loadTile<D, kTile>(sV, vBase, shape.vStride, kStart, count, vDim);
    __syncthreads();

    float s[kTile];
    float tileMax = -INFINITY;
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      float dot = groupSum<G>(partialDot<D, G>(qr, sK, j, g));
      int key = kStart + j;
      bool visible = key < seq && (!shape.causal || key <= row);
      s[j] = visible ? dot * shape.scale : -INFINITY;
      tileMax = fmaxf(tileMax, s[j]);
    }
    // Row 0 of the keys is visible to every row, so m is finite after the
    // first tile; `base` only guards the all-masked case against inf - inf.
    const float mNew = fmaxf(m, tileMax);
    const float base = mNew == -INFINITY ? 0.0f : mNew;
    const float correction = expf(m - base); // 0 while m is -inf
    l *= correction;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e)
      acc[e] *= correction;
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      float p = expf(s[j] - base); // 0 for masked keys
      l += p;
      axpyRow<D, G>(acc, p, sV, j, g);
    }
    m = mNew;
  }

  // l >= 1 for a real row (its largest score contributes exp(0)); rows past
  // the sequence compute garbage-free zeros and write nothing.
  const float inv = rowValid ? 1.0f / l : 0.0f;
#pragma unroll
  for (int e = 0; e < kDimsPerLane; ++e)
    acc[e] *= inv;
  if constexpr (!kStats) {
    if (rowValid)
      storeRow<G>(out + outOffset, acc, g, vDim);
  } else {
    float dor[kDimsPerLane];
    loadRow<G>(dor, dout + outOffset, rowValid, g, vDim);
    float dot = 0.0f;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e)
      dot = fmaf(dor[e], acc[e], dot);
    dot = groupSum<G>(dot);
    if (rowValid && g == 0) {
      int64_t stat = (at.b * shape.heads + at.head) * seq + row;
      lse[stat] = m + logf(l);
      delta[stat] = dot;
    }
  }
}

/// dk and dv for one tile of kRows key rows of one (b, kv head); a group of
/// G lanes per key row holds its k, v and the dk, dv accumulators. For each
/// query head of the kv head, query tiles (with their dout rows and their
/// lse and delta) stream through shared memory; under a causal mask only
/// queries from the block's first key on are visited.
template <int D, typename T>
__global__ void __launch_bounds__(AttnConfig<D>::kThreads)
    attentionGradKVKernel(const T *__restrict__ dout, const T *__restrict__ q,
                          const T *__restrict__ k, const T *__restrict__ v,
                          const float *__restrict__ lse,
                          const float *__restrict__ delta, AttnShape shape,
                          int numTiles, T *__restrict__ dk,
                          T *__restrict__ dv) {
  using C = AttnConfig<D>;
  constexpr int G = C::kGroup, kTile = C::kTile;
  __shared__ float4 sQ[kTile * D / 4];
  __shared__ float4 sDO[kTile * D / 4];
  __shared__ float sL[kTile], sD[kTile];

  const BlockCoords at = blockCoords(numTiles, shape.kvHeads,
                                     /*reverse=*/false);
  const int seq = shape.seq, headDim = shape.headDim, vDim = shape.vDim;
  const int kStart = at.tile * C::kRows;
  const int g = threadIdx.x % G;
  const int key = kStart + int(threadIdx.x) / G;
  const bool keyValid = key < seq;
  const int64_t token = at.b * seq + (keyValid ? key : 0);
  const int64_t kOffset = token * shape.kStride + int64_t(at.head) * headDim;
  const int64_t vOffset = token * shape.vStride + int64_t(at.head) * vDim;

  float kr[kDimsPerLane], vr[kDimsPerLane];
  float dkAcc[kDimsPerLane], dvAcc[kDimsPerLane];
  loadRow<G>(kr, k + kOffset, keyValid, g, headDim);
  loadRow<G>(vr, v + vOffset, keyValid, g, vDim);
#pragma unroll
  for (int e = 0; e < kDimsPerLane; ++e)
    dkAcc[e] = dvAcc[e] = 0.0f;

  // Queries before the block's first key see none of its keys.
  const int qFirst = shape.causal ? kStart : 0;
  for (int hh = 0; hh < shape.group; ++hh) {
    const int h = at.head * shape.group + hh;
    const int64_t qHead = at.b * seq * shape.qStride + int64_t(h) * headDim;
    const int64_t outHead = at.b * seq * shape.outStride + int64_t(h) * vDim;
    const int64_t statOffset = (at.b * shape.heads + h) * seq;
    for (int qStart = qFirst; qStart < seq; qStart += kTile) {
      const int count = min(kTile, seq - qStart);
      __syncthreads(); // the previous tile is consumed
      loadTile<D, kTile>(sQ, q + qHead, shape.qStride, qStart, count, headDim);
      loadTile<D, kTile>(sDO, dout + outHead, shape.outStride, qStart, count,
                         vDim);
      for (int i = threadIdx.x; i < kTile; i += blockDim.x) {
        sL[i] = i < count ? lse[statOffset + qStart + i] : 0.0f;
        sD[i] = i < count ? delta[statOffset + qStart + i] : 0.0f;
      }
      __syncthreads();

#pragma unroll 4
      for (int i = 0; i < kTile; ++i) {
        float sdot = groupSum<G>(partialDot<D, G>(kr, sQ, i, g));
        float pdot = groupSum<G>(partialDot<D, G>(vr, sDO, i, g));
        int query = qStart + i;
        bool visible =
            keyValid && query < seq && (!shape.causal || key <= query);
        float p = visible ? expf(sdot * shape.scale - sL[i]) : 0.0f;
        float ds = p * (pdot - sD[i]);
        axpyRow<D, G>(dvAcc, p, sDO, i, g);
        axpyRow<D, G>(dkAcc, ds, sQ, i, g);
      }
    }
  }

  if (keyValid) {
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e)
      dkAcc[e] *= shape.scale;
    storeRow<G>(dk + kOffset, dkAcc, g, headDim);
    storeRow<G>(dv + vOffset, dvAcc, g, vDim);
  }
}

/// dq for one tile of kRows query rows of one (b, h); a group of G lanes per
/// row holds its q, dout, lse, delta and the dq accumulator, while key/value
/// tiles stream through shared memory as in the forward (same causal skip).
template <int D, typename T>
__global__ void __launch_bounds__(AttnConfig<D>::kThreads)
    attentionGradQKernel(const T *__restrict__ dout, const T *__restrict__ q,
                         const T *__restrict__ k, const T *__restrict__ v,
                         const float *__restrict__ lse,
                         const float *__restrict__ delta, AttnShape shape,
                         int numTiles, T *__restrict__ dq) {
  using C = AttnConfig<D>;
  constexpr int G = C::kGroup, kTile = C::kTile;
  __shared__ float4 sK[kTile * D / 4];
  __shared__ float4 sV[kTile * D / 4];

  const BlockCoords at = blockCoords(numTiles, shape.heads, /*reverse=*/true);
  const int kvh = at.head / shape.group;
  const int seq = shape.seq, headDim = shape.headDim, vDim = shape.vDim;
  const int qStart = at.tile * C::kRows;
  const int g = threadIdx.x % G;
  const int row = qStart + int(threadIdx.x) / G;
  const bool rowValid = row < seq;
  const int64_t token = at.b * seq + (rowValid ? row : 0);
  const int64_t qOffset = token * shape.qStride + int64_t(at.head) * headDim;
  const int64_t outOffset = token * shape.outStride + int64_t(at.head) * vDim;
  const T *kBase = k + at.b * seq * shape.kStride + int64_t(kvh) * headDim;
  const T *vBase = v + at.b * seq * shape.vStride + int64_t(kvh) * vDim;
  const int64_t stat = (at.b * shape.heads + at.head) * seq + row;
  const float rowLse = rowValid ? lse[stat] : 0.0f;
  const float rowDelta = rowValid ? delta[stat] : 0.0f;

  float qr[kDimsPerLane], dor[kDimsPerLane], dqAcc[kDimsPerLane];
  loadRow<G>(qr, q + qOffset, rowValid, g, headDim);
  loadRow<G>(dor, dout + outOffset, rowValid, g, vDim);
#pragma unroll
  for (int e = 0; e < kDimsPerLane; ++e)
    dqAcc[e] = 0.0f;

  const int keyEnd = shape.causal ? min(seq, qStart + C::kRows) : seq;
  for (int kStart = 0; kStart < keyEnd; kStart += kTile) {
    const int count = min(kTile, seq - kStart);
    __syncthreads(); // the previous tile is consumed
    loadTile<D, kTile>(sK, kBase, shape.kStride, kStart, count, headDim);
    loadTile<D, kTile>(sV, vBase, shape.vStride, kStart, count, vDim);
    __syncthreads();

#pragma unroll 4
    for (int j = 0; j < kTile; ++j) {
      float sdot = groupSum<G>(partialDot<D, G>(qr, sK, j, g));
      float pdot = groupSum<G>(partialDot<D, G>(dor, sV, j, g));
      int key = kStart + j;
      bool visible = rowValid && key < seq && (!shape.causal || key <= row);
      float p = visible ? expf(sdot * shape.scale - rowLse) : 0.0f;
      float ds = p * (pdot - rowDelta);
      axpyRow<D, G>(dqAcc, ds, sK, j, g);
    }
  }

  if (rowValid) {
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e)
      dqAcc[e] *= shape.scale;
    storeRow<G>(dq + qOffset, dqAcc, g, headDim);
  }
}

//===----------------------------------------------------------------------===//
// Host side
//===----------------------------------------------------------------------===//

void checkAtLeast(const char *kernel, const char *name, int64_t value,
                  int64_t least) {
  if (value < least)
    fail(kernel, std::string(name) + " must be at least " +
                     std::to_string(least) + ", got " + std::to_string(value));
}

/// Checks the sizes as the CPU kernels do, plus the limits of this
/// implementation; returns the shape the kernels take.
AttnShape checkShape(const char *kernel, int64_t batch, int64_t seq,
                     int64_t heads, int64_t kvHeads, int64_t headDim,
                     int64_t vDim, bool causal, float scale) {
  checkAtLeast(kernel, "batch", batch, 0);
  checkAtLeast(kernel, "seq", seq, 0);
  checkAtLeast(kernel, "heads", heads, 1);
  checkAtLeast(kernel, "kvHeads", kvHeads, 1);
  checkAtLeast(kernel, "headDim", headDim, 0);
  checkAtLeast(kernel, "vDim", vDim, 0);
  if (heads % kvHeads != 0)
    fail(kernel, "heads (" + std::to_string(heads) +
                     ") is not a multiple of kvHeads (" +
                     std::to_string(kvHeads) + ")");
  if (headDim > kMaxHeadDim)
    fail(kernel, "headDim " + std::to_string(headDim) +
                     " is above the supported " + std::to_string(kMaxHeadDim));
  if (vDim > kMaxHeadDim)
    fail(kernel, "vDim " + std::to_string(vDim) + " is above the supported " +
                     std::to_string(kMaxHeadDim));
  if (seq > INT_MAX || heads > INT_MAX)
    fail(kernel, "seq (" + std::to_string(seq) + ") or heads (" +
                     std::to_string(heads) + ") does not fit in 32 bits");
  AttnShape shape;
  shape.seq = int(seq);
  shape.heads = int(heads);
  shape.kvHeads = int(kvHeads);
  shape.headDim = int(headDim);
  shape.vDim = int(vDim);
  shape.group = int(heads / kvHeads);
  shape.qStride = heads * headDim;
  shape.kStride = kvHeads * headDim;
  shape.vStride = kvHeads * vDim;
  shape.outStride = heads * vDim;
  shape.causal = causal;
  // Without q and k dimensions every score is 0, whatever the scale (even
  // 1 / sqrt(0)), as the CPU's empty product.
  shape.scale = headDim == 0 ? 0.0f : scale;
  return shape;
}

/// One block per (tile of `rows` rows, b, head): checks the 1-D grid fits.
unsigned blocksFor(const char *kernel, int64_t seq, int rows, int64_t batch,
                   int64_t heads, int *numTiles) {
  int64_t tiles = (seq + rows - 1) / rows;
  int64_t blocks = tiles * batch * heads;
  if (blocks > INT_MAX)
    fail(kernel, "batch * heads * seq is too large (" + std::to_string(blocks) +
                     " blocks)");
  *numTiles = int(tiles);
  return unsigned(blocks);
}

/// Calls f with the bucket D >= max(headDim, vDim) as a constant.
template <typename F> void dispatchHeadDim(const AttnShape &shape, F &&f) {
  int dim = std::max(shape.headDim, shape.vDim);
  if (dim <= 16)
    f(std::integral_constant<int, 16>());
  else if (dim <= 32)
    f(std::integral_constant<int, 32>());
  else if (dim <= 64)
    f(std::integral_constant<int, 64>());
  else if (dim <= 128)
    f(std::integral_constant<int, 128>());
  else
    f(std::integral_constant<int, 256>());
}

} // namespace

template <typename T>
void attention(Device &dev, const T *q, const T *k, const T *v, int64_t batch,
               int64_t seq, int64_t heads, int64_t kvHeads, int64_t headDim,
               int64_t vDim, bool causal, float scale, T *out) {
  const char *kernel = "attention";
  AttnShape shape = checkShape(kernel, batch, seq, heads, kvHeads, headDim,
                               vDim, causal, scale);
  if (batch == 0 || seq == 0 || vDim == 0)
    return; // nothing to write
  dev.makeCurrent();
  // headDim 0 is computed: every score is 0, so out averages v.
  dispatchHeadDim(shape, [&](auto bucket) {
    constexpr int D = decltype(bucket)::value;
    using C = AttnConfig<D>;
    int numTiles = 0;
    unsigned blocks = blocksFor(kernel, seq, C::kRows, batch, heads, &numTiles);
    attentionForwardKernel<D, false, T>
        <<<blocks, C::kThreads, 0, dev.stream()>>>(
            q, k, v, shape, numTiles, out, nullptr, nullptr, nullptr);
    checkLaunch("attentionForwardKernel");
  });
}

template <typename T>
void attentionGrad(Device &dev, const T *dout, const T *q, const T *k,
                   const T *v, int64_t batch, int64_t seq, int64_t heads,
                   int64_t kvHeads, int64_t headDim, int64_t vDim, bool causal,
                   float scale, T *dq, T *dk, T *dv) {
  const char *kernel = "attentionGrad";
  AttnShape shape = checkShape(kernel, batch, seq, heads, kvHeads, headDim,
                               vDim, causal, scale);
  if (batch == 0 || seq == 0 || (headDim == 0 && vDim == 0))
    return; // nothing to write
  dev.makeCurrent();
  // One of headDim and vDim 0 is computed: with headDim 0 the probabilities
  // are uniform and only dv has elements; with vDim 0, dq and dk are zeros.
  dispatchHeadDim(shape, [&](auto bucket) {
    constexpr int D = decltype(bucket)::value;
    using C = AttnConfig<D>;
    int qTiles = 0, kvTiles = 0;
    unsigned qBlocks = blocksFor(kernel, seq, C::kRows, batch, heads, &qTiles);
    unsigned kvBlocks =
        blocksFor(kernel, seq, C::kRows, batch, kvHeads, &kvTiles);
    // Scratch: lse and delta, [batch, heads, seq] floats each.
    size_t statBytes = alignUp(size_t(batch * heads * seq) * sizeof(float));
    char *scratch = static_cast<char *>(dev.scratch(2 * statBytes));
    float *lse = reinterpret_cast<float *>(scratch);
    float *delta = reinterpret_cast<float *>(scratch + statBytes);

    attentionForwardKernel<D, true, T>
        <<<qBlocks, C::kThreads, 0, dev.stream()>>>(q, k, v, shape, qTiles,
                                                    nullptr, dout, lse, delta);
    checkLaunch("attentionForwardKernel (stats)");
    attentionGradKVKernel<D, T><<<kvBlocks, C::kThreads, 0, dev.stream()>>>(
        dout, q, k, v, lse, delta, shape, kvTiles, dk, dv);
    checkLaunch("attentionGradKVKernel");
    attentionGradQKernel<D, T><<<qBlocks, C::kThreads, 0, dev.stream()>>>(
        dout, q, k, v, lse, delta, shape, qTiles, dq);
    checkLaunch("attentionGradQKernel");
  });
}

//===----------------------------------------------------------------------===//
// Attention over a key/value cache (decode and prefill)
//===----------------------------------------------------------------------===//

namespace {

/// kCache[b, positions[b, t]] = k[b, t] and likewise v; a thread per element
/// (grid-stride). A position outside [0, cacheLen) writes nothing (the CPU
/// throws; the driver checks positions before it calls).
template <typename T>
__global__ void
cacheWriteKernel(const T *k, const T *v, const int32_t *positions, int64_t rows,
                 int64_t newTokens, int64_t cacheLen, int64_t kRow,
                 int64_t vRow, T *kCache, T *vCache) {
  int64_t width = kRow + vRow, total = rows * width;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t i = e / width, c = e % width, pos = positions[i];
    if (pos < 0 || pos >= cacheLen)
      continue;
    int64_t row = i / newTokens * cacheLen + pos;
    if (c < kRow)
      kCache[row * kRow + c] = k[i * kRow + c];
    else
      vCache[row * vRow + c - kRow] = v[i * vRow + c - kRow];
  }
}

/// One warp per (new token, query head): lane l owns dimensions l, l + 32,
/// ... (kPerLane of them), the query in registers; one pass over the visible
/// cache rows with an online softmax (running max and sum), fp32 throughout.
/// A query at an invalid position gets a zero row.
template <int kPerLane, typename T>
__global__ void
cachedAttentionKernel(const T *q, const T *kCache, const T *vCache,
                      const int32_t *positions, int64_t rows, int64_t newTokens,
                      int64_t cacheLen, int heads, int kvHeads, int headDim,
                      int vDim, float scale, T *out) {
  int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  int lane = threadIdx.x % 32;
  if (warp >= rows * heads)
    return;
  int64_t i = warp / heads;
  int h = int(warp % heads), kvh = h / (heads / kvHeads);
  int64_t b = i / newTokens, pos = positions[i];
  T *o = out + warp * vDim;
  if (pos < 0 || pos >= cacheLen) {
    for (int d = lane; d < vDim; d += 32)
      o[d] = fromF32<T>(0.0f);
    return;
  }
  float qr[kPerLane], acc[kPerLane];
  for (int c = 0; c < kPerLane; ++c) {
    int d = lane + 32 * c;
    qr[c] = d < headDim ? toF32(q[warp * headDim + d]) : 0.0f;
    acc[c] = 0.0f;
  }
  const T *keys = kCache + (b * cacheLen * kvHeads + kvh) * headDim;
  const T *values = vCache + (b * cacheLen * kvHeads + kvh) * vDim;
  float runningMax = -INFINITY, sum = 0.0f;
  for (int64_t j = 0; j <= pos; ++j) {
    const T *kj = keys + j * kvHeads * headDim;
    float dot = 0.0f;
    for (int c = 0; c < kPerLane; ++c) {
      int d = lane + 32 * c;
      if (d < headDim)
        dot += qr[c] * toF32(kj[d]);
    }
    for (int offset = 16; offset > 0; offset /= 2)
      dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    float s = scale * dot;
    float newMax = fmaxf(runningMax, s);
    float rescale = expf(runningMax - newMax), p = expf(s - newMax);
    sum = sum * rescale + p;
    const T *vj = values + j * kvHeads * vDim;
    for (int c = 0; c < kPerLane; ++c) {
      int d = lane + 32 * c;
      acc[c] = acc[c] * rescale + (d < vDim ? p * toF32(vj[d]) : 0.0f);
    }
    runningMax = newMax;
  }
  for (int c = 0; c < kPerLane; ++c) {
    int d = lane + 32 * c;
    if (d < vDim)
      o[d] = fromF32<T>(acc[c] / sum);
  }
}

} // namespace

template <typename T>
void cachedAttention(Device &dev, const T *q, const T *k, const T *v,
                     const int32_t *positions, int64_t batch, int64_t newTokens,
                     int64_t cacheLen, int64_t heads, int64_t kvHeads,
                     int64_t headDim, int64_t vDim, float scale, T *kCache,
                     T *vCache, T *out) {
  const char *kernel = "cachedAttention";
  checkShape(kernel, batch, newTokens, heads, kvHeads, headDim, vDim,
             /*causal=*/true, scale);
  checkAtLeast(kernel, "cacheLen", cacheLen, 0);
  int64_t rows = batch * newTokens;
  if (rows == 0)
    return;
  dev.makeCurrent();
  int64_t kRow = kvHeads * headDim, vRow = kvHeads * vDim;
  cacheWriteKernel<<<elementGrid(dev, rows * (kRow + vRow)), kLaunchThreads, 0,
                     dev.stream()>>>(k, v, positions, rows, newTokens, cacheLen,
                                     kRow, vRow, kCache, vCache);
  checkLaunch("cacheWriteKernel");
  if (vDim == 0)
    return;
  int widest = int(std::max(headDim, vDim));
  unsigned blocks = unsigned(gridFor(rows * heads * 32, kLaunchThreads));
  auto launch = [&](auto perLane) {
    constexpr int P = decltype(perLane)::value;
    cachedAttentionKernel<P, T><<<blocks, kLaunchThreads, 0, dev.stream()>>>(
        q, kCache, vCache, positions, rows, newTokens, cacheLen, int(heads),
        int(kvHeads), int(headDim), int(vDim), scale, out);
    checkLaunch("cachedAttentionKernel");
  };
  if (widest <= 32)
    launch(std::integral_constant<int, 1>());
  else if (widest <= 64)
    launch(std::integral_constant<int, 2>());
  else if (widest <= 128)
    launch(std::integral_constant<int, 4>());
  else
    launch(std::integral_constant<int, 8>());
}

#define MOE_INSTANTIATE_ATTENTION(T)                                           \
  template void attention<T>(Device &, const T *, const T *, const T *,        \
                             int64_t, int64_t, int64_t, int64_t, int64_t,      \
                             int64_t, bool, float, T *);                       \
  template void attentionGrad<T>(                                              \
      Device &, const T *, const T *, const T *, const T *, int64_t, int64_t,  \
      int64_t, int64_t, int64_t, int64_t, bool, float, T *, T *, T *);         \
  template void cachedAttention<T>(Device &, const T *, const T *, const T *,  \
                                   const int32_t *, int64_t, int64_t, int64_t, \
                                   int64_t, int64_t, int64_t, int64_t, float,  \
                                   T *, T *, T *);
MOE_INSTANTIATE_ATTENTION(float)
MOE_INSTANTIATE_ATTENTION(bf16)
#undef MOE_INSTANTIATE_ATTENTION

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

void CudaBackend::attention(const float *q, const float *k, const float *v,
                            float *out, int64_t batch, int64_t seq,
                            int64_t heads, int64_t kvHeads, int64_t headDim,
                            int64_t vDim, bool causal, float scale) {
  onStorage([&](Device &d, auto s) {
    cuda::attention(d, s(q), s(k), s(v), batch, seq, heads, kvHeads, headDim,
                    vDim, causal, scale, s(out));
  });
}

void CudaBackend::cachedAttention(const float *q, const float *k,
                                  const float *v, float *kCache, float *vCache,
                                  const int32_t *positions, float *out,
                                  int64_t batch, int64_t newTokens,
                                  int64_t cacheLen, int64_t heads,
                                  int64_t kvHeads, int64_t headDim,
                                  int64_t vDim, float scale) {
  onStorage([&](Device &d, auto s) {
    cuda::cachedAttention(d, s(q), s(k), s(v), positions, batch, newTokens,
                          cacheLen, heads, kvHeads, headDim, vDim, scale,
                          s(kCache), s(vCache), s(out));
  });
}

void CudaBackend::attentionGrad(const float *dout, const float *q,
                                const float *k, const float *v, float *dq,
                                float *dk, float *dv, int64_t batch,
                                int64_t seq, int64_t heads, int64_t kvHeads,
                                int64_t headDim, int64_t vDim, bool causal,
                                float scale) {
  onStorage([&](Device &d, auto s) {
    cuda::attentionGrad(d, s(dout), s(q), s(k), s(v), batch, seq, heads,
                        kvHeads, headDim, vDim, causal, scale, s(dq), s(dk),
                        s(dv));
  });
}

} // namespace moe::cuda
