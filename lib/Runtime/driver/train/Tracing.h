//===- Tracing.h - A Chrome trace of a run (--trace) -----------*- C++ -*-===//
//
// `--trace FILE` records, on every rank, the driver's spans (a "step N" span
// per recorded training step, the training entry, the optimizer, ...) and
// every runtime call of the model (ops and collectives, timed on the
// backend's timeline: see Backend::mark), and writes them as one Chrome
// trace (moe/Runtime/Trace.h): the ranks' events are gathered over the
// world communicator to rank 0, which writes FILE atomically.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_TRACING_H
#define MOE_LIB_RUNTIME_DRIVER_TRACING_H

#include "driver/cli/CommandLine.h"
#include "driver/model/ModelRun.h"
#include "moe/Runtime/Trace.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moe::driver {

const FlagSpec &traceFlag();
const FlagSpec &traceStepsFlag();

struct TraceOptions {
  std::string path;
  /// Training steps recorded: the N after the first (the first warms up).
  int64_t steps = 5;
};

/// --trace FILE and --trace-steps N; nothing without --trace (then
/// --trace-steps is a UsageError).
std::optional<TraceOptions> parseTraceOptions(const ParsedFlags &flags);

/// Throws std::runtime_error naming FILE unless it can be written, found by
/// creating and removing a file beside it (named for `rank`, so that thread
/// ranks do not collide). Every rank calls it in its agreed set-up, before
/// anything runs: under a launcher, ranks that fail before MPI is up could
/// end the job before rank 0 has said why.
void checkTraceTarget(const TraceOptions &options, int rank);

/// The training steps a trace records: [first, last] (empty when first >
/// last): the `count` steps after `begin`, the first step of the run, or
/// `begin` alone when it is the run's only step.
struct StepWindow {
  int64_t first, last;
  bool contains(int64_t step) const { return step >= first && step <= last; }
};
StepWindow traceWindow(int64_t begin, int64_t end, int64_t count);

/// One rank's trace of a run. Every rank makes one and calls begin(),
/// end() and write() at the same points (begin() and write() are
/// collective).
class RunTrace {
public:
  RunTrace(const TraceOptions &options, RankEnv &env, ModelRunner &runner);
  ~RunTrace();
  RunTrace(const RunTrace &) = delete;
  RunTrace &operator=(const RunTrace &) = delete;

  /// Opens the top-level span `name` (category "step") and records the
  /// runner's calls until end(). The first begin() sets the time origin on
  /// every rank at once, after a barrier over the world.
  void begin(std::string name, std::vector<rt::TraceArg> args = {});
  /// Closes the span once the backend has finished its work.
  void end();

  /// Runs fn as the driver span `name` inside the open span (category
  /// "driver", host time); just runs it when none is open.
  template <typename Fn> void phase(const char *name, Fn &&fn) {
    if (!recording_)
      return fn();
    double start = rt::steadySeconds();
    fn();
    tracer_.complete(name, "driver", rt::Tracer::DriverTrack, start,
                     rt::steadySeconds());
  }

  /// Gathers every rank's events to rank 0, which writes the file (once;
  /// later calls do nothing). Collective over the world.
  void write();

private:
  const TraceOptions &options_;
  RankEnv &env_;
  ModelRunner &runner_;
  rt::Tracer tracer_;
  bool started_ = false, recording_ = false, written_ = false;
  std::string name_;
  std::vector<rt::TraceArg> args_;
  double start_ = 0.0;
};

/// Every rank's `text`, in rank order, on every rank of `comm`.
std::vector<std::string> allGatherText(rt::Communicator &comm,
                                       const std::string &text);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_TRACING_H
