//===- TraceTest.cpp - The Chrome trace writer and --trace ----------------===//
//
// The trace writer (moe/Runtime/Trace.h): names escaped into valid JSON
// whatever their bytes, events placed relative to the origin, the ranks'
// parts merged into one document with a named track per rank. The driver's
// side (driver/Tracing.h): the ranks' parts gathered over local ranks, the
// recorded steps, and the --trace checks made before a run.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Trace.h"
#include "driver/cli/CommandLine.h"
#include "driver/train/Tracing.h"
#include "moe/Runtime/Communicator.h"

#include "TempDirTest.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using moe::rt::Tracer;
using nlohmann::json;

json parse(const std::string &text) { return json::parse(text); }

TEST(TraceTest, JsonStringEscapesWhatJsonForbids) {
  EXPECT_EQ(moe::rt::jsonString("rms_norm"), "\"rms_norm\"");
  EXPECT_EQ(moe::rt::jsonString("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(moe::rt::jsonString("x\ny\t\x01"), "\"x\\u000ay\\u0009\\u0001\"");
  // Valid UTF-8 stays as it is; invalid bytes become U+FFFD.
  EXPECT_EQ(moe::rt::jsonString("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
  EXPECT_EQ(moe::rt::jsonString("\xff"), "\"\\ufffd\"");
  EXPECT_EQ(moe::rt::jsonString("a\xc3"), "\"a\\ufffd\"");          // cut short
  EXPECT_EQ(moe::rt::jsonString("\xc0\xaf"), "\"\\ufffd\\ufffd\""); // overlong
  EXPECT_EQ(moe::rt::jsonString("\xed\xa0\x80"),
            "\"\\ufffd\\ufffd\\ufffd\""); // a surrogate
  // Every byte string parses back; a valid one to itself.
  std::string all;
  for (int c = 1; c < 256; ++c)
    all += static_cast<char>(c);
  EXPECT_NO_THROW(parse(moe::rt::jsonString(all)));
  std::string text = "op \"x\"\\ \n\xe2\x82\xac \xf0\x9f\x98\x80";
  EXPECT_EQ(parse(moe::rt::jsonString(text)).get<std::string>(), text);
}

TEST(TraceTest, EventsAreMicrosecondsFromTheOrigin) {
  Tracer tracer(3);
  tracer.setOrigin(10.0);
  tracer.complete("dis\"patch", "collective", Tracer::RuntimeTrack, 10.5,
                  10.5015, {{"group", std::string("ep")}, {"bytes", 4096}});
  tracer.complete("step 2", "step", Tracer::DriverTrack, 10.25, 10.0,
                  {{"step", 2}});
  json doc = parse(moe::rt::chromeTraceJson({tracer.eventsJson()}));
  EXPECT_EQ(doc["displayTimeUnit"], "ms");
  std::vector<json> complete, meta;
  for (const json &e : doc["traceEvents"])
    (e["ph"] == "X" ? complete : meta).push_back(e);
  ASSERT_EQ(complete.size(), 2u);
  const json &call = complete[0];
  EXPECT_EQ(call["name"], "dis\"patch");
  EXPECT_EQ(call["cat"], "collective");
  EXPECT_EQ(call["pid"], 3);
  EXPECT_EQ(call["tid"], Tracer::RuntimeTrack);
  EXPECT_NEAR(call["ts"].get<double>(), 500000.0, 1e-3);
  EXPECT_NEAR(call["dur"].get<double>(), 1500.0, 1e-3);
  EXPECT_EQ(call["args"]["group"], "ep");
  EXPECT_EQ(call["args"]["bytes"], 4096);
  // An end before the begin is a zero-length event, never a negative one.
  EXPECT_EQ(complete[1]["dur"].get<double>(), 0.0);
  EXPECT_EQ(complete[1]["args"]["step"], 2);
  bool named = false;
  for (const json &e : meta)
    if (e["name"] == "process_name") {
      EXPECT_EQ(e["pid"], 3);
      EXPECT_EQ(e["args"]["name"], "rank 3");
      named = true;
    }
  EXPECT_TRUE(named);
}

TEST(TraceTest, MergesTheRanksInOneDocument) {
  std::vector<std::string> parts;
  for (int rank = 0; rank < 3; ++rank) {
    Tracer tracer(rank);
    for (int i = 0; i <= rank; ++i)
      tracer.complete("op" + std::to_string(i), "op", Tracer::RuntimeTrack, i,
                      i + 0.5);
    parts.push_back(tracer.eventsJson());
  }
  parts.insert(parts.begin() + 1, ""); // a rank with nothing to say
  json doc = parse(moe::rt::chromeTraceJson(parts));
  std::vector<int> calls(3, 0), names(3, 0);
  int lastPid = 0;
  for (const json &e : doc["traceEvents"]) {
    int pid = e["pid"];
    EXPECT_GE(pid, lastPid) << "ranks in order";
    lastPid = pid;
    if (e["ph"] == "X")
      ++calls[pid];
    else if (e["name"] == "process_name" &&
             e["args"]["name"] == "rank " + std::to_string(pid))
      ++names[pid];
  }
  EXPECT_EQ(calls, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(names, (std::vector<int>{1, 1, 1}));
  EXPECT_NO_THROW(parse(moe::rt::chromeTraceJson({})));
}

TEST(TraceTest, GathersEveryRanksTextOnLocalRanks) {
  const std::vector<std::string> texts = {"", "ab", "h\xc3\xa9llo \"rank\" 2",
                                          std::string(1001, 'x')};
  std::mutex mutex;
  std::vector<std::vector<std::string>> got(texts.size());
  moe::rt::runLocal(
      static_cast<int>(texts.size()), [&](moe::rt::Communicator &world) {
        std::vector<std::string> all =
            moe::driver::allGatherText(world, texts[world.rank()]);
        std::lock_guard<std::mutex> lock(mutex);
        got[world.rank()] = all;
      });
  for (const std::vector<std::string> &all : got)
    EXPECT_EQ(all, texts);
}

TEST(TraceTest, RecordsTheStepsAfterTheFirst) {
  using moe::driver::traceWindow;
  auto window = [](moe::driver::StepWindow w) {
    return std::vector<int64_t>{w.first, w.last};
  };
  EXPECT_EQ(window(traceWindow(1, 10, 5)), (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(window(traceWindow(1, 3, 5)), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(window(traceWindow(1, 1, 5)), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(window(traceWindow(8, 20, 2)), (std::vector<int64_t>{9, 10}));
  EXPECT_FALSE(traceWindow(11, 10, 5).contains(10)); // resumed: nothing left
  EXPECT_FALSE(traceWindow(11, 10, 5).contains(11));
}

class TraceFlagsTest : public moe::test::TempDirTest {
protected:
  moe::driver::ParsedFlags flags(std::vector<std::string> args) {
    static const moe::driver::CommandSpec command{
        "train",
        "",
        "",
        {moe::driver::traceFlag(), moe::driver::traceStepsFlag()}};
    return moe::driver::parseFlags(command, args);
  }
  size_t filesInDir() const {
    size_t n = 0;
    for ([[maybe_unused]] auto &entry :
         std::filesystem::directory_iterator(dir))
      ++n;
    return n;
  }
};

TEST_F(TraceFlagsTest, ChecksThePathBeforeTheRun) {
  EXPECT_FALSE(moe::driver::parseTraceOptions(flags({})));
  auto options = moe::driver::parseTraceOptions(
      flags({"--trace", file("t.json"), "--trace-steps", "3"}));
  ASSERT_TRUE(options);
  EXPECT_EQ(options->path, file("t.json"));
  EXPECT_EQ(options->steps, 3);
  moe::driver::checkTraceTarget(*options, 0);
  moe::driver::checkTraceTarget(*options, 1);
  EXPECT_EQ(filesInDir(), 0u) << "the check leaves nothing behind";

  EXPECT_THROW(moe::driver::parseTraceOptions(flags({"--trace-steps", "3"})),
               moe::driver::UsageError);
  EXPECT_THROW(moe::driver::parseTraceOptions(
                   flags({"--trace", file("t.json"), "--trace-steps", "0"})),
               moe::driver::UsageError);
  std::string missing = file("missing/t.json");
  try {
    moe::driver::checkTraceTarget(
        *moe::driver::parseTraceOptions(flags({"--trace", missing})), 0);
    ADD_FAILURE() << "no error for " << missing;
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(moe::driver::checkTraceTarget(
                   *moe::driver::parseTraceOptions(flags({"--trace", dir})), 0),
               std::runtime_error);
}

} // namespace
