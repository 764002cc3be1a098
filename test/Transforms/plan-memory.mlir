// moe-plan-memory: buffers whose lifetimes are disjoint share arena bytes,
// buffers live together never do, and views extend their buffer's life.
// RUN: moe-opt %s --moe-plan-memory -split-input-file | FileCheck %s
// RUN: moe-opt %s --moe-plan-memory=report -split-input-file 2>&1 >/dev/null | FileCheck %s --check-prefix=REPORT

func.func private @use(memref<16xf32>, memref<16xf32>)
func.func private @use2(memref<16xf32>, memref<32xf32>)

// Positions: a [0, 2], b [1, 4], c [3, 6], d [5, 6]. Largest first: d at 0;
// a (disjoint from d) at 0; b (meets a) at 64; c (meets d at 0..128 and b
// at 64..128) at 128. Arena 192 bytes; without reuse 3 * 64 + 128 = 320.
// CHECK-LABEL: func.func @moe_entry_chain(
// CHECK-SAME: %{{.*}}: !llvm.ptr, %{{.*}}: memref<0xi8>, %[[ARENA:.*]]: memref<192xi8>)
// The largest buffer (d, 128 bytes) is named by its location for messages.
// CHECK-SAME: moe.entry = {arena_bytes = 192 : i64, buffers = 4 : i64, function = "chain", largest_buffer = {at = "{{.*}}plan-memory.mlir:{{[0-9]+}}:8", bytes = 128 : i64}, unplanned_bytes = 320 : i64}
// CHECK-NOT: memref.alloc
// CHECK: %[[A:.*]] = memref.view %[[ARENA]][%c0{{.*}}][] : memref<192xi8> to memref<16xf32>
// CHECK: %[[B:.*]] = memref.view %[[ARENA]][%c64{{.*}}][] : memref<192xi8> to memref<16xf32>
// CHECK: call @use(%[[A]], %[[B]])
// CHECK: %[[C:.*]] = memref.view %[[ARENA]][%c128{{.*}}][] : memref<192xi8> to memref<16xf32>
// CHECK: call @use(%[[B]], %[[C]])
// CHECK: %[[D:.*]] = memref.view %[[ARENA]][%c0{{.*}}][] : memref<192xi8> to memref<32xf32>
// CHECK: call @use2(%[[C]], %[[D]])
// REPORT: remark: memory plan: 4 buffers in an arena of 192 bytes (320 without reuse, at least 192 live at once)
func.func @moe_entry_chain(%ctx: !llvm.ptr, %w: memref<0xi8>) attributes {moe.entry = {function = "chain"}} {
  %a = memref.alloc() : memref<16xf32>
  %b = memref.alloc() : memref<16xf32>
  call @use(%a, %b) : (memref<16xf32>, memref<16xf32>) -> ()
  %c = memref.alloc() : memref<16xf32>
  call @use(%b, %c) : (memref<16xf32>, memref<16xf32>) -> ()
  %d = memref.alloc() : memref<32xf32>
  call @use2(%c, %d) : (memref<16xf32>, memref<32xf32>) -> ()
  return
}

// -----

func.func private @use(memref<16xf32>, memref<16xf32>)
func.func private @use4(memref<4x4xf32>, memref<16xf32>)

// %a is used after its allocation only through its reshape %a4 (position
// 5): %c (allocated at 4) must not take its bytes, though it may take those
// of %b (dead after 2); %d, allocated after %a's last use, may.
// CHECK-LABEL: func.func @moe_entry_alias(
// CHECK-SAME: memref<128xi8>
// CHECK: %[[A:.*]] = memref.view %{{.*}}[%c0{{.*}}][]
// CHECK: %[[B:.*]] = memref.view %{{.*}}[%c64{{.*}}][]
// CHECK: memref.expand_shape %[[A]]
// CHECK: %[[C:.*]] = memref.view %{{.*}}[%c64{{.*}}][]
// CHECK: call @use4(
// CHECK: %[[D:.*]] = memref.view %{{.*}}[%c0{{.*}}][]
func.func @moe_entry_alias(%ctx: !llvm.ptr, %w: memref<0xi8>) attributes {moe.entry = {function = "alias"}} {
  %a = memref.alloc() : memref<16xf32>
  %b = memref.alloc() : memref<16xf32>
  call @use(%a, %b) : (memref<16xf32>, memref<16xf32>) -> ()
  %a4 = memref.expand_shape %a [[0, 1]] output_shape [4, 4] : memref<16xf32> into memref<4x4xf32>
  %c = memref.alloc() : memref<16xf32>
  call @use4(%a4, %c) : (memref<4x4xf32>, memref<16xf32>) -> ()
  %d = memref.alloc() : memref<16xf32>
  call @use(%c, %d) : (memref<16xf32>, memref<16xf32>) -> ()
  return
}

// -----

// Functions without moe.entry, and entries planned already, are left alone.
// CHECK-LABEL: func.func @helper(
// CHECK: memref.alloc
// CHECK-LABEL: func.func @moe_entry_done(
// CHECK-SAME: %{{.*}}: memref<64xi8>)
// CHECK-NOT: memref<0xi8>
func.func @helper() {
  %a = memref.alloc() : memref<16xf32>
  return
}
func.func @moe_entry_done(%ctx: !llvm.ptr, %w: memref<0xi8>, %arena: memref<64xi8>) attributes {moe.entry = {function = "done", arena_bytes = 64 : i64}} {
  return
}
