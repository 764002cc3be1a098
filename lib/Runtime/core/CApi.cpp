//===- CApi.cpp - The C entry points compiled models call -----------------===//
//
// The context's life and the calls the core serves itself: storage, copies
// and the fp32 sum of loss terms. The calls that run on the context's Backend
// (moe/Runtime/Backend.h) are generated from CApiCalls.def in
// CApiForward.cpp; the collectives, which run on the backend's buffers with a
// communicator that works on them (host communicators on the CPU, the device
// groups the driver installs on a GPU), are in CApiCollectives.cpp.
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

void moert_add_f32(moert_context *ctx, const float *a, const float *b,
                   float *out, int64_t n) {
  guarded(ctx, __func__, [&] { backend(ctx).addF32(a, b, out, n); });
}

} // extern "C"
