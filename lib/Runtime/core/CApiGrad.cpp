//===- CApiGrad.cpp - The C entry points of the training step -------------===//
//
// The backward and optimizer entry points of CApi.h, each forwarding to its
// moe::cpu kernel (CpuGradKernels.h) inside guarded().
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CApi.h"

#include "Guarded.h"
#include "moe/Runtime/CpuGradKernels.h"

using moe::rt::guarded;
using moe::rt::routerConfig;

extern "C" {

void moert_embedding_grad(moert_context *ctx, const float *dy,
                          const int32_t *tokens, float *dtable, int64_t n,
                          int64_t vocab, int64_t hidden) {
  guarded(ctx, [&] {
    moe::cpu::embeddingGrad(dy, tokens, n, vocab, hidden, dtable);
  });
}

void moert_rms_norm_grad(moert_context *ctx, const float *dy, const float *x,
                         const float *weight, float *dx, float *dweight,
                         int64_t rows, int64_t dim, float eps) {
  guarded(ctx, [&] {
    moe::cpu::rmsNormGrad(dy, x, weight, rows, dim, eps, dx, dweight);
  });
}

void moert_linear_grad(moert_context *ctx, const float *dy, const float *x,
                       const float *weight, float *dx, float *dweight,
                       int64_t rows, int64_t in, int64_t outFeatures) {
  guarded(ctx, [&] {
    moe::cpu::linearGrad(dy, x, rows, in, weight, outFeatures, dx, dweight);
  });
}

void moert_rope_grad(moert_context *ctx, const float *dy, float *dx,
                     int64_t batch, int64_t seq, int64_t heads, int64_t headDim,
                     double theta) {
  guarded(ctx, [&] {
    moe::cpu::ropeGrad(dy, nullptr, batch, seq, heads, headDim, theta, dx);
  });
}

void moert_rope_positions_grad(moert_context *ctx, const float *dy,
                               const int32_t *positions, float *dx,
                               int64_t batch, int64_t seq, int64_t heads,
                               int64_t headDim, double theta) {
  guarded(ctx, [&] {
    moe::cpu::ropeGrad(dy, positions, batch, seq, heads, headDim, theta, dx);
  });
}

void moert_attention_grad(moert_context *ctx, const float *dout, const float *q,
                          const float *k, const float *v, float *dq, float *dk,
                          float *dv, int64_t batch, int64_t seq, int64_t heads,
                          int64_t kvHeads, int64_t headDim, int32_t causal,
                          float scale) {
  guarded(ctx, [&] {
    moe::cpu::attentionGrad(dout, q, k, v, batch, seq, heads, kvHeads, headDim,
                            causal != 0, scale, dq, dk, dv);
  });
}

void moert_mlp_grad(moert_context *ctx, const float *dy, const float *x,
                    const float *gate, const float *up, const float *down,
                    float *dx, float *dgate, float *dup, float *ddown,
                    int64_t rows, int64_t hidden, int64_t inter) {
  guarded(ctx, [&] {
    moe::cpu::swigluMlpGrad(dy, x, rows, hidden, gate, up, down, inter, dx,
                            dgate, dup, ddown);
  });
}

void moert_shared_experts_grad(moert_context *ctx, const float *dy,
                               const float *x, const float *gate,
                               const float *up, const float *down, float *dx,
                               float *dgate, float *dup, float *ddown,
                               int64_t rows, int64_t hidden, int64_t inter) {
  guarded(ctx, [&] {
    moe::cpu::sharedExpertsGrad(dy, x, rows, hidden, gate, up, down, inter,
                                nullptr, dx, dgate, dup, ddown, nullptr);
  });
}

void moert_shared_experts_gated_grad(moert_context *ctx, const float *dy,
                                     const float *x, const float *gate,
                                     const float *up, const float *down,
                                     const float *sharedGate, float *dx,
                                     float *dgate, float *dup, float *ddown,
                                     float *dsharedGate, int64_t rows,
                                     int64_t hidden, int64_t inter) {
  guarded(ctx, [&] {
    moe::cpu::sharedExpertsGrad(dy, x, rows, hidden, gate, up, down, inter,
                                sharedGate, dx, dgate, dup, ddown, dsharedGate);
  });
}

void moert_router_grad(moert_context *ctx, const float *dweights,
                       const float *x, const float *gate, const float *logits,
                       const int32_t *indices, float *dx, float *dgate,
                       int64_t tokens, int64_t hidden, int64_t experts,
                       int64_t topK, int32_t sigmoid, int32_t normTopkProb,
                       float routeScale) {
  guarded(ctx, [&] {
    moe::cpu::routerGrad(
        dweights, nullptr, x, tokens, hidden, gate, logits, indices,
        routerConfig(experts, topK, sigmoid, normTopkProb, routeScale, 1, 1),
        dx, dgate);
  });
}

void moert_router_grad_logits(moert_context *ctx, const float *dweights,
                              const float *dlogits, const float *x,
                              const float *gate, const float *logits,
                              const int32_t *indices, float *dx, float *dgate,
                              int64_t tokens, int64_t hidden, int64_t experts,
                              int64_t topK, int32_t sigmoid,
                              int32_t normTopkProb, float routeScale) {
  guarded(ctx, [&] {
    moe::cpu::routerGrad(
        dweights, dlogits, x, tokens, hidden, gate, logits, indices,
        routerConfig(experts, topK, sigmoid, normTopkProb, routeScale, 1, 1),
        dx, dgate);
  });
}

void moert_permute_grad(moert_context *ctx, const float *dpermuted,
                        const int32_t *rowToSlot, float *dx, int64_t tokens,
                        int64_t topK, int64_t hidden) {
  guarded(ctx, [&] {
    moe::cpu::permuteGrad(dpermuted, rowToSlot, tokens, topK, hidden, dx);
  });
}

void moert_unpermute_grad(moert_context *ctx, const float *dout,
                          const float *expertOut, const int32_t *rowToSlot,
                          const float *weights, float *dexpertOut,
                          float *dweights, int64_t tokens, int64_t topK,
                          int64_t hidden) {
  guarded(ctx, [&] {
    moe::cpu::unpermuteCombineGrad(dout, expertOut, rowToSlot, weights, tokens,
                                   topK, hidden, dexpertOut, dweights);
  });
}

void moert_grouped_swiglu_grad(moert_context *ctx, const float *dout,
                               const float *permuted, const int64_t *offsets,
                               const float *gate, const float *up,
                               const float *down, float *dpermuted,
                               float *dgate, float *dup, float *ddown,
                               int64_t rows, int64_t segments, int64_t experts,
                               int64_t hidden, int64_t inter) {
  guarded(ctx, [&] {
    moe::cpu::groupedSwiGLUSegmentsGrad(dout, permuted, rows, offsets, segments,
                                        experts, hidden, inter, gate, up, down,
                                        dpermuted, dgate, dup, ddown);
  });
}

void moert_cross_entropy_grad(moert_context *ctx, const float *logits,
                              const int32_t *labels, float *dlogits, int64_t n,
                              int64_t vocab, int64_t ignoreIndex) {
  guarded(ctx, [&] {
    moe::cpu::crossEntropyGrad(logits, labels, n, vocab, ignoreIndex, dlogits);
  });
}

void moert_aux_loss_grad(moert_context *ctx, const float *logits,
                         const int32_t *indices, float *dlogits, int64_t tokens,
                         int64_t experts, int64_t topK, int32_t sigmoid,
                         float coefficient) {
  guarded(ctx, [&] {
    moe::cpu::auxLossGrad(logits, indices, tokens, experts, topK, sigmoid != 0,
                          coefficient, dlogits);
  });
}

void moert_z_loss_grad(moert_context *ctx, const float *logits, float *dlogits,
                       int64_t tokens, int64_t experts, float coefficient) {
  guarded(ctx, [&] {
    moe::cpu::zLossGrad(logits, tokens, experts, coefficient, dlogits);
  });
}

void moert_sum_squares(moert_context *ctx, const float *x, double *out,
                       int64_t n) {
  guarded(ctx, [&] { *out = moe::cpu::sumSquares(x, n); });
}

void moert_adamw(moert_context *ctx, float *param, const float *grad, float *m,
                 float *v, int64_t n, float lr, float beta1, float beta2,
                 float eps, float weightDecay, float gradScale, int64_t step) {
  guarded(ctx, [&] {
    moe::cpu::adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay,
                    gradScale, step);
  });
}

} // extern "C"
