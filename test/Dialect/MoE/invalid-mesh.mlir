// Every error of the `moe.mesh` module attribute: the mesh's own rules and
// the checks that the model can be sharded over it.
// RUN: moe-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{mesh axis 'tp' must have a positive size, but got 0}}
module attributes {moe.mesh = #moe.mesh<tp = 0>} {}

// -----

// expected-error @+1 {{mesh ep=4 must divide dp*cp=2 (expert parallelism borrows its ranks from dp and cp)}}
module attributes {moe.mesh = #moe.mesh<dp = 2, tp = 2, ep = 4>} {}

// -----

// expected-error @+1 {{mesh entry 'sp' (sequence parallelism) needs tp > 1}}
module attributes {moe.mesh = #moe.mesh<dp = 2, sp = true>} {}

// -----

// expected-error @+2 {{expected `true` or `false`}}
// expected-error @+1 {{failed to parse MoE_MeshAttr parameter 'sp' which is to be a `bool`}}
module attributes {moe.mesh = #moe.mesh<tp = 2, sp = 1>} {}

// -----

// expected-error @+1 {{'moe.mesh' must be a #moe.mesh attribute, but got 4 : i64}}
module attributes {moe.mesh = 4} {}

// -----

module {
  // expected-error @+1 {{'moe.mesh' must be attached to a builtin.module}}
  func.func @f() attributes {moe.mesh = #moe.mesh<dp = 2>} {
    return
  }
}

// -----

// expected-error @+1 {{unknown moe dialect attribute 'moe.meshes'}}
module attributes {moe.meshes = #moe.mesh<dp = 2>} {}

// -----

module attributes {moe.mesh = #moe.mesh<dp = 4>} {
  func.func @f(%t: tensor<2x8xi32>, %e: tensor<16x4xf32>) -> tensor<2x8x4xf32> {
    // expected-error @+1 {{cannot shard over the mesh: the batch size (2) is not divisible by dp = 4}}
    %x = moe.embedding %t, %e : (tensor<2x8xi32>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
    return %x : tensor<2x8x4xf32>
  }
}

// -----

module attributes {moe.mesh = #moe.mesh<cp = 3>} {
  func.func @f(%t: tensor<2x8xi32>, %e: tensor<16x4xf32>) -> tensor<2x8x4xf32> {
    // expected-error @+1 {{cannot shard over the mesh: the sequence length (8) is not divisible by cp = 3}}
    %x = moe.embedding %t, %e : (tensor<2x8xi32>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
    return %x : tensor<2x8x4xf32>
  }
}

// -----

// Sequence parallelism splits each cp rank's part of the sequence over tp.
module attributes {moe.mesh = #moe.mesh<cp = 2, tp = 3, sp = true>} {
  func.func @f(%t: tensor<2x8xi32>, %e: tensor<16x4xf32>) -> tensor<2x8x4xf32> {
    // expected-error @+1 {{cannot shard over the mesh: the sequence length (8) is not divisible by cp * tp (sequence parallel) = 6}}
    %x = moe.embedding %t, %e : (tensor<2x8xi32>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
    return %x : tensor<2x8x4xf32>
  }
}

// -----

module attributes {moe.mesh = #moe.mesh<cp = 4>} {
  func.func @f(%q: tensor<2x6x8x8xf32>, %k: tensor<2x6x4x8xf32>) -> tensor<2x6x8x8xf32> {
    // expected-error @+1 {{cannot shard over the mesh: the sequence length (6) is not divisible by cp = 4}}
    %y = moe.attention %q, %k, %k {causal} : (tensor<2x6x8x8xf32>, tensor<2x6x4x8xf32>, tensor<2x6x4x8xf32>) -> tensor<2x6x8x8xf32>
    return %y : tensor<2x6x8x8xf32>
  }
}

// -----

module attributes {moe.mesh = #moe.mesh<tp = 4>} {
  func.func @f(%q: tensor<2x8x6x8xf32>, %k: tensor<2x8x2x8xf32>) -> tensor<2x8x6x8xf32> {
    // expected-error @+2 {{cannot shard over the mesh: the number of query heads (6) is not divisible by tp * cp = 4}}
    // expected-error @+1 {{cannot shard over the mesh: the number of key/value heads (2) is not divisible by tp * cp = 4}}
    %y = moe.attention %q, %k, %k {causal} : (tensor<2x8x6x8xf32>, tensor<2x8x2x8xf32>, tensor<2x8x2x8xf32>) -> tensor<2x8x6x8xf32>
    return %y : tensor<2x8x6x8xf32>
  }
}

// -----

// Ulysses context parallelism splits the heads a second time.
module attributes {moe.mesh = #moe.mesh<dp = 2, cp = 2, tp = 2>} {
  func.func @f(%q: tensor<2x8x4x8xf32>, %k: tensor<2x8x2x8xf32>) -> tensor<2x8x4x8xf32> {
    // expected-error @+1 {{cannot shard over the mesh: the number of key/value heads (2) is not divisible by tp * cp = 4}}
    %y = moe.attention %q, %k, %k {causal} : (tensor<2x8x4x8xf32>, tensor<2x8x2x8xf32>, tensor<2x8x2x8xf32>) -> tensor<2x8x4x8xf32>
    return %y : tensor<2x8x4x8xf32>
  }
}

// -----

module attributes {moe.mesh = #moe.mesh<tp = 4>} {
  func.func @f(%x: tensor<2x8xf32>, %g: tensor<6x8xf32>, %d: tensor<8x6xf32>) -> tensor<2x8xf32> {
    // expected-error @+1 {{cannot shard over the mesh: the MLP intermediate size (6) is not divisible by tp = 4}}
    %y = moe.mlp %x, %g, %g, %d : (tensor<2x8xf32>, tensor<6x8xf32>, tensor<6x8xf32>, tensor<8x6xf32>) -> tensor<2x8xf32>
    return %y : tensor<2x8xf32>
  }
}

// -----

module attributes {moe.mesh = #moe.mesh<tp = 4>} {
  func.func @f(%x: tensor<2x8xf32>, %g: tensor<6x8xf32>, %d: tensor<8x6xf32>) -> tensor<2x8xf32> {
    // expected-error @+1 {{cannot shard over the mesh: the shared-expert intermediate size (6) is not divisible by tp = 4}}
    %y = moe.shared_experts %x, %g, %g, %d : (tensor<2x8xf32>, tensor<6x8xf32>, tensor<6x8xf32>, tensor<8x6xf32>) -> tensor<2x8xf32>
    return %y : tensor<2x8xf32>
  }
}

// -----

module attributes {moe.mesh = #moe.mesh<dp = 4, ep = 4>} {
  func.func @f(%x: tensor<8x6xf32>, %w: tensor<8x2xf32>, %i: tensor<8x2xi32>, %g: tensor<6x10x6xf32>, %d: tensor<6x6x10xf32>) -> tensor<8x6xf32> {
    // expected-error @+1 {{cannot shard over the mesh: the number of experts (6) is not divisible by ep = 4}}
    %y = moe.experts %x, %w, %i, %g, %g, %d : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<6x10x6xf32>, tensor<6x10x6xf32>, tensor<6x6x10xf32>) -> tensor<8x6xf32>
    return %y : tensor<8x6xf32>
  }
}

// -----

// Expert tensor parallelism splits each expert's intermediate features.
module attributes {moe.mesh = #moe.mesh<tp = 4, etp = 4>} {
  func.func @f(%x: tensor<8x6xf32>, %w: tensor<8x2xf32>, %i: tensor<8x2xi32>, %g: tensor<4x10x6xf32>, %d: tensor<4x6x10xf32>) -> tensor<8x6xf32> {
    // expected-error @+1 {{cannot shard over the mesh: the expert intermediate size (10) is not divisible by etp = 4}}
    %y = moe.experts %x, %w, %i, %g, %g, %d : (tensor<8x6xf32>, tensor<8x2xf32>, tensor<8x2xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
    return %y : tensor<8x6xf32>
  }
}

// -----

// expected-error @+1 {{mesh etp=2 must be 1 or tp=4 (the experts are split over all of tp or not at all)}}
module attributes {moe.mesh = #moe.mesh<tp = 4, etp = 2>} {}
