//===- CpuKernels.h - CPU kernels for the model-level moe ops ---*- C++ -*-===//
//
// One function per model-level op of the `moe` dialect (the family .td files
// hold the exact semantics), plus the pieces the routed experts lower to
// (permute, gather, grouped SwiGLU, unpermute-combine), their gradients and
// AdamW. The runtime calls reach them through the CPU backend's methods
// (lib/Runtime/cpu/); tests and benchmarks call them directly.
//
// Conventions: raw pointers and sizes, so that compiled code can call these
// through a C API; fp32 activations and weights; int32 token, position,
// label and expert ids; row-major tensors; Hugging Face weight layouts
// ([out, in] projections, stacked experts [E, out, in]). Outputs never alias
// inputs unless a comment says so. Invalid arguments (ids out of range,
// negative sizes, inconsistent configurations) throw std::invalid_argument
// with a message naming the kernel and the offending value.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_CPUKERNELS_H
#define MOE_RUNTIME_CPUKERNELS_H

#include "moe/Runtime/RopeFrequencies.h"

#include "moe/Runtime/KernelTypes.h"

#include <cstdint>

namespace moe::cpu {

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

/// out[i, :] = table[tokens[i], :] for i < n; table is [vocab, hidden].
void embedding(const int32_t *tokens, int64_t n, const float *table,
               int64_t vocab, int64_t hidden, float *out);

/// out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * weight over rows of length dim.
void rmsNorm(const float *x, const float *weight, int64_t rows, int64_t dim,
             float eps, float *out);

/// out [rows, outFeatures] = x [rows, in] @ weight[outFeatures, in]^T + bias.
/// `bias` [outFeatures] may be null.
void linear(const float *x, int64_t rows, int64_t in, const float *weight,
            int64_t outFeatures, const float *bias, float *out);

/// Rotate-half RoPE of x [batch, seq, heads, headDim]; the position of (b, s)
/// is positions[b, s], or s when `positions` is null. fp32 angles, as HF;
/// YaRN frequencies and scale, interleaved pairs when `variant` says
/// (RopeFrequencies.h).
void rope(const float *x, const int32_t *positions, int64_t batch, int64_t seq,
          int64_t heads, int64_t headDim, double theta, float *out,
          const RopeVariant &variant = {});

/// Scaled dot-product attention: q [B, S, H, D], k [B, S, KV, D], v
/// [B, S, KV, Dv] (query head h uses kv head h / (H / KV)), fp32 softmax,
/// out [B, S, H, Dv].
void attention(const float *q, const float *k, const float *v, int64_t batch,
               int64_t seq, int64_t heads, int64_t kvHeads, int64_t headDim,
               int64_t vDim, bool causal, float scale, float *out);

/// Attention of new tokens over a key/value cache: writes k [B, T, KV, D]
/// and v [B, T, KV, Dv] into rows positions[b, t] of kCache [B, L, KV, D] and
/// vCache [B, L, KV, Dv], then attends each query q[b, t] [H, D] to cache rows
/// 0..positions[b, t] (fp32 softmax); out [B, T, H, Dv].
void cachedAttention(const float *q, const float *k, const float *v,
                     const int32_t *positions, int64_t batch, int64_t newTokens,
                     int64_t cacheLen, int64_t heads, int64_t kvHeads,
                     int64_t headDim, int64_t vDim, float scale, float *kCache,
                     float *vCache, float *out);

/// out [rows, aWidth + bWidth]: row r is a's row r / aRepeat followed by b's
/// row r / bRepeat.
void concat(const float *a, const float *b, int64_t rows, int64_t aWidth,
            int64_t bWidth, int64_t aRepeat, int64_t bRepeat, float *out);

/// The transpose of concat: a's row r' sums x[r, :aWidth] over the rows r
/// with r / aRepeat = r', b's likewise x[r, aWidth:].
void split(const float *x, int64_t rows, int64_t aWidth, int64_t bWidth,
           int64_t aRepeat, int64_t bRepeat, float *a, float *b);

/// Dense SwiGLU: out = (silu(x gate^T) * (x up^T)) down^T; x [rows, hidden],
/// gate/up [inter, hidden], down [hidden, inter].
void swigluMlp(const float *x, int64_t rows, int64_t hidden, const float *gate,
               const float *up, const float *down, int64_t inter, float *out);

/// out[i] = a[i] + b[i]; out may alias a or b.
void add(const float *a, const float *b, int64_t n, float *out);

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

using moe::RouterConfig; // KernelTypes.h

/// moe.router for x [tokens, hidden] and gate [experts, hidden]: writes
/// logits [tokens, experts], indices [tokens, topK] (best first, ties to the
/// lower expert) and weights [tokens, topK]. `expertBias` [experts] may be
/// null.
void router(const float *x, int64_t tokens, int64_t hidden, const float *gate,
            const float *expertBias, const RouterConfig &cfg, float *weights,
            int32_t *indices, float *logits);

using moe::kDroppedSlot; // KernelTypes.h

/// Drop by position: each expert keeps its first `capacity` token-slots
/// s = t * topK + k in slot order; kept [tokens * topK] is indices with the
/// others set to kDroppedSlot. Returns the number dropped.
int64_t dropOverCapacity(const int32_t *indices, int64_t tokens, int64_t topK,
                         int64_t experts, int64_t capacity, int32_t *kept);

/// Stable counting sort of the token-slots s = t * topK + k by expert
/// indices[s]: counts [experts], offsets [experts + 1] (exclusive prefix sum)
/// and rowToSlot [tokens * topK] (permuted row -> slot, token order within an
/// expert). Dropped slots (kDroppedSlot) get no row; the rows from
/// offsets[experts] on are padding (rowToSlot kDroppedSlot).
void permuteByExpert(const int32_t *indices, int64_t tokens, int64_t topK,
                     int64_t experts, int64_t *counts, int64_t *offsets,
                     int32_t *rowToSlot);

/// permuted[r, :] = x[rowToSlot[r] / topK, :] for r < rows (zero for a
/// padding row).
void gatherRows(const float *x, const int32_t *rowToSlot, int64_t rows,
                int64_t topK, int64_t hidden, float *permuted);

/// Expert e's SwiGLU FFN on its rows [offsets[e], offsets[e+1]) of permuted
/// [offsets[experts], hidden]; gate/up [E, inter, hidden], down [E, hidden,
/// inter]; out [offsets[experts], hidden]. Empty experts cost nothing.
void groupedSwiGLU(const float *permuted, const int64_t *offsets,
                   int64_t experts, int64_t hidden, int64_t inter,
                   const float *gate, const float *up, const float *down,
                   float *out);

/// The same over `segments` row segments, segment g = rows [offsets[g],
/// offsets[g+1]) belonging to expert g % experts (an expert-parallel rank's
/// received rows, grouped by source rank then local expert). offsets must be
/// non-decreasing from 0 and end at most at `rows`; later rows of out are not
/// written.
void groupedSwiGLUSegments(const float *permuted, int64_t rows,
                           const int64_t *offsets, int64_t segments,
                           int64_t experts, int64_t hidden, int64_t inter,
                           const float *gate, const float *up,
                           const float *down, float *out);

/// out[t, :] = sum over k ascending of weights[t, k] * expertOut[row(t, k), :],
/// where row(t, k) is the permuted row holding slot t * topK + k; a dropped
/// slot (held by no row) adds nothing.
void unpermuteCombine(const float *expertOut, const int32_t *rowToSlot,
                      const float *weights, int64_t tokens, int64_t topK,
                      int64_t hidden, float *out);

/// Dropless moe.experts: x [tokens, hidden], router weights/indices
/// [tokens, topK], gate/up [experts, inter, hidden], down [experts, hidden,
/// inter]; out [tokens, hidden]. Composes permute, gather, grouped SwiGLU and
/// unpermute-combine.
void experts(const float *x, const float *weights, const int32_t *indices,
             int64_t tokens, int64_t topK, int64_t hidden, int64_t numExperts,
             int64_t inter, const float *gate, const float *up,
             const float *down, float *out);

/// moe.shared_experts: swigluMlp, times sigmoid(x sharedGate^T) per row when
/// `sharedGate` [1, hidden] is non-null.
void sharedExperts(const float *x, int64_t rows, int64_t hidden,
                   const float *gate, const float *up, const float *down,
                   int64_t inter, const float *sharedGate, float *out);

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

/// Mean over labels != ignoreIndex of logsumexp(logits[t]) - logits[t,
/// labels[t]] for logits [n, vocab]; 0 when every label is ignored. With
/// `count`, the sum is divided by *count (the labels counted on every rank
/// that shares the tokens) instead: this rank's share of the mean.
float crossEntropy(const float *logits, const int32_t *labels, int64_t n,
                   int64_t vocab, int64_t ignoreIndex,
                   const float *count = nullptr);

/// The number of labels != ignoreIndex among labels [n].
float labelCount(const int32_t *labels, int64_t n, int64_t ignoreIndex);

/// Switch load-balancing loss coefficient * E * sum_e f_e * P_e for router
/// logits [tokens, experts] and indices [tokens, topK]; sigmoid scores are
/// normalised to sum 1 per token.
float auxLoss(const float *logits, const int32_t *indices, int64_t tokens,
              int64_t experts, int64_t topK, bool sigmoid, float coefficient);

/// ST-MoE z-loss: coefficient * mean_t logsumexp(logits[t])^2 for logits
/// [tokens, experts].
float zLoss(const float *logits, int64_t tokens, int64_t experts,
            float coefficient);

//===----------------------------------------------------------------------===//
// Gradients and the optimizer
//
// Each backward kernel is the exact vector-Jacobian product of its forward
// kernel: the same RoPE pairing and fp32 angles, the same GQA head mapping,
// the same router scores and loss definitions. A `dX` output has the shape
// of the forward input X. Every output is overwritten, never accumulated
// into, and no output aliases an input. Upstream gradients are named
// `dy`/`dout`; the loss gradients take d loss = 1.
//===----------------------------------------------------------------------===//
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

/// Backward of linear: dx [rows, in] = dy @ weight, dweight [outFeatures,
/// in] = dy^T @ x; dy is [rows, outFeatures]; dbias [outFeatures] (null for
/// a linear without a bias) = dy summed over the rows, in double.
void linearGrad(const float *dy, const float *x, int64_t rows, int64_t in,
                const float *weight, int64_t outFeatures, float *dx,
                float *dweight, float *dbias);

/// Backward of rope: the inverse rotation of dy [batch, seq, heads,
/// headDim]; `positions` as in rope (null: position s).
void ropeGrad(const float *dy, const int32_t *positions, int64_t batch,
              int64_t seq, int64_t heads, int64_t headDim, double theta,
              float *dx, const RopeVariant &variant = {});

/// Backward of attention: dq [B, S, H, D], dk [B, S, KV, D], dv [B, S, KV,
/// Dv]. The softmax is recomputed per (b, h); dk and dv sum over the query
/// heads that share a kv head.
void attentionGrad(const float *dout, const float *q, const float *k,
                   const float *v, int64_t batch, int64_t seq, int64_t heads,
                   int64_t kvHeads, int64_t headDim, int64_t vDim, bool causal,
                   float scale, float *dq, float *dk, float *dv);

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
/// counted rows (*count when given), 0 on ignored rows (everywhere when
/// all are ignored).
void crossEntropyGrad(const float *logits, const int32_t *labels, int64_t n,
                      int64_t vocab, int64_t ignoreIndex, float *dlogits,
                      const float *count = nullptr);

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

#endif // MOE_RUNTIME_CPUKERNELS_H
