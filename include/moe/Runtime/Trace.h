//===- Trace.h - Chrome traces of runtime calls and steps -------*- C++ -*-===//
//
// A Tracer collects one rank's events in the Trace Event Format that
// Perfetto and chrome://tracing open: complete events ("ph": "X", ts and dur
// in microseconds) on two tracks of the rank's process (pid = rank): the
// driver's spans (steps, the training entry, the optimizer) on thread 0 and
// the runtime calls (every moert_* op and collective, timed on the backend's
// timeline, Backend::mark) on thread 1. chromeTraceJson() merges the ranks'
// events into one document.
//
// Times are seconds of std::chrono::steady_clock (steadySeconds()), written
// relative to the tracer's origin, which every rank sets at once (after a
// barrier), so the ranks' tracks line up.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_TRACE_H
#define MOE_RUNTIME_TRACE_H

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace moe::rt {

/// Seconds of std::chrono::steady_clock (the host timeline of traces).
double steadySeconds();

/// `text` as a JSON string literal, quotes included (control characters and
/// bytes of invalid UTF-8 escaped, so the document always parses).
std::string jsonString(std::string_view text);

/// An event argument: an integer or a string.
using TraceArg = std::pair<std::string, std::variant<int64_t, std::string>>;

class Tracer {
public:
  /// The tracks of a rank's process.
  enum Track : int { DriverTrack = 0, RuntimeTrack = 1 };

  explicit Tracer(int rank) : rank_(rank) {}

  int rank() const { return rank_; }
  /// The time written as ts 0.
  void setOrigin(double seconds) { origin_ = seconds; }

  /// A complete event from `begin` to `end` (steadySeconds() timeline).
  void complete(std::string name, std::string category, Track track,
                double begin, double end, std::vector<TraceArg> args = {});

  size_t size() const { return events_.size(); }

  /// This rank's events as the comma-separated members of a traceEvents
  /// array: metadata naming the process "rank N" and its tracks first.
  std::string eventsJson() const;

private:
  struct Event {
    std::string name, category;
    Track track;
    double begin, end;
    std::vector<TraceArg> args;
  };
  int rank_;
  double origin_ = 0.0;
  std::vector<Event> events_;
};

/// The trace document of the ranks' eventsJson() parts:
/// {"traceEvents": [...], "displayTimeUnit": "ms"}.
std::string chromeTraceJson(const std::vector<std::string> &rankEvents);

} // namespace moe::rt

#endif // MOE_RUNTIME_TRACE_H
