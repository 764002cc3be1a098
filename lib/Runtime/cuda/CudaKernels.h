//===- CudaKernels.h - The CUDA kernels of the runtime ops ------*- C++ -*-===//
//
// One function per model-level op and its backward, each the CUDA twin of
// the moe::cpu kernel of the same name (include/moe/Runtime/CpuKernels.h
// states the semantics; they are the reference the CUDA tests compare
// against). Differences from the CPU signatures:
//   - the Device comes first; every pointer is device memory;
//   - the work is queued on dev.stream() and the function returns at once
//     (no device-to-host synchronisation anywhere in this file's kernels);
//   - a scalar result (a loss, a sum of squares) is written to a device
//     pointer `out` instead of being returned;
//   - permuteByExpert writes offsets[experts + 1] and rowToSlot only (the
//     counts are differences of offsets).
//
// Storage. Every tensor function is a template over the storage element T,
// instantiated for float and bf16 (the backend picks one per call from its
// storage type); callers name T when their pointers do not deduce it. A
// kernel widens what it loads to fp32, computes and accumulates in fp32 (or
// double where the CPU does), and rounds once when it stores a T. Scalars
// (losses, sums of squares) and the optimizer (master weights, fp32
// gradients, moments) are fp32 whatever the storage. Under bf16 the cuBLAS
// paths (dense SwiGLU and its gradient, the shared-expert gate's gradient,
// the router's gradient) also round the intermediates they feed to a second
// GEMM, whose operands must share one type; the grouped expert GEMMs read
// mixed types and keep theirs in fp32.
//
// Invalid sizes throw std::invalid_argument naming the kernel and the value,
// checked on the host before anything is queued. Ids out of range on the
// device cannot throw: kernels skip them (a checked build may trap).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_CUDAKERNELS_H
#define MOE_LIB_RUNTIME_CUDA_CUDAKERNELS_H

#include "Device.h"
#include "moe/Runtime/KernelTypes.h"
#include "moe/Runtime/RopeFrequencies.h"

#include <cstdint>

namespace moe::cuda {

using moe::RouterConfig;

// --- Dense layers (DenseKernels.cu, FfnKernels.cu) --------------------------
template <typename T>
void embedding(Device &dev, const int32_t *tokens, int64_t n, const T *table,
               int64_t vocab, int64_t hidden, T *out);
template <typename T>
void rmsNorm(Device &dev, const T *x, const T *weight, int64_t rows,
             int64_t dim, float eps, T *out);
/// out[rows, outFeatures] = x[rows, in] @ weight[outFeatures, in]^T (+ bias).
template <typename T>
void linear(Device &dev, const T *x, int64_t rows, int64_t in, const T *weight,
            int64_t outFeatures, const T *bias, T *out);
template <typename T>
void rope(Device &dev, const T *x, const int32_t *positions, int64_t batch,
          int64_t seq, int64_t heads, int64_t headDim, double theta, T *out,
          const RopeVariant &variant = {});
template <typename T>
void swigluMlp(Device &dev, const T *x, int64_t rows, int64_t hidden,
               const T *gate, const T *up, const T *down, int64_t inter,
               T *out);
template <typename T>
void add(Device &dev, const T *a, const T *b, int64_t n, T *out);
/// out [rows, aWidth + bWidth]: row r is a's row r / aRepeat followed by b's
/// row r / bRepeat.
template <typename T>
void concat(Device &dev, const T *a, const T *b, int64_t rows, int64_t aWidth,
            int64_t bWidth, int64_t aRepeat, int64_t bRepeat, T *out);
/// The transpose of concat: a's row r' sums x[r, :aWidth] over the rows r
/// with r / aRepeat = r' (in fp32), b's likewise x[r, aWidth:].
template <typename T>
void split(Device &dev, const T *x, int64_t rows, int64_t aWidth,
           int64_t bWidth, int64_t aRepeat, int64_t bRepeat, T *a, T *b);
template <typename T>
void sharedExperts(Device &dev, const T *x, int64_t rows, int64_t hidden,
                   const T *gate, const T *up, const T *down, int64_t inter,
                   const T *sharedGate, T *out);

template <typename T>
void embeddingGrad(Device &dev, const T *dy, const int32_t *tokens, int64_t n,
                   int64_t vocab, int64_t hidden, T *dtable);
template <typename T>
void rmsNormGrad(Device &dev, const T *dy, const T *x, const T *weight,
                 int64_t rows, int64_t dim, float eps, T *dx, T *dweight);
template <typename T>
void linearGrad(Device &dev, const T *dy, const T *x, int64_t rows, int64_t in,
                const T *weight, int64_t outFeatures, T *dx, T *dweight,
                T *dbias);
template <typename T>
void ropeGrad(Device &dev, const T *dy, const int32_t *positions, int64_t batch,
              int64_t seq, int64_t heads, int64_t headDim, double theta, T *dx,
              const RopeVariant &variant = {});
template <typename T>
void swigluMlpGrad(Device &dev, const T *dy, const T *x, int64_t rows,
                   int64_t hidden, const T *gate, const T *up, const T *down,
                   int64_t inter, T *dx, T *dgate, T *dup, T *ddown);
template <typename T>
void sharedExpertsGrad(Device &dev, const T *dy, const T *x, int64_t rows,
                       int64_t hidden, const T *gate, const T *up,
                       const T *down, int64_t inter, const T *sharedGate, T *dx,
                       T *dgate, T *dup, T *ddown, T *dsharedGate);

// --- Attention (AttentionKernels.cu): tiled, causal or not, grouped-query --
// q and k have headDim dimensions per head, v and out vDim.
template <typename T>
void attention(Device &dev, const T *q, const T *k, const T *v, int64_t batch,
               int64_t seq, int64_t heads, int64_t kvHeads, int64_t headDim,
               int64_t vDim, bool causal, float scale, T *out);
// Attention of new tokens over a key/value cache (moert_cached_attention):
// k and v are first written to rows positions[b, t] of the caches, then each
// query attends to the cache rows up to its own position.
template <typename T>
void cachedAttention(Device &dev, const T *q, const T *k, const T *v,
                     const int32_t *positions, int64_t batch, int64_t newTokens,
                     int64_t cacheLen, int64_t heads, int64_t kvHeads,
                     int64_t headDim, int64_t vDim, float scale, T *kCache,
                     T *vCache, T *out);
template <typename T>
void attentionGrad(Device &dev, const T *dout, const T *q, const T *k,
                   const T *v, int64_t batch, int64_t seq, int64_t heads,
                   int64_t kvHeads, int64_t headDim, int64_t vDim, bool causal,
                   float scale, T *dq, T *dk, T *dv);

// --- Router and experts (RouterKernels.cu, ExpertKernels.cu,
// GroupedSwigluKernels.cu) ----------------------------------------------------
template <typename T>
void router(Device &dev, const T *x, int64_t tokens, int64_t hidden,
            const T *gate, const T *expertBias, const RouterConfig &cfg,
            T *weights, int32_t *indices, T *logits);
/// Writes the number of dropped slots to *droppedOut (device int64).
void dropOverCapacity(Device &dev, const int32_t *indices, int64_t tokens,
                      int64_t topK, int64_t experts, int64_t capacity,
                      int32_t *kept, int64_t *droppedOut);
void permuteByExpert(Device &dev, const int32_t *indices, int64_t tokens,
                     int64_t topK, int64_t experts, int64_t *offsets,
                     int32_t *rowToSlot);
template <typename T>
void gatherRows(Device &dev, const T *x, const int32_t *rowToSlot, int64_t rows,
                int64_t topK, int64_t hidden, T *permuted);
template <typename T>
void groupedSwiGLUSegments(Device &dev, const T *permuted, int64_t rows,
                           const int64_t *offsets, int64_t segments,
                           int64_t experts, int64_t hidden, int64_t inter,
                           const T *gate, const T *up, const T *down, T *out);
template <typename T>
void unpermuteCombine(Device &dev, const T *expertOut, const int32_t *rowToSlot,
                      const T *weights, int64_t tokens, int64_t topK,
                      int64_t hidden, T *out);

template <typename T>
void routerGrad(Device &dev, const T *dweights, const T *dlogits, const T *x,
                int64_t tokens, int64_t hidden, const T *gate, const T *logits,
                const int32_t *indices, const RouterConfig &cfg, T *dx,
                T *dgate);
template <typename T>
void permuteGrad(Device &dev, const T *dpermuted, const int32_t *rowToSlot,
                 int64_t tokens, int64_t topK, int64_t hidden, T *dx);
template <typename T>
void unpermuteCombineGrad(Device &dev, const T *dout, const T *expertOut,
                          const int32_t *rowToSlot, const T *weights,
                          int64_t tokens, int64_t topK, int64_t hidden,
                          T *dexpertOut, T *dweights);
template <typename T>
void groupedSwiGLUSegmentsGrad(Device &dev, const T *dout, const T *permuted,
                               int64_t rows, const int64_t *offsets,
                               int64_t segments, int64_t experts,
                               int64_t hidden, int64_t inter, const T *gate,
                               const T *up, const T *down, T *dpermuted,
                               T *dgate, T *dup, T *ddown);

// --- Losses (LossKernels.cu): each writes one float to *out ----------------
template <typename T>
void crossEntropy(Device &dev, const T *logits, const int32_t *labels,
                  int64_t n, int64_t vocab, int64_t ignoreIndex,
                  const float *count, float *out);
/// *out = the number of labels != ignoreIndex.
void labelCount(Device &dev, const int32_t *labels, int64_t n,
                int64_t ignoreIndex, float *out);
template <typename T>
void auxLoss(Device &dev, const T *logits, const int32_t *indices,
             int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
             float coefficient, float *out);
template <typename T>
void zLoss(Device &dev, const T *logits, int64_t tokens, int64_t experts,
           float coefficient, float *out);
template <typename T>
void crossEntropyGrad(Device &dev, const T *logits, const int32_t *labels,
                      int64_t n, int64_t vocab, int64_t ignoreIndex,
                      const float *count, T *dlogits);
template <typename T>
void auxLossGrad(Device &dev, const T *logits, const int32_t *indices,
                 int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
                 float coefficient, T *dlogits);
template <typename T>
void zLossGrad(Device &dev, const T *logits, int64_t tokens, int64_t experts,
               float coefficient, T *dlogits);

// --- Optimizer (Optimizer.cu) -----------------------------------------------
/// *out = sum of x[i]^2, accumulated in double.
void sumSquares(Device &dev, const float *x, int64_t n, double *out);
/// dst[0, n) = src[0, n), each side fp32 or bf16 (rounded to nearest even).
void convertStorage(Device &dev, void *dst, bool dstBf16, const void *src,
                    bool srcBf16, int64_t n);
void adamw(Device &dev, float *param, const float *grad, float *m, float *v,
           int64_t n, float lr, float beta1, float beta2, float eps,
           float weightDecay, float gradScale, int64_t step);

} // namespace moe::cuda

#endif // MOE_LIB_RUNTIME_CUDA_CUDAKERNELS_H
