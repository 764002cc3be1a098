//===- MemoryReport.h - moec --memory-report and --max-memory ---*- C++ -*-===//

#ifndef MOE_TOOLS_MOEC_MEMORYREPORT_H
#define MOE_TOOLS_MOEC_MEMORYREPORT_H

#include "moe/Support/MemoryReport.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <optional>

namespace moec {

/// One rank's program as the manifest describes it; nullopt (with `error`
/// set) when a field is missing.
std::optional<moe::RankProgram> rankProgram(const llvm::json::Object &manifest,
                                            std::string &error);

/// The report: a table (one line per group of alike ranks, here all of
/// them: every rank runs the same program) or JSON (one object per rank).
void printMemoryReport(const llvm::json::Object &manifest,
                       const moe::RankMemory &memory, bool json,
                       llvm::raw_ostream &os);

/// "80GB", "141GiB", "5e9", "1000000": bytes; nullopt if unreadable.
std::optional<uint64_t> parseByteSize(llvm::StringRef text);

/// The largest single buffer of a rank (a weight or a planned activation),
/// for the --max-memory error: "weight 'lm_head.weight' (2.32 GiB)".
std::string largestBuffer(const llvm::json::Object &manifest);

} // namespace moec

#endif // MOE_TOOLS_MOEC_MEMORYREPORT_H
