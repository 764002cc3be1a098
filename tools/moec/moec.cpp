//===- moec.cpp - Compile an moe model into an executable -----------------===//
//
//   moec model.mlir -o model        # executable: ./model forward|generate|...
//   moec model.mlir --emit=llvm     # stop at LLVM IR (also: mlir, obj)
//
// Runs the pipeline (verify, canonicalize, moe-lower-to-llvm: runtime calls,
// memory plan, manifest, LLVM dialect), translates to LLVM IR, emits an
// x86-64 object with LLVM's code generator and links it with the runtime.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Transforms/Passes.h"
#include "moe/Transforms/RuntimeABI.h"
#include "moec/LinkConfig.h"

#include "AutoLayout.h"
#include "MemoryReport.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"

using namespace mlir;
namespace cl = llvm::cl;

namespace {

enum class Emit { Mlir, Llvm, Obj, Exe };

cl::OptionCategory category("moec options");

cl::opt<std::string> inputFile(cl::Positional, cl::desc("<model.mlir>"),
                               cl::Required, cl::cat(category));
cl::opt<std::string>
    outputFile("o",
               cl::desc("Output path (default: the input's name without "
                        ".mlir, plus .ll/.o for --emit=llvm/obj; '-' writes "
                        "text output to stdout)"),
               cl::value_desc("path"), cl::cat(category));
cl::opt<Emit> emit(
    "emit", cl::desc("What to produce (default: exe)"),
    cl::values(clEnumValN(Emit::Mlir, "mlir",
                          "the module in the LLVM dialect, after the whole "
                          "pass pipeline"),
               clEnumValN(Emit::Llvm, "llvm", "LLVM IR text"),
               clEnumValN(Emit::Obj, "obj", "an x86-64 object file"),
               clEnumValN(Emit::Exe, "exe",
                          "an executable linked with the runtime")),
    cl::init(Emit::Exe), cl::cat(category));
cl::opt<bool> printPlan("print-memory-plan",
                        cl::desc("Print the memory plan: buffers, arena "
                                 "bytes, bytes without reuse"),
                        cl::init(false), cl::cat(category));
cl::opt<std::string> mesh(
    "mesh",
    cl::desc("Compile for this DP x CP x TP x EP mesh, e.g. dp=2,ep=2, and "
             "with ,sp sequence parallelism over tp (default: the model's "
             "moe.mesh, else one rank); the executable "
             "then runs under mpirun with dp*cp*tp ranks. `auto` lets the "
             "compiler choose the mesh, ZeRO stage and recompute for "
             "--devices N (see --explain)"),
    cl::value_desc("axis=size,...[,sp]"), cl::cat(category));
cl::opt<int64_t> replicaSlots(
    "replica-slots",
    cl::desc("Spare expert slots per EP rank and MoE layer, for replicas of "
             "hot experts that train --placement-policy replicate-hot places "
             "at run time (default 0: E/n slots, experts can only move)"),
    cl::value_desc("R"), cl::init(0), cl::cat(category));
cl::opt<bool> trainStep(
    "train-step",
    cl::desc("Build the training step too, so that the executable can "
             "`train` (default: when the model returns a scalar loss)"),
    cl::init(true), cl::cat(category));
cl::opt<std::string> storage(
    "storage",
    cl::desc("Storage type of activations, weights and gradients: f32 "
             "(default) or bf16 (computed in fp32; the driver keeps fp32 "
             "master weights and optimizer state)"),
    cl::value_desc("f32|bf16"), cl::init("f32"), cl::cat(category));
cl::opt<int64_t> zeroStage(
    "zero",
    cl::desc("ZeRO stage: 0 (default); 1 to split each weight's AdamW "
             "state (and the update) over its data-parallel replicas, the "
             "dp x cp ranks for dense weights and the edp ranks for "
             "experts; 2 to split the dense weights over dp x cp between "
             "steps (with their gradients, master weights and AdamW state), "
             "gathered whole once a step; 3 to keep them split during the "
             "step too, each gathered just before the op that reads it"),
    cl::value_desc("0|1|2|3"), cl::init(0), cl::cat(category));
cl::opt<std::string> recompute(
    "recompute",
    cl::desc("Activation recompute in the training step: none (default), or "
             "full to keep only the activations between blocks and run each "
             "block's forward again just before its backward"),
    cl::value_desc("none|full"), cl::init("none"), cl::cat(category));
cl::opt<int64_t> decodeBatch(
    "decode-batch",
    cl::desc("Sequences the executable generates together with its "
             "key/value cache (@prefill and @decode; default 1, 0 builds "
             "neither; models without a mesh)"),
    cl::value_desc("N"), cl::init(1), cl::cat(category));
cl::opt<int64_t> maxSeq(
    "max-seq",
    cl::desc("Positions the key/value cache holds per sequence (default: "
             "the model's sequence length)"),
    cl::value_desc("L"), cl::init(0), cl::cat(category));
cl::opt<bool> withCuda(
    "cuda",
    cl::desc("Link the CUDA backend too, so that the executable can run with "
             "--backend cuda (needs a build with the CUDA toolkit)"),
    cl::init(false), cl::cat(category));
cl::opt<std::string> memoryReport(
    "memory-report", cl::ValueOptional,
    cl::desc("Print the bytes each rank needs (weights, gradients, optimizer "
             "state, activations, collective scratch, total) as a table, or "
             "as JSON with --memory-report=json. Alone (no -o, no --emit), "
             "only reports"),
    cl::value_desc("text|json"), cl::cat(category));
cl::opt<std::string> maxMemory(
    "max-memory",
    cl::desc("Fail if a rank would need more than this many bytes (e.g. "
             "80GB, 141GiB, 5e9)"),
    cl::value_desc("bytes"), cl::cat(category));
cl::opt<int64_t> devices(
    "devices",
    cl::desc("With --mesh auto: the number of devices (ranks) to lay the "
             "model out over"),
    cl::value_desc("N"), cl::init(0), cl::cat(category));
cl::opt<std::string> deviceMemory(
    "device-memory",
    cl::desc("With --mesh auto: the bytes one device has (e.g. 80GB; "
             "default: the hardware profile's)"),
    cl::value_desc("bytes"), cl::cat(category));
cl::opt<std::string> hardware(
    "hardware",
    cl::desc("With --mesh auto: the hardware the cost model predicts for: "
             "h100, h200, cpu (default: h100 with --cuda, else cpu) or a "
             "JSON profile file (docs/layout.md)"),
    cl::value_desc("name|file"), cl::cat(category));
cl::opt<std::string> explain(
    "explain", cl::ValueOptional,
    cl::desc("With --mesh auto: print the layouts ranked by predicted step "
             "time, with the dominant term and the memory a rank needs, up "
             "to a few past the chosen one (--explain=all: every layout)"),
    cl::value_desc("all"), cl::cat(category));
cl::opt<bool> timePasses(
    "timing",
    cl::desc("Print where compile time goes: parsing, each pass of the "
             "pipeline, translation to LLVM IR, code generation, linking"),
    cl::init(false), cl::cat(category));
cl::opt<std::string> linker(
    "linker",
    cl::desc("C++ compiler driver that links the executable (default: c++)"),
    cl::value_desc("program"), cl::init("c++"), cl::cat(category));

int fail(const llvm::Twine &message) {
  llvm::errs() << "moec: error: " << message << "\n";
  return 1;
}

std::string defaultOutput() {
  llvm::SmallString<128> path(inputFile == "-" ? std::string("model")
                                               : inputFile.getValue());
  if (llvm::sys::path::extension(path) == ".mlir")
    llvm::sys::path::replace_extension(path, "");
  if (emit == Emit::Llvm)
    path += ".ll";
  else if (emit == Emit::Obj)
    path += ".o";
  else if (emit == Emit::Mlir)
    path += ".llvm.mlir";
  return std::string(path);
}

/// Parses the model.
OwningOpRef<ModuleOp> parseModel(MLIRContext &context, TimingScope &timing) {
  std::string error;
  auto file = openInputFile(inputFile, &error);
  if (!file) {
    fail(error);
    return nullptr;
  }
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(std::move(file), llvm::SMLoc());
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  TimingScope parseTiming = timing.nest("parse");
  return parseSourceFile<ModuleOp>(sourceMgr, &context);
}

/// Runs the whole pipeline on `module`: the LLVM dialect, with the manifest.
LogicalResult compileToLLVMDialect(ModuleOp module, TimingScope &timing) {
  PassManager pm(module.getContext());
  TimingScope pipelineTiming = timing.nest("pass pipeline");
  pm.enableTiming(pipelineTiming);
  mlir::moe::CompilerPipelineOptions options;
  options.mesh = mesh;
  options.replicaSlots = replicaSlots;
  options.trainStep = trainStep;
  options.storage = storage;
  options.zeroStage = zeroStage;
  options.recompute = recompute;
  options.decodeBatch = decodeBatch;
  options.maxSeq = maxSeq;
  mlir::moe::buildCompilerPipeline(pm, options);
  return pm.run(module);
}

/// --mesh auto: chooses the layout and sets --mesh, --zero and --recompute
/// to it. Fails with one error line.
LogicalResult chooseAutoLayout(ModuleOp model) {
  if (devices < 1) {
    fail("--mesh auto needs --devices N, the number of devices to lay the "
         "model out over");
    return failure();
  }
  std::string error;
  if (!explain.empty() && explain != "all") {
    fail("--explain: unknown value '" + explain + "' (expected all)");
    return failure();
  }
  std::string hardwareName =
      hardware.empty() ? (withCuda ? "h100" : "cpu") : hardware.getValue();
  std::optional<::moe::HardwareProfile> profile =
      moec::loadHardwareProfile(hardwareName, error);
  if (!profile) {
    fail("--hardware: " + error);
    return failure();
  }
  moec::AutoLayoutRequest request;
  request.devices = devices;
  request.hardware = *profile;
  request.deviceMemory = profile->memoryBytes;
  if (!deviceMemory.empty()) {
    std::optional<uint64_t> bytes = moec::parseByteSize(deviceMemory);
    if (!bytes || *bytes == 0) {
      fail("--device-memory: cannot read '" + deviceMemory +
           "' as a byte count (e.g. 80GB, 141GiB, 5e9)");
      return failure();
    }
    request.deviceMemory = *bytes;
  }
  request.storage = storage;
  request.replicaSlots = replicaSlots;
  request.trainStep = trainStep;
  // Flags given alongside --mesh auto are kept; the rest is chosen.
  if (zeroStage.getNumOccurrences())
    request.zeroStages = {zeroStage};
  if (recompute.getNumOccurrences())
    request.recomputeModes = {recompute};

  std::optional<moec::AutoLayoutResult> result =
      moec::chooseLayout(model, request, error);
  if (!result) {
    fail("--mesh auto: " + error);
    return failure();
  }
  if (explain.getNumOccurrences())
    moec::printLayoutTable(*result, request, explain == "all", llvm::outs());
  llvm::outs().flush();
  if (result->chosen < 0) {
    std::string need;
    if (result->smallest)
      need = ": the least any layout needs is " +
             ::moe::formatBytes(result->smallest->memory) + " a rank (" +
             result->smallest->layout.flags() + ")";
    fail("--mesh auto: no layout of " + std::to_string(devices) +
         " devices fits in " + ::moe::formatBytes(request.deviceMemory) +
         " a device" + need);
    return failure();
  }
  const moec::RankedLayout &chosen = result->ranked[result->chosen];
  llvm::outs().flush();
  llvm::errs() << "moec: --mesh auto chose " << chosen.layout.flags()
               << ": predicted " << ::moe::formatSeconds(chosen.time.total)
               << " a step on " << profile->name << " (dominant "
               << chosen.time.dominant.name << "), "
               << ::moe::formatBytes(chosen.memory) << " a rank\n";
  mesh = chosen.layout.mesh.str();
  zeroStage = chosen.layout.zeroStage;
  recompute = chosen.layout.recompute;
  return success();
}

void printMemoryPlan(const llvm::json::Object &manifest) {
  auto field = [&](StringRef key) {
    return manifest.getInteger(key).value_or(-1);
  };
  llvm::outs() << "memory plan: arena " << field("arena_bytes") << " bytes, "
               << field("unplanned_bytes") << " without reuse; weights "
               << field("weights_bytes") << " bytes\n";
}

std::unique_ptr<llvm::TargetMachine> hostTargetMachine() {
  llvm::Triple triple(llvm::sys::getDefaultTargetTriple());
  std::string error;
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target) {
    fail("no code generator for " + triple.str() + ": " + error);
    return nullptr;
  }
  // Generic x86-64 without optimisation: the object only sequences runtime
  // calls (the time is spent inside them), so portability and compile speed
  // beat tuning; the fast instruction selector keeps code generation linear
  // in the number of calls.
  return std::unique_ptr<llvm::TargetMachine>(target->createTargetMachine(
      triple, "generic", "", llvm::TargetOptions(), llvm::Reloc::PIC_,
      std::nullopt, llvm::CodeGenOptLevel::None));
}

int writeObject(llvm::Module &module, llvm::TargetMachine &machine,
                StringRef path) {
  std::error_code ec;
  llvm::ToolOutputFile out(path, ec, llvm::sys::fs::OF_None);
  if (ec)
    return fail("cannot write '" + path + "': " + ec.message());
  llvm::legacy::PassManager pm;
  if (machine.addPassesToEmitFile(pm, out.os(), nullptr,
                                  llvm::CodeGenFileType::ObjectFile))
    return fail("the code generator cannot emit object files");
  pm.run(module);
  out.keep();
  return 0;
}

int link(StringRef object, StringRef output) {
  auto program = llvm::sys::findProgramByName(linker);
  if (!program)
    return fail("cannot find the linker driver '" + linker +
                "' (set --linker)");
  std::vector<StringRef> args = {*program, object, "-o", output};
  if (withCuda) {
    for (const char *arg : moec::kCudaRuntimeLinkArgs)
      args.push_back(arg);
  } else {
    for (const char *arg : moec::kRuntimeLinkArgs)
      args.push_back(arg);
  }
  std::string error;
  int rc =
      llvm::sys::ExecuteAndWait(*program, args, std::nullopt, {}, 0, 0, &error);
  if (rc != 0) {
    llvm::sys::fs::remove(output);
    return fail("linking '" + output + "' failed" +
                (error.empty() ? "" : ": " + error));
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "moec: compile a model written in the moe dialect into an executable\n\n"
      "The executable runs the model on the CPU: `./model --help` lists its\n"
      "commands (forward, generate, init, info). Intermediate stages can be\n"
      "inspected with moe-opt (e.g. --moe-lower-to-runtime).\n");

  DialectRegistry registry;
  mlir::moe::registerCompilerDialects(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();

  if (withCuda && !moec::kHaveCuda)
    return fail("--cuda: this moec was built without the CUDA backend (no "
                "CUDA toolkit was found when it was configured)");

  if (storage != "f32" && storage != "bf16")
    return fail("--storage: unknown storage type '" + storage +
                "' (expected f32 or bf16)");
  if (zeroStage < 0 || zeroStage > 3)
    return fail("--zero: stage " + std::to_string(zeroStage) +
                " does not exist (expected 0, 1, 2 or 3)");
  if (zeroStage != 0 && !trainStep)
    return fail("--zero splits the optimizer state of the training step, "
                "but --train-step=false builds none");
  if (recompute != "none" && recompute != "full")
    return fail("--recompute: unknown mode '" + recompute +
                "' (expected none or full)");
  if (recompute != "none" && !trainStep)
    return fail("--recompute trades memory for compute in the training "
                "step, but --train-step=false builds none");
  if (decodeBatch < 0)
    return fail("--decode-batch: " + std::to_string(decodeBatch) +
                " sequences (expected 0 or more)");
  if (maxSeq < 0)
    return fail("--max-seq: " + std::to_string(maxSeq) +
                " positions (expected 1 or more, or 0 for the model's "
                "sequence length)");
  bool reportMemory = memoryReport.getNumOccurrences() > 0;
  if (reportMemory && !memoryReport.empty() && memoryReport != "text" &&
      memoryReport != "json")
    return fail("--memory-report: unknown format '" + memoryReport +
                "' (expected text or json)");
  std::optional<uint64_t> memoryLimit;
  if (!maxMemory.empty() && !(memoryLimit = moec::parseByteSize(maxMemory)))
    return fail("--max-memory: cannot read '" + maxMemory +
                "' as a byte count (e.g. 80GB, 141GiB, 5e9)");

  // Reports at exit, after the last scope below has stopped.
  DefaultTimingManager timingManager;
  timingManager.setEnabled(timePasses);
  TimingScope timing = timingManager.getRootScope();

  bool autoLayout = mesh == "auto";
  if (!autoLayout &&
      (devices.getNumOccurrences() || explain.getNumOccurrences() ||
       hardware.getNumOccurrences() || deviceMemory.getNumOccurrences()))
    return fail("--devices, --device-memory, --hardware and --explain "
                "belong to --mesh auto");
  OwningOpRef<ModuleOp> module = parseModel(context, timing);
  if (!module)
    return 1;
  if (autoLayout && failed(chooseAutoLayout(*module)))
    return 1;
  if (failed(compileToLLVMDialect(*module, timing)))
    return 1;
  std::optional<llvm::json::Object> manifest = moec::readManifest(*module);
  if (!manifest)
    return fail("the compiled module has no readable manifest");
  if (printPlan)
    printMemoryPlan(*manifest);
  if (reportMemory || memoryLimit) {
    std::string error;
    std::optional<::moe::RankProgram> program =
        moec::rankProgram(*manifest, error);
    if (!program)
      return fail("memory report: " + error);
    ::moe::RankMemory memory = ::moe::rankMemory(*program);
    if (reportMemory)
      moec::printMemoryReport(*manifest, memory, memoryReport == "json",
                              llvm::outs());
    if (memoryLimit && memory.total > *memoryLimit)
      return fail("a rank needs " + ::moe::formatBytes(memory.total) +
                  ", more than --max-memory " +
                  ::moe::formatBytes(*memoryLimit) +
                  " (--memory-report shows where); its largest buffer is " +
                  moec::largestBuffer(*manifest));
    // Asked for the report alone: nothing to write.
    if (reportMemory && emit.getNumOccurrences() == 0 && outputFile.empty())
      return 0;
  }
  std::string output = outputFile.empty() ? defaultOutput() : outputFile;

  if (emit == Emit::Mlir) {
    std::string error;
    auto out = openOutputFile(output, &error);
    if (!out)
      return fail(error);
    module->print(out->os());
    out->os() << "\n"; // as moe-opt prints it
    out->keep();
    return 0;
  }

  llvm::LLVMContext llvmContext;
  TimingScope translateTiming = timing.nest("translate to LLVM IR");
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(*module, llvmContext, inputFile);
  translateTiming.stop();
  if (!llvmModule)
    return fail("translation to LLVM IR failed");
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  std::unique_ptr<llvm::TargetMachine> machine = hostTargetMachine();
  if (!machine)
    return 1;
  llvmModule->setTargetTriple(machine->getTargetTriple());
  llvmModule->setDataLayout(machine->createDataLayout());

  if (emit == Emit::Llvm) {
    std::string error;
    auto out = openOutputFile(output, &error);
    if (!out)
      return fail(error);
    llvmModule->print(out->os(), nullptr);
    out->keep();
    return 0;
  }
  TimingScope codegenTiming = timing.nest("code generation");
  if (emit == Emit::Obj)
    return writeObject(*llvmModule, *machine, output);

  llvm::SmallString<128> object;
  if (auto ec = llvm::sys::fs::createTemporaryFile("moec", "o", object))
    return fail("cannot create a temporary object file: " + ec.message());
  int rc = writeObject(*llvmModule, *machine, object);
  codegenTiming.stop();
  if (rc == 0) {
    TimingScope linkTiming = timing.nest("link");
    rc = link(object, output);
  }
  llvm::sys::fs::remove(object);
  return rc;
}
