/*===- CApi.h - The runtime calls that compiled models make --------*- C
 *-*-===//
 *
 * `moe-lower-to-runtime` turns each model-level op into one or more of these
 * calls (docs/lowering.md lists which). Conventions, chosen so that the LLVM
 * lowering can pass memrefs as bare pointers:
 *   - the context comes first, then input buffers, then output buffers, then
 *     sizes (int64_t) and attributes (int32_t flags, float/double values);
 *     collectives put their group and element type before the buffers;
 *   - an optional operand is a null pointer when absent;
 *   - a scalar result (a loss) is written through a one-element buffer.
 * The calls, their operands and what they compute are the table
 * CApiCalls.def; this header declares them from it.
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

/* Collectives name a mesh-axis group of the context and an element type. */
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

/* One prototype per entry of the table, in its order (CApiCalls.def states
 * what each call computes). */
#define MOERT_AS_C_PARAMETERS
#define MOERT_CALL(cname, ...) void cname(moert_context *ctx, __VA_ARGS__);
#include "moe/Runtime/CApiCalls.def"

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_CAPI_H */
