/*===- CApi.h - The runtime calls that compiled models make --------*- C -*-===//
 *
 * `moe-lower-to-runtime` turns each model-level op into one or more of these
 * calls (docs/lowering.md lists which). Conventions, chosen so that the LLVM
 * lowering can pass memrefs as bare pointers:
 *   - the context comes first, then input buffers, then output buffers, then
 *     sizes (int64_t) and attributes (int32_t flags, float/double values);
 *   - an optional operand is a separate entry point (`moert_linear_bias`), so
 *     no pointer argument is ever null;
 *   - a scalar result (a loss) is written through a one-element buffer.
 * A call that fails (an id out of range, an inconsistent size) records the
 * message in the context; once an error is recorded every call returns at
 * once, so an entry point runs to its end and the caller reports the error.
 *
 *===----------------------------------------------------------------------===*/

#ifndef MOE_RUNTIME_CAPI_H
#define MOE_RUNTIME_CAPI_H

#include "moe/Runtime/ModelABI.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Storage. Floating-point tensors of rank >= 1 (activations, weights,
 * gradients, logits) are stored in the context's storage type: fp32
 * (MOERT_DTYPE_F32, the default) or bf16 (MOERT_DTYPE_BF16, 2-byte elements
 * behind the same `float *` parameters). Kernels compute and accumulate in
 * fp32 either way, rounding to the storage type when they store. Scalars
 * (losses) and the optimizer's operands are always fp32. A compiled entry
 * point sets the type first (moe-lower-to-runtime's `storage`). */
void moert_set_storage(moert_context *ctx, int32_t dtype);

/* dst[0, bytes) = src[0, bytes): a returned value or gradient not computed
 * in place (the buffers may be device memory). */
void moert_copy(moert_context *ctx, const void *src, void *dst, int64_t bytes);

/* Dense layers. */
void moert_embedding(moert_context *ctx, const int32_t *tokens,
                     const float *table, float *out, int64_t n, int64_t vocab,
                     int64_t hidden);
void moert_rms_norm(moert_context *ctx, const float *x, const float *weight,
                    float *out, int64_t rows, int64_t dim, float eps);
void moert_linear(moert_context *ctx, const float *x, const float *weight,
                  float *out, int64_t rows, int64_t in, int64_t outFeatures);
void moert_linear_bias(moert_context *ctx, const float *x, const float *weight,
                       const float *bias, float *out, int64_t rows, int64_t in,
                       int64_t outFeatures);
void moert_rope(moert_context *ctx, const float *x, float *out, int64_t batch,
                int64_t seq, int64_t heads, int64_t headDim, double theta);
void moert_rope_positions(moert_context *ctx, const float *x,
                          const int32_t *positions, float *out, int64_t batch,
                          int64_t seq, int64_t heads, int64_t headDim,
                          double theta);
void moert_attention(moert_context *ctx, const float *q, const float *k,
                     const float *v, float *out, int64_t batch, int64_t seq,
                     int64_t heads, int64_t kvHeads, int64_t headDim,
                     int32_t causal, float scale);
void moert_mlp(moert_context *ctx, const float *x, const float *gate,
               const float *up, const float *down, float *out, int64_t rows,
               int64_t hidden, int64_t inter);
void moert_add(moert_context *ctx, const float *a, const float *b, float *out,
               int64_t n);
/* moert_add on fp32 buffers whatever the storage: the sum of loss terms. */
void moert_add_f32(moert_context *ctx, const float *a, const float *b,
                   float *out, int64_t n);

/* Router and the dropless expert pipeline (moe.permute, moe.grouped_swiglu,
 * moe.unpermute). */
void moert_router(moert_context *ctx, const float *x, const float *gate,
                  float *weights, int32_t *indices, float *logits,
                  int64_t tokens, int64_t hidden, int64_t experts,
                  int64_t topK, int32_t sigmoid, int32_t normTopkProb,
                  float routeScale, int64_t nGroup, int64_t topkGroup);
void moert_router_bias(moert_context *ctx, const float *x, const float *gate,
                       const float *expertBias, float *weights,
                       int32_t *indices, float *logits, int64_t tokens,
                       int64_t hidden, int64_t experts, int64_t topK,
                       int32_t sigmoid, int32_t normTopkProb, float routeScale,
                       int64_t nGroup, int64_t topkGroup);
/* moe.drop_over_capacity: kept [tokens * topK] is indices with the slots
 * past each expert's first `capacity` (in slot order) set to -1; the number
 * dropped is recorded for the driver. */
void moert_drop_over_capacity(moert_context *ctx, const int32_t *indices,
                              int32_t *kept, int64_t tokens, int64_t topK,
                              int64_t experts, int64_t capacity);
/* moe.permute: counting sort of the token-slots by expert, then the gather
 * of their rows; offsets [experts + 1], rowToSlot [tokens * topK]. */
void moert_permute(moert_context *ctx, const float *x, const int32_t *indices,
                   float *permuted, int64_t *offsets, int32_t *rowToSlot,
                   int64_t tokens, int64_t topK, int64_t hidden,
                   int64_t experts);
/* moe.grouped_swiglu: rows [offsets[g], offsets[g+1]) of segment g belong to
 * expert g % experts; offsets has segments + 1 entries, ending <= rows. */
void moert_grouped_swiglu(moert_context *ctx, const float *permuted,
                          const int64_t *offsets, const float *gate,
                          const float *up, const float *down, float *out,
                          int64_t rows, int64_t segments, int64_t experts,
                          int64_t hidden, int64_t inter);
void moert_unpermute_combine(moert_context *ctx, const float *expertOut,
                             const int32_t *rowToSlot, const float *weights,
                             float *out, int64_t tokens, int64_t topK,
                             int64_t hidden);
void moert_shared_experts(moert_context *ctx, const float *x, const float *gate,
                          const float *up, const float *down, float *out,
                          int64_t rows, int64_t hidden, int64_t inter);
void moert_shared_experts_gated(moert_context *ctx, const float *x,
                                const float *gate, const float *up,
                                const float *down, const float *sharedGate,
                                float *out, int64_t rows, int64_t hidden,
                                int64_t inter);

/* Losses: one float written to *out. */
void moert_cross_entropy(moert_context *ctx, const float *logits,
                         const int32_t *labels, float *out, int64_t n,
                         int64_t vocab, int64_t ignoreIndex);
void moert_aux_loss(moert_context *ctx, const float *logits,
                    const int32_t *indices, float *out, int64_t tokens,
                    int64_t experts, int64_t topK, int32_t sigmoid,
                    float coefficient);
void moert_z_loss(moert_context *ctx, const float *logits, float *out,
                  int64_t tokens, int64_t experts, float coefficient);

/* Collectives of partitioned models (include/moe/Runtime/TensorCollectives.h).
 * `group` names a mesh-axis group of the context (MOERT_GROUP_*), `dtype` the
 * element type (MOERT_DTYPE_*). A tensor axis is given as (outer, mid, inner):
 * the product of the dimensions before it, its size, the product after it.
 * A context without mesh groups (a 1-rank program) has every group of size 1.
 */
enum {
  MOERT_GROUP_DP = 0,
  MOERT_GROUP_CP = 1,
  MOERT_GROUP_TP = 2,
  MOERT_GROUP_EP = 3,
  MOERT_GROUP_EDP = 4, /* expert data parallel */
  MOERT_GROUP_DP_CP = 5
};
enum {
  MOERT_DTYPE_F32 = 0,
  MOERT_DTYPE_I32 = 1,
  MOERT_DTYPE_I64 = 2,
  MOERT_DTYPE_BF16 = 3
};

/* out[0, count) = sum over the group of in[0, count); in may equal out. */
void moert_all_reduce_sum(moert_context *ctx, int32_t group, int32_t dtype,
                          const void *in, void *out, int64_t count);
/* Gathers `in` (local layout outer x mid x inner) along the axis. */
void moert_all_gather(moert_context *ctx, int32_t group, int32_t dtype,
                      const void *in, void *out, int64_t outer, int64_t mid,
                      int64_t inner);
/* This rank's piece of `in` (global layout outer x mid x inner). */
void moert_all_slice(moert_context *ctx, int32_t group, int32_t dtype,
                     const void *in, void *out, int64_t outer, int64_t mid,
                     int64_t inner);
/* Splits `in` along one axis, exchanges, concatenates along another. */
void moert_all_to_all(moert_context *ctx, int32_t group, int32_t dtype,
                      const void *in, void *out, int64_t splitOuter,
                      int64_t splitMid, int64_t splitInner,
                      int64_t concatOuter, int64_t concatMid,
                      int64_t concatInner);
/* moe.dispatch and moe.combine over an EP group: see dispatchTokens and
 * combineTokens. placement is the placement table (-1: the fixed split of
 * experts / ranks experts per rank); recvOffsets has slots + 1 entries,
 * slots being the EP group's expert slots (ranks * slots per rank). */
void moert_dispatch(moert_context *ctx, int32_t group, int64_t placement,
                    const float *rows, const int64_t *offsets, float *recv,
                    int64_t *recvOffsets, int64_t experts, int64_t slots,
                    int64_t hidden, int64_t recvCapacity);
void moert_combine(moert_context *ctx, int32_t group, int64_t placement,
                   const float *expertOut, const int64_t *recvOffsets,
                   const int64_t *offsets, float *out, int64_t experts,
                   int64_t slots, int64_t hidden);

/* Backward of the model-level ops (the training step). Every gradient
 * output is overwritten, never accumulated into; a dX output has the shape
 * of the forward's X. The loss gradients are those of the loss value itself
 * (d loss = 1). include/moe/Runtime/CpuGradKernels.h states each one. */
void moert_embedding_grad(moert_context *ctx, const float *dy,
                          const int32_t *tokens, float *dtable, int64_t n,
                          int64_t vocab, int64_t hidden);
void moert_rms_norm_grad(moert_context *ctx, const float *dy, const float *x,
                         const float *weight, float *dx, float *dweight,
                         int64_t rows, int64_t dim, float eps);
/* dx = dy @ weight, dweight = dy^T @ x. */
void moert_linear_grad(moert_context *ctx, const float *dy, const float *x,
                       const float *weight, float *dx, float *dweight,
                       int64_t rows, int64_t in, int64_t outFeatures);
void moert_rope_grad(moert_context *ctx, const float *dy, float *dx,
                     int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
                     double theta);
void moert_rope_positions_grad(moert_context *ctx, const float *dy,
                               const int32_t *positions, float *dx,
                               int64_t batch, int64_t seq, int64_t heads,
                               int64_t headDim, double theta);
/* dk and dv sum over the query heads that share a kv head. */
void moert_attention_grad(moert_context *ctx, const float *dout, const float *q,
                          const float *k, const float *v, float *dq, float *dk,
                          float *dv, int64_t batch, int64_t seq, int64_t heads,
                          int64_t kvHeads, int64_t headDim, int32_t causal,
                          float scale);
void moert_mlp_grad(moert_context *ctx, const float *dy, const float *x,
                    const float *gate, const float *up, const float *down,
                    float *dx, float *dgate, float *dup, float *ddown,
                    int64_t rows, int64_t hidden, int64_t inter);
void moert_shared_experts_grad(moert_context *ctx, const float *dy,
                               const float *x, const float *gate,
                               const float *up, const float *down, float *dx,
                               float *dgate, float *dup, float *ddown,
                               int64_t rows, int64_t hidden, int64_t inter);
void moert_shared_experts_gated_grad(moert_context *ctx, const float *dy,
                                     const float *x, const float *gate,
                                     const float *up, const float *down,
                                     const float *sharedGate, float *dx,
                                     float *dgate, float *dup, float *ddown,
                                     float *dsharedGate, int64_t rows,
                                     int64_t hidden, int64_t inter);
/* The router's gradient flows through its weights (the selected scores),
 * never through the given indices; dlogits (from the aux and z losses) adds
 * to the logits' gradient. The expert bias and group limits only choose. */
void moert_router_grad(moert_context *ctx, const float *dweights,
                       const float *x, const float *gate, const float *logits,
                       const int32_t *indices, float *dx, float *dgate,
                       int64_t tokens, int64_t hidden, int64_t experts,
                       int64_t topK, int32_t sigmoid, int32_t normTopkProb,
                       float routeScale);
void moert_router_grad_logits(moert_context *ctx, const float *dweights,
                              const float *dlogits, const float *x,
                              const float *gate, const float *logits,
                              const int32_t *indices, float *dx, float *dgate,
                              int64_t tokens, int64_t hidden, int64_t experts,
                              int64_t topK, int32_t sigmoid,
                              int32_t normTopkProb, float routeScale);
/* dx[t] = sum over k of dpermuted[row(t, k)]; rows = tokens * topK. */
void moert_permute_grad(moert_context *ctx, const float *dpermuted,
                        const int32_t *rowToSlot, float *dx, int64_t tokens,
                        int64_t topK, int64_t hidden);
void moert_unpermute_grad(moert_context *ctx, const float *dout,
                          const float *expertOut, const int32_t *rowToSlot,
                          const float *weights, float *dexpertOut,
                          float *dweights, int64_t tokens, int64_t topK,
                          int64_t hidden);
/* Segments as in moert_grouped_swiglu; rows of dpermuted past the last
 * offset are set to 0; an expert's weight gradients sum over its segments. */
void moert_grouped_swiglu_grad(moert_context *ctx, const float *dout,
                               const float *permuted, const int64_t *offsets,
                               const float *gate, const float *up,
                               const float *down, float *dpermuted,
                               float *dgate, float *dup, float *ddown,
                               int64_t rows, int64_t segments, int64_t experts,
                               int64_t hidden, int64_t inter);
void moert_cross_entropy_grad(moert_context *ctx, const float *logits,
                              const int32_t *labels, float *dlogits, int64_t n,
                              int64_t vocab, int64_t ignoreIndex);
/* The routing fractions are constants; the gradient flows through the mean
 * scores. */
void moert_aux_loss_grad(moert_context *ctx, const float *logits,
                         const int32_t *indices, float *dlogits, int64_t tokens,
                         int64_t experts, int64_t topK, int32_t sigmoid,
                         float coefficient);
void moert_z_loss_grad(moert_context *ctx, const float *logits, float *dlogits,
                       int64_t tokens, int64_t experts, float coefficient);

/* Optimizer. */
/* *out = sum of x[i]^2, in double (the global gradient norm's pieces). */
void moert_sum_squares(moert_context *ctx, const float *x, double *out,
                       int64_t n);
/* One torch.optim.AdamW step on param with moments m and v (in place);
 * gradScale multiplies grad first (global-norm clipping); step >= 1. */
void moert_adamw(moert_context *ctx, float *param, const float *grad, float *m,
                 float *v, int64_t n, float lr, float beta1, float beta2,
                 float eps, float weightDecay, float gradScale, int64_t step);

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_CAPI_H */
