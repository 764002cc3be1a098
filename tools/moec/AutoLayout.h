//===- AutoLayout.h - moec --mesh auto: the compiler picks the layout -*- C++
//-*-===//
//
// Enumerates the layouts of a model over a number of devices (every
// dp x cp x tp mesh of that many ranks with every ep that divides dp x cp,
// every ZeRO stage, with and without recompute), partitions the model for
// each mesh, builds each training step and predicts its time with the cost
// model (moe/Support/CostModel.h), then plans the memory of the fastest
// until one fits on a device. The memory plan is the slow part, so it is
// only asked where needed: a layout whose weights, gradients and optimizer
// state alone exceed the device is out without one, and when a mesh's most
// memory-saving layout does not fit, none of its layouts does.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_MOEC_AUTOLAYOUT_H
#define MOE_TOOLS_MOEC_AUTOLAYOUT_H

#include "moe/Support/CostModel.h"
#include "moe/Support/MeshShape.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <optional>
#include <string>
#include <vector>

namespace moec {

/// A built-in profile by name (h100, h200, cpu) or a JSON file with every
/// field of moe::HardwareProfile in snake case; nullopt with `error` set.
std::optional<moe::HardwareProfile> loadHardwareProfile(llvm::StringRef spec,
                                                        std::string &error);

/// The manifest moe-export-manifest embedded in `module`, if readable.
std::optional<llvm::json::Object> readManifest(mlir::ModuleOp module);

/// What the search may choose among, and what it must fit.
struct AutoLayoutRequest {
  int64_t devices = 0;
  uint64_t deviceMemory = 0;
  moe::HardwareProfile hardware;
  std::string storage = "f32";
  int64_t replicaSlots = 0;
  /// Build the training step (else the forward is what runs).
  bool trainStep = true;
  /// Only these ZeRO stages and recompute modes (empty: all).
  std::vector<int64_t> zeroStages;
  std::vector<std::string> recomputeModes;
};

struct Layout {
  moe::MeshShape mesh;
  int64_t zeroStage = 0;
  std::string recompute = "none";
  /// "--mesh dp=8,ep=8 --zero 1 --recompute full" (the moec flags).
  std::string flags() const;
};

/// What the search knows of a layout's memory.
enum class MemoryVerdict {
  Unchecked,     ///< not needed: a faster layout fits
  Fits,          ///< planned, fits
  TooLarge,      ///< planned, does not fit
  StateTooLarge, ///< weights, gradients and optimizer alone do not fit
  MeshTooLarge,  ///< the mesh's most memory-saving layout does not fit
};

struct RankedLayout {
  Layout layout;
  moe::StepTime time;
  MemoryVerdict verdict = MemoryVerdict::Unchecked;
  /// The planned bytes a rank needs (Fits, TooLarge), else the bound that
  /// ruled it out (the state's bytes, or the mesh's best).
  uint64_t memory = 0;
};

struct AutoLayoutResult {
  /// Every layout that partitions, fastest first.
  std::vector<RankedLayout> ranked;
  /// Index of the chosen layout in `ranked`; -1 when none fits.
  int64_t chosen = -1;
  /// Meshes of the device count, and those the model cannot be split over.
  int64_t meshes = 0;
  int64_t invalidMeshes = 0;
  int64_t memoryPlans = 0;
  /// When none fits: the layout that needs the least memory, and its bytes.
  std::optional<RankedLayout> smallest;
};

/// Searches the layouts of `model` (not modified); nullopt with `error` set
/// when the request is malformed or no mesh of `devices` ranks can split
/// the model.
std::optional<AutoLayoutResult> chooseLayout(mlir::ModuleOp model,
                                             const AutoLayoutRequest &request,
                                             std::string &error);

/// The ranked table of --explain: every layout up to the chosen one and a
/// few after it (`all`: every layout), with predicted time, dominant term
/// and memory.
void printLayoutTable(const AutoLayoutResult &result,
                      const AutoLayoutRequest &request, bool all,
                      llvm::raw_ostream &os);

} // namespace moec

#endif // MOE_TOOLS_MOEC_AUTOLAYOUT_H
