// moe-export-manifest: the planned entry's description, the mesh and the
// vocabulary become the JSON manifest the executable reads.
// RUN: moe-opt %s --moe-export-manifest -split-input-file -verify-diagnostics | FileCheck %s

// Quotes print as \22 in the string attribute.
// CHECK: llvm.mlir.global external constant @moe_model_manifest(
// CHECK-SAME: \22arena_bytes\22:192
// CHECK-SAME: \22comm_bytes\22:4096
// CHECK-SAME: \22entry\22:\22moe_entry_forward\22
// CHECK-SAME: \22format\22:\22moe-model/1\22
// CHECK-SAME: \22function\22:\22forward\22
// CHECK-SAME: \22ignore_index\22:-100
// CHECK-SAME: \22inputs\22:[{\22dtype\22:\22I32\22,\22name\22:\22tokens\22,\22shape\22:[2,4]}]
// CHECK-SAME: \22largest_buffer\22:{\22at\22:\22model.mlir:3:7\22,\22bytes\22:128}
// CHECK-SAME: \22mesh\22:{\22cp\22:1,\22dp\22:2,\22ep\22:2,\22tp\22:1}
// CHECK-SAME: \22outputs\22:[{\22dtype\22:\22F32\22,\22name\22:\22loss\22,\22shape\22:[]}]
// CHECK-SAME: \22params\22:[{\22dtype\22:\22F32\22,\22name\22:\22model.layers.0.mlp.experts.{e}.up_proj.weight\22,\22offset\22:0,\22shape\22:[4,8,8]}]
// CHECK-SAME: \22unplanned_bytes\22:320
// CHECK-SAME: \22vocab_chars\22:\22\\n ab\22
// CHECK-SAME: \22weights_bytes\22:1024
// CHECK-SAME: \00")
module attributes {moe.mesh = #moe.mesh<dp = 2, ep = 2>, moe.vocab_chars = "\0A ab"} {
  func.func @moe_entry_forward(%ctx: !llvm.ptr, %w: memref<1024xi8>, %arena: memref<192xi8>, %tokens: memref<2x4xi32>, %loss: memref<f32>) attributes {moe.entry = {
      function = "forward", ignore_index = -100 : i64, weights_bytes = 1024 : i64,
      arena_bytes = 192 : i64, unplanned_bytes = 320 : i64, buffers = 4 : i64,
      comm_bytes = 4096 : i64, largest_buffer = {bytes = 128 : i64, at = "model.mlir:3:7"},
      inputs = [{dtype = "I32", name = "tokens", shape = array<i64: 2, 4>}],
      outputs = [{dtype = "F32", name = "loss", shape = array<i64>}],
      params = [{name = "model.layers.0.mlp.experts.{e}.up_proj.weight", offset = 0 : i64, shape = array<i64: 4, 8, 8>}]}} {
    return
  }
}

// -----

// expected-error @+1 {{expected one lowered model entry point, at most one training step, an evaluation step only beside it, at most one decode entry and a prefill entry only beside it (moe-lower-to-runtime), found 0, 0, 0, 0 and 0}}
module {
  func.func @forward() {
    return
  }
}

// -----

module {
  // expected-error @+1 {{has no 'arena_bytes' in its moe.entry description; run moe-lower-to-runtime and moe-plan-memory first}}
  func.func @moe_entry_forward() attributes {moe.entry = {function = "forward", params = [], weights_bytes = 0 : i64, inputs = [], outputs = []}} {
    return
  }
}
