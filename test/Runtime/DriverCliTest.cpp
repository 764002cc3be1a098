//===- DriverCliTest.cpp - The model executable's command line ------------===//
//
// Runs `fake-model` (test/Runtime/fake_model/FakeModel.c linked with
// libMoERuntimeMain.a and libMoERuntime.a, as moec links a compiled model)
// as a subprocess and checks what it prints, the files it writes and its
// exit status. The fake's logits at (b, s) are row tokens[b, s] of its
// embedding table, so greedy generation follows a chain predicted by hand.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Safetensors.h"

#include "TempDirTest.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <numeric>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <vector>

using namespace moe::io;
namespace fs = std::filesystem;

namespace {

constexpr int kVocab = 16, kBatch = 2, kSeq = 8;

// The hand-made table: row i puts logit 4 at (5 i + 3) mod 16 and 0
// elsewhere, so greedy decoding from 'a' (0) visits 0 3 2 13 4 7 6 1 8 11 ...
int successor(int token) { return (5 * token + 3) % kVocab; }

struct Result {
  int status = -1; ///< The exit status; -1 when the process did not exit.
  std::string out;
  std::string err;
};

std::string shellQuoted(const std::string &arg) {
  std::string q = "'";
  for (char c : arg)
    q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

class DriverCliTest : public moe::test::TempDirTest {
protected:
  Result run(const std::vector<std::string> &args,
             const std::string &binary = FAKE_MODEL,
             const std::string &environment = "") const {
    std::string command = environment + " " + shellQuoted(binary);
    for (const std::string &arg : args)
      command += " " + shellQuoted(arg);
    std::string out = file("stdout.txt"), err = file("stderr.txt");
    command += " >" + shellQuoted(out) + " 2>" + shellQuoted(err);
    int raw = std::system(command.c_str());
    Result result;
    if (raw != -1 && WIFEXITED(raw))
      result.status = WEXITSTATUS(raw);
    result.out = moe::test::readFile(out);
    result.err = moe::test::readFile(err);
    return result;
  }

  // The hand-made table (see successor) as a checkpoint.
  std::string writeChainWeights(
      const std::string &name = "chain.safetensors",
      const std::string &tensor = "model.embed_tokens.weight") const {
    std::vector<float> table(kVocab * kVocab, 0.0f);
    for (int i = 0; i < kVocab; ++i)
      table[i * kVocab + successor(i)] = 4.0f;
    std::string path = file(name);
    writeSafetensors(path,
                     {{tensor, DType::F32, {kVocab, kVocab}, table.data()}});
    return path;
  }
};

// A failure: the status, exactly one line on stderr, "error: ..." with
// `part` in it.
void expectError(const Result &r, int status, const std::string &part) {
  EXPECT_EQ(r.status, status) << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(part), std::string::npos) << r.err;
}

double printedLoss(const Result &r) {
  EXPECT_EQ(r.out.rfind("loss ", 0), 0u) << r.out;
  return std::strtod(r.out.c_str() + 5, nullptr);
}

const std::string kChainTokens = "0 3 2 13 4 7 6 1, 8 9 10 11 12 13 14 15";

//===----------------------------------------------------------------------===//
// Success paths
//===----------------------------------------------------------------------===//

TEST_F(DriverCliTest, HelpListsCommandsAndFlags) {
  Result r = run({"--help"});
  EXPECT_EQ(r.status, 0);
  for (const char *command :
       {"forward", "generate", "train", "grad", "init", "info"})
    EXPECT_NE(r.out.find(command), std::string::npos) << command;
  r = run({"generate", "--help"});
  EXPECT_EQ(r.status, 0);
  for (const char *flag :
       {"--weights", "--init-random", "--init-std", "--prompt",
        "--max-new-tokens", "--temperature", "--top-k", "--seed"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  EXPECT_EQ(run({"help", "forward"}).out, run({"forward", "-h"}).out);
}

TEST_F(DriverCliTest, InfoSummarisesTheManifest) {
  Result r = run({"info"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("forward (entry moe_entry_forward)"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("1 (1 HF tensors), 256 scalars"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("logits   F32 [2, 8, 16]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dp=1,cp=1,tp=1,ep=1 (1 ranks)"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("characters"), std::string::npos) << r.out;
}

TEST_F(DriverCliTest, ForwardComputesTheLossAndWritesTheOutputs) {
  std::string weights = writeChainWeights();
  std::string output = file("out.safetensors");
  Result r = run({"forward", "--weights", weights, "--tokens", kChainTokens,
                  "--output", output});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");

  // Row 0 follows the chain (7 labels predicted, logit 4), row 1 does not.
  double lse = std::log(15.0 + std::exp(4.0));
  double expected = (7 * (lse - 4.0) + 7 * lse) / 14;
  EXPECT_NEAR(printedLoss(r), expected, 1e-5);
  EXPECT_NE(r.out.find("logits [2, 8, 16]: min 0 max 4 mean 0.25"),
            std::string::npos)
      << r.out;

  SafetensorsReader reader = SafetensorsReader::open(output);
  std::vector<float> logits(kBatch * kSeq * kVocab), loss(1);
  reader.readF32("logits", {kBatch, kSeq, kVocab}, logits.data());
  reader.readF32("loss", {}, loss.data());
  EXPECT_NEAR(loss[0], expected, 1e-5);
  EXPECT_EQ(logits[(1 * kSeq + 2) * kVocab + successor(10)], 4.0f);
  EXPECT_EQ(logits[(1 * kSeq + 2) * kVocab + 0], 0.0f);
}

TEST_F(DriverCliTest, ExplicitLabelsOverrideTheDefault) {
  std::string weights = writeChainWeights();
  std::string labels = "3 2 13 4 7 6 1 -100 -100 -100 -100 -100 -100 -100 "
                       "-100 -100";
  Result r = run({"forward", "--weights", weights, "--tokens", kChainTokens,
                  "--labels", labels});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NEAR(printedLoss(r), std::log(15.0 + std::exp(4.0)) - 4.0, 1e-5);
}

TEST_F(DriverCliTest, InitWritesWeightsThatForwardLoads) {
  std::string weights = file("init.safetensors");
  Result init = run({"init", "--init-random", "7", "--output", weights});
  ASSERT_EQ(init.status, 0) << init.err;
  EXPECT_EQ(SafetensorsReader::open(weights).names(),
            std::vector<std::string>{"model.embed_tokens.weight"});

  Result loaded =
      run({"forward", "--weights", weights, "--tokens", kChainTokens});
  Result random =
      run({"forward", "--init-random", "7", "--tokens", kChainTokens});
  ASSERT_EQ(loaded.status, 0) << loaded.err;
  ASSERT_EQ(random.status, 0) << random.err;
  EXPECT_EQ(loaded.out, random.out);

  // --save-weights writes the same file as init.
  std::string saved = file("saved.safetensors");
  Result save = run({"forward", "--init-random", "7", "--tokens", kChainTokens,
                     "--save-weights", saved});
  ASSERT_EQ(save.status, 0) << save.err;
  EXPECT_EQ(moe::test::readFile(saved), moe::test::readFile(weights));

  Result wider = run({"forward", "--init-random", "7", "--init-std", "1",
                      "--tokens", kChainTokens});
  ASSERT_EQ(wider.status, 0) << wider.err;
  EXPECT_NE(wider.out, random.out);
}

TEST_F(DriverCliTest, UnusedTensorsGiveOneNote) {
  std::vector<float> extra(3);
  std::vector<float> table(kVocab * kVocab);
  std::string weights = file("extra.safetensors");
  writeSafetensors(weights,
                   {{"model.embed_tokens.weight",
                     DType::F32,
                     {kVocab, kVocab},
                     table.data()},
                    {"lm_head.weight", DType::F32, {3}, extra.data()},
                    {"model.norm.weight", DType::F32, {3}, extra.data()}});
  Result r = run({"forward", "--weights", weights, "--tokens", kChainTokens});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "note: " + weights +
                       ": 2 tensor(s) not used by the model, e.g. "
                       "'lm_head.weight'\n");
}

TEST_F(DriverCliTest, GreedyGenerationFollowsTheArgmaxChain) {
  std::string weights = writeChainWeights();
  auto generate = [&](const std::string &prompt, int n) {
    Result r =
        run({"generate", "--weights", weights, "--prompt", prompt,
             "--max-new-tokens", std::to_string(n), "--temperature", "0"});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.out;
  };
  // Predicted by hand from successor(): a -> d -> c -> n -> e -> h.
  EXPECT_EQ(generate("a", 5), "adcneh\n");
  // The logits are read at the last real position, not at the padding.
  EXPECT_EQ(generate("k", 2), "kfm\n");
  // A prompt longer than seq: the model sees its last 8 characters.
  EXPECT_EQ(generate("abcdefghijklmnop", 3), "abcdefghijklmnopoja\n");
  // The context slides past seq while generating: 20 steps of the chain.
  std::string chain = "a";
  for (int i = 0, t = 0; i < 20; ++i)
    chain += static_cast<char>('a' + (t = successor(t)));
  EXPECT_EQ(generate("a", 20), chain + "\n");
  EXPECT_EQ(generate("a", 0), "a\n");
}

TEST_F(DriverCliTest, EmptyPromptStartsAfterTokenZero) {
  std::string weights = writeChainWeights();
  Result r = run({"generate", "--weights", weights, "--prompt", "",
                  "--max-new-tokens", "2", "--temperature", "0"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "dc\n");
  EXPECT_EQ(r.err.rfind("note: empty --prompt", 0), 0u) << r.err;
}

TEST_F(DriverCliTest, SamplingIsReproducibleAndTopOneIsGreedy) {
  std::string weights = writeChainWeights();
  auto sample = [&](const std::vector<std::string> &extra) {
    std::vector<std::string> args = {
        "generate", "--weights",        weights, "--prompt",
        "abc",      "--max-new-tokens", "30"};
    args.insert(args.end(), extra.begin(), extra.end());
    Result r = run(args);
    EXPECT_EQ(r.status, 0) << r.err;
    return r.out;
  };
  std::string first = sample({"--seed", "5", "--temperature", "1.5"});
  EXPECT_EQ(first.size(), 34u);
  EXPECT_EQ(sample({"--seed", "5", "--temperature", "1.5"}), first);
  EXPECT_NE(sample({"--seed", "6", "--temperature", "1.5"}), first);
  EXPECT_EQ(sample({"--seed", "9", "--top-k", "1"}),
            sample({"--temperature", "0"}));
}

TEST_F(DriverCliTest, TokenIdModelsTakeAndPrintIds) {
  std::string weights = writeChainWeights();
  Result r = run({"generate", "--weights", weights, "--prompt", "0, 3",
                  "--max-new-tokens", "3", "--temperature", "0"},
                 FAKE_MODEL_IDS);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "0 3 2 13 4\n");
  r = run({"info"}, FAKE_MODEL_IDS);
  EXPECT_NE(r.out.find("tokenizer    none: token ids (vocab 16)"),
            std::string::npos)
      << r.out;
}

//===----------------------------------------------------------------------===//
// Errors: one line, the right status, no output file, no crash
//===----------------------------------------------------------------------===//

TEST_F(DriverCliTest, UsageErrorsExitWithTwo) {
  std::string weights = writeChainWeights();
  expectError(run({}), 2, "no command given");
  expectError(run({"frobnicate"}), 2, "unknown command 'frobnicate'");
  expectError(run({"forward", "--tokens", kChainTokens}), 2,
              "give --weights PATH or --init-random SEED");
  expectError(run({"forward", "--weights", weights, "--init-random", "1",
                   "--tokens", kChainTokens}),
              2, "not both");
  expectError(run({"forward", "--init-random", "1", "--tokens", kChainTokens,
                   "--frobnicate", "1"}),
              2, "unknown flag '--frobnicate' for 'forward'");
  expectError(run({"forward", "--init-random", "1", "--tokens"}), 2,
              "--tokens needs a value");
  expectError(run({"forward", "--init-random", "x1", "--tokens", kChainTokens}),
              2, "--init-random 'x1' is not an integer");
  expectError(run({"forward", "--init-random", "1"}), 2, "give --tokens");
  expectError(run({"forward", "--init-random", "1", "--tokens", "1,,2"}), 2,
              "--tokens: item 1 is empty");
  expectError(run({"generate", "--init-random", "1", "--prompt", "a",
                   "--max-new-tokens", "-3"}),
              2, "--max-new-tokens is -3");
  expectError(run({"generate", "--init-random", "1", "--prompt", "a",
                   "--temperature", "warm"}),
              2, "--temperature 'warm' is not a finite number");
  expectError(run({"init", "--init-random", "1"}), 2, "give --output PATH");
  expectError(run({"init", "--weights", weights, "--output", file("x")}), 2,
              "unknown flag '--weights' for 'init'");
  expectError(run({"forward", "--init-std", "0.1", "--weights", weights,
                   "--tokens", kChainTokens}),
              2, "--init-std needs --init-random");
}

TEST_F(DriverCliTest, BadTokenIdFailsWithoutWritingTheOutput) {
  std::string output = file("out.safetensors");
  Result r = run({"forward", "--init-random", "1", "--tokens",
                  "0 1 2 3 4 5 6 7 8 9 10 11 12 16 14 15", "--output", output});
  expectError(r, 1,
              "--tokens: id at position 13 (row 1, column 5) is 16, expected "
              "0 <= id < 16");
  EXPECT_EQ(r.out, "");
  EXPECT_FALSE(fs::exists(output));
  expectError(run({"forward", "--init-random", "1", "--tokens", "1 2 3"}), 1,
              "--tokens has 3 ids, expected 16 (batch 2 x seq 8");
  expectError(run({"forward", "--init-random", "1", "--tokens", kChainTokens,
                   "--labels", "-1 " + kChainTokens.substr(2)}),
              1, "--labels: id at position 0 (row 0, column 0) is -1");
}

TEST_F(DriverCliTest, CharacterNotInTheVocabulary) {
  expectError(run({"generate", "--init-random", "1", "--prompt", "abcz"}), 1,
              "--prompt: character 'z' at position 3 is not in the model's "
              "vocabulary");
  expectError(run({"generate", "--init-random", "1", "--prompt", "5 99"},
                  FAKE_MODEL_IDS),
              1, "--prompt: id at position 1 is 99");
}

TEST_F(DriverCliTest, CheckpointProblemsNameFileAndTensor) {
  std::string wrongName = writeChainWeights("wrong.safetensors", "embed");
  expectError(
      run({"forward", "--weights", wrongName, "--tokens", kChainTokens}), 1,
      wrongName + ": no tensor 'model.embed_tokens.weight'");
  expectError(run({"forward", "--weights", file("absent.safetensors"),
                   "--tokens", kChainTokens}),
              1, "absent.safetensors: cannot open");
}

TEST_F(DriverCliTest, RuntimeErrorsOfTheModelAreReported) {
  std::string output = file("out.safetensors");
  Result r = run({"forward", "--init-random", "1", "--tokens", kChainTokens,
                  "--output", output},
                 FAKE_MODEL, "FAKE_MODEL_FAIL=1");
  expectError(r, 1, "embedding");
  EXPECT_FALSE(fs::exists(output));
  r = run({"generate", "--init-random", "1", "--prompt", "ab"}, FAKE_MODEL,
          "FAKE_MODEL_FAIL=1");
  expectError(r, 1, "embedding");
  EXPECT_EQ(r.out, "ab\n") << "the streamed line is ended before the error";
}

TEST_F(DriverCliTest, UnwritableOutputFailsCleanly) {
  expectError(run({"init", "--init-random", "1", "--output",
                   file("no/such/dir/w.safetensors")}),
              1, "cannot create temporary file");
}

//===----------------------------------------------------------------------===//
// train and grad
//===----------------------------------------------------------------------===//

// Text over 'a'..'p' that mostly follows successor(): a model can learn it.
std::string chainText(int length) {
  std::string text;
  uint32_t state = 12345;
  for (int i = 0, t = 0; i < length; ++i) {
    text += static_cast<char>('a' + t);
    state = state * 1103515245u + 12345u;
    t = (state >> 16) % 5 == 0 ? static_cast<int>((state >> 8) % kVocab)
                               : successor(t);
  }
  return text;
}

// The metrics records, without the timing fields (which differ run to run).
std::vector<nlohmann::json> metricsRecords(const std::string &path) {
  std::vector<nlohmann::json> records;
  std::istringstream lines(moe::test::readFile(path));
  for (std::string line; std::getline(lines, line);) {
    nlohmann::json record = nlohmann::json::parse(line);
    record.erase("tokens_per_s");
    record.erase("elapsed_s");
    records.push_back(record);
  }
  return records;
}

class TrainCliTest : public DriverCliTest {
protected:
  void SetUp() override {
    DriverCliTest::SetUp();
    corpus = file("corpus.txt");
    std::ofstream(corpus) << chainText(3000);
  }

  // train on the corpus with small, quick settings plus `extra`.
  Result train(const std::vector<std::string> &extra,
               const std::string &binary = FAKE_MODEL) const {
    std::vector<std::string> args = {"train", "--data", corpus};
    // Quick settings, unless `extra` gives the flag.
    for (auto [flag, value] : {std::pair{"--init-random", "1"},
                               {"--lr", "0.1"},
                               {"--log-every", "5"},
                               {"--eval-every", "20"},
                               {"--sample-chars", "30"}})
      if (std::find(extra.begin(), extra.end(), flag) == extra.end())
        args.insert(args.end(), {flag, value});
    args.insert(args.end(), extra.begin(), extra.end());
    if (binary != FAKE_MODEL)
      args.insert(args.end(), {"--comm", "local"});
    return run(args, binary);
  }

  void expectResumeIsBitIdentical(const std::string &binary);

  std::string corpus;
};

TEST_F(TrainCliTest, LossDecreasesAndEveryOutputIsWritten) {
  std::string metrics = file("m.jsonl"), plot = file("loss.png");
  Result r = train({"--steps", "60", "--metrics", metrics, "--plot", plot});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_NE(r.out.find("step 5/60  loss "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step 60/60  loss "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" tok/s  ETA "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("eval step 40  val loss "), std::string::npos) << r.out;
  size_t sample = r.out.find("sample:\n");
  ASSERT_NE(sample, std::string::npos) << r.out;
  // The prompt (the validation split's first 8 characters) and 30 more.
  EXPECT_EQ(r.out.size() - (sample + 8), 8u + 30u + 1u) << r.out;

  std::vector<nlohmann::json> records = metricsRecords(metrics);
  ASSERT_EQ(records.size(), 12u + 3u);
  EXPECT_EQ(records[0]["step"], 5);
  EXPECT_TRUE(records[0].contains("grad_norm"));
  // One MoE layer of 4 experts routes the step's 16 tokens.
  for (size_t i : {0, 13}) {
    ASSERT_EQ(records[i]["expert_counts"].size(), 1u) << records[i];
    std::vector<int64_t> counts = records[i]["expert_counts"][0];
    ASSERT_EQ(counts.size(), 4u);
    EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), int64_t(0)),
              kBatch * kSeq);
  }
  EXPECT_NE(r.out.find("experts layer 0: "), std::string::npos) << r.out;
  EXPECT_LT(records[13]["loss"].get<double>(),
            records[0]["loss"].get<double>() - 0.5);
  EXPECT_EQ(records[4]["step"], 20);
  EXPECT_LT(records[14]["val_loss"].get<double>(),
            records[4]["val_loss"].get<double>());

  // The PNG (gnuplot's): signature, and (with a Python) its chunks' CRCs
  // hold and IDAT inflates to a picture of many values.
  std::string png = moe::test::readFile(plot);
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.compare(0, 8, "\x89PNG\r\n\x1a\n"), 0);
  if (std::string(PYTHON3).empty())
    GTEST_SKIP() << "no python3 to decode the PNG";
  std::string script = file("png.py");
  std::ofstream(script)
      << "import struct, sys, zlib\n"
         "data = open(sys.argv[1], 'rb').read()\n"
         "at, idat, size = 8, b'', None\n"
         "while at < len(data):\n"
         "    n, kind = struct.unpack('>I4s', data[at:at + 8])\n"
         "    body = data[at + 8:at + 8 + n]\n"
         "    crc, = struct.unpack('>I', data[at + 8 + n:at + 12 + n])\n"
         "    assert crc == zlib.crc32(kind + body), kind\n"
         "    if kind == b'IHDR': size = struct.unpack('>II', body[:8])\n"
         "    if kind == b'IDAT': idat += body\n"
         "    at += 12 + n\n"
         "w, h = size\n"
         "raw = zlib.decompress(idat)\n"
         "print(w, h, len(set(raw)) > 16)\n";
  Result decoded = run({script, plot}, PYTHON3);
  EXPECT_EQ(decoded.status, 0) << decoded.err;
  EXPECT_EQ(decoded.out, "800 500 True\n") << decoded.err;
}

TEST_F(TrainCliTest, CsvMetricsHaveOneColumnPerValue) {
  std::string metrics = file("m.csv");
  Result r = train({"--steps", "10", "--eval-every", "0", "--metrics", metrics,
                    "--sample-chars", "0"});
  ASSERT_EQ(r.status, 0) << r.err;
  std::string csv = moe::test::readFile(metrics);
  EXPECT_EQ(csv.rfind("step,loss,lr,grad_norm,tokens_per_s,elapsed_s,"
                      "val_loss\n5,",
                      0),
            0u)
      << csv;
  EXPECT_NE(csv.find("\n10,,,,,,"), std::string::npos) << csv;
  EXPECT_EQ(r.out.find("sample:"), std::string::npos);

  // Resumed at step 5 (the rows after it dropped) and run on to 15: one
  // header, each step once.
  std::string dir = file("ck");
  Result first = train({"--steps", "5", "--eval-every", "0", "--checkpoint-dir",
                        dir, "--sample-chars", "0"});
  ASSERT_EQ(first.status, 0) << first.err;
  Result resumed =
      train({"--steps", "15", "--eval-every", "0", "--metrics", metrics,
             "--checkpoint-dir", dir, "--resume", "--sample-chars", "0"});
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  std::istringstream lines(moe::test::readFile(metrics));
  std::vector<std::string> steps;
  for (std::string line; std::getline(lines, line);)
    steps.push_back(line.substr(0, line.find(',')));
  EXPECT_EQ(steps, (std::vector<std::string>{"step", "5", "10", "15", "15"}));
}

// A run stopped after its step-40 checkpoint and resumed gives the same
// records for the remaining steps as one that was never stopped.
void TrainCliTest::expectResumeIsBitIdentical(const std::string &binary) {
  std::string dir = file("ck");
  std::string whole = file("whole.jsonl"), resumed = file("r.jsonl");
  Result a = train({"--steps", "60", "--metrics", whole}, binary);
  ASSERT_EQ(a.status, 0) << a.err;
  Result b = train({"--steps", "60", "--checkpoint-dir", dir, "--save-every",
                    "20", "--metrics", resumed},
                   binary);
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_NE(b.out.find("checkpoint " + dir + "/step-000060"),
            std::string::npos);
  // The crash: the step-60 checkpoint never became latest, and the last
  // metrics record was cut short.
  fs::remove_all(dir + "/step-000060");
  std::ofstream(dir + "/latest") << "step-000040\n";
  std::ofstream(resumed, std::ios::app) << "{\"step\": 65, \"lo";
  Result c = train({"--steps", "60", "--checkpoint-dir", dir, "--resume",
                    "--metrics", resumed},
                   binary);
  ASSERT_EQ(c.status, 0) << c.err;
  EXPECT_NE(c.err.find("note: resuming from " + dir + "/step-000040"),
            std::string::npos)
      << c.err;
  EXPECT_EQ(c.out.find("step 40/60"), std::string::npos) << c.out;

  // The resumed run kept the records up to step 40 (dropping the crashed
  // run's later ones) and logged the rest again: the whole run's records.
  std::vector<nlohmann::json> all = metricsRecords(whole);
  std::vector<nlohmann::json> kept = metricsRecords(resumed);
  ASSERT_EQ(all.size(), 12u + 3u);
  EXPECT_EQ(kept, all);
  // Expert counts are global: summed over the data-parallel ranks.
  std::vector<int64_t> counts = kept[kept.size() - 2]["expert_counts"][0];
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), int64_t(0)),
            kBatch * kSeq);
  // The sample at the end too.
  EXPECT_EQ(a.out.substr(a.out.find("sample:")),
            c.out.substr(c.out.find("sample:")));
}

TEST_F(TrainCliTest, ResumeIsBitIdentical) {
  expectResumeIsBitIdentical(FAKE_MODEL);
}

TEST_F(TrainCliTest, ResumeIsBitIdenticalOnTwoRanks) {
  expectResumeIsBitIdentical(FAKE_MODEL_DP2);
}

TEST_F(TrainCliTest, CheckpointsLoadOntoAnotherMesh) {
  std::string dir = file("ck");
  Result two =
      train({"--steps", "20", "--checkpoint-dir", dir, "--sample-chars", "0"},
            FAKE_MODEL_DP2);
  ASSERT_EQ(two.status, 0) << two.err;
  EXPECT_TRUE(fs::exists(dir + "/step-000020/rank-00001.safetensors"));
  // Saved as two column blocks, resumed on one rank, and back onto two.
  Result one = train({"--steps", "30", "--checkpoint-dir", dir, "--resume",
                      "--sample-chars", "0"});
  ASSERT_EQ(one.status, 0) << one.err;
  EXPECT_NE(one.out.find("step 25/30"), std::string::npos) << one.out;
  Result again = train({"--steps", "40", "--checkpoint-dir", dir, "--resume",
                        "--sample-chars", "0"},
                       FAKE_MODEL_DP2);
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_NE(again.out.find("step 40/40"), std::string::npos) << again.out;
  // The two newest checkpoints are kept.
  EXPECT_FALSE(fs::exists(dir + "/step-000020"));
  EXPECT_TRUE(fs::exists(dir + "/step-000030"));
  EXPECT_EQ(moe::test::readFile(dir + "/latest"), "step-000040\n");
}

TEST_F(TrainCliTest, ResumeWithoutACheckpointStartsFromScratch) {
  Result r = train({"--steps", "5", "--checkpoint-dir", file("empty"),
                    "--resume", "--sample-chars", "0"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("note: no checkpoint in"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("step 5/5"), std::string::npos);
}

TEST_F(TrainCliTest, BadFlagsAreUsageErrors) {
  auto bad = [&](const std::vector<std::string> &extra,
                 const std::string &part) {
    std::vector<std::string> args = {"--steps", "10"};
    args.insert(args.end(), extra.begin(), extra.end());
    expectError(train(args), 2, part);
  };
  bad({"--batch", "4"}, "--batch is 4, but the model is compiled for batch 2 "
                        "and seq 8; recompile");
  bad({"--seq", "16"}, "compiled for batch 2 and seq 8");
  bad({"--lr", "fast"}, "--lr 'fast' is not a finite number");
  bad({"--min-lr", "1"}, "--min-lr is 1, above --lr");
  bad({"--warmup", "11"}, "--warmup is 11");
  bad({"--beta1", "1"}, "--beta1 is 1, expected a value below 1");
  bad({"--clip", "-1"}, "--clip is -1");
  bad({"--bias-update-rate", "0.01"},
      "--bias-update-rate is 0.01, but this model's routers have no expert "
      "bias to balance");
  bad({"--bias-update-rate", "-1"}, "--bias-update-rate is -1");
  bad({"--eval-batches", "0"}, "--eval-batches is 0");
  bad({"--log-every", "0"}, "--log-every is 0");
  bad({"--save-every", "5"}, "--save-every needs --checkpoint-dir");
  bad({"--resume"}, "--resume needs --checkpoint-dir");
  bad({"--resume=yes"}, "--resume takes no value");
  bad({"--metrics", file("m.txt")}, "expected a file name ending in .jsonl "
                                    "or .csv");
  bad({"--plot", file("p.jpg")}, "ending in .png");
  bad({"--weights", file("w.safetensors")}, "not both");
  expectError(run({"train", "--data", corpus, "--init-random", "1"}), 2,
              "give --steps N");
  expectError(run({"train", "--steps", "3", "--init-random", "1"}), 2,
              "give --data FILE");
  expectError(
      run({"train", "--data", corpus, "--steps", "0", "--init-random", "1"}), 2,
      "--steps is 0");
  EXPECT_FALSE(fs::exists(file("m.txt")));
}

TEST_F(TrainCliTest, DataProblemsAreOneLineErrors) {
  std::string bad = file("bad.txt");
  std::ofstream(bad) << std::string(500, 'a') + "Z" + std::string(100, 'b');
  std::string metrics = file("m.jsonl");
  Result r = run({"train", "--data", bad, "--steps", "5", "--init-random", "1",
                  "--metrics", metrics});
  expectError(r, 1,
              "character 'Z' at byte offset 500 is not in the model's "
              "vocabulary");
  EXPECT_FALSE(fs::exists(metrics));
  expectError(run({"train", "--data", corpus, "--steps", "5", "--init-random",
                   "1", "--plot", file("no/dir/p.png")}),
              1, "directory");
  std::string tiny = file("tiny.txt");
  std::ofstream(tiny) << "abcdefghijklmnopabcdefghijklmnop";
  expectError(
      run({"train", "--data", tiny, "--steps", "5", "--init-random", "1"}), 1,
      "too short for one window");
  expectError(run({"train", "--data", file("absent.txt"), "--steps", "5",
                   "--init-random", "1"}),
              1, "cannot open the data file");
  // The same under two ranks: one line, from rank 0.
  expectError(run({"train", "--data", bad, "--steps", "5", "--init-random", "1",
                   "--comm", "local"},
                  FAKE_MODEL_DP2),
              1, "character 'Z' at byte offset 500");
}

TEST_F(TrainCliTest, MalformedCheckpointIsOneLineError) {
  std::string dir = file("ck");
  fs::create_directories(dir + "/step-000010");
  std::ofstream(dir + "/latest") << "step-000010\n";
  std::ofstream(dir + "/step-000010/index.json") << "{\"format\": ";
  expectError(train({"--steps", "20", "--checkpoint-dir", dir, "--resume"}), 1,
              "index.json: not valid JSON");
}

TEST_F(TrainCliTest, ModelsWithoutATrainingStepSaySo) {
  expectError(
      run({"train", "--data", corpus, "--steps", "5", "--init-random", "1"},
          FAKE_MODEL_IDS),
      1,
      "this model was compiled without a training step; recompile "
      "with moec --train-step");
  expectError(run({"grad", "--init-random", "1", "--tokens", kChainTokens,
                   "--output", file("g")},
                  FAKE_MODEL_IDS),
              1, "without a training step");
}

TEST_F(DriverCliTest, GradWritesTheLossAndTheGradient) {
  std::string weights = writeChainWeights();
  std::string output = file("grad.safetensors");
  Result r = run({"grad", "--weights", weights, "--tokens", kChainTokens,
                  "--output", output});
  ASSERT_EQ(r.status, 0) << r.err;
  SafetensorsReader reader = SafetensorsReader::open(output);
  EXPECT_EQ(reader.names(),
            (std::vector<std::string>{"loss", "model.embed_tokens.weight"}));
  std::vector<float> loss(1), grad(kVocab * kVocab);
  reader.readF32("loss", {}, loss.data());
  reader.readF32("model.embed_tokens.weight", {kVocab, kVocab}, grad.data());
  double lse = std::log(15.0 + std::exp(4.0));
  EXPECT_NEAR(loss[0], (7 * (lse - 4.0) + 7 * lse) / 14, 1e-5);

  // By hand: each labelled position adds (softmax - onehot) / 14 to the row
  // of its token; the chain row's softmax is e^4 / (15 + e^4) at successor.
  std::vector<int> tokens = {0, 3, 2,  13, 4,  7,  6,  1,
                             8, 9, 10, 11, 12, 13, 14, 15};
  std::vector<double> want(kVocab * kVocab, 0.0);
  for (int b = 0; b < kBatch; ++b)
    for (int s = 0; s + 1 < kSeq; ++s) {
      int token = tokens[b * kSeq + s], label = tokens[b * kSeq + s + 1];
      for (int v = 0; v < kVocab; ++v) {
        double p = (v == successor(token) ? std::exp(4.0) : 1.0) /
                   (15.0 + std::exp(4.0));
        want[token * kVocab + v] += (p - (v == label)) / 14;
      }
    }
  for (int i = 0; i < kVocab * kVocab; ++i)
    EXPECT_NEAR(grad[i], want[i], 1e-6) << i;

  expectError(run({"grad", "--init-random", "1", "--tokens", kChainTokens,
                   "--output", file("g"), "--comm", "local"},
                  FAKE_MODEL_DP2),
              2, "unknown flag '--comm'");
  expectError(run({"grad", "--init-random", "1", "--tokens", kChainTokens,
                   "--output", file("g")},
                  FAKE_MODEL_DP2),
              2, "grad needs a model compiled for one rank");
  expectError(run({"grad", "--init-random", "1", "--tokens", kChainTokens}), 2,
              "give --output FILE");
}

} // namespace

TEST_F(DriverCliTest, BackendFlagPicksWhereTheModelRuns) {
  std::string weights = writeChainWeights();
  Result cpu = run({"forward", "--weights", weights, "--tokens", kChainTokens,
                    "--backend", "cpu"});
  ASSERT_EQ(cpu.status, 0) << cpu.err;
  Result plain = run({"forward", "--weights", weights, "--tokens", kChainTokens});
  EXPECT_EQ(cpu.out, plain.out);

  expectError(run({"forward", "--weights", weights, "--tokens", kChainTokens,
                   "--backend", "gpu"}),
              2, "--backend is 'gpu', expected cpu or cuda");
  // This executable is linked without the CUDA backend (moec without --cuda).
  expectError(run({"forward", "--weights", weights, "--tokens", kChainTokens,
                   "--backend", "cuda"}),
              1, "backend 'cuda' is not in this executable");
}
