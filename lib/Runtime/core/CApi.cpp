//===- CApi.cpp - The C entry points compiled models call -----------------===//
//
// Each moert_* function forwards to the context's Backend
// (moe/Runtime/Backend.h) inside guarded() (Guarded.h). Collectives run on
// the backend's buffers with a communicator that works on them: the host
// communicators on the CPU, the device groups (NCCL) the driver installs on
// a GPU. The collectives' entry points are in CApiCollectives.cpp, the
// backward and optimizer ones in CApiGrad.cpp.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CApi.h"

#include "Context.h"
#include "Guarded.h"
#include "moe/Runtime/Backend.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

using moe::rt::backend;
using moe::rt::guarded;
using moe::rt::routerConfig;

extern "C" {

moert_context *moert_context_create(void) {
  try {
    auto *ctx = new moert_context();
    ctx->backend = moe::rt::makeCpuBackend();
    return ctx;
  } catch (...) {
    return nullptr;
  }
}

void moert_context_destroy(moert_context *ctx) { delete ctx; }

const char *moert_context_error(const moert_context *ctx) {
  return ctx->failed ? ctx->error.c_str() : nullptr;
}

void moert_context_reset_error(moert_context *ctx) {
  ctx->failed = false;
  ctx->error.clear();
}

void moert_set_storage(moert_context *ctx, int32_t dtype) {
  guarded(ctx, __func__, [&] {
    switch (dtype) {
    case MOERT_DTYPE_F32:
      return backend(ctx).setStorage(moe::rt::StorageType::F32);
    case MOERT_DTYPE_BF16:
      return backend(ctx).setStorage(moe::rt::StorageType::BF16);
    default:
      throw std::runtime_error("storage type " + std::to_string(dtype) +
                               " is neither f32 nor bf16");
    }
  });
}

void moert_copy(moert_context *ctx, const void *src, void *dst, int64_t bytes) {
  guarded(ctx, __func__, [&] {
    if (bytes < 0)
      throw std::invalid_argument("copy: negative byte count " +
                                  std::to_string(bytes));
    if (src != dst)
      backend(ctx).copy(dst, src, static_cast<size_t>(bytes));
  });
}

void moert_embedding(moert_context *ctx, const int32_t *tokens,
                     const float *table, float *out, int64_t n, int64_t vocab,
                     int64_t hidden) {
  guarded(ctx, __func__, [&] {
    backend(ctx).embedding(tokens, table, out, n, vocab, hidden);
  });
}

void moert_rms_norm(moert_context *ctx, const float *x, const float *weight,
                    float *out, int64_t rows, int64_t dim, float eps) {
  guarded(ctx, __func__,
          [&] { backend(ctx).rmsNorm(x, weight, out, rows, dim, eps); });
}

void moert_linear(moert_context *ctx, const float *x, const float *weight,
                  float *out, int64_t rows, int64_t in, int64_t outFeatures) {
  guarded(ctx, __func__, [&] {
    backend(ctx).linear(x, weight, nullptr, out, rows, in, outFeatures);
  });
}

void moert_linear_bias(moert_context *ctx, const float *x, const float *weight,
                       const float *bias, float *out, int64_t rows, int64_t in,
                       int64_t outFeatures) {
  guarded(ctx, __func__, [&] {
    backend(ctx).linear(x, weight, bias, out, rows, in, outFeatures);
  });
}

void moert_rope(moert_context *ctx, const float *x, float *out, int64_t batch,
                int64_t seq, int64_t heads, int64_t headDim, double theta) {
  guarded(ctx, __func__, [&] {
    backend(ctx).rope(x, nullptr, out, batch, seq, heads, headDim, theta);
  });
}

void moert_rope_positions(moert_context *ctx, const float *x,
                          const int32_t *positions, float *out, int64_t batch,
                          int64_t seq, int64_t heads, int64_t headDim,
                          double theta) {
  guarded(ctx, __func__, [&] {
    backend(ctx).rope(x, positions, out, batch, seq, heads, headDim, theta);
  });
}

void moert_attention(moert_context *ctx, const float *q, const float *k,
                     const float *v, float *out, int64_t batch, int64_t seq,
                     int64_t heads, int64_t kvHeads, int64_t headDim,
                     int32_t causal, float scale) {
  guarded(ctx, __func__, [&] {
    backend(ctx).attention(q, k, v, out, batch, seq, heads, kvHeads, headDim,
                           causal != 0, scale);
  });
}

void moert_mlp(moert_context *ctx, const float *x, const float *gate,
               const float *up, const float *down, float *out, int64_t rows,
               int64_t hidden, int64_t inter) {
  guarded(ctx, __func__, [&] {
    backend(ctx).mlp(x, gate, up, down, out, rows, hidden, inter);
  });
}

void moert_add(moert_context *ctx, const float *a, const float *b, float *out,
               int64_t n) {
  guarded(ctx, __func__, [&] { backend(ctx).add(a, b, out, n); });
}

void moert_add_f32(moert_context *ctx, const float *a, const float *b,
                   float *out, int64_t n) {
  guarded(ctx, __func__, [&] {
    // fp32 for this call only, however it ends.
    struct Fp32Scope {
      moe::rt::Backend &backend;
      moe::rt::StorageType saved = backend.storage();
      ~Fp32Scope() { backend.setStorage(saved); }
    } scope{backend(ctx)};
    scope.backend.setStorage(moe::rt::StorageType::F32);
    scope.backend.add(a, b, out, n);
  });
}

void moert_router(moert_context *ctx, const float *x, const float *gate,
                  float *weights, int32_t *indices, float *logits,
                  int64_t tokens, int64_t hidden, int64_t experts, int64_t topK,
                  int32_t sigmoid, int32_t normTopkProb, float routeScale,
                  int64_t nGroup, int64_t topkGroup) {
  moert_router_bias(ctx, x, gate, nullptr, weights, indices, logits, tokens,
                    hidden, experts, topK, sigmoid, normTopkProb, routeScale,
                    nGroup, topkGroup);
}

void moert_router_bias(moert_context *ctx, const float *x, const float *gate,
                       const float *expertBias, float *weights,
                       int32_t *indices, float *logits, int64_t tokens,
                       int64_t hidden, int64_t experts, int64_t topK,
                       int32_t sigmoid, int32_t normTopkProb, float routeScale,
                       int64_t nGroup, int64_t topkGroup) {
  guarded(ctx, __func__, [&] {
    backend(ctx).router(x, gate, expertBias, weights, indices, logits, tokens,
                        hidden,
                        routerConfig(experts, topK, sigmoid, normTopkProb,
                                     routeScale, nGroup, topkGroup));
  });
}

void moert_drop_over_capacity(moert_context *ctx, const int32_t *indices,
                              int32_t *kept, int64_t tokens, int64_t topK,
                              int64_t experts, int64_t capacity) {
  guarded(ctx, __func__, [&] {
    backend(ctx).dropOverCapacity(indices, kept, tokens, topK, experts,
                                  capacity);
  });
}

void moert_permute(moert_context *ctx, const float *x, const int32_t *indices,
                   float *permuted, int64_t *offsets, int32_t *rowToSlot,
                   int64_t tokens, int64_t topK, int64_t hidden,
                   int64_t experts) {
  guarded(ctx, __func__, [&] {
    backend(ctx).permute(x, indices, permuted, offsets, rowToSlot, tokens, topK,
                         hidden, experts);
  });
}

void moert_grouped_swiglu(moert_context *ctx, const float *permuted,
                          const int64_t *offsets, const float *gate,
                          const float *up, const float *down, float *out,
                          int64_t rows, int64_t segments, int64_t experts,
                          int64_t hidden, int64_t inter) {
  guarded(ctx, __func__, [&] {
    moe::rt::LayerTimer timer(ctx, &moe::rt::LayerStats::expert);
    backend(ctx).groupedSwiglu(permuted, offsets, gate, up, down, out, rows,
                               segments, experts, hidden, inter);
  });
}

void moert_unpermute_combine(moert_context *ctx, const float *expertOut,
                             const int32_t *rowToSlot, const float *weights,
                             float *out, int64_t tokens, int64_t topK,
                             int64_t hidden) {
  guarded(ctx, __func__, [&] {
    backend(ctx).unpermuteCombine(expertOut, rowToSlot, weights, out, tokens,
                                  topK, hidden);
  });
}

void moert_shared_experts(moert_context *ctx, const float *x, const float *gate,
                          const float *up, const float *down, float *out,
                          int64_t rows, int64_t hidden, int64_t inter) {
  moert_shared_experts_gated(ctx, x, gate, up, down, nullptr, out, rows, hidden,
                             inter);
}

void moert_shared_experts_gated(moert_context *ctx, const float *x,
                                const float *gate, const float *up,
                                const float *down, const float *sharedGate,
                                float *out, int64_t rows, int64_t hidden,
                                int64_t inter) {
  guarded(ctx, __func__, [&] {
    backend(ctx).sharedExperts(x, gate, up, down, sharedGate, out, rows, hidden,
                               inter);
  });
}

void moert_cross_entropy(moert_context *ctx, const float *logits,
                         const int32_t *labels, float *out, int64_t n,
                         int64_t vocab, int64_t ignoreIndex) {
  guarded(ctx, __func__, [&] {
    backend(ctx).crossEntropy(logits, labels, out, n, vocab, ignoreIndex);
  });
}

void moert_aux_loss(moert_context *ctx, const float *logits,
                    const int32_t *indices, float *out, int64_t tokens,
                    int64_t experts, int64_t topK, int32_t sigmoid,
                    float coefficient) {
  guarded(ctx, __func__, [&] {
    backend(ctx).auxLoss(logits, indices, out, tokens, experts, topK,
                         sigmoid != 0, coefficient);
  });
}

void moert_z_loss(moert_context *ctx, const float *logits, float *out,
                  int64_t tokens, int64_t experts, float coefficient) {
  guarded(ctx, __func__, [&] {
    backend(ctx).zLoss(logits, out, tokens, experts, coefficient);
  });
}

} // extern "C"
