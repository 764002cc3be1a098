//===- MemoryReport.h - The bytes one rank holds ----------------*- C++ -*-===//
//
// Plain C++ (no LLVM/MLIR): moec --memory-report computes it from the
// compiled model's manifest, and its tests check it against an independent
// count. The figures are what the executable's driver allocates for one
// rank (lib/Runtime/driver/ModelRun.cpp, Optimizer.cpp), on the backend's
// memory: the GPU's with --backend cuda, host memory on the CPU.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_SUPPORT_MEMORYREPORT_H
#define MOE_SUPPORT_MEMORYREPORT_H

#include <cstdint>
#include <string>

namespace moe {

/// What the manifest of one rank's program says.
struct RankProgram {
  /// Weights are stored as bf16 (else f32); the driver then keeps an fp32
  /// master copy and fp32 gradients beside the bf16 ones.
  bool bf16 = false;
  /// The weights blob in the storage type (manifest weights_bytes).
  uint64_t weightsBytes = 0;
  /// The same parameters at 4 bytes an element, each 64-byte aligned (the
  /// driver's fp32 blob: master weights, gradients, AdamW moments).
  uint64_t fp32WeightsBytes = 0;
  /// One AdamW moment's bytes: fp32WeightsBytes, or under ZeRO stage 1
  /// the slices this rank keeps (OptimizerShards.h).
  uint64_t momentBytes = 0;
  /// Under bf16 storage, the optimizer still needs an fp32 gradient blob
  /// (an expert layer has spare slots for replicas, whose gradients are
  /// reduced in fp32); else it widens the bf16 gradients a chunk at a time.
  bool fp32Grads = false;
  /// The largest parameter's elements (bounds that chunk).
  uint64_t largestParamElements = 0;
  /// ZeRO stage 1: the scratch that gathers one parameter's updated slices
  /// (the largest parameter's, sent slice and received block); else 0.
  uint64_t shardGatherBytes = 0;
  uint64_t forwardArenaBytes = 0;
  uint64_t forwardCommBytes = 0;
  /// The model has a training step.
  bool trains = false;
  uint64_t trainArenaBytes = 0;
  uint64_t trainCommBytes = 0;
  /// The model has an evaluation step (the loss without the logits), which
  /// a training run evaluates with instead of the forward.
  bool evaluates = false;
  uint64_t evalArenaBytes = 0;
  uint64_t evalCommBytes = 0;
  /// Elements of the logits output (whole on every rank) and of one input
  /// (tokens, or labels: the rank's block).
  uint64_t logitsElements = 0;
  uint64_t inputElements = 0;
};

/// One rank's bytes, by use.
struct RankMemory {
  /// The weights in the storage type.
  uint64_t weights = 0;
  /// Gradients (training): f32; under bf16 storage the bf16 blob the step
  /// writes and one chunk of it widened (or the f32 blob too, see
  /// RankProgram::fp32Grads).
  uint64_t gradients = 0;
  /// AdamW's two fp32 moments (training; under ZeRO stage 1 this rank's
  /// slices of them), and the fp32 master weights under bf16 storage.
  uint64_t optimizer = 0;
  /// A forward run: its arena, the logits (f32, plus the bf16 copy under
  /// bf16 storage), tokens, labels and loss.
  uint64_t activationsForward = 0;
  /// A training run: one arena for the largest entry, plus the inputs and,
  /// when it evaluates with the forward (no evaluation step), the logits.
  uint64_t activationsTrain = 0;
  /// The largest scratch one collective allocates while it runs (under
  /// ZeRO stage 1 also the gathering of the updated slices).
  uint64_t comm = 0;
  /// weights + gradients + optimizer + comm + the activations of a training
  /// run (of a forward run for a model without a training step).
  uint64_t total = 0;
};

RankMemory rankMemory(const RankProgram &program);

/// "1.50 GiB", "12.0 MiB", "640 B": binary units, three significant digits.
std::string formatBytes(uint64_t bytes);

} // namespace moe

#endif // MOE_SUPPORT_MEMORYREPORT_H
