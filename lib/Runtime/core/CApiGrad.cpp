//===- CApiGrad.cpp - The C entry points of the training step -------------===//
//
// The backward and optimizer entry points of CApi.h, each forwarding to the
// context's Backend (moe/Runtime/Backend.h) inside guarded().
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CApi.h"

#include "Guarded.h"

using moe::rt::backend;
using moe::rt::guarded;
using moe::rt::routerConfig;

extern "C" {

void moert_embedding_grad(moert_context *ctx, const float *dy,
                          const int32_t *tokens, float *dtable, int64_t n,
                          int64_t vocab, int64_t hidden) {
  guarded(ctx, __func__, [&] {
    backend(ctx).embeddingGrad(dy, tokens, dtable, n, vocab, hidden);
  });
}

void moert_rms_norm_grad(moert_context *ctx, const float *dy, const float *x,
                         const float *weight, float *dx, float *dweight,
                         int64_t rows, int64_t dim, float eps) {
  guarded(ctx, __func__, [&] {
    backend(ctx).rmsNormGrad(dy, x, weight, dx, dweight, rows, dim, eps);
  });
}

void moert_linear_grad(moert_context *ctx, const float *dy, const float *x,
                       const float *weight, float *dx, float *dweight,
                       int64_t rows, int64_t in, int64_t outFeatures) {
  guarded(ctx, __func__, [&] {
    backend(ctx).linearGrad(dy, x, weight, dx, dweight, rows, in, outFeatures);
  });
}

void moert_rope_grad(moert_context *ctx, const float *dy, float *dx,
                     int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
                     double theta) {
  guarded(ctx, __func__, [&] {
    backend(ctx).ropeGrad(dy, nullptr, dx, batch, seq, heads, headDim, theta);
  });
}

void moert_rope_positions_grad(moert_context *ctx, const float *dy,
                               const int32_t *positions, float *dx,
                               int64_t batch, int64_t seq, int64_t heads,
                               int64_t headDim, double theta) {
  guarded(ctx, __func__, [&] {
    backend(ctx).ropeGrad(dy, positions, dx, batch, seq, heads, headDim, theta);
  });
}

void moert_attention_grad(moert_context *ctx, const float *dout, const float *q,
                          const float *k, const float *v, float *dq, float *dk,
                          float *dv, int64_t batch, int64_t seq, int64_t heads,
                          int64_t kvHeads, int64_t headDim, int32_t causal,
                          float scale) {
  guarded(ctx, __func__, [&] {
    backend(ctx).attentionGrad(dout, q, k, v, dq, dk, dv, batch, seq, heads,
                               kvHeads, headDim, causal != 0, scale);
  });
}

void moert_mlp_grad(moert_context *ctx, const float *dy, const float *x,
                    const float *gate, const float *up, const float *down,
                    float *dx, float *dgate, float *dup, float *ddown,
                    int64_t rows, int64_t hidden, int64_t inter) {
  guarded(ctx, __func__, [&] {
    backend(ctx).mlpGrad(dy, x, gate, up, down, dx, dgate, dup, ddown, rows,
                         hidden, inter);
  });
}

void moert_shared_experts_grad(moert_context *ctx, const float *dy,
                               const float *x, const float *gate,
                               const float *up, const float *down, float *dx,
                               float *dgate, float *dup, float *ddown,
                               int64_t rows, int64_t hidden, int64_t inter) {
  guarded(ctx, __func__, [&] {
    backend(ctx).sharedExpertsGrad(dy, x, gate, up, down, nullptr, dx, dgate,
                                   dup, ddown, nullptr, rows, hidden, inter);
  });
}

void moert_shared_experts_gated_grad(moert_context *ctx, const float *dy,
                                     const float *x, const float *gate,
                                     const float *up, const float *down,
                                     const float *sharedGate, float *dx,
                                     float *dgate, float *dup, float *ddown,
                                     float *dsharedGate, int64_t rows,
                                     int64_t hidden, int64_t inter) {
  guarded(ctx, __func__, [&] {
    backend(ctx).sharedExpertsGrad(dy, x, gate, up, down, sharedGate, dx, dgate,
                                   dup, ddown, dsharedGate, rows, hidden,
                                   inter);
  });
}

void moert_router_grad(moert_context *ctx, const float *dweights,
                       const float *x, const float *gate, const float *logits,
                       const int32_t *indices, float *dx, float *dgate,
                       int64_t tokens, int64_t hidden, int64_t experts,
                       int64_t topK, int32_t sigmoid, int32_t normTopkProb,
                       float routeScale) {
  guarded(ctx, __func__, [&] {
    backend(ctx).routerGrad(
        dweights, nullptr, x, gate, logits, indices, dx, dgate, tokens, hidden,
        routerConfig(experts, topK, sigmoid, normTopkProb, routeScale, 1, 1));
  });
}

void moert_router_grad_logits(moert_context *ctx, const float *dweights,
                              const float *dlogits, const float *x,
                              const float *gate, const float *logits,
                              const int32_t *indices, float *dx, float *dgate,
                              int64_t tokens, int64_t hidden, int64_t experts,
                              int64_t topK, int32_t sigmoid,
                              int32_t normTopkProb, float routeScale) {
  guarded(ctx, __func__, [&] {
    backend(ctx).routerGrad(
        dweights, dlogits, x, gate, logits, indices, dx, dgate, tokens, hidden,
        routerConfig(experts, topK, sigmoid, normTopkProb, routeScale, 1, 1));
  });
}

void moert_permute_grad(moert_context *ctx, const float *dpermuted,
                        const int32_t *rowToSlot, float *dx, int64_t tokens,
                        int64_t topK, int64_t hidden) {
  guarded(ctx, __func__, [&] {
    backend(ctx).permuteGrad(dpermuted, rowToSlot, dx, tokens, topK, hidden);
  });
}

void moert_unpermute_grad(moert_context *ctx, const float *dout,
                          const float *expertOut, const int32_t *rowToSlot,
                          const float *weights, float *dexpertOut,
                          float *dweights, int64_t tokens, int64_t topK,
                          int64_t hidden) {
  guarded(ctx, __func__, [&] {
    backend(ctx).unpermuteGrad(dout, expertOut, rowToSlot, weights, dexpertOut,
                               dweights, tokens, topK, hidden);
  });
}

void moert_grouped_swiglu_grad(moert_context *ctx, const float *dout,
                               const float *permuted, const int64_t *offsets,
                               const float *gate, const float *up,
                               const float *down, float *dpermuted,
                               float *dgate, float *dup, float *ddown,
                               int64_t rows, int64_t segments, int64_t experts,
                               int64_t hidden, int64_t inter) {
  guarded(ctx, __func__, [&] {
    moe::rt::LayerTimer timer(ctx, &moe::rt::LayerStats::expert);
    backend(ctx).groupedSwigluGrad(dout, permuted, offsets, gate, up, down,
                                   dpermuted, dgate, dup, ddown, rows, segments,
                                   experts, hidden, inter);
  });
}

void moert_cross_entropy_grad(moert_context *ctx, const float *logits,
                              const int32_t *labels, float *dlogits, int64_t n,
                              int64_t vocab, int64_t ignoreIndex) {
  guarded(ctx, __func__, [&] {
    backend(ctx).crossEntropyGrad(logits, labels, dlogits, n, vocab,
                                  ignoreIndex);
  });
}

void moert_aux_loss_grad(moert_context *ctx, const float *logits,
                         const int32_t *indices, float *dlogits, int64_t tokens,
                         int64_t experts, int64_t topK, int32_t sigmoid,
                         float coefficient) {
  guarded(ctx, __func__, [&] {
    backend(ctx).auxLossGrad(logits, indices, dlogits, tokens, experts, topK,
                             sigmoid != 0, coefficient);
  });
}

void moert_z_loss_grad(moert_context *ctx, const float *logits, float *dlogits,
                       int64_t tokens, int64_t experts, float coefficient) {
  guarded(ctx, __func__, [&] {
    backend(ctx).zLossGrad(logits, dlogits, tokens, experts, coefficient);
  });
}

void moert_sum_squares(moert_context *ctx, const float *x, double *out,
                       int64_t n) {
  guarded(ctx, __func__, [&] { backend(ctx).sumSquares(x, out, n); });
}

void moert_adamw(moert_context *ctx, float *param, const float *grad, float *m,
                 float *v, int64_t n, float lr, float beta1, float beta2,
                 float eps, float weightDecay, float gradScale, int64_t step) {
  guarded(ctx, __func__, [&] {
    backend(ctx).adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay,
                       gradScale, step);
  });
}

} // extern "C"
