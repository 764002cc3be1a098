// The work moe-print-step-work counts for the cost model, against figures
// worked out by hand from the op shapes (2 FLOPs a multiply-add).
// RUN: moe-opt %s --moe-print-step-work -mlir-print-op-on-diagnostic=false 2>&1 | FileCheck %s
// RUN: moe-opt %s --moe-print-step-work=storage=bf16 -mlir-print-op-on-diagnostic=false 2>&1 | FileCheck %s --check-prefix=BF16
// RUN: moe-opt %s --moe-print-step-work=hardware=h100 -mlir-print-op-on-diagnostic=false 2>&1 | FileCheck %s --check-prefix=TIME
// RUN: not moe-opt %s --moe-print-step-work=hardware=tpu 2>&1 | FileCheck %s --check-prefix=BADHW

// The Shakespeare MoE's training step on dp=2. Its 904,192 parameters
// (2 layers: embedding and head 65 x 128 each, attention, router, 8 experts
// of 3 x 128 x 128) are all updated on both ranks, and their gradients,
// 4 bytes each, are all-reduced over dp, with the loss and token count
// (8 bytes). Under ZeRO stage 3 each rank updates half, and the same
// gradient bytes are reduce-scattered instead.
// RUN: moe-opt %models/shakespeare_moe.mlir --moe-assign-mesh=mesh=dp=2 --moe-expand-capacity --moe-shard --moe-partition --moe-lower-experts --moe-build-train-step --moe-print-step-work -mlir-print-op-on-diagnostic=false -o /dev/null 2>&1 | FileCheck %s --check-prefix=ZERO0
// ZERO0: remark: @train_step: {{[0-9]+}} ops, {{[0-9]+}} flops, {{[0-9]+}} bytes, optimizer 904192 elements
// ZERO0: remark: all_reduce dp: {{[0-9]+}} x, 2 ranks, 3616776 bytes
// RUN: moe-opt %models/shakespeare_moe.mlir --moe-assign-mesh=mesh=dp=2 --moe-expand-capacity --moe-shard --moe-partition --moe-shard-weights --moe-lower-experts --moe-build-train-step=zero=3 --moe-print-step-work -mlir-print-op-on-diagnostic=false -o /dev/null 2>&1 | FileCheck %s --check-prefix=ZERO3
// ZERO3: remark: @train_step: {{[0-9]+}} ops, {{[0-9]+}} flops, {{[0-9]+}} bytes, optimizer 452096 elements
// ZERO3: remark: all_reduce dp: {{[0-9]+}} x, 2 ranks, 8 bytes
// ZERO3: remark: reduce_scatter dp: {{[0-9]+}} x, 2 ranks, 3616768 bytes

// The one model function, on a dp=2, tp=2, ep=2 mesh under ZeRO stage 1.
//
// Arithmetic:
// - linear [4x8, 16] x [16, 16]^T: 2 * 32 * 256 = 16384;
// - its gradient, twice that: 32768;
// - attention, causal, q [1, 8, 2, 4], k and v [1, 8, 1, 4]:
//   2 * 2 heads * 8 * 8 * (4 + 4) / 2 = 1024;
// - grouped SwiGLU over the 64 rows this rank dispatches (not the 128 of the
//   receive bound), each through one expert's 8x16 + 8x16 + 16x8 weights:
//   2 * 64 * 384 = 49152.
// Total 16384 + 32768 + 1024 + 49152 = 99328.
//
// Bytes at 4 an element:
// - linear: x 512, w 256, y 512 elements = 5120;
// - its gradient: dy, x, w in; dx, dw out = 2048 + 2048 + 1024 + 2048 + 1024
//   = 8192;
// - attention: q 64, k 32, v 32, out 64 elements = 768;
// - SwiGLU: 64 rows of 16 in and out (8192) and the weights (3072) = 11264;
// - the all_slice copy: 2 * its 256-element result = 2048.
// Total 5120 + 8192 + 768 + 11264 + 2048 = 27392.
//
// Optimizer: w is 16x16 on this rank, replicated over dp (2 ranks): ZeRO 1
// updates 128 elements here and gathers the fp32 slices (1024 bytes).
//
// CHECK: remark: @step: 5 ops, 99328 flops, 27392 bytes, optimizer 128 elements
// CHECK: remark: all_gather dp: 1 x, 2 ranks, 1024 bytes
// CHECK: remark: all_reduce tp: 2 x, 2 ranks, 4096 bytes
// CHECK: remark: all_to_all ep: 2 x, 2 ranks, 8192 bytes
// CHECK-NOT: remark

// bf16 storage halves every float's bytes; the optimizer's gather stays fp32.
// BF16: remark: @step: 5 ops, 99328 flops, 13696 bytes, optimizer 128 elements
// BF16: remark: all_gather dp: 1 x, 2 ranks, 1024 bytes
// BF16: remark: all_reduce tp: 2 x, 2 ranks, 2048 bytes
// BF16: remark: all_to_all ep: 2 x, 2 ranks, 4096 bytes

// On the H100 profile every op is launch-bound (5 x 8 us); each tp
// all-reduce of 2 ranks costs 2 ring steps of 2 us (its 2 KiB take
// nanoseconds), each all-to-all and the gather one step: 14 us.
// TIME: remark: time on h100: compute 0.00 us, memory 40.0 us, communication 14.0 us, optimizer 0.00 us, total 54.0 us; dominant memory

// BADHW: error: unknown hardware profile 'tpu'

module attributes {moe.mesh = #moe.mesh<dp = 2, tp = 2, ep = 2>, moe.partitioned, moe.zero_stage = 1 : i64} {
  shard.grid @mesh(shape = 2x1x2)
  shard.grid @expert_mesh(shape = 1x2x2)
  func.func @step(%x: tensor<4x8x16xf32>, %dy: tensor<4x8x16xf32>,
                  %q: tensor<1x8x2x4xf32>, %k: tensor<1x8x1x4xf32>,
                  %v: tensor<1x8x1x4xf32>, %rows: tensor<64x16xf32>,
                  %offs: tensor<5xi64>, %gw: tensor<2x8x16xf32>,
                  %uw: tensor<2x8x16xf32>, %dw: tensor<2x16x8xf32>)
      -> (tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<16x16xf32>,
          tensor<1x8x2x4xf32>, tensor<64x16xf32>, tensor<4x8x8xf32>) {
    %w = moe.param "w" {moe.global_shape = array<i64: 32, 16>, moe.split = [["tp"], []]} : tensor<16x16xf32>
    %y = moe.linear %x, %w : (tensor<4x8x16xf32>, tensor<16x16xf32>) -> tensor<4x8x16xf32>
    %r = shard.all_reduce %y on @mesh grid_axes = [2] : tensor<4x8x16xf32> -> tensor<4x8x16xf32>
    %dx, %dwt = moe.linear_grad %dy, %x, %w : (tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<16x16xf32>) -> (tensor<4x8x16xf32>, tensor<16x16xf32>)
    %rdx = shard.all_reduce %dx on @mesh grid_axes = [2] : tensor<4x8x16xf32> -> tensor<4x8x16xf32>
    %a = moe.attention %q, %k, %v {causal} : (tensor<1x8x2x4xf32>, tensor<1x8x1x4xf32>, tensor<1x8x1x4xf32>) -> tensor<1x8x2x4xf32>
    %recv, %roffs = moe.dispatch %rows, %offs on @expert_mesh grid_axes = [1] : (tensor<64x16xf32>, tensor<5xi64>) -> (tensor<128x16xf32>, tensor<5xi64>)
    %e = moe.grouped_swiglu %recv, %roffs, %gw, %uw, %dw : (tensor<128x16xf32>, tensor<5xi64>, tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x16x8xf32>) -> tensor<128x16xf32>
    %back = moe.combine %e, %roffs, %offs on @expert_mesh grid_axes = [1] : (tensor<128x16xf32>, tensor<5xi64>, tensor<5xi64>) -> tensor<64x16xf32>
    %s = shard.all_slice %rdx on @mesh grid_axes = [2] slice_axis = 2 : tensor<4x8x16xf32> -> tensor<4x8x8xf32>
    return %r, %rdx, %dwt, %a, %back, %s : tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<16x16xf32>, tensor<1x8x2x4xf32>, tensor<64x16xf32>, tensor<4x8x8xf32>
  }
}
