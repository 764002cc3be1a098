// moe-resolve-addresses: a runtime call's pointer to a planned buffer (a view
// of an entry argument at a constant offset, possibly reshaped) becomes one
// getelementptr of that argument's pointer; the views, reshapes and casts
// that only fed pointers are gone. Pointers to anything else stay.
// RUN: moe-opt %s --moe-resolve-addresses -split-input-file | FileCheck %s
// RUN: moe-opt %s --moe-resolve-addresses -split-input-file | FileCheck %s --check-prefix=GONE

func.func private @f(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr)

// CHECK-LABEL: func.func @moe_entry_views(
// CHECK-SAME: %[[CTX:[^:]*]]: !llvm.ptr, %[[W:[^:]*]]: memref<4096xi8>, %[[ARENA:[^:]*]]: memref<8589934592xi8>, %[[OUT:[^:]*]]: memref<4x4xf32>)
// The arguments' pointers, once each, at the top.
// CHECK-DAG: %[[WI:.*]] = memref.extract_aligned_pointer_as_index %[[W]]
// CHECK-DAG: %[[WA:.*]] = arith.index_cast %[[WI]]
// CHECK-DAG: %[[WP:.*]] = llvm.inttoptr %[[WA]] : i64 to !llvm.ptr
// CHECK-DAG: %[[AI:.*]] = memref.extract_aligned_pointer_as_index %[[ARENA]]
// CHECK-DAG: %[[AA:.*]] = arith.index_cast %[[AI]]
// CHECK-DAG: %[[AP:.*]] = llvm.inttoptr %[[AA]] : i64 to !llvm.ptr
// CHECK-DAG: %[[OI:.*]] = memref.extract_aligned_pointer_as_index %[[OUT]]
// CHECK-DAG: %[[OA:.*]] = arith.index_cast %[[OI]]
// CHECK-DAG: %[[OP:.*]] = llvm.inttoptr %[[OA]] : i64 to !llvm.ptr
// Weight at byte 64; arena buffer past 4 GiB (no 32-bit wrap), seen through a
// reshape; the output argument itself.
// CHECK-DAG: %[[C64:.*]] = llvm.mlir.constant(64 : i64) : i64
// CHECK-DAG: %[[WV:.*]] = llvm.getelementptr %[[WP]][%[[C64]]] : (!llvm.ptr, i64) -> !llvm.ptr, i8
// CHECK-DAG: %[[CBIG:.*]] = llvm.mlir.constant(4294967360 : i64) : i64
// CHECK-DAG: %[[AV:.*]] = llvm.getelementptr %[[AP]][%[[CBIG]]] : (!llvm.ptr, i64) -> !llvm.ptr, i8
// CHECK: call @f(%[[CTX]], %[[WV]], %[[AV]], %[[OP]])
// CHECK: return
// The views and the reshape fed only pointers: none is left.
// GONE-LABEL: func.func @moe_entry_views(
// GONE-NOT: memref.view
// GONE-NOT: memref.collapse_shape
// GONE: return
func.func @moe_entry_views(%ctx: !llvm.ptr, %w: memref<4096xi8>, %arena: memref<8589934592xi8>, %out: memref<4x4xf32>) attributes {moe.entry = {function = "views"}} {
  %c64 = arith.constant 64 : index
  %cbig = arith.constant 4294967360 : index
  %wv = memref.view %w[%c64][] : memref<4096xi8> to memref<4x4xf32>
  %av = memref.view %arena[%cbig][] : memref<8589934592xi8> to memref<4x4xf32>
  %flat = memref.collapse_shape %av [[0, 1]] : memref<4x4xf32> into memref<16xf32>
  %i0 = memref.extract_aligned_pointer_as_index %wv : memref<4x4xf32> -> index
  %a0 = arith.index_cast %i0 : index to i64
  %p0 = llvm.inttoptr %a0 : i64 to !llvm.ptr
  %i1 = memref.extract_aligned_pointer_as_index %flat : memref<16xf32> -> index
  %a1 = arith.index_cast %i1 : index to i64
  %p1 = llvm.inttoptr %a1 : i64 to !llvm.ptr
  %i2 = memref.extract_aligned_pointer_as_index %out : memref<4x4xf32> -> index
  %a2 = arith.index_cast %i2 : index to i64
  %p2 = llvm.inttoptr %a2 : i64 to !llvm.ptr
  call @f(%ctx, %p0, %p1, %p2) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr) -> ()
  return
}

// -----

func.func private @g(!llvm.ptr, !llvm.ptr)

// A view at an offset that is not a constant, and a buffer that is not a
// view of an argument, keep their pointers as they were.
// CHECK-LABEL: func.func @moe_entry_unresolved(
// CHECK: %[[V:.*]] = memref.view %{{.*}}[%{{.*}}][]
// CHECK: memref.extract_aligned_pointer_as_index %[[V]]
// CHECK: %[[M:.*]] = memref.alloc()
// CHECK: memref.extract_aligned_pointer_as_index %[[M]]
// CHECK-NOT: llvm.getelementptr
// CHECK: return
func.func @moe_entry_unresolved(%ctx: !llvm.ptr, %w: memref<4096xi8>, %shift: index) attributes {moe.entry = {function = "unresolved"}} {
  %v = memref.view %w[%shift][] : memref<4096xi8> to memref<16xf32>
  %i0 = memref.extract_aligned_pointer_as_index %v : memref<16xf32> -> index
  %a0 = arith.index_cast %i0 : index to i64
  %p0 = llvm.inttoptr %a0 : i64 to !llvm.ptr
  %m = memref.alloc() : memref<16xf32>
  %i1 = memref.extract_aligned_pointer_as_index %m : memref<16xf32> -> index
  %a1 = arith.index_cast %i1 : index to i64
  %p1 = llvm.inttoptr %a1 : i64 to !llvm.ptr
  call @g(%p0, %p1) : (!llvm.ptr, !llvm.ptr) -> ()
  return
}
