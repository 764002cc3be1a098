// Every diagnostic of moe-plan-memory.
// RUN: moe-opt %s --moe-plan-memory -split-input-file -verify-diagnostics

func.func private @use(memref<?xf32>)

func.func @moe_entry_dynamic(%ctx: !llvm.ptr, %w: memref<0xi8>, %n: index) attributes {moe.entry = {function = "dynamic"}} {
  // expected-error @+1 {{cannot be planned: the arena holds only statically shaped, dense buffers}}
  %a = memref.alloc(%n) : memref<?xf32>
  call @use(%a) : (memref<?xf32>) -> ()
  return
}

// -----

func.func @moe_entry_huge(%ctx: !llvm.ptr, %w: memref<0xi8>) attributes {moe.entry = {function = "huge"}} {
  // expected-error @+1 {{cannot be planned: 'memref<4611686018427387904xf32>' would hold more than 2^63 bytes}}
  %a = memref.alloc() : memref<4611686018427387904xf32>
  return
}

// -----

// Two buffers of 2^62 bytes each: the arena could reach 2^63.
func.func @moe_entry_together(%ctx: !llvm.ptr, %w: memref<0xi8>) attributes {moe.entry = {function = "together"}} {
  // expected-error @+1 {{cannot be planned: the arena's buffers together exceed 2^63 bytes; the largest, this one, holds 4611686018427387904 bytes}}
  %a = memref.alloc() : memref<1152921504606846976xf32>
  %b = memref.alloc() : memref<1152921504606846976xf32>
  return
}
