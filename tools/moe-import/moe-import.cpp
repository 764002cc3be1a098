//===- moe-import.cpp - a Hugging Face MoE config.json to a moe model -----===//
//
//   moe-import config.json --batch B --seq S [--set FIELD=VALUE]... -o m.mlir
//
// Reads the config (or the folder holding it) with HFConfig.h and writes the
// model that ModelSpec.h's builder makes of it; moec compiles the result.
//
//===----------------------------------------------------------------------===//

#include "moe/Import/HFConfig.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OperationSupport.h"
#include "mlir/Support/FileUtilities.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

using namespace mlir::moe::import;
namespace cl = llvm::cl;

static cl::opt<std::string> configPath(cl::Positional, cl::Required,
                                       cl::desc("<config.json or folder>"));
static cl::opt<int64_t> batchFlag("batch", cl::init(0),
                                  cl::desc("Compiled batch (default: the "
                                           "config's moec_batch)"));
static cl::opt<int64_t> seqFlag("seq", cl::init(0),
                                cl::desc("Compiled sequence length (default: "
                                         "the config's moec_seq)"));
static cl::list<std::string>
    setFlags("set",
             cl::desc("Set a config field before reading it, e.g. "
                      "--set num_hidden_layers=4 (VALUE is JSON, or "
                      "else a string)"),
             cl::value_desc("FIELD=VALUE"));
static cl::opt<std::string> outputPath("o", cl::init("-"),
                                       cl::desc("Output file (default: "
                                                "stdout)"),
                                       cl::value_desc("path"));

static const char *namingName(Naming naming) {
  switch (naming) {
  case Naming::Qwen3Moe:
    return "Qwen3-MoE";
  case Naming::Qwen2Moe:
    return "Qwen2-MoE";
  case Naming::Mixtral:
    return "Mixtral";
  case Naming::DeepseekV3:
    return "DeepSeek-V3";
  case Naming::DeepseekV2:
    return "DeepSeek-V2";
  }
  return "";
}

static int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "moe-import") << message << "\n";
  return 1;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::ParseCommandLineOptions(argc, argv,
                              "Hugging Face MoE config.json -> moe model\n");
  ImportOptions options;
  options.batch = batchFlag;
  options.seq = seqFlag;
  if (options.batch < 0 || options.seq < 0)
    return fail("--batch and --seq must be positive");
  for (const std::string &item : setFlags) {
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      return fail("--set '" + item + "': expected FIELD=VALUE");
    options.overrides.emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }

  llvm::Expected<ModelSpec> spec = readHFConfig(configPath, options);
  if (!spec)
    return fail(llvm::toString(spec.takeError()));
  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module = buildModel(context, *spec);
  if (!module)
    return fail(configPath + ": the model does not verify");

  std::string error;
  auto output = mlir::openOutputFile(outputPath, &error);
  if (!output)
    return fail(error);
  const ModelSpec &s = *spec;
  llvm::raw_fd_ostream &os = output->os();
  os << "// " << namingName(s.naming) << " imported by moe-import from "
     << llvm::sys::path::filename(configPath) << ": hidden " << s.hidden << ", "
     << s.layers << " layers, " << s.heads;
  if (s.isMLA())
    os << " heads of latent attention ("
       << (s.qLoraRank ? "q rank " + std::to_string(s.qLoraRank) + ", "
                       : std::string())
       << "kv rank " << s.kvLoraRank << ", qk " << s.qkNopeDim << " + "
       << s.qkRopeDim << " rotary, v " << s.vHeadDim << ")";
  else
    os << " heads (" << s.kvHeads << " KV) x " << s.headDim;
  os << ", " << s.experts << " experts top-" << s.topK << ", expert FFN "
     << s.moeInter << ", vocab " << s.vocab << ", batch " << s.batch
     << " x seq " << s.seq << ".\n";
  module->print(os);
  if (os.has_error())
    return fail(outputPath + ": cannot write");
  output->keep();
  return 0;
}
