// Every error of the dialect's other discardable attributes: the vocabulary
// of character-level models and the description of a lowered entry point.
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
