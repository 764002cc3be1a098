//===- Guarded.h - Shared pieces of the C entry points ----------*- C++ -*-===//
//
// Private to lib/Runtime/core: every moert_* entry point runs its work inside
// guarded(ctx, __func__, ...), which also records the call in the trace while
// the driver traces.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_CORE_GUARDED_H
#define MOE_LIB_RUNTIME_CORE_GUARDED_H

#include "Context.h"

#include <exception>

namespace moe::rt {

/// The backend the context's calls run on.
inline Backend &backend(moert_context *ctx) { return *ctx->backend; }

/// Runs fn between two backend marks and queues the span for the trace,
/// with what noteCollective() says it moved.
template <typename Fn>
void traced(moert_context *ctx, const char *call, Fn &fn) {
  TimedSpan span;
  span.call = call;
  ctx->callGroup = nullptr;
  ctx->callBytes = -1;
  span.begin = ctx->backend->mark();
  fn();
  span.end = ctx->backend->mark();
  span.group = ctx->callGroup;
  span.bytes = ctx->callBytes;
  ctx->timedSpans.push_back(span);
}

/// Runs fn unless ctx already failed; `call` names the entry point
/// (`__func__`) in the trace. Exceptions must not unwind into compiled code
/// (it has no unwind tables): the first failure is recorded in the context
/// and later calls return at once.
template <typename Fn>
void guarded(moert_context *ctx, const char *call, Fn &&fn) {
  if (ctx->failed)
    return;
  try {
    if (ctx->tracer)
      traced(ctx, call, fn);
    else
      fn();
  } catch (const std::exception &e) {
    ctx->failed = true;
    ctx->error = e.what();
  } catch (...) {
    ctx->failed = true;
    ctx->error = "unknown error in a runtime call";
  }
}

} // namespace moe::rt

#endif // MOE_LIB_RUNTIME_CORE_GUARDED_H
