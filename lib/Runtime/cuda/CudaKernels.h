//===- CudaKernels.h - The CUDA kernels of the runtime ops ------*- C++ -*-===//
//
// One function per model-level op and its backward, each the CUDA twin of
// the moe::cpu kernel of the same name (include/moe/Runtime/CpuKernels.h and
// CpuGradKernels.h state the semantics; they are the reference the CUDA
// tests compare against). Differences from the CPU signatures:
//   - the Device comes first; every pointer is device memory;
//   - the work is queued on dev.stream() and the function returns at once
//     (no device-to-host synchronisation anywhere in this file's kernels);
//   - a scalar result (a loss, a sum of squares) is written to a device
//     pointer `out` instead of being returned;
//   - permuteByExpert writes offsets[experts + 1] and rowToSlot only (the
//     counts are differences of offsets).
// Storage is fp32 with fp32 accumulation today; the device code is written
// over a storage type so that bf16 storage is an instantiation away.
// Invalid sizes throw std::invalid_argument naming the kernel and the value,
// checked on the host before anything is queued. Ids out of range on the
// device cannot throw: kernels skip them (a checked build may trap).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CUDA_CUDAKERNELS_H
#define MOE_LIB_RUNTIME_CUDA_CUDAKERNELS_H

#include "Device.h"
#include "moe/Runtime/CpuKernels.h" // RouterConfig, kDroppedSlot

#include <cstdint>

namespace moe::cuda {

using moe::cpu::RouterConfig;

// --- Dense layers (DenseKernels.cu) -----------------------------------------
void embedding(Device &dev, const int32_t *tokens, int64_t n,
               const float *table, int64_t vocab, int64_t hidden, float *out);
void rmsNorm(Device &dev, const float *x, const float *weight, int64_t rows,
             int64_t dim, float eps, float *out);
/// out[rows, outFeatures] = x[rows, in] @ weight[outFeatures, in]^T (+ bias).
void linear(Device &dev, const float *x, int64_t rows, int64_t in,
            const float *weight, int64_t outFeatures, const float *bias,
            float *out);
void rope(Device &dev, const float *x, const int32_t *positions, int64_t batch,
          int64_t seq, int64_t heads, int64_t headDim, double theta,
          float *out);
void swigluMlp(Device &dev, const float *x, int64_t rows, int64_t hidden,
               const float *gate, const float *up, const float *down,
               int64_t inter, float *out);
void add(Device &dev, const float *a, const float *b, int64_t n, float *out);
void sharedExperts(Device &dev, const float *x, int64_t rows, int64_t hidden,
                   const float *gate, const float *up, const float *down,
                   int64_t inter, const float *sharedGate, float *out);

void embeddingGrad(Device &dev, const float *dy, const int32_t *tokens,
                   int64_t n, int64_t vocab, int64_t hidden, float *dtable);
void rmsNormGrad(Device &dev, const float *dy, const float *x,
                 const float *weight, int64_t rows, int64_t dim, float eps,
                 float *dx, float *dweight);
void linearGrad(Device &dev, const float *dy, const float *x, int64_t rows,
                int64_t in, const float *weight, int64_t outFeatures,
                float *dx, float *dweight);
void ropeGrad(Device &dev, const float *dy, const int32_t *positions,
              int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
              double theta, float *dx);
void swigluMlpGrad(Device &dev, const float *dy, const float *x, int64_t rows,
                   int64_t hidden, const float *gate, const float *up,
                   const float *down, int64_t inter, float *dx, float *dgate,
                   float *dup, float *ddown);
void sharedExpertsGrad(Device &dev, const float *dy, const float *x,
                       int64_t rows, int64_t hidden, const float *gate,
                       const float *up, const float *down, int64_t inter,
                       const float *sharedGate, float *dx, float *dgate,
                       float *dup, float *ddown, float *dsharedGate);

// --- Attention (Attention.cu): tiled, causal or not, grouped-query ---------
void attention(Device &dev, const float *q, const float *k, const float *v,
               int64_t batch, int64_t seq, int64_t heads, int64_t kvHeads,
               int64_t headDim, bool causal, float scale, float *out);
void attentionGrad(Device &dev, const float *dout, const float *q,
                   const float *k, const float *v, int64_t batch, int64_t seq,
                   int64_t heads, int64_t kvHeads, int64_t headDim,
                   bool causal, float scale, float *dq, float *dk, float *dv);

// --- Router and experts (MoEKernels.cu) -------------------------------------
void router(Device &dev, const float *x, int64_t tokens, int64_t hidden,
            const float *gate, const float *expertBias,
            const RouterConfig &cfg, float *weights, int32_t *indices,
            float *logits);
/// Writes the number of dropped slots to *droppedOut (device int64).
void dropOverCapacity(Device &dev, const int32_t *indices, int64_t tokens,
                      int64_t topK, int64_t experts, int64_t capacity,
                      int32_t *kept, int64_t *droppedOut);
void permuteByExpert(Device &dev, const int32_t *indices, int64_t tokens,
                     int64_t topK, int64_t experts, int64_t *offsets,
                     int32_t *rowToSlot);
void gatherRows(Device &dev, const float *x, const int32_t *rowToSlot,
                int64_t rows, int64_t topK, int64_t hidden, float *permuted);
void groupedSwiGLUSegments(Device &dev, const float *permuted, int64_t rows,
                           const int64_t *offsets, int64_t segments,
                           int64_t experts, int64_t hidden, int64_t inter,
                           const float *gate, const float *up,
                           const float *down, float *out);
void unpermuteCombine(Device &dev, const float *expertOut,
                      const int32_t *rowToSlot, const float *weights,
                      int64_t tokens, int64_t topK, int64_t hidden,
                      float *out);

void routerGrad(Device &dev, const float *dweights, const float *dlogits,
                const float *x, int64_t tokens, int64_t hidden,
                const float *gate, const float *logits,
                const int32_t *indices, const RouterConfig &cfg, float *dx,
                float *dgate);
void permuteGrad(Device &dev, const float *dpermuted, const int32_t *rowToSlot,
                 int64_t tokens, int64_t topK, int64_t hidden, float *dx);
void unpermuteCombineGrad(Device &dev, const float *dout,
                          const float *expertOut, const int32_t *rowToSlot,
                          const float *weights, int64_t tokens, int64_t topK,
                          int64_t hidden, float *dexpertOut, float *dweights);
void groupedSwiGLUSegmentsGrad(Device &dev, const float *dout,
                               const float *permuted, int64_t rows,
                               const int64_t *offsets, int64_t segments,
                               int64_t experts, int64_t hidden, int64_t inter,
                               const float *gate, const float *up,
                               const float *down, float *dpermuted,
                               float *dgate, float *dup, float *ddown);

// --- Losses (LossKernels.cu): each writes one float to *out ----------------
void crossEntropy(Device &dev, const float *logits, const int32_t *labels,
                  int64_t n, int64_t vocab, int64_t ignoreIndex, float *out);
void auxLoss(Device &dev, const float *logits, const int32_t *indices,
             int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
             float coefficient, float *out);
void zLoss(Device &dev, const float *logits, int64_t tokens, int64_t experts,
           float coefficient, float *out);
void crossEntropyGrad(Device &dev, const float *logits, const int32_t *labels,
                      int64_t n, int64_t vocab, int64_t ignoreIndex,
                      float *dlogits);
void auxLossGrad(Device &dev, const float *logits, const int32_t *indices,
                 int64_t tokens, int64_t experts, int64_t topK, bool sigmoid,
                 float coefficient, float *dlogits);
void zLossGrad(Device &dev, const float *logits, int64_t tokens,
               int64_t experts, float coefficient, float *dlogits);

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
