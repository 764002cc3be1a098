//===- CApiSignatures.cpp - CApi.h against the table of calls -------------===//
//
// Nothing runs here: each entry of CApiCalls.def becomes a static_assert that
// the prototype CApi.h declares is exactly the one the table (and so the
// compiler, which checks its calls against the same table) says. A call
// changed on one side only does not build.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CApi.h"

#include <cstdint>
#include <type_traits>

namespace {

#define MOERT_IN(T, name) const T *
#define MOERT_OUT(T, name) T *
#define MOERT_I64(name) int64_t
#define MOERT_I32(name) int32_t
#define MOERT_F32(name) float
#define MOERT_F64(name) double
#define MOERT_CALL(name, ...)                                                  \
  static_assert(                                                               \
      std::is_same_v<decltype(&name), void (*)(moert_context *, __VA_ARGS__)>, \
      "CApi.h declares " #name " unlike its entry in CApiCalls.def");
#include "moe/Runtime/CApiCalls.def"
#undef MOERT_CALL
#undef MOERT_IN
#undef MOERT_OUT
#undef MOERT_I64
#undef MOERT_I32
#undef MOERT_F32
#undef MOERT_F64

} // namespace
