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

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
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
  for (const char *command : {"forward", "generate", "init", "info"})
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
  expectError(run({"train"}), 2, "unknown command 'train'");
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

} // namespace
