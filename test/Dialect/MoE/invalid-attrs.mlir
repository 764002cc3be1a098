// Every error of the dialect's other discardable attributes: the vocabulary
// of character-level models, the Hugging Face config of an imported model
// and the description of a lowered entry point.
// RUN: moe-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{'moe.vocab_chars' must be a string on a builtin.module}}
module attributes {moe.vocab_chars = 3 : i64} {}

// -----

module {
  // expected-error @+1 {{'moe.vocab_chars' must be a string on a builtin.module}}
  func.func @f() attributes {moe.vocab_chars = "ab"} {
    return
  }
}

// -----

// expected-error @+1 {{'moe.vocab_chars' must not be empty}}
module attributes {moe.vocab_chars = ""} {}

// -----

// expected-error @+1 {{'moe.zero_stage' must be the integer 1, 2 or 3 on a builtin.module (a ZeRO stage)}}
module attributes {moe.zero_stage = 4 : i64} {}

// -----

module {
  // expected-error @+1 {{'moe.zero_stage' must be the integer 1, 2 or 3 on a builtin.module}}
  func.func @f() attributes {moe.zero_stage = 1 : i64} {
    return
  }
}

// -----

// expected-error @+1 {{'moe.recompute' must be the string "full" on a builtin.module}}
module attributes {moe.recompute = "selective"} {}

// -----

module {
  // expected-error @+1 {{'moe.recompute' must be the string "full" on a builtin.module}}
  func.func @f() attributes {moe.recompute = "full"} {
    return
  }
}

// -----

// expected-error @+1 {{'moe.hf_config' must be a string on a builtin.module}}
module attributes {moe.hf_config = {model_type = "qwen3_moe"}} {}

// -----

// expected-error @+1 {{'moe.hf_config' must hold a JSON object}}
module attributes {moe.hf_config = "[1, 2]"} {}

// -----

// expected-error @+1 {{'moe.hf_config' must hold a JSON object}}
module attributes {moe.hf_config = "{\"model_type\": "} {}

// -----

// expected-error @+1 {{'moe.entry' must be a dictionary on a function}}
module attributes {moe.entry = {function = "forward"}} {}

// -----

module {
  // expected-error @+1 {{'moe.entry' must be a dictionary on a function}}
  func.func @f() attributes {moe.entry = "forward"} {
    return
  }
}

// -----

// The valid forms.
module attributes {moe.vocab_chars = "\0A !ab"} {
  func.func @f() attributes {moe.entry = {function = "f"}} {
    return
  }
}

// -----

func.func @f() -> tensor<4xf32> {
  // expected-error @+1 {{'moe.split' must list, per dimension, mesh axis names (dp, cp, tp, ep, edp)}}
  %w = moe.param "w" {moe.split = [["xp"]]} : tensor<4xf32>
  return %w : tensor<4xf32>
}

// -----

func.func @f() -> tensor<4xf32> {
  // expected-error @+1 {{'moe.placement' must be a non-negative integer on a moe.param}}
  %w = moe.param "w" {moe.placement = -1 : i64} : tensor<4xf32>
  return %w : tensor<4xf32>
}

// -----

func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'moe.placement' must be a non-negative integer on a moe.param}}
  %y = moe.add %x, %x {moe.placement = 0 : i64} : tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

func.func @f() -> tensor<4xf32> {
  // expected-error @+1 {{'moe.global_shape' must be an array of non-negative sizes}}
  %w = moe.param "w" {moe.global_shape = array<i64: -1>} : tensor<4xf32>
  return %w : tensor<4xf32>
}

// -----

// expected-error @+1 {{'moe.split' must be on a moe.param}}
func.func @f() attributes {moe.split = []} {
  return
}

// -----

// expected-error @+1 {{'moe.partitioned' must be a unit attribute on a builtin.module}}
func.func @f() attributes {moe.partitioned} {
  return
}

// -----

// expected-error @+1 {{unknown moe dialect argument attribute 'moe.shard'}}
func.func @f(%x: tensor<4xf32> {moe.shard = 1}) {
  return
}

// -----

// expected-error @+1 {{'moe.split' must list, per dimension, mesh axis names (dp, cp, tp, ep, edp)}}
func.func @f(%x: tensor<4xf32> {moe.split = [1]}) {
  return
}

// -----

// expected-error @+1 {{unknown moe dialect result attribute 'moe.global_shape'}}
func.func @f() -> (tensor<4xf32> {moe.global_shape = array<i64: 4>}) {
  %w = moe.param "w" : tensor<4xf32>
  return %w : tensor<4xf32>
}
