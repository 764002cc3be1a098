//===- CpuKernels.h - CPU kernels for the model-level moe ops ---*- C++ -*-===//
//
// One function per model-level op of the `moe` dialect (MoEOps.td holds the
// exact semantics), plus the pieces the routed experts lower to (permute,
// gather, grouped SwiGLU, unpermute-combine).
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
/// is positions[b, s], or s when `positions` is null. fp32 angles, as HF.
void rope(const float *x, const int32_t *positions, int64_t batch, int64_t seq,
          int64_t heads, int64_t headDim, double theta, float *out);

/// Scaled dot-product attention: q [B, S, H, D], k/v [B, S, KV, D] (query head
/// h uses kv head h / (H / KV)), fp32 softmax, out [B, S, H, D].
void attention(const float *q, const float *k, const float *v, int64_t batch,
               int64_t seq, int64_t heads, int64_t kvHeads, int64_t headDim,
               bool causal, float scale, float *out);

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
/// labels[t]] for logits [n, vocab]; 0 when every label is ignored.
float crossEntropy(const float *logits, const int32_t *labels, int64_t n,
                   int64_t vocab, int64_t ignoreIndex);

/// Switch load-balancing loss coefficient * E * sum_e f_e * P_e for router
/// logits [tokens, experts] and indices [tokens, topK]; sigmoid scores are
/// normalised to sum 1 per token.
float auxLoss(const float *logits, const int32_t *indices, int64_t tokens,
              int64_t experts, int64_t topK, bool sigmoid, float coefficient);

/// ST-MoE z-loss: coefficient * mean_t logsumexp(logits[t])^2 for logits
/// [tokens, experts].
float zLoss(const float *logits, int64_t tokens, int64_t experts,
            float coefficient);

} // namespace moe::cpu

#endif // MOE_RUNTIME_CPUKERNELS_H
