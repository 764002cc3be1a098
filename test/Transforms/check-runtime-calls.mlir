// moe-check-runtime-calls holds every runtime call against its entry in
// include/moe/Runtime/CApiCalls.def (the table CApi.h declares its prototypes
// from): a call with other operands, an unknown call, or a
// declaration with results is a compile-time error.
// RUN: moe-opt %s -split-input-file --moe-check-runtime-calls -verify-diagnostics

// The lowering's own output passes (no diagnostics).
func.func @ok(%ctx: !llvm.ptr, %x: !llvm.ptr, %w: !llvm.ptr, %out: !llvm.ptr) {
  %rows = arith.constant 4 : i64
  %dim = arith.constant 8 : i64
  %eps = arith.constant 1.0e-06 : f32
  func.call @moert_rms_norm(%ctx, %x, %w, %out, %rows, %dim, %eps) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, f32) -> ()
  return
}
func.func private @moert_rms_norm(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, f32)

// -----

// eps as a double: CApi.h takes a float.
func.func @wrong_scalar(%ctx: !llvm.ptr, %x: !llvm.ptr, %w: !llvm.ptr, %out: !llvm.ptr) {
  %rows = arith.constant 4 : i64
  %dim = arith.constant 8 : i64
  %eps = arith.constant 1.0e-06 : f64
  // expected-error @+1 {{passes runtime call 'moert_rms_norm' operands ('!llvm.ptr', '!llvm.ptr', '!llvm.ptr', '!llvm.ptr', 'i64', 'i64', 'f64') unlike its prototype in CApiCalls.def ('!llvm.ptr', '!llvm.ptr', '!llvm.ptr', '!llvm.ptr', 'i64', 'i64', 'f32')}}
  func.call @moert_rms_norm(%ctx, %x, %w, %out, %rows, %dim, %eps) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, f64) -> ()
  return
}
// expected-error @+1 {{passes runtime call 'moert_rms_norm' operands}}
func.func private @moert_rms_norm(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, f64)

// -----

// Two buffers short: the weight, and the optional bias (absent is a null
// pointer, never a missing operand).
func.func @missing_buffer(%ctx: !llvm.ptr, %x: !llvm.ptr, %out: !llvm.ptr) {
  %n = arith.constant 4 : i64
  // expected-error @+1 {{passes runtime call 'moert_linear' operands}}
  func.call @moert_linear(%ctx, %x, %out, %n, %n, %n) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64) -> ()
  return
}
// expected-error @+1 {{passes runtime call 'moert_linear' operands}}
func.func private @moert_linear(!llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, i64)

// -----

// expected-error @+1 {{names runtime call 'moert_softmax', which include/moe/Runtime/CApiCalls.def lacks}}
func.func private @moert_softmax(!llvm.ptr, !llvm.ptr, !llvm.ptr, i64)

// -----

// expected-error @+1 {{declares runtime call 'moert_copy' with results}}
func.func private @moert_copy(!llvm.ptr, !llvm.ptr, !llvm.ptr, i64) -> i32
