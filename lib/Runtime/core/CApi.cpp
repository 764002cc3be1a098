//===- CApi.cpp - The C entry points compiled models call -----------------===//
//
// Each moert_* function forwards to the backend kernel inside guarded()
// (Guarded.h). The backward and optimizer entry points are in CApiGrad.cpp.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CApi.h"

#include "Context.h"
#include "Guarded.h"
#include "moe/Runtime/CpuKernels.h"
#include "moe/Runtime/TensorCollectives.h"

#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <new>
#include <vector>

namespace {

using moe::rt::guarded;
using moe::rt::routerConfig;

moe::rt::Communicator &group(moert_context *ctx, int32_t id) {
  if (moe::rt::MeshGroups *g = ctx->groups) {
    std::unique_ptr<moe::rt::Communicator> *comm = nullptr;
    switch (id) {
    case MOERT_GROUP_DP: comm = &g->dp; break;
    case MOERT_GROUP_CP: comm = &g->cp; break;
    case MOERT_GROUP_TP: comm = &g->tp; break;
    case MOERT_GROUP_EP: comm = &g->ep; break;
    case MOERT_GROUP_EDP: comm = &g->edp; break;
    case MOERT_GROUP_DP_CP: comm = &g->dpCp; break;
    default: break;
    }
    if (!comm)
      throw std::runtime_error("unknown mesh group " + std::to_string(id));
    return **comm;
  }
  if (id < MOERT_GROUP_DP || id > MOERT_GROUP_DP_CP)
    throw std::runtime_error("unknown mesh group " + std::to_string(id));
  if (!ctx->self)
    ctx->self = std::move(moe::rt::makeLocalCommunicators(1).front());
  return *ctx->self;
}

moe::rt::CommDType dtypeOf(int32_t dtype) {
  switch (dtype) {
  case MOERT_DTYPE_F32: return moe::rt::CommDType::F32;
  case MOERT_DTYPE_I32: return moe::rt::CommDType::I32;
  case MOERT_DTYPE_I64: return moe::rt::CommDType::I64;
  default: break;
  }
  throw std::runtime_error("unknown element type " + std::to_string(dtype));
}

} // namespace

extern "C" {

moert_context *moert_context_create(void) {
  return new (std::nothrow) moert_context();
}

void moert_context_destroy(moert_context *ctx) { delete ctx; }

const char *moert_context_error(const moert_context *ctx) {
  return ctx->failed ? ctx->error.c_str() : nullptr;
}

void moert_context_reset_error(moert_context *ctx) {
  ctx->failed = false;
  ctx->error.clear();
}

void moert_embedding(moert_context *ctx, const int32_t *tokens,
                     const float *table, float *out, int64_t n, int64_t vocab,
                     int64_t hidden) {
  guarded(ctx, [&] { moe::cpu::embedding(tokens, n, table, vocab, hidden, out); });
}

void moert_rms_norm(moert_context *ctx, const float *x, const float *weight,
                    float *out, int64_t rows, int64_t dim, float eps) {
  guarded(ctx, [&] { moe::cpu::rmsNorm(x, weight, rows, dim, eps, out); });
}

void moert_linear(moert_context *ctx, const float *x, const float *weight,
                  float *out, int64_t rows, int64_t in, int64_t outFeatures) {
  guarded(ctx, [&] {
    moe::cpu::linear(x, rows, in, weight, outFeatures, nullptr, out);
  });
}

void moert_linear_bias(moert_context *ctx, const float *x, const float *weight,
                       const float *bias, float *out, int64_t rows, int64_t in,
                       int64_t outFeatures) {
  guarded(ctx, [&] {
    moe::cpu::linear(x, rows, in, weight, outFeatures, bias, out);
  });
}

void moert_rope(moert_context *ctx, const float *x, float *out, int64_t batch,
                int64_t seq, int64_t heads, int64_t headDim, double theta) {
  guarded(ctx, [&] {
    moe::cpu::rope(x, nullptr, batch, seq, heads, headDim, theta, out);
  });
}

void moert_rope_positions(moert_context *ctx, const float *x,
                          const int32_t *positions, float *out, int64_t batch,
                          int64_t seq, int64_t heads, int64_t headDim,
                          double theta) {
  guarded(ctx, [&] {
    moe::cpu::rope(x, positions, batch, seq, heads, headDim, theta, out);
  });
}

void moert_attention(moert_context *ctx, const float *q, const float *k,
                     const float *v, float *out, int64_t batch, int64_t seq,
                     int64_t heads, int64_t kvHeads, int64_t headDim,
                     int32_t causal, float scale) {
  guarded(ctx, [&] {
    moe::cpu::attention(q, k, v, batch, seq, heads, kvHeads, headDim,
                        causal != 0, scale, out);
  });
}

void moert_mlp(moert_context *ctx, const float *x, const float *gate,
               const float *up, const float *down, float *out, int64_t rows,
               int64_t hidden, int64_t inter) {
  guarded(ctx, [&] {
    moe::cpu::swigluMlp(x, rows, hidden, gate, up, down, inter, out);
  });
}

void moert_add(moert_context *ctx, const float *a, const float *b, float *out,
               int64_t n) {
  guarded(ctx, [&] { moe::cpu::add(a, b, n, out); });
}

void moert_router(moert_context *ctx, const float *x, const float *gate,
                  float *weights, int32_t *indices, float *logits,
                  int64_t tokens, int64_t hidden, int64_t experts,
                  int64_t topK, int32_t sigmoid, int32_t normTopkProb,
                  float routeScale, int64_t nGroup, int64_t topkGroup) {
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
  guarded(ctx, [&] {
    moe::cpu::router(x, tokens, hidden, gate, expertBias,
                     routerConfig(experts, topK, sigmoid, normTopkProb,
                                  routeScale, nGroup, topkGroup),
                     weights, indices, logits);
  });
}

void moert_drop_over_capacity(moert_context *ctx, const int32_t *indices,
                              int32_t *kept, int64_t tokens, int64_t topK,
                              int64_t experts, int64_t capacity) {
  guarded(ctx, [&] {
    ctx->droppedSlots.push_back(moe::cpu::dropOverCapacity(
        indices, tokens, topK, experts, capacity, kept));
  });
}

void moert_permute(moert_context *ctx, const float *x, const int32_t *indices,
                   float *permuted, int64_t *offsets, int32_t *rowToSlot,
                   int64_t tokens, int64_t topK, int64_t hidden,
                   int64_t experts) {
  guarded(ctx, [&] {
    std::vector<int64_t> counts(experts > 0 ? experts : 0);
    moe::cpu::permuteByExpert(indices, tokens, topK, experts, counts.data(),
                              offsets, rowToSlot);
    moe::cpu::gatherRows(x, rowToSlot, tokens * topK, topK, hidden, permuted);
    // For the driver's routing statistics (load balance per layer).
    ctx->expertCounts.push_back(std::move(counts));
  });
}

void moert_grouped_swiglu(moert_context *ctx, const float *permuted,
                          const int64_t *offsets, const float *gate,
                          const float *up, const float *down, float *out,
                          int64_t rows, int64_t segments, int64_t experts,
                          int64_t hidden, int64_t inter) {
  guarded(ctx, [&] {
    moe::cpu::groupedSwiGLUSegments(permuted, rows, offsets, segments, experts,
                                    hidden, inter, gate, up, down, out);
  });
}

void moert_unpermute_combine(moert_context *ctx, const float *expertOut,
                             const int32_t *rowToSlot, const float *weights,
                             float *out, int64_t tokens, int64_t topK,
                             int64_t hidden) {
  guarded(ctx, [&] {
    moe::cpu::unpermuteCombine(expertOut, rowToSlot, weights, tokens, topK,
                               hidden, out);
  });
}

void moert_shared_experts(moert_context *ctx, const float *x, const float *gate,
                          const float *up, const float *down, float *out,
                          int64_t rows, int64_t hidden, int64_t inter) {
  moert_shared_experts_gated(ctx, x, gate, up, down, nullptr, out, rows,
                             hidden, inter);
}

void moert_shared_experts_gated(moert_context *ctx, const float *x,
                                const float *gate, const float *up,
                                const float *down, const float *sharedGate,
                                float *out, int64_t rows, int64_t hidden,
                                int64_t inter) {
  guarded(ctx, [&] {
    moe::cpu::sharedExperts(x, rows, hidden, gate, up, down, inter, sharedGate,
                            out);
  });
}

void moert_cross_entropy(moert_context *ctx, const float *logits,
                         const int32_t *labels, float *out, int64_t n,
                         int64_t vocab, int64_t ignoreIndex) {
  guarded(ctx, [&] {
    *out = moe::cpu::crossEntropy(logits, labels, n, vocab, ignoreIndex);
  });
}

void moert_aux_loss(moert_context *ctx, const float *logits,
                    const int32_t *indices, float *out, int64_t tokens,
                    int64_t experts, int64_t topK, int32_t sigmoid,
                    float coefficient) {
  guarded(ctx, [&] {
    *out = moe::cpu::auxLoss(logits, indices, tokens, experts, topK,
                             sigmoid != 0, coefficient);
  });
}

void moert_z_loss(moert_context *ctx, const float *logits, float *out,
                  int64_t tokens, int64_t experts, float coefficient) {
  guarded(ctx, [&] {
    *out = moe::cpu::zLoss(logits, tokens, experts, coefficient);
  });
}

void moert_all_reduce_sum(moert_context *ctx, int32_t groupId, int32_t dtype,
                          const void *in, void *out, int64_t count) {
  guarded(ctx, [&] {
    moe::rt::CommDType type = dtypeOf(dtype);
    if (in != out)
      std::memcpy(out, in, count * moe::rt::commDTypeSize(type));
    group(ctx, groupId).allReduceSum(out, count, type);
  });
}

void moert_all_gather(moert_context *ctx, int32_t groupId, int32_t dtype,
                      const void *in, void *out, int64_t outer, int64_t mid,
                      int64_t inner) {
  guarded(ctx, [&] {
    moe::rt::allGatherAxis(group(ctx, groupId), in, out, {outer, mid, inner},
                           dtypeOf(dtype));
  });
}

void moert_all_slice(moert_context *ctx, int32_t groupId, int32_t dtype,
                     const void *in, void *out, int64_t outer, int64_t mid,
                     int64_t inner) {
  guarded(ctx, [&] {
    moe::rt::allSliceAxis(group(ctx, groupId), in, out, {outer, mid, inner},
                          dtypeOf(dtype));
  });
}

void moert_all_to_all(moert_context *ctx, int32_t groupId, int32_t dtype,
                      const void *in, void *out, int64_t splitOuter,
                      int64_t splitMid, int64_t splitInner,
                      int64_t concatOuter, int64_t concatMid,
                      int64_t concatInner) {
  guarded(ctx, [&] {
    moe::rt::allToAllAxes(group(ctx, groupId), in, out,
                          {splitOuter, splitMid, splitInner},
                          {concatOuter, concatMid, concatInner},
                          dtypeOf(dtype));
  });
}

void moert_dispatch(moert_context *ctx, int32_t groupId, const float *rows,
                    const int64_t *offsets, float *recv, int64_t *recvOffsets,
                    int64_t experts, int64_t hidden, int64_t recvCapacity) {
  guarded(ctx, [&] {
    moe::rt::dispatchTokens(group(ctx, groupId), rows, offsets, experts,
                            hidden, recv, recvCapacity, recvOffsets);
  });
}

void moert_combine(moert_context *ctx, int32_t groupId, const float *expertOut,
                   const int64_t *recvOffsets, const int64_t *offsets,
                   float *out, int64_t experts, int64_t hidden) {
  guarded(ctx, [&] {
    moe::rt::combineTokens(group(ctx, groupId), expertOut, recvOffsets,
                           offsets, experts, hidden, out);
  });
}

} // extern "C"
