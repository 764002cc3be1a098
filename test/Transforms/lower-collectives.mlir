// moe-lower-to-runtime turns the collectives of moe-partition into runtime
// calls with the mesh group (MOERT_GROUP_*: dp 0, cp 1, tp 2, ep 3, edp 4,
// dp x cp 5), the element type (f32 0, i32 1, i64 2) and the tensor layout
// around the axis (outer, size, inner); the grids go away.
// RUN: moe-opt %s --moe-lower-to-runtime --split-input-file --verify-diagnostics | FileCheck %s
// Under bf16 storage the f32 tensors travel as bf16 (MOERT_DTYPE_BF16 = 3);
// ids stay i32, and the token rows of dispatch and combine follow the
// storage the entry set.
// RUN: moe-opt %s --moe-lower-to-runtime="storage=bf16" --split-input-file --verify-diagnostics | FileCheck %s --check-prefix=BF16

// The entry records its largest collective scratch: the all-gather's
// reordering buffer (its 8x16 f32 result) and the all-to-all's packed and
// received pieces (2 x its 4x8x2 f32 input) are 512 bytes each.
// CHECK-NOT: shard.grid
// CHECK-LABEL: func.func @moe_entry_collectives
// CHECK-SAME: comm_bytes = 512 : i64
// CHECK: call @moert_all_reduce_sum(%{{.*}}, %c2_i32{{[_0-9]*}}, %c0_i32{{[_0-9]*}}, %{{.*}}, %{{.*}}, %c64_i64{{[_0-9]*}})
// CHECK: call @moert_all_gather(%{{.*}}, %c0_i32{{[_0-9]*}}, %c0_i32{{[_0-9]*}}, %{{.*}}, %{{.*}}, %c8_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}}, %c1_i64{{[_0-9]*}})
// CHECK: call @moert_all_to_all(%{{.*}}, %c1_i32{{[_0-9]*}}, %c0_i32{{[_0-9]*}}, %{{.*}}, %{{.*}}, %c4_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}}, %c2_i64{{[_0-9]*}}, %c1_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}})
// CHECK: call @moert_all_slice(%{{.*}}, %c5_i32{{[_0-9]*}}, %c1_i32{{[_0-9]*}}, %{{.*}}, %{{.*}}, %c8_i64{{[_0-9]*}}, %c4_i64{{[_0-9]*}}, %c1_i64{{[_0-9]*}})
// Without a placement table: table -1, experts 4, slots 4 (2 ranks x 2).
// CHECK: call @moert_dispatch(%{{.*}}, %c3_i32{{[_0-9]*}}, %c-1_i64{{[_0-9]*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %c4_i64{{[_0-9]*}}, %c4_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}}, %c16_i64{{[_0-9]*}})
// CHECK: call @moert_grouped_swiglu(%{{.*}}, %c16_i64{{[_0-9]*}}, %c4_i64{{[_0-9]*}}, %c2_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}}, %c4_i64{{[_0-9]*}})
// CHECK: call @moert_combine(%{{.*}}, %c3_i32{{[_0-9]*}}, %c-1_i64{{[_0-9]*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %c4_i64{{[_0-9]*}}, %c4_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}})
// BF16-LABEL: func.func @moe_entry_collectives
// BF16-SAME: memref<8x8xbf16>
// BF16-SAME: comm_bytes = 256 : i64
// BF16: call @moert_set_storage(%{{.*}}, %c3_i32{{[_0-9]*}})
// BF16: call @moert_all_reduce_sum(%{{.*}}, %c2_i32{{[_0-9]*}}, %c3_i32{{[_0-9]*}}, %{{.*}}, %{{.*}}, %c64_i64{{[_0-9]*}})
// BF16: call @moert_all_gather(%{{.*}}, %c0_i32{{[_0-9]*}}, %c3_i32{{[_0-9]*}},
// BF16: call @moert_all_to_all(%{{.*}}, %c1_i32{{[_0-9]*}}, %c3_i32{{[_0-9]*}},
// BF16: call @moert_all_slice(%{{.*}}, %c5_i32{{[_0-9]*}}, %c1_i32{{[_0-9]*}},
// BF16: memref.alloc() {{.*}} : memref<16x8xbf16>
// BF16: call @moert_dispatch(
module {
  shard.grid @mesh(shape = 2x2x2)
  shard.grid @expert_mesh(shape = 2x2x2)
  func.func @collectives(%x: tensor<8x8xf32>, %q: tensor<4x8x2xf32>, %ids: tensor<8x4xi32>, %e: tensor<8x1xi32>) -> (tensor<8x8xf32>, tensor<8x16xf32>, tensor<8x4x2xf32>, tensor<8x1xi32>, tensor<8x8xf32>) {
    %r = shard.all_reduce %x on @mesh grid_axes = [2] : tensor<8x8xf32> -> tensor<8x8xf32>
    %g = shard.all_gather %x on @mesh grid_axes = [0] gather_axis = 1 : tensor<8x8xf32> -> tensor<8x16xf32>
    %a = shard.all_to_all %q on @mesh grid_axes = [1] split_axis = 1 concat_axis = 0 : tensor<4x8x2xf32> -> tensor<8x4x2xf32>
    %s = shard.all_slice %ids on @mesh grid_axes = [0, 1] slice_axis = 1 : tensor<8x4xi32> -> tensor<8x1xi32>
    %rows, %offs, %slots = moe.permute %x, %e experts 4 : (tensor<8x8xf32>, tensor<8x1xi32>) -> (tensor<8x8xf32>, tensor<5xi64>, tensor<8xi32>)
    %recv, %roffs = moe.dispatch %rows, %offs on @expert_mesh grid_axes = [1] : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<16x8xf32>, tensor<5xi64>)
    %gw = moe.param "e.{e}.gate" : tensor<2x4x8xf32>
    %uw = moe.param "e.{e}.up" : tensor<2x4x8xf32>
    %dw = moe.param "e.{e}.down" : tensor<2x8x4xf32>
    %y = moe.grouped_swiglu %recv, %roffs, %gw, %uw, %dw : (tensor<16x8xf32>, tensor<5xi64>, tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x8x4xf32>) -> tensor<16x8xf32>
    %back = moe.combine %y, %roffs, %offs on @expert_mesh grid_axes = [1] : (tensor<16x8xf32>, tensor<5xi64>, tensor<5xi64>) -> tensor<8x8xf32>
    return %r, %g, %a, %s, %back : tensor<8x8xf32>, tensor<8x16xf32>, tensor<8x4x2xf32>, tensor<8x1xi32>, tensor<8x8xf32>
  }
}

// -----

module {
  shard.grid @mesh(shape = 2x2x2)
  func.func @f(%x: tensor<8x8xf32>) -> tensor<8x8xf32> {
    // expected-error @+1 {{has no runtime communicator for these axes of @mesh}}
    %r = shard.all_reduce %x on @mesh grid_axes = [1, 2] : tensor<8x8xf32> -> tensor<8x8xf32>
    return %r : tensor<8x8xf32>
  }
}

// -----

module {
  shard.grid @mesh(shape = 2x2x2)
  func.func @f(%x: tensor<8x8xf32>) -> tensor<8x8xf32> {
    // expected-error @+1 {{only sums without a change of type reach the runtime}}
    %r = shard.all_reduce %x on @mesh grid_axes = [2] reduction = max : tensor<8x8xf32> -> tensor<8x8xf32>
    return %r : tensor<8x8xf32>
  }
}

// -----

// With placement table 2 and 3 slots per rank: the call names the table and
// the group's 6 slots (the received offsets' 7 entries less one).
// CHECK-LABEL: func.func @moe_entry_placed
// CHECK: call @moert_dispatch(%{{.*}}, %c3_i32{{[_0-9]*}}, %c2_i64{{[_0-9]*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %c4_i64{{[_0-9]*}}, %c6_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}}, %c24_i64{{[_0-9]*}})
// CHECK: call @moert_combine(%{{.*}}, %c3_i32{{[_0-9]*}}, %c2_i64{{[_0-9]*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %c4_i64{{[_0-9]*}}, %c6_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}})
module {
  shard.grid @expert_mesh(shape = 2x2x2)
  func.func @placed(%x: tensor<8x8xf32>, %e: tensor<8x1xi32>) -> tensor<8x8xf32> {
    %rows, %offs, %slots = moe.permute %x, %e experts 4 : (tensor<8x8xf32>, tensor<8x1xi32>) -> (tensor<8x8xf32>, tensor<5xi64>, tensor<8xi32>)
    %recv, %roffs = moe.dispatch %rows, %offs on @expert_mesh grid_axes = [1] placement 2 : (tensor<8x8xf32>, tensor<5xi64>) -> (tensor<24x8xf32>, tensor<7xi64>)
    %gw = moe.param "e.{e}.gate" : tensor<3x4x8xf32>
    %uw = moe.param "e.{e}.up" : tensor<3x4x8xf32>
    %dw = moe.param "e.{e}.down" : tensor<3x8x4xf32>
    %y = moe.grouped_swiglu %recv, %roffs, %gw, %uw, %dw : (tensor<24x8xf32>, tensor<7xi64>, tensor<3x4x8xf32>, tensor<3x4x8xf32>, tensor<3x8x4xf32>) -> tensor<24x8xf32>
    %back = moe.combine %y, %roffs, %offs on @expert_mesh grid_axes = [1] placement 2 : (tensor<24x8xf32>, tensor<7xi64>, tensor<5xi64>) -> tensor<8x8xf32>
    return %back : tensor<8x8xf32>
  }
}

// -----

// ZeRO stage 3's gradient reduce-scatter: over dp x cp (group 5). Along the
// outermost axis the pieces are contiguous already; along an inner one they
// are packed first, in a scratch the size of the input (8x8 f32: 256 bytes).
// CHECK-LABEL: func.func @moe_entry_scattered
// CHECK-SAME: comm_bytes = 256 : i64
// CHECK: call @moert_reduce_scatter_sum(%{{.*}}, %c5_i32{{[_0-9]*}}, %c0_i32{{[_0-9]*}}, %{{.*}}, %{{.*}}, %c1_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}})
// CHECK: call @moert_reduce_scatter_sum(%{{.*}}, %c0_i32{{[_0-9]*}}, %c0_i32{{[_0-9]*}}, %{{.*}}, %{{.*}}, %c8_i64{{[_0-9]*}}, %c8_i64{{[_0-9]*}}, %c1_i64{{[_0-9]*}})
// BF16-LABEL: func.func @moe_entry_scattered
// BF16-SAME: comm_bytes = 128 : i64
// BF16: call @moert_reduce_scatter_sum(%{{.*}}, %c5_i32{{[_0-9]*}}, %c3_i32{{[_0-9]*}},
module {
  shard.grid @mesh(shape = 2x2x2)
  func.func @scattered(%x: tensor<8x8xf32>) -> (tensor<2x8xf32>, tensor<8x4xf32>) {
    %rows = shard.reduce_scatter %x on @mesh grid_axes = [0, 1] scatter_axis = 0 : tensor<8x8xf32> -> tensor<2x8xf32>
    %cols = shard.reduce_scatter %x on @mesh grid_axes = [0] scatter_axis = 1 : tensor<8x8xf32> -> tensor<8x4xf32>
    return %rows, %cols : tensor<2x8xf32>, tensor<8x4xf32>
  }
}

// -----

module {
  shard.grid @mesh(shape = 2x2x2)
  func.func @f(%x: tensor<8x8xf32>) -> tensor<4x8xf32> {
    // expected-error @+1 {{only sums reach the runtime}}
    %r = shard.reduce_scatter %x on @mesh grid_axes = [0] reduction = max scatter_axis = 0 : tensor<8x8xf32> -> tensor<4x8xf32>
    return %r : tensor<4x8xf32>
  }
}
