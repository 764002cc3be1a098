//===- Tracing.cpp - train/forward --trace: a Chrome trace of a run -------===//

#include "driver/train/Tracing.h"

#include "driver/train/Checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <stdexcept>
#include <unistd.h>

namespace moe::driver {

const FlagSpec &traceFlag() {
  static const FlagSpec flag{
      "trace", "FILE",
      "Write a Chrome trace (JSON; open it in Perfetto or chrome://tracing) "
      "of the run: a track per rank with every runtime op and collective "
      "(bytes sent), timed on the backend (CUDA events on a GPU), and the "
      "driver's spans; train records --trace-steps steps. Checked for "
      "writing before the run starts."};
  return flag;
}

const FlagSpec &traceStepsFlag() {
  static const FlagSpec flag{
      "trace-steps", "N",
      "Training steps --trace records: the N after the first (default 5; "
      "the first warms up, and a run of one step records it)."};
  return flag;
}

std::optional<TraceOptions> parseTraceOptions(const ParsedFlags &flags) {
  if (!flags.has("trace")) {
    if (flags.has("trace-steps"))
      throw UsageError("--trace-steps needs --trace FILE");
    return std::nullopt;
  }
  TraceOptions options;
  options.path = flags.get("trace");
  if (options.path.empty())
    throw UsageError("--trace is empty");
  if (flags.has("trace-steps"))
    options.steps =
        parseInteger("trace-steps", flags.get("trace-steps"), 1, 1000000000);
  return options;
}

void checkTraceTarget(const TraceOptions &options, int rank) {
  if (std::filesystem::is_directory(options.path))
    throw std::runtime_error("--trace " + options.path +
                             ": is a directory, expected a file to write");
  // The file is written at the end by a rename from beside it: try now.
  std::string probe = options.path + ".tmp." + std::to_string(::getpid()) +
                      "." + std::to_string(rank) + ".check";
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0)
    throw std::runtime_error("--trace " + options.path +
                             ": cannot write there (" + std::strerror(errno) +
                             ")");
  ::close(fd);
  ::unlink(probe.c_str());
}

StepWindow traceWindow(int64_t begin, int64_t end, int64_t count) {
  if (begin > end)
    return {begin, end}; // a resumed run with nothing left to train
  int64_t first = std::min(begin + 1, end);
  return {first, std::min(first + count - 1, end)};
}

RunTrace::RunTrace(const TraceOptions &options, RankEnv &env,
                   ModelRunner &runner)
    : options_(options), env_(env), runner_(runner), tracer_(env.rank()) {}

RunTrace::~RunTrace() {
  if (!recording_)
    return;
  try {
    runner_.setTracer(nullptr);
  } catch (...) {
    // The failure that ended the span is already on its way.
  }
}

void RunTrace::begin(std::string name, std::vector<rt::TraceArg> args) {
  if (!started_) {
    if (env_.world)
      env_.world->barrier();
    tracer_.setOrigin(rt::steadySeconds());
    started_ = true;
  }
  name_ = std::move(name);
  args_ = std::move(args);
  runner_.setTracer(&tracer_);
  recording_ = true;
  start_ = rt::steadySeconds();
}

void RunTrace::end() {
  // Waits for the backend and turns the last calls' marks into events.
  runner_.setTracer(nullptr);
  recording_ = false;
  tracer_.complete(name_, "step", rt::Tracer::DriverTrack, start_,
                   rt::steadySeconds(), args_);
}

void RunTrace::write() {
  if (written_)
    return;
  written_ = true;
  std::vector<std::string> parts =
      env_.world ? allGatherText(*env_.world, tracer_.eventsJson())
                 : std::vector<std::string>{tracer_.eventsJson()};
  env_.agree([&] {
    if (env_.root)
      writeFileAtomically(options_.path, rt::chromeTraceJson(parts));
  });
  if (env_.root)
    std::fprintf(stderr, "note: wrote the trace %s (%d rank%s)\n",
                 options_.path.c_str(), env_.size(),
                 env_.size() == 1 ? "" : "s");
}

std::vector<std::string> allGatherText(rt::Communicator &comm,
                                       const std::string &text) {
  // Lengths first, then every text padded to the longest, as int32 words.
  int n = comm.size();
  int64_t length = static_cast<int64_t>(text.size());
  std::vector<int64_t> lengths(n);
  comm.allGather(&length, lengths.data(), 1, rt::CommDType::I64);
  int64_t words = (*std::max_element(lengths.begin(), lengths.end()) + 3) / 4;
  std::vector<int32_t> mine(std::max<int64_t>(words, 1), 0);
  std::memcpy(mine.data(), text.data(), text.size());
  std::vector<int32_t> all(mine.size() * n);
  comm.allGather(mine.data(), all.data(), static_cast<int64_t>(mine.size()),
                 rt::CommDType::I32);
  std::vector<std::string> texts(n);
  for (int r = 0; r < n; ++r)
    texts[r].assign(
        reinterpret_cast<const char *>(all.data() + r * mine.size()),
        static_cast<size_t>(lengths[r]));
  return texts;
}

} // namespace moe::driver
