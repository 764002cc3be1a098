//===- AutoLayout.cpp - moec --mesh auto: the compiler picks the layout ---===//

#include "AutoLayout.h"

#include "MemoryReport.h"

#include "moe/Transforms/Passes.h"
#include "moe/Transforms/RuntimeABI.h"
#include "moe/Transforms/StepWork.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
namespace json = llvm::json;

namespace moec {

//===----------------------------------------------------------------------===//
// Hardware profiles and manifests
//===----------------------------------------------------------------------===//

std::optional<::moe::HardwareProfile> loadHardwareProfile(llvm::StringRef spec,
                                                          std::string &error) {
  if (const ::moe::HardwareProfile *builtin = ::moe::findHardwareProfile(
          std::string_view(spec.data(), spec.size())))
    return *builtin;
  auto buffer = llvm::MemoryBuffer::getFile(spec);
  if (!buffer) {
    error = "unknown hardware '" + spec.str() +
            "' (expected h100, h200, cpu or a JSON profile file)";
    return std::nullopt;
  }
  llvm::Expected<json::Value> value = json::parse((*buffer)->getBuffer());
  if (!value) {
    error = "hardware profile '" + spec.str() +
            "' is not JSON: " + llvm::toString(value.takeError());
    return std::nullopt;
  }
  const json::Object *object = value->getAsObject();
  if (!object) {
    error = "hardware profile '" + spec.str() + "' is not a JSON object";
    return std::nullopt;
  }
  ::moe::HardwareProfile p;
  p.name = spec.str();
  struct Field {
    const char *key;
    double *real;
    int64_t *integer;
    uint64_t *bytes;
  };
  Field fields[] = {
      {"matmul_flops_f32", &p.matmulFlopsF32, nullptr, nullptr},
      {"matmul_flops_bf16", &p.matmulFlopsBF16, nullptr, nullptr},
      {"memory_bandwidth", &p.memoryBandwidth, nullptr, nullptr},
      {"op_latency", &p.opLatency, nullptr, nullptr},
      {"devices_per_node", nullptr, &p.devicesPerNode, nullptr},
      {"intra_node_bandwidth", &p.intraNodeBandwidth, nullptr, nullptr},
      {"intra_node_latency", &p.intraNodeLatency, nullptr, nullptr},
      {"inter_node_bandwidth", &p.interNodeBandwidth, nullptr, nullptr},
      {"inter_node_latency", &p.interNodeLatency, nullptr, nullptr},
      {"memory_bytes", nullptr, nullptr, &p.memoryBytes},
  };
  for (const auto &[key, v] : *object) {
    if (key == "name") {
      if (std::optional<llvm::StringRef> name = v.getAsString()) {
        p.name = name->str();
        continue;
      }
      error = "hardware profile '" + spec.str() + "': name must be a string";
      return std::nullopt;
    }
    if (llvm::none_of(fields, [&](const Field &f) { return key == f.key; })) {
      error = "hardware profile '" + spec.str() + "': unknown field '" +
              key.str() + "'";
      return std::nullopt;
    }
  }
  for (const Field &f : fields) {
    std::optional<double> number = object->getNumber(f.key);
    if (!number) {
      error = "hardware profile '" + spec.str() + "': missing number '" +
              f.key + "'";
      return std::nullopt;
    }
    if (f.real)
      *f.real = *number;
    else if (f.integer)
      *f.integer = std::isfinite(*number) && *number >= 1 && *number < 1e9
                       ? static_cast<int64_t>(*number)
                       : 0;
    else
      *f.bytes = std::isfinite(*number) && *number >= 1 && *number < 1e19
                     ? static_cast<uint64_t>(*number)
                     : 0;
  }
  std::string invalid = ::moe::validate(p);
  if (!invalid.empty()) {
    error = "hardware profile '" + spec.str() + "': " + invalid;
    return std::nullopt;
  }
  return p;
}

std::optional<json::Object> readManifest(ModuleOp module) {
  auto global = module.lookupSymbol<LLVM::GlobalOp>(mlir::moe::kManifestSymbol);
  if (!global || !global.getValue())
    return std::nullopt;
  auto text = dyn_cast<StringAttr>(*global.getValue());
  if (!text)
    return std::nullopt;
  llvm::Expected<json::Value> value = json::parse(text.getValue().rtrim('\0'));
  if (!value) {
    llvm::consumeError(value.takeError());
    return std::nullopt;
  }
  if (json::Object *object = value->getAsObject())
    return std::move(*object);
  return std::nullopt;
}

//===----------------------------------------------------------------------===//
// The search
//===----------------------------------------------------------------------===//

namespace {

/// "dp=8,ep=8": the mesh's axes of size > 1 ("dp=1" for one rank), then
/// ",etp=N" and ",sp" where the mesh has them.
std::string shortMesh(const ::moe::MeshShape &mesh) {
  std::string text;
  for (::moe::MeshAxis axis : ::moe::kMeshAxes)
    if (mesh.size(axis) > 1)
      text += (text.empty() ? "" : ",") + std::string(::moe::axisName(axis)) +
              "=" + std::to_string(mesh.size(axis));
  if (text.empty())
    text = "dp=1";
  if (mesh.etp > 1)
    text += ",etp=" + std::to_string(mesh.etp);
  return mesh.sp ? text + ",sp" : text;
}

} // namespace

std::string Layout::flags() const {
  std::string text =
      "--mesh " + shortMesh(mesh) + " --zero " + std::to_string(zeroStage);
  if (recompute != "none")
    text += " --recompute " + recompute;
  return text;
}

namespace {

/// Every mesh of `devices` ranks: dp x cp x tp = devices, ep | dp x cp;
/// with tp > 1, with and without sequence parallelism and expert tensor
/// parallelism.
std::vector<::moe::MeshShape> meshesOf(int64_t devices) {
  std::vector<::moe::MeshShape> meshes;
  for (int64_t dp = 1; dp <= devices; ++dp) {
    if (devices % dp)
      continue;
    for (int64_t cp = 1; cp <= devices / dp; ++cp) {
      if ((devices / dp) % cp)
        continue;
      int64_t tp = devices / dp / cp;
      for (int64_t ep = 1; ep <= dp * cp; ++ep) {
        if ((dp * cp) % ep)
          continue;
        meshes.push_back({dp, cp, tp, ep});
        if (tp == 1)
          continue;
        // Sequence parallelism, expert tensor parallelism, and both.
        meshes.push_back({dp, cp, tp, ep, /*sp=*/true});
        meshes.push_back({dp, cp, tp, ep, /*sp=*/false, /*etp=*/tp});
        meshes.push_back({dp, cp, tp, ep, /*sp=*/true, /*etp=*/tp});
      }
    }
  }
  return meshes;
}

/// One layout on the way through the search.
struct Candidate {
  /// Its row of the result: layout, predicted time, what is known of its
  /// memory.
  RankedLayout row;
  size_t mesh = 0; ///< index into the partitioned meshes
  /// Weights, gradients and optimizer state: a lower bound of the memory.
  uint64_t stateBytes = 0;
};

class Search {
public:
  Search(ModuleOp model, const AutoLayoutRequest &request)
      : model(model), request(request) {}

  std::optional<AutoLayoutResult> run(std::string &error);

private:
  LogicalResult runPipeline(ModuleOp module,
                            llvm::function_ref<void(OpPassManager &)> build) {
    PassManager pm(module.getContext());
    build(pm);
    return pm.run(module);
  }

  /// The training step of `layout` on its partitioned mesh, or null.
  OwningOpRef<ModuleOp> buildStep(const Candidate &c) {
    OwningOpRef<ModuleOp> step = partitioned[c.mesh]->clone();
    if (failed(runPipeline(*step, [&](OpPassManager &pm) {
          mlir::moe::buildTrainStepPipeline(pm, request.trainStep,
                                            c.row.layout.zeroStage,
                                            c.row.layout.recompute);
        })))
      return nullptr;
    return step;
  }

  /// The planned bytes a rank of `c` needs; nullopt if planning fails.
  std::optional<uint64_t> planMemory(const Candidate &c) {
    OwningOpRef<ModuleOp> step = buildStep(c);
    ++result.memoryPlans;
    if (!step || failed(runPipeline(*step, [&](OpPassManager &pm) {
          mlir::moe::buildPlanMemoryPipeline(pm, request.storage);
        })))
      return std::nullopt;
    std::optional<json::Object> manifest = readManifest(*step);
    if (!manifest)
      return std::nullopt;
    std::string error;
    std::optional<::moe::RankProgram> program = rankProgram(*manifest, error);
    if (!program)
      return std::nullopt;
    return ::moe::rankMemory(*program).total;
  }

  void rank();
  void checkMemory();
  void findSmallest();

  ModuleOp model;
  const AutoLayoutRequest &request;
  std::vector<::moe::MeshShape> meshes;
  std::vector<OwningOpRef<ModuleOp>> partitioned;
  std::vector<Candidate> candidates;
  /// Per partitioned mesh: its most memory-saving candidate (index into
  /// `candidates`, -1 if none built) and, once planned, its bytes.
  std::vector<int64_t> mostSaving;
  std::vector<std::optional<uint64_t>> mostSavingMemory;
  AutoLayoutResult result;
};

std::optional<AutoLayoutResult> Search::run(std::string &error) {
  if (request.devices < 1) {
    error = "--devices must be 1 or more";
    return std::nullopt;
  }
  // Layouts that do not partition are expected: their diagnostics say why
  // a mesh does not suit the model, which the table summarises.
  ScopedDiagnosticHandler quiet(model.getContext(),
                                [](Diagnostic &) { return success(); });
  std::vector<::moe::MeshShape> all = meshesOf(request.devices);
  result.meshes = static_cast<int64_t>(all.size());
  for (const ::moe::MeshShape &mesh : all) {
    OwningOpRef<ModuleOp> copy = model.clone();
    if (failed(runPipeline(*copy, [&](OpPassManager &pm) {
          mlir::moe::buildPartitionPipeline(pm, mesh.str(),
                                            request.replicaSlots);
        }))) {
      ++result.invalidMeshes;
      continue;
    }
    meshes.push_back(mesh);
    partitioned.push_back(std::move(copy));
  }
  if (partitioned.empty()) {
    error = "no mesh of " + std::to_string(request.devices) +
            " devices splits this model (each axis must divide what it "
            "splits: batch, sequence, heads, experts)";
    return std::nullopt;
  }
  rank();
  if (candidates.empty()) {
    error = "no layout of " + std::to_string(request.devices) +
            " devices builds a training step for this model";
    return std::nullopt;
  }
  checkMemory();
  if (result.chosen < 0)
    findSmallest();
  for (Candidate &c : candidates)
    result.ranked.push_back(std::move(c.row));
  return std::move(result);
}

/// Builds every layout's step and ranks them by predicted time.
void Search::rank() {
  std::vector<int64_t> stages = request.zeroStages;
  if (stages.empty())
    stages = {0, 1, 2, 3};
  std::vector<std::string> modes = request.recomputeModes;
  if (modes.empty())
    modes = {"none", "full"};
  mostSaving.assign(partitioned.size(), -1);
  mostSavingMemory.assign(partitioned.size(), std::nullopt);
  for (size_t m = 0; m < partitioned.size(); ++m) {
    const ::moe::MeshShape &mesh = meshes[m];
    for (int64_t zero : stages) {
      // Stage 1 needs replicas to split over, stages 2 and 3 a dp x cp
      // plane; without a training step there is nothing to split.
      bool replicas = mesh.dp * mesh.cp > 1;
      if (zero > 0 && (!replicas || !request.trainStep))
        continue;
      for (const std::string &mode : modes) {
        if (mode != "none" && !request.trainStep)
          continue;
        Candidate c;
        c.row.layout = {mesh, zero, mode};
        c.mesh = m;
        OwningOpRef<ModuleOp> step = buildStep(c);
        if (!step)
          continue;
        bool trains = static_cast<bool>(step->lookupSymbol("train_step"));
        if (!trains && (zero > 0 || mode != "none"))
          continue;
        FailureOr<::moe::StepWork> work =
            mlir::moe::countStepWork(*step, trains ? "train_step" : "forward",
                                     request.storage == "bf16");
        if (failed(work))
          continue;
        c.row.time = ::moe::predictStepTime(*work, request.hardware);
        double storage = request.storage == "bf16" ? 2 : 4;
        double state = work->parameterElements * 2 * storage;
        if (trains)
          state +=
              8 * work->optimizerElements +
              (request.storage == "bf16" ? 4 : 0) * work->parameterElements;
        c.stateBytes = static_cast<uint64_t>(state);
        // The last stage and mode asked for save the most memory.
        mostSaving[m] = static_cast<int64_t>(candidates.size());
        candidates.push_back(std::move(c));
      }
    }
  }
  std::vector<size_t> order(candidates.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  // Equal predictions keep the simpler layout: fewer features first.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const RankedLayout &x = candidates[a].row, &y = candidates[b].row;
    if (x.time.total != y.time.total)
      return x.time.total < y.time.total;
    if (x.layout.zeroStage != y.layout.zeroStage)
      return x.layout.zeroStage < y.layout.zeroStage;
    return x.layout.recompute == "none" && y.layout.recompute != "none";
  });
  std::vector<Candidate> sorted;
  std::vector<int64_t> position(candidates.size());
  for (size_t i = 0; i < order.size(); ++i) {
    position[order[i]] = static_cast<int64_t>(i);
    sorted.push_back(std::move(candidates[order[i]]));
  }
  candidates = std::move(sorted);
  for (int64_t &index : mostSaving)
    if (index >= 0)
      index = position[index];
}

/// Plans the memory of the fastest layouts until one fits.
void Search::checkMemory() {
  uint64_t limit = request.deviceMemory;
  for (size_t i = 0; i < candidates.size(); ++i) {
    Candidate &c = candidates[i];
    RankedLayout &row = c.row;
    if (c.stateBytes > limit) {
      row.verdict = MemoryVerdict::StateTooLarge;
      row.memory = c.stateBytes;
      continue;
    }
    // A mesh whose most memory-saving layout does not fit is out.
    int64_t best = mostSaving[c.mesh];
    if (best >= 0 && static_cast<size_t>(best) != i) {
      const Candidate &b = candidates[best];
      std::optional<uint64_t> &bestMemory = mostSavingMemory[c.mesh];
      if (!bestMemory && b.stateBytes <= limit)
        bestMemory = planMemory(b);
      uint64_t bound = bestMemory ? *bestMemory : b.stateBytes;
      if (bound > limit) {
        row.verdict = MemoryVerdict::MeshTooLarge;
        row.memory = bound;
        continue;
      }
    }
    std::optional<uint64_t> memory = planMemory(c);
    if (!memory)
      continue;
    if (static_cast<size_t>(best) == i)
      mostSavingMemory[c.mesh] = memory;
    row.memory = *memory;
    row.verdict =
        *memory <= limit ? MemoryVerdict::Fits : MemoryVerdict::TooLarge;
    if (row.verdict == MemoryVerdict::Fits) {
      result.chosen = static_cast<int64_t>(i);
      return;
    }
  }
}

/// Nothing fits: plans each mesh's most memory-saving layout to name the
/// least any layout needs.
void Search::findSmallest() {
  for (size_t m = 0; m < partitioned.size(); ++m) {
    int64_t best = mostSaving[m];
    if (best < 0)
      continue;
    std::optional<uint64_t> &memory = mostSavingMemory[m];
    if (!memory)
      memory = planMemory(candidates[best]);
    if (!memory)
      continue;
    if (!result.smallest || *memory < result.smallest->memory) {
      result.smallest = candidates[best].row;
      result.smallest->memory = *memory;
      result.smallest->verdict = MemoryVerdict::TooLarge;
    }
  }
}

std::string percent(double part, double whole) {
  return llvm::formatv("{0:F0}%", whole > 0 ? 100 * part / whole : 0).str();
}

std::string memoryCell(const RankedLayout &row) {
  std::string bytes = ::moe::formatBytes(row.memory);
  switch (row.verdict) {
  case MemoryVerdict::Unchecked:
    return "not planned";
  case MemoryVerdict::Fits:
    return bytes + ", fits";
  case MemoryVerdict::TooLarge:
    return bytes + ", too large";
  case MemoryVerdict::StateTooLarge:
    return "> " + bytes + " (weights and state)";
  case MemoryVerdict::MeshTooLarge:
    return "> " + bytes + " (the mesh's least)";
  }
  return "";
}

} // namespace

std::optional<AutoLayoutResult> chooseLayout(ModuleOp model,
                                             const AutoLayoutRequest &request,
                                             std::string &error) {
  return Search(model, request).run(error);
}

void printLayoutTable(const AutoLayoutResult &result,
                      const AutoLayoutRequest &request, bool all,
                      llvm::raw_ostream &os) {
  os << "layouts of " << request.devices << " devices on "
     << request.hardware.name << ", "
     << ::moe::formatBytes(request.deviceMemory)
     << " a device: " << result.meshes << " meshes, " << result.invalidMeshes
     << " of them cannot split the model; " << result.ranked.size()
     << " layouts ranked by predicted step time, " << result.memoryPlans
     << (result.memoryPlans == 1 ? " memory plan\n" : " memory plans\n");
  // The rows shown: every layout up to the chosen one and a few after it;
  // of a long run of layouts that do not fit, the first and last few.
  using Row = std::vector<std::string>;
  std::vector<Row> rows = {
      {"", "#", "layout", "step", "dominant term", "memory a rank"}};
  size_t shown =
      result.chosen >= 0 ? static_cast<size_t>(result.chosen) + 4 : 20;
  shown = all ? result.ranked.size() : std::min(shown, result.ranked.size());
  const size_t edge = all ? shown : 10;
  std::optional<std::string> elided;
  for (size_t i = 0; i < shown; ++i) {
    if (shown > 2 * edge + 4 && i == edge) {
      size_t skip = shown - 4 - 2 * edge;
      rows.push_back({"...", std::to_string(skip) + " more that do not fit"});
      i += skip - 1;
      continue;
    }
    const RankedLayout &r = result.ranked[i];
    rows.push_back({static_cast<int64_t>(i) == result.chosen ? "*" : "",
                    std::to_string(i + 1), r.layout.flags(),
                    ::moe::formatSeconds(r.time.total),
                    r.time.dominant.name + " " +
                        percent(r.time.dominant.seconds, r.time.total),
                    memoryCell(r)});
  }
  if (shown < result.ranked.size())
    rows.push_back(
        {"...", std::to_string(result.ranked.size() - shown) + " slower"});
  std::vector<size_t> width(6, 0);
  for (const Row &row : rows)
    if (row.size() == width.size())
      for (size_t c = 0; c < row.size(); ++c)
        width[c] = std::max(width[c], row[c].size());
  for (const Row &row : rows) {
    if (row.size() != width.size()) {
      os << "  " << row[0] << " " << row[1] << "\n";
      continue;
    }
    std::string text;
    for (size_t c = 0; c < row.size(); ++c)
      text += row[c] + std::string(width[c] - row[c].size() + 2, ' ');
    os << llvm::StringRef(text).rtrim() << "\n";
  }
}

} // namespace moec
