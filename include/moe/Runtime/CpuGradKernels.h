//===- CpuGradKernels.h - Backward CPU kernels, AdamW ------------*- C++
//-*-===//
//
// The gradients of the kernels in CpuKernels.h (one per model-level op, plus
// the pieces of the dropless expert path), the gradients of the losses, and
// AdamW. Each backward kernel is the exact vector-Jacobian product of its
// forward kernel: the same RoPE pairing and fp32 angles, the same GQA head
// mapping, the same router scores and loss definitions.
//
// Conventions, as in CpuKernels.h: raw pointers and sizes; fp32 in and out;
// row-major; Hugging Face weight layouts. A `dX` output has the shape of the
// forward input X. Every output is overwritten, never accumulated into, and
// no output aliases an input. Upstream gradients are named `dy`/`dout`; the
// loss gradients take d loss = 1. Invalid arguments throw
// std::invalid_argument naming the kernel and the offending value.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_CPUGRADKERNELS_H
#define MOE_RUNTIME_CPUGRADKERNELS_H

#include "moe/Runtime/CpuKernels.h"

#include <cstdint>

namespace moe::cpu {

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

/// dtable [vocab, hidden] = sum of the rows dy[i, :] with tokens[i] = v, in
/// row v (0 for tokens that do not occur); dy is [n, hidden].
void embeddingGrad(const float *dy, const int32_t *tokens, int64_t n,
                   int64_t vocab, int64_t hidden, float *dtable);

/// Backward of rmsNorm: dx [rows, dim], dweight [dim] (summed over rows).
void rmsNormGrad(const float *dy, const float *x, const float *weight,
                 int64_t rows, int64_t dim, float eps, float *dx,
                 float *dweight);

/// Backward of linear (no bias): dx [rows, in] = dy @ weight, dweight
/// [outFeatures, in] = dy^T @ x; dy is [rows, outFeatures].
void linearGrad(const float *dy, const float *x, int64_t rows, int64_t in,
                const float *weight, int64_t outFeatures, float *dx,
                float *dweight);

/// Backward of rope: the inverse rotation of dy [batch, seq, heads,
/// headDim]; `positions` as in rope (null: position s).
void ropeGrad(const float *dy, const int32_t *positions, int64_t batch,
              int64_t seq, int64_t heads, int64_t headDim, double theta,
              float *dx);

/// Backward of attention: dq [B, S, H, D], dk/dv [B, S, KV, D]. The softmax
/// is recomputed per (b, h); dk and dv sum over the query heads that share a
/// kv head.
void attentionGrad(const float *dout, const float *q, const float *k,
                   const float *v, int64_t batch, int64_t seq, int64_t heads,
                   int64_t kvHeads, int64_t headDim, bool causal, float scale,
                   float *dq, float *dk, float *dv);

/// Backward of swigluMlp: dx [rows, hidden], dgate/dup [inter, hidden],
/// ddown [hidden, inter].
void swigluMlpGrad(const float *dy, const float *x, int64_t rows,
                   int64_t hidden, const float *gate, const float *up,
                   const float *down, int64_t inter, float *dx, float *dgate,
                   float *dup, float *ddown);

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

/// Backward of sharedExperts. `sharedGate` [1, hidden] may be null; then
/// `dsharedGate` is not written (and may be null), else it receives [1,
/// hidden].
void sharedExpertsGrad(const float *dy, const float *x, int64_t rows,
                       int64_t hidden, const float *gate, const float *up,
                       const float *down, int64_t inter,
                       const float *sharedGate, float *dx, float *dgate,
                       float *dup, float *ddown, float *dsharedGate);

/// Backward of router with respect to x [tokens, hidden] and gate [experts,
/// hidden]. The gradient dweights [tokens, topK] flows through the weights
/// (the scores of the given `indices`, optionally renormalised over the
/// top-k, times routeScale), never through the choice; `dlogits` [tokens,
/// experts] (from the aux and z losses; may be null) is added to the logits'
/// gradient. `logits` are the forward's. Only experts, topK, sigmoid,
/// normTopkProb and routeScale of `cfg` matter: the expert bias and group
/// limits affect the choice alone.
void routerGrad(const float *dweights, const float *dlogits, const float *x,
                int64_t tokens, int64_t hidden, const float *gate,
                const float *logits, const int32_t *indices,
                const RouterConfig &cfg, float *dx, float *dgate);

/// Backward of gatherRows for a full permutation (rows = tokens * topK):
/// dx[t, :] = sum over k ascending of dpermuted[row(t, k), :].
void permuteGrad(const float *dpermuted, const int32_t *rowToSlot,
                 int64_t tokens, int64_t topK, int64_t hidden, float *dx);

/// Backward of unpermuteCombine: dexpertOut[row(t, k), :] = weights[t, k] *
/// dout[t, :] and dweights[t, k] = dout[t, :] . expertOut[row(t, k), :].
void unpermuteCombineGrad(const float *dout, const float *expertOut,
                          const int32_t *rowToSlot, const float *weights,
                          int64_t tokens, int64_t topK, int64_t hidden,
                          float *dexpertOut, float *dweights);

/// Backward of groupedSwiGLUSegments: dpermuted [rows, hidden] (0 past
/// offsets[segments]), dgate/dup [experts, inter, hidden] and ddown
/// [experts, hidden, inter], each expert's summed over all its segments (0
/// for an expert without rows).
void groupedSwiGLUSegmentsGrad(const float *dout, const float *permuted,
                               int64_t rows, const int64_t *offsets,
                               int64_t segments, int64_t experts,
                               int64_t hidden, int64_t inter, const float *gate,
                               const float *up, const float *down,
                               float *dpermuted, float *dgate, float *dup,
                               float *ddown);

//===----------------------------------------------------------------------===//
// Losses (d loss = 1)
//===----------------------------------------------------------------------===//

/// dlogits [n, vocab] of crossEntropy: (softmax - onehot) / counted on the
/// counted rows, 0 on ignored rows (everywhere when all are ignored).
void crossEntropyGrad(const float *logits, const int32_t *labels, int64_t n,
                      int64_t vocab, int64_t ignoreIndex, float *dlogits);

/// dlogits [tokens, experts] of auxLoss. The routing fractions f_e (counts of
/// `indices`) are constants; the gradient flows through the mean scores.
void auxLossGrad(const float *logits, const int32_t *indices, int64_t tokens,
                 int64_t experts, int64_t topK, bool sigmoid, float coefficient,
                 float *dlogits);

/// dlogits [tokens, experts] of zLoss.
void zLossGrad(const float *logits, int64_t tokens, int64_t experts,
               float coefficient, float *dlogits);

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

/// sum_i x[i]^2, accumulated in double (for the global gradient norm).
double sumSquares(const float *x, int64_t n);

/// One torch.optim.AdamW step (step >= 1, counted from 1) on param, with
/// moments m and v updated in place: decoupled decay p -= lr * wd * p, then
/// g = grad * gradScale (global-norm clipping), m = b1 m + (1 - b1) g,
/// v = b2 v + (1 - b2) g^2, p -= lr / (1 - b1^step) * m /
/// (sqrt(v) / sqrt(1 - b2^step) + eps).
void adamw(float *param, const float *grad, float *m, float *v, int64_t n,
           float lr, float beta1, float beta2, float eps, float weightDecay,
           float gradScale, int64_t step);

} // namespace moe::cpu

#endif // MOE_RUNTIME_CPUGRADKERNELS_H
