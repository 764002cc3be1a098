//===- CApiForward.cpp - The entry points of the backends' calls ----------===//
//
// Every MOERT_KERNEL entry of CApiCalls.def becomes its C entry point here:
// inside guarded() (Guarded.h) it checks the operands by their kinds (a
// required buffer is not null, a size is not negative), then calls the
// context's Backend method of the entry with the same operands in the same
// order (a flag as a bool). Nothing here is written per call but the layer
// statistics a call's time adds to (layerStat). The calls the core serves
// itself (storage, copies, collectives) are in CApi.cpp and
// CApiCollectives.cpp.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CApi.h"

#include "Guarded.h"
#include "moe/Runtime/Backend.h"

#include <stdexcept>
#include <string>

namespace {

using moe::rt::Backend;
using moe::rt::LayerStats;

[[noreturn]] void badOperand(const char *call, const char *name,
                             const std::string &problem) {
  throw std::invalid_argument(std::string(call) + ": operand " + name + " " +
                              problem);
}

void requireBuffer(const char *call, const char *name, const void *buffer) {
  if (!buffer)
    badOperand(call, name, "is null");
}

void requireSize(const char *call, const char *name, int64_t size) {
  if (size < 0)
    badOperand(call, name, "is a size but is " + std::to_string(size));
}

/// The per-layer statistic the time of call `Entry` adds to, if any.
template <auto Entry>
constexpr double LayerStats::*layerStat = nullptr;
template <>
constexpr double LayerStats::*layerStat<&moert_grouped_swiglu> =
    &LayerStats::expert;
template <>
constexpr double LayerStats::*layerStat<&moert_grouped_swiglu_grad> =
    &LayerStats::expert;

template <typename Method, typename... Args>
void forward(moert_context *ctx, Method method, Args... args) {
  (moe::rt::backend(ctx).*method)(args...);
}

} // namespace

// Each operand becomes a (kind, type, name) triple, which MOERT_FOR_EACH
// turns into a parameter, a check and an argument.
#define MOERT_IN(T, name) (IN, T, name)
#define MOERT_OUT(T, name) (OUT, T, name)
#define MOERT_OPT_IN(T, name) (OPT_IN, T, name)
#define MOERT_OPT_OUT(T, name) (OPT_OUT, T, name)
#define MOERT_SIZE(name) (SIZE, int64_t, name)
#define MOERT_FLAG(name) (FLAG, int32_t, name)
#define MOERT_I64(name) (VALUE, int64_t, name)
#define MOERT_I32(name) (VALUE, int32_t, name)
#define MOERT_F32(name) (VALUE, float, name)
#define MOERT_F64(name) (VALUE, double, name)

#define MOERT_CAT(a, b) MOERT_CAT_(a, b)
#define MOERT_CAT_(a, b) a##b
#define MOERT_COUNT(...)                                                       \
  MOERT_COUNT_(__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3,  \
               2, 1)
#define MOERT_COUNT_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13,   \
                     _14, _15, _16, N, ...)                                    \
  N
#define MOERT_FOR_EACH(m, ...)                                                 \
  MOERT_CAT(MOERT_EACH_, MOERT_COUNT(__VA_ARGS__))(m, __VA_ARGS__)
#define MOERT_EACH_1(m, a) m a
#define MOERT_EACH_2(m, a, ...) m a MOERT_EACH_1(m, __VA_ARGS__)
#define MOERT_EACH_3(m, a, ...) m a MOERT_EACH_2(m, __VA_ARGS__)
#define MOERT_EACH_4(m, a, ...) m a MOERT_EACH_3(m, __VA_ARGS__)
#define MOERT_EACH_5(m, a, ...) m a MOERT_EACH_4(m, __VA_ARGS__)
#define MOERT_EACH_6(m, a, ...) m a MOERT_EACH_5(m, __VA_ARGS__)
#define MOERT_EACH_7(m, a, ...) m a MOERT_EACH_6(m, __VA_ARGS__)
#define MOERT_EACH_8(m, a, ...) m a MOERT_EACH_7(m, __VA_ARGS__)
#define MOERT_EACH_9(m, a, ...) m a MOERT_EACH_8(m, __VA_ARGS__)
#define MOERT_EACH_10(m, a, ...) m a MOERT_EACH_9(m, __VA_ARGS__)
#define MOERT_EACH_11(m, a, ...) m a MOERT_EACH_10(m, __VA_ARGS__)
#define MOERT_EACH_12(m, a, ...) m a MOERT_EACH_11(m, __VA_ARGS__)
#define MOERT_EACH_13(m, a, ...) m a MOERT_EACH_12(m, __VA_ARGS__)
#define MOERT_EACH_14(m, a, ...) m a MOERT_EACH_13(m, __VA_ARGS__)
#define MOERT_EACH_15(m, a, ...) m a MOERT_EACH_14(m, __VA_ARGS__)
#define MOERT_EACH_16(m, a, ...) m a MOERT_EACH_15(m, __VA_ARGS__)

// ", type name" of each operand.
#define MOERT_PARAM(kind, T, name) MOERT_PARAM_##kind(T, name)
#define MOERT_PARAM_IN(T, name) , const T *name
#define MOERT_PARAM_OUT(T, name) , T *name
#define MOERT_PARAM_OPT_IN(T, name) , const T *name
#define MOERT_PARAM_OPT_OUT(T, name) , T *name
#define MOERT_PARAM_SIZE(T, name) , T name
#define MOERT_PARAM_FLAG(T, name) , T name
#define MOERT_PARAM_VALUE(T, name) , T name

// The check of each operand's kind.
#define MOERT_CHECK(kind, T, name) MOERT_CHECK_##kind(name)
#define MOERT_CHECK_IN(name) requireBuffer(call, #name, name);
#define MOERT_CHECK_OUT(name) requireBuffer(call, #name, name);
#define MOERT_CHECK_OPT_IN(name)
#define MOERT_CHECK_OPT_OUT(name)
#define MOERT_CHECK_SIZE(name) requireSize(call, #name, name);
#define MOERT_CHECK_FLAG(name)
#define MOERT_CHECK_VALUE(name)

// ", argument" of each operand, as the Backend method takes it.
#define MOERT_ARG(kind, T, name) MOERT_ARG_##kind(name)
#define MOERT_ARG_IN(name) , name
#define MOERT_ARG_OUT(name) , name
#define MOERT_ARG_OPT_IN(name) , name
#define MOERT_ARG_OPT_OUT(name) , name
#define MOERT_ARG_SIZE(name) , name
#define MOERT_ARG_FLAG(name) , (name != 0)
#define MOERT_ARG_VALUE(name) , name

#define MOERT_CALL(cname, ...)
#define MOERT_KERNEL(cname, method, ...)                                       \
  void cname(moert_context *ctx MOERT_FOR_EACH(MOERT_PARAM, __VA_ARGS__)) {    \
    moe::rt::guarded(ctx, #cname, [&] {                                        \
      [[maybe_unused]] const char *call = #cname;                              \
      MOERT_FOR_EACH(MOERT_CHECK, __VA_ARGS__)                                 \
      moe::rt::LayerTimer timer(ctx, layerStat<&cname>);                       \
      forward(ctx, &Backend::method MOERT_FOR_EACH(MOERT_ARG, __VA_ARGS__));   \
    });                                                                        \
  }

extern "C" {
#include "moe/Runtime/CApiCalls.def"
} // extern "C"
