//===- TrainTest.cpp - The pieces of the train command --------------------===//
//
// The learning-rate schedule, the corpus and its batches, the clipping norm's
// replica weighting, the block intersection that lets a checkpoint load onto
// another mesh, checkpoint atomicity, and the loss plot (gnuplot).
//
//===----------------------------------------------------------------------===//

#include "driver/train/Train.h"
#include "driver/model/Manifest.h"
#include "driver/model/Placement.h"
#include "driver/train/Checkpoint.h"
#include "driver/train/Corpus.h"
#include "driver/train/Optimizer.h"
#include "driver/train/Plot.h"

#include "TempDirTest.h"
#include "moe/Runtime/BFloat16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

using namespace moe::driver;
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

//===----------------------------------------------------------------------===//
// Learning rate
//===----------------------------------------------------------------------===//

TEST(LrScheduleTest, WarmsUpLinearlyThenFollowsACosine) {
  LrSchedule s{/*lr=*/1e-2, /*minLr=*/1e-3, /*warmup=*/10, /*steps=*/110};
  EXPECT_DOUBLE_EQ(s.at(1), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(5), 5e-3);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-2);
  // Halfway through the cosine: the mean of lr and min-lr.
  EXPECT_NEAR(s.at(60), 5.5e-3, 1e-15);
  EXPECT_NEAR(s.at(110), 1e-3, 1e-15);
  for (int64_t step = 11; step <= 110; ++step)
    EXPECT_LT(s.at(step), s.at(step - 1)) << step;
  // A quarter: min + (lr - min) (1 + cos(pi/4)) / 2.
  EXPECT_NEAR(s.at(35), 1e-3 + 9e-3 * (1 + std::sqrt(0.5)) / 2, 1e-15);
}

TEST(LrScheduleTest, NoWarmupAndAllWarmup) {
  LrSchedule cosine{1.0, 0.0, 0, 4};
  EXPECT_NEAR(cosine.at(2), 0.5, 1e-15);
  EXPECT_NEAR(cosine.at(4), 0.0, 1e-15);
  LrSchedule warm{1.0, 0.0, 4, 4};
  EXPECT_DOUBLE_EQ(warm.at(2), 0.5);
  EXPECT_DOUBLE_EQ(warm.at(4), 1.0);
}

TEST(DurationTextTest, Formats) {
  EXPECT_EQ(durationText(0.4), "0s");
  EXPECT_EQ(durationText(45), "45s");
  EXPECT_EQ(durationText(83), "1m23s");
  EXPECT_EQ(durationText(2 * 3600 + 3 * 60 + 10), "2h03m");
}

//===----------------------------------------------------------------------===//
// Corpus
//===----------------------------------------------------------------------===//

class CorpusTest : public moe::test::TempDirTest {
protected:
  std::string write(const std::string &name, const std::string &text) {
    std::string path = file(name);
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
};

const std::vector<std::string> kAbc = {"a", "b", "c", "\n", "é"};

TEST_F(CorpusTest, SplitsNinetyTenAndEncodesUtf8) {
  std::string text;
  for (int i = 0; i < 100; ++i)
    text += i % 10 == 9 ? "é" : std::string(1, "abc\n"[i % 4]);
  Corpus corpus = Corpus::readFile(write("c.txt", text), kAbc, 4);
  EXPECT_EQ(corpus.trainSize(), 90);
  EXPECT_EQ(corpus.validationSize(), 10);
  EXPECT_EQ(corpus.validation()[9], 4); // é, the 100th character
  EXPECT_EQ(corpus.validation()[0], 2); // character 90 is c
}

TEST_F(CorpusTest, NamesTheFirstBadCharacterAndItsByteOffset) {
  std::string path = write("bad.txt", "abé\nabzc" + std::string(100, 'a'));
  try {
    Corpus::readFile(path, kAbc, 4);
    FAIL() << "no error";
  } catch (const std::runtime_error &e) {
    EXPECT_EQ(std::string(e.what()),
              path + ": character 'z' at byte offset 7 is not in the model's "
                     "vocabulary (vocab_chars)");
  }
}

TEST_F(CorpusTest, TooShortForAWindowInEitherSplit) {
  // 50 characters: the validation split (5) cannot hold seq + 1 = 6.
  EXPECT_THROW(Corpus::readFile(write("s.txt", std::string(50, 'a')), kAbc, 5),
               std::runtime_error);
  EXPECT_NO_THROW(
      Corpus::readFile(write("ok.txt", std::string(69, 'a')), kAbc, 5));
  EXPECT_THROW(Corpus::readFile(file("absent.txt"), kAbc, 5),
               std::runtime_error);
}

/// `ids` as little-endian unsigned integers of `bytes` bytes each, written
/// byte by byte (independently of the reader's decoding).
std::string littleEndian(const std::vector<uint32_t> &ids, int bytes) {
  std::string out;
  for (uint32_t id : ids)
    for (int b = 0; b < bytes; ++b)
      out += static_cast<char>((id >> (8 * b)) & 0xff);
  return out;
}

TEST_F(CorpusTest, ReadsLittleEndianTokenIdsOfSixteenAndThirtyTwoBits) {
  std::vector<uint32_t> ids;
  for (uint32_t i = 0; i < 100; ++i)
    ids.push_back((i * 7919u + 258u) % 60000u); // high bytes set too
  Corpus u16 =
      Corpus::readTokenFile(write("t.u16", littleEndian(ids, 2)), 2, 60000, 4);
  EXPECT_EQ(u16.trainSize(), 90);
  ASSERT_EQ(u16.validationSize(), 10);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(u16.validation()[i], int32_t(ids[90 + i])) << i;

  ids[95] = 150000; // needs 32 bits
  Corpus u32 =
      Corpus::readTokenFile(write("t.u32", littleEndian(ids, 4)), 4, 151936, 4);
  EXPECT_EQ(u32.validation()[5], 150000);
  EXPECT_EQ(u32.validation()[0], int32_t(ids[90]));
}

TEST_F(CorpusTest, TokenFileErrorsNameTheFileAndTheId) {
  std::vector<uint32_t> ids(100, 3);
  ids[42] = 64;
  std::string path = write("bad.u16", littleEndian(ids, 2));
  try {
    Corpus::readTokenFile(path, 2, 64, 4);
    FAIL() << "no error";
  } catch (const std::runtime_error &e) {
    EXPECT_EQ(std::string(e.what()),
              path + ": token id 64 at index 42 is not below the model's "
                     "vocabulary size 64");
  }
  std::string odd = write("odd.u32", littleEndian(ids, 4) + "xy");
  try {
    Corpus::readTokenFile(odd, 4, 100, 4);
    FAIL() << "no error";
  } catch (const std::runtime_error &e) {
    EXPECT_EQ(std::string(e.what()),
              odd + ": 402 bytes is not a whole number of 32-bit token ids "
                    "(--data-format u32)");
  }
  EXPECT_THROW(Corpus::readTokenFile(file("absent.u16"), 2, 64, 4),
               std::runtime_error);
  // 20 ids: too short for windows of seq + 1 = 5 in the validation split.
  EXPECT_THROW(
      Corpus::readTokenFile(
          write("short.u16", littleEndian(std::vector<uint32_t>(20, 1), 2)), 2,
          64, 4),
      std::runtime_error);
}

TEST(CorpusBatchTest, WindowsAreShiftedAndDependOnSeedAndStepOnly) {
  std::vector<int32_t> ids(1000);
  std::iota(ids.begin(), ids.end(), 0);
  Corpus corpus(ids, 16, "ids");
  Batch a = corpus.trainBatch(7, 3, 4);
  ASSERT_EQ(a.tokens.size(), 64u);
  for (int b = 0; b < 4; ++b) {
    int32_t start = a.tokens[b * 16];
    EXPECT_LE(start + 16, 899) << "the window stays in the training split";
    for (int s = 0; s < 16; ++s) {
      EXPECT_EQ(a.tokens[b * 16 + s], start + s);
      EXPECT_EQ(a.labels[b * 16 + s], start + s + 1);
    }
  }
  // The same (seed, step) gives the same batch whenever it is asked for.
  corpus.trainBatch(7, 2, 4);
  EXPECT_EQ(corpus.trainBatch(7, 3, 4).tokens, a.tokens);
  EXPECT_NE(corpus.trainBatch(7, 4, 4).tokens, a.tokens);
  EXPECT_NE(corpus.trainBatch(8, 3, 4).tokens, a.tokens);

  // Over many steps every start position of the split can be drawn.
  std::set<int64_t> starts;
  for (int64_t step = 1; step <= 2000; ++step)
    for (int64_t s : corpus.trainWindowStarts(1, step, 4))
      starts.insert(s);
  EXPECT_EQ(*starts.begin(), 0);
  EXPECT_EQ(*starts.rbegin(), 900 - 17);
}

TEST(CorpusBatchTest, ValidationWindowsAreFixedAndSpanTheSplit) {
  std::vector<int32_t> ids(1000);
  std::iota(ids.begin(), ids.end(), 0);
  Corpus corpus(ids, 16, "ids");
  Batch first = corpus.validationBatch(0, 3, 2);
  Batch last = corpus.validationBatch(2, 3, 2);
  EXPECT_EQ(first.tokens[0], 900);
  EXPECT_EQ(last.tokens[16], 1000 - 17);
  EXPECT_EQ(last.labels[31], 999);
  EXPECT_EQ(corpus.validationBatch(0, 3, 2).tokens, first.tokens);
}

//===----------------------------------------------------------------------===//
// Gradient-norm clipping
//===----------------------------------------------------------------------===//

Manifest twoParamManifest() {
  // dp=2, ep=2 (2 ranks): an expert weight split over ep, a norm replicated.
  return parseManifest(R"({
    "format": "moe-model/1", "function": "forward",
    "entry": "moe_entry_forward", "weights_bytes": 128, "arena_bytes": 0,
    "unplanned_bytes": 0,
    "params": [
      {"name": "experts.{e}.w", "shape": [1, 2], "global_shape": [2, 2],
       "split": [["ep"], []], "dtype": "F32", "offset": 0},
      {"name": "norm.weight", "shape": [2], "dtype": "F32", "offset": 64}],
    "inputs": [
      {"name": "tokens", "shape": [1, 4], "global_shape": [2, 4],
       "split": [["dp"], []], "dtype": "I32"},
      {"name": "labels", "shape": [1, 4], "global_shape": [2, 4],
       "split": [["dp"], []], "dtype": "I32"}],
    "outputs": [{"name": "logits", "shape": [2, 4, 8], "dtype": "F32"},
                {"name": "loss", "shape": [], "dtype": "F32"}],
    "mesh": {"dp": 2, "ep": 2}})");
}

TEST(ClippingTest, ReplicatedGradientsCountOnce) {
  Manifest m = twoParamManifest();
  EXPECT_EQ(paramReplicas(m.params[0], m.mesh), 1);
  EXPECT_EQ(paramReplicas(m.params[1], m.mesh), 2);
  // Rank r holds expert r's gradient (distinct) and the norm's (the same
  // on both ranks): the global norm^2 is e0^2 + e1^2 + n^2, n once.
  std::vector<float> expert[2] = {{1, 2}, {3, 4}}, norm = {5, 6};
  double total = 0;
  for (int r = 0; r < 2; ++r) {
    AlignedBuffer grads(m.weightsBytes);
    std::memcpy(grads.f32(0), expert[r].data(), 8);
    std::memcpy(grads.f32(64), norm.data(), 8);
    total += localGradNormSquared(m, grads);
  }
  EXPECT_DOUBLE_EQ(total, 1 + 4 + 9 + 16 + 25 + 36);
  EXPECT_FLOAT_EQ(clipScale(4.0, 1.0), float(1.0 / (4.0 + 1e-6)));
  EXPECT_EQ(clipScale(0.5, 1.0), 1.0f);
  EXPECT_EQ(clipScale(100.0, 0.0), 1.0f);
  EXPECT_DOUBLE_EQ(sumOverRanks(2.5, nullptr), 2.5);
}

// AdamW runs in the backend's memory and skips expert slots that hold no
// expert: on rank 0 of ep=2 with 4 experts and one spare slot per rank, the
// static split fills slots 0-1 and leaves slot 2 empty. The occupied slots
// and the other parameters take exactly the update of a run without the
// placement, which also moves slot 2 (so the comparison can tell).
TEST(AdamWTest, SkipsEmptyExpertSlots) {
  Manifest m = parseManifest(R"({
    "format": "moe-model/1", "function": "forward",
    "entry": "moe_entry_forward", "weights_bytes": 128, "arena_bytes": 0,
    "unplanned_bytes": 0,
    "params": [
      {"name": "experts.{e}.w", "shape": [3, 2], "global_shape": [4, 2],
       "split": [["ep"], []], "placement": 0, "dtype": "F32", "offset": 0},
      {"name": "norm.weight", "shape": [2], "dtype": "F32", "offset": 64}],
    "inputs": [
      {"name": "tokens", "shape": [1, 4], "global_shape": [2, 4],
       "split": [["dp"], []], "dtype": "I32"},
      {"name": "labels", "shape": [1, 4], "global_shape": [2, 4],
       "split": [["dp"], []], "dtype": "I32"}],
    "outputs": [{"name": "logits", "shape": [2, 4, 8], "dtype": "F32"},
                {"name": "loss", "shape": [], "dtype": "F32"}],
    "mesh": {"dp": 2, "ep": 2}})");
  RankPlace place{m.mesh, {}, staticPlacements(m)};
  ASSERT_EQ(slotExperts(m.params[0], place), (std::vector<int32_t>{0, 1, -1}));

  std::unique_ptr<moe::rt::Backend> backend = moe::rt::makeCpuBackend();
  AlignedBuffer weights(m.weightsBytes), grads(m.weightsBytes);
  for (int i = 0; i < 6; ++i) {
    weights.f32(0)[i] = 0.5f + i;
    grads.f32(0)[i] = 0.25f * (i + 1);
  }
  weights.f32(64)[0] = 1.0f;
  grads.f32(64)[0] = -0.5f;
  AdamWConfig config;
  auto run = [&](const RankPlace *where) {
    BackendBuffer w(*backend, m.weightsBytes), g(*backend, m.weightsBytes);
    backend->upload(w.data(), weights.data(), weights.size());
    backend->upload(g.data(), grads.data(), grads.size());
    AdamW adam(m, config, *backend);
    for (int64_t step = 1; step <= 3; ++step)
      adam.step(w.data(), GradBlob{g.data()}, 1e-2, 1.0f, step, where);
    AlignedBuffer out(m.weightsBytes);
    backend->download(out.data(), w.data(), out.size());
    return out;
  };
  AlignedBuffer placed = run(&place), everything = run(nullptr);
  for (int i = 0; i < 4; ++i) { // slots 0 and 1
    EXPECT_EQ(placed.f32(0)[i], everything.f32(0)[i]) << i;
    EXPECT_NE(placed.f32(0)[i], weights.f32(0)[i]) << i;
  }
  EXPECT_EQ(placed.f32(64)[0], everything.f32(64)[0]);
  for (int i = 4; i < 6; ++i) { // slot 2: untouched, unlike without place
    EXPECT_EQ(placed.f32(0)[i], weights.f32(0)[i]) << i;
    EXPECT_NE(everything.f32(0)[i], weights.f32(0)[i]) << i;
  }
}

// Under bf16 storage the optimizer can read the training step's bf16
// gradients (no fp32 blob): widening is exact, so the update and the norm
// are those of the same gradients widened into an fp32 blob, bit for bit.
TEST(AdamWTest, ReadsBf16GradientsAsTheirWidenedValues) {
  Manifest m = parseManifest(R"({
    "format": "moe-model/1", "function": "forward",
    "entry": "moe_entry_forward", "weights_bytes": 128, "arena_bytes": 0,
    "unplanned_bytes": 0, "storage": "BF16",
    "params": [
      {"name": "w", "shape": [7, 3], "dtype": "BF16", "offset": 0},
      {"name": "norm.weight", "shape": [5], "dtype": "BF16", "offset": 64}],
    "inputs": [{"name": "tokens", "shape": [2, 4], "dtype": "I32"},
               {"name": "labels", "shape": [2, 4], "dtype": "I32"}],
    "outputs": [{"name": "logits", "shape": [2, 4, 8], "dtype": "BF16"},
                {"name": "loss", "shape": [], "dtype": "F32"}]})");
  ASSERT_TRUE(m.bf16Storage());
  std::unique_ptr<moe::rt::Backend> backend = moe::rt::makeCpuBackend();
  AlignedBuffer weights(m.weightsBytes), wide(m.weightsBytes),
      narrow(m.storageWeightsBytes);
  for (const ParamInfo &p : m.params)
    for (int64_t i = 0; i < p.numElements(); ++i) {
      uint16_t bits = moe::rt::f32ToBf16(0.37f * float(i) - 1.1f);
      std::memcpy(narrow.data() + p.storageOffset + 2 * i, &bits, 2);
      wide.f32(p.offset)[i] = moe::rt::bf16ToF32(bits);
      weights.f32(p.offset)[i] = 0.5f - 0.01f * float(i);
    }
  auto run = [&](const AlignedBuffer &grads, bool bf16, double &norm) {
    BackendBuffer w(*backend, m.weightsBytes), g(*backend, grads.size());
    backend->upload(w.data(), weights.data(), weights.size());
    backend->upload(g.data(), grads.data(), grads.size());
    AdamW adam(m, AdamWConfig{}, *backend);
    norm = adam.localGradNormSquared(GradBlob{g.data(), bf16}, nullptr);
    for (int64_t step = 1; step <= 3; ++step)
      adam.step(w.data(), GradBlob{g.data(), bf16}, 1e-2, 0.5f, step);
    AlignedBuffer out(m.weightsBytes);
    backend->download(out.data(), w.data(), out.size());
    return out;
  };
  double wideNorm = 0.0, narrowNorm = 0.0;
  AlignedBuffer fromWide = run(wide, false, wideNorm);
  AlignedBuffer fromNarrow = run(narrow, true, narrowNorm);
  EXPECT_EQ(narrowNorm, wideNorm);
  EXPECT_EQ(narrowNorm, localGradNormSquared(m, wide));
  EXPECT_EQ(std::memcmp(fromNarrow.data(), fromWide.data(), m.weightsBytes), 0);
  EXPECT_NE(fromWide.f32(m.params[0].offset)[3],
            weights.f32(m.params[0].offset)[3]);
}

// dp=4, ep=2 (4 ranks, edp=2): an expert weight split over ep, a dense
// matrix of 37 elements and a norm of 2, replicated; with "zero_stage": 1
// when `zero`.
Manifest zeroManifest(bool zero) {
  std::string spec = R"({
    "format": "moe-model/1", "function": "forward",
    "entry": "moe_entry_forward", "weights_bytes": 448, "arena_bytes": 0,
    "unplanned_bytes": 0,
    "params": [
      {"name": "experts.{e}.w", "shape": [2, 20], "global_shape": [4, 20],
       "split": [["ep"], []], "dtype": "F32", "offset": 0},
      {"name": "dense.weight", "shape": [1, 37], "dtype": "F32", "offset": 192},
      {"name": "norm.weight", "shape": [2], "dtype": "F32", "offset": 384}],
    "inputs": [
      {"name": "tokens", "shape": [1, 4], "global_shape": [4, 4],
       "split": [["dp"], []], "dtype": "I32"},
      {"name": "labels", "shape": [1, 4], "global_shape": [4, 4],
       "split": [["dp"], []], "dtype": "I32"}],
    "outputs": [{"name": "logits", "shape": [4, 4, 8], "dtype": "F32"},
                {"name": "loss", "shape": [], "dtype": "F32"}],
    "train_step": {"function": "train_step", "entry": "moe_entry_train_step",
      "arena_bytes": 0, "unplanned_bytes": 0,
      "inputs": [
        {"name": "tokens", "shape": [1, 4], "global_shape": [4, 4],
         "split": [["dp"], []], "dtype": "I32"},
        {"name": "labels", "shape": [1, 4], "global_shape": [4, 4],
         "split": [["dp"], []], "dtype": "I32"}],
      "outputs": [{"name": "loss", "shape": [], "dtype": "F32"}]},
    "mesh": {"dp": 4, "ep": 2})";
  return parseManifest(spec + (zero ? R"(, "zero_stage": 1})" : "}"));
}

// Under ZeRO stage 1 each rank keeps the moments of one slice of every
// block and the replicas gather the updated slices: the weights after
// several steps and the gathered moments are bit for bit those of the
// whole-state optimizer, and the moments take what OptimizerShards says.
TEST(AdamWTest, ZeroStageOneMatchesTheWholeStateBitForBit) {
  Manifest plain = zeroManifest(false), zero = zeroManifest(true);
  ASSERT_EQ(zero.zeroStage, 1);
  std::mutex failures;
  std::vector<std::string> problems;
  moe::rt::runLocal(4, [&](moe::rt::Communicator &world) {
    moe::rt::MeshGroups groups = moe::rt::makeMeshGroups(world, zero.mesh);
    std::unique_ptr<moe::rt::Backend> backend = moe::rt::makeCpuBackend();
    // Weights and gradients as after the training step: the expert block
    // differs between ep ranks, everything else is the same everywhere.
    int ep = groups.coords.ep.rank;
    AlignedBuffer weights(448), grads(448);
    for (int i = 0; i < 40; ++i) {
      weights.f32(0)[i] = 0.1f * i + ep;
      grads.f32(0)[i] = std::sin(0.3f * i + ep);
    }
    for (int i = 0; i < 37; ++i) {
      weights.f32(192)[i] = 1.0f - 0.05f * i;
      grads.f32(192)[i] = std::cos(0.7f * i);
    }
    weights.f32(384)[0] = 1.0f;
    weights.f32(384)[1] = 0.5f;
    grads.f32(384)[0] = -0.25f;
    grads.f32(384)[1] = 0.75f;
    AdamWConfig config;
    auto train = [&](AdamW &adam, BackendBuffer &w, int64_t from, int64_t to) {
      BackendBuffer g(*backend, 448);
      backend->upload(g.data(), grads.data(), 448);
      for (int64_t step = from; step <= to; ++step)
        adam.step(w.data(), GradBlob{g.data()}, 1e-2, 0.5f, step);
    };
    BackendBuffer wPlain(*backend, 448), wZero(*backend, 448);
    backend->upload(wPlain.data(), weights.data(), 448);
    backend->upload(wZero.data(), weights.data(), 448);
    AdamW whole(plain, config, *backend, &groups);
    // Gathers of 16-element pieces: the expert slices (32) take two.
    AdamW sliced(zero, config, *backend, &groups, (2 + 1) * 16 * 4);
    train(whole, wPlain, 1, 3);
    train(sliced, wZero, 1, 3);
    AlignedBuffer m1(448), v1(448), m2(448), v2(448);
    whole.pull(m1, v1);
    sliced.pull(m2, v2);
    // A fresh sliced optimizer takes the whole moments back and goes on.
    AdamW resumed(zero, config, *backend, &groups, (4 + 1) * 16 * 4);
    resumed.push(m2, v2);
    BackendBuffer wResumed(*backend, 448);
    backend->copy(wResumed.data(), wZero.data(), 448);
    train(whole, wPlain, 4, 4);
    train(resumed, wResumed, 4, 4);

    std::lock_guard<std::mutex> lock(failures);
    auto same = [&](const char *what, const uint8_t *a, const uint8_t *b) {
      for (uint64_t at : {uint64_t{0}, uint64_t{192}, uint64_t{384}})
        if (std::memcmp(a + at, b + at, at == 0 ? 160 : at == 192 ? 148 : 8))
          problems.push_back("rank " + std::to_string(world.rank()) + ": " +
                             what + " differ at offset " + std::to_string(at));
    };
    AlignedBuffer a(448), b(448);
    backend->download(a.data(), wPlain.data(), 448);
    backend->download(b.data(), wResumed.data(), 448);
    same("weights", a.data(), b.data());
    same("first moments", m1.data(), m2.data());
    same("second moments", v1.data(), v2.data());
    // Expert block: 40 elements over edp=2, 20 each, rounded up to 32; the
    // dense matrix 37 over 4 ranks, 10 each, rounded to 16; the norm 16.
    if (sliced.momentBytes() != (32 + 16 + 16) * 4 ||
        whole.momentBytes() != 448)
      problems.push_back("moment bytes " +
                         std::to_string(sliced.momentBytes()) + " and " +
                         std::to_string(whole.momentBytes()));
  });
  EXPECT_TRUE(problems.empty()) << problems.front();
}

// The message parseManifest throws for `text`, or "no error".
std::string manifestError(const std::string &text) {
  try {
    parseManifest(text);
  } catch (const std::runtime_error &e) {
    return e.what();
  }
  return "no error";
}

// A manifest of a forward without a training step, its closing brace left
// off for the fields a test adds.
const std::string kForwardOnly = R"({
    "format": "moe-model/1", "function": "forward",
    "entry": "moe_entry_forward", "weights_bytes": 64, "arena_bytes": 0,
    "unplanned_bytes": 0,
    "params": [{"name": "norm.weight", "shape": [2], "dtype": "F32", "offset": 0}],
    "inputs": [{"name": "tokens", "shape": [2, 4], "dtype": "I32"},
               {"name": "labels", "shape": [2, 4], "dtype": "I32"}],
    "outputs": [{"name": "logits", "shape": [2, 4, 8], "dtype": "F32"},
                {"name": "loss", "shape": [], "dtype": "F32"}])";

TEST(ManifestTest, ZeroStageIsOneToThreeAndNeedsATrainingStep) {
  EXPECT_EQ(
      manifestError(kForwardOnly + R"(, "zero_stage": 1})"),
      "manifest: 'zero_stage' is set, but the model has no training step");
  EXPECT_EQ(manifestError(kForwardOnly + R"(, "zero_stage": 4})"),
            "manifest: 'zero_stage' is 4, expected 1, 2 or 3");
  EXPECT_EQ(
      manifestError(kForwardOnly + R"(, "zero_stage": 3})"),
      "manifest: 'zero_stage' is set, but the model has no training step");
}

// Recompute and the evaluation step belong to a training step; recompute
// is "full" and says how many routing calls one forward pass makes.
TEST(ManifestTest, RecomputeAndEvalStepNeedATrainingStep) {
  auto step = [](const std::string &name) {
    return "\"" + name + R"(": {"function": ")" + name +
           R"(", "entry": "moe_entry_)" + name +
           R"(", "arena_bytes": 0, "unplanned_bytes": 0,
      "inputs": [{"name": "tokens", "shape": [2, 4], "dtype": "I32"},
                 {"name": "labels", "shape": [2, 4], "dtype": "I32"}],
      "outputs": [{"name": "loss", "shape": [], "dtype": "F32"}]})";
  };
  std::string trains = kForwardOnly + ", " + step("train_step");
  std::string calls = R"(, "forward_routing_calls": {"permute": 2, "drop": 0})";

  Manifest m = parseManifest(trains + ", " + step("eval_step") +
                             R"(, "recompute": "full")" + calls + "}");
  ASSERT_TRUE(m.evalStep.has_value());
  EXPECT_EQ(m.evalStep->entry, "moe_entry_eval_step");
  EXPECT_EQ(m.recompute, "full");
  EXPECT_EQ(m.forwardPermutes, 2);
  EXPECT_EQ(m.forwardDrops, 0);

  EXPECT_EQ(manifestError(kForwardOnly + ", " + step("eval_step") + "}"),
            "manifest: 'eval_step' is set, but the model has no training step");
  EXPECT_EQ(
      manifestError(kForwardOnly + R"(, "recompute": "full")" + calls + "}"),
      "manifest: 'recompute' is set, but the model has no training step");
  EXPECT_EQ(manifestError(trains + R"(, "recompute": "some")" + calls + "}"),
            "manifest: 'recompute' is \"some\", expected \"full\"");
  EXPECT_EQ(manifestError(trains + R"(, "recompute": "full"})"),
            "manifest: 'forward_routing_calls' is missing");
}

// A router's expert bias rises where its expert got fewer slots than the
// mean, falls where it got more, and stays at the mean; it is moved on a
// host copy of that one parameter. Counts of another shape are an error.
TEST(BiasBalancingTest, MovesTowardTheMeanAndChecksTheCounts) {
  ParamInfo bias;
  bias.name = "model.layers.1.mlp.gate.e_score_correction_bias";
  bias.shape = {4};
  bias.balancesLayer = 1;
  std::vector<float> values = {0.5f, 0.5f, 0.5f, -1.0f};
  std::vector<std::vector<int64_t>> counts = {{8, 0}, {1, 2, 3, 2}};
  balanceExpertBias(bias, values.data(), counts, 0.25);
  EXPECT_EQ(values, (std::vector<float>{0.75f, 0.5f, 0.25f, -1.0f}));

  auto message = [&](const std::vector<std::vector<int64_t>> &c) {
    try {
      balanceExpertBias(bias, values.data(), c, 0.25);
    } catch (const std::runtime_error &e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message({{1, 2, 3, 2}}),
            bias.name + " balances MoE layer 1, but the step reported 1 "
                        "layers of expert counts");
  EXPECT_EQ(message({{}, {1, 2}}),
            bias.name + " balances MoE layer 1, but the step reported 2 "
                        "layers of expert counts (2 experts there)");
  EXPECT_EQ(values, (std::vector<float>{0.75f, 0.5f, 0.25f, -1.0f}));
}

TEST(ClippingTest, SumOverRanksAgreesOnEveryRank) {
  std::vector<double> got(4);
  moe::rt::runLocal(4, [&](moe::rt::Communicator &world) {
    got[world.rank()] = sumOverRanks(0.1 * (world.rank() + 1), &world);
  });
  double want = ((0.1 + 0.2) + 0.30000000000000004) + 0.4;
  for (double g : got)
    EXPECT_EQ(g, want);
}

//===----------------------------------------------------------------------===//
// Block intersections (resume onto another mesh)
//===----------------------------------------------------------------------===//

// The naive reference: element by element over the whole tensor.
void naiveCopy(const std::vector<float> &src, const Block &srcBlock,
               std::vector<float> &dst, const Block &dstBlock,
               const std::vector<int64_t> &global) {
  int64_t total = 1;
  for (int64_t d : global)
    total *= d;
  size_t rank = global.size();
  for (int64_t flat = 0; flat < total; ++flat) {
    std::vector<int64_t> index(rank);
    int64_t rest = flat;
    for (size_t d = rank; d-- > 0;) {
      index[d] = rest % global[d];
      rest /= global[d];
    }
    bool inSrc = true, inDst = true;
    int64_t s = 0, t = 0;
    for (size_t d = 0; d < rank; ++d) {
      int64_t i = index[d];
      inSrc = inSrc && i >= srcBlock.start[d] &&
              i < srcBlock.start[d] + srcBlock.size[d];
      inDst = inDst && i >= dstBlock.start[d] &&
              i < dstBlock.start[d] + dstBlock.size[d];
      s = s * srcBlock.size[d] + (i - srcBlock.start[d]);
      t = t * dstBlock.size[d] + (i - dstBlock.start[d]);
    }
    if (inSrc && inDst)
      dst[t] = src[s];
  }
}

// The blocks of a tensor split `parts[d]` ways along each dim d.
std::vector<Block> tiles(const std::vector<int64_t> &global,
                         const std::vector<int64_t> &parts) {
  std::vector<Block> blocks(1, Block{{}, {}});
  for (size_t d = 0; d < global.size(); ++d) {
    std::vector<Block> next;
    for (const Block &b : blocks)
      for (int64_t p = 0; p < parts[d]; ++p) {
        Block c = b;
        c.start.push_back(p * global[d] / parts[d]);
        c.size.push_back(global[d] / parts[d]);
        next.push_back(c);
      }
    blocks = next;
  }
  return blocks;
}

std::vector<float> blockOf(const std::vector<float> &whole,
                           const std::vector<int64_t> &global,
                           const Block &block) {
  int64_t n = 1;
  for (int64_t d : block.size)
    n *= d;
  std::vector<float> out(n);
  copyBlock(whole.data(), global, block, sizeof(float), out.data());
  return out;
}

TEST(BlockIntersectionTest, FourWaySavedReadsBackTwoWayAndWhole) {
  for (const std::vector<int64_t> &global : std::vector<std::vector<int64_t>>{
           {8}, {8, 6}, {4, 8, 2}, {4, 2, 8, 4}}) {
    int64_t total = 1;
    for (int64_t d : global)
      total *= d;
    std::vector<float> whole(total);
    std::iota(whole.begin(), whole.end(), 1.0f);
    // Saved: 4-way along dim 0 and 2-way along the last (when rank >= 2).
    std::vector<int64_t> saveParts(global.size(), 1),
        loadParts(global.size(), 1);
    saveParts[0] = 4;
    if (global.size() >= 2)
      saveParts.back() = 2;
    loadParts[0] = 2;
    std::vector<Block> saved = tiles(global, saveParts);
    for (const std::vector<int64_t> &parts :
         {loadParts, std::vector<int64_t>(global.size(), 1)}) {
      for (const Block &target : tiles(global, parts)) {
        std::vector<float> got(blockOf(whole, global, target).size(), -1.0f);
        std::vector<float> want = got;
        int64_t copied = 0;
        for (const Block &s : saved) {
          std::vector<float> src = blockOf(whole, global, s);
          copied += copyIntersection(src.data(), s, got.data(), target,
                                     sizeof(float));
          naiveCopy(src, s, want, target, global);
        }
        EXPECT_EQ(copied, static_cast<int64_t>(got.size()));
        EXPECT_EQ(got, want);
        EXPECT_EQ(got, blockOf(whole, global, target));
      }
    }
  }
}

TEST(BlockIntersectionTest, DisjointAndScalarBlocks) {
  Block a{{0, 0}, {2, 2}}, b{{2, 0}, {2, 2}};
  EXPECT_FALSE(intersectBlocks(a, b));
  float x = 3, y = 0;
  EXPECT_EQ(copyIntersection(&x, Block{}, &y, Block{}, sizeof(float)), 1);
  EXPECT_EQ(y, 3);
}

//===----------------------------------------------------------------------===//
// Checkpoints
//===----------------------------------------------------------------------===//

class CheckpointTest : public moe::test::TempDirTest {};

Manifest oneRankManifest() {
  return parseManifest(R"({
    "format": "moe-model/1", "function": "forward",
    "entry": "moe_entry_forward", "weights_bytes": 128, "arena_bytes": 0,
    "unplanned_bytes": 0,
    "params": [
      {"name": "experts.{e}.w", "shape": [2, 2], "dtype": "F32", "offset": 0},
      {"name": "norm.weight", "shape": [2], "dtype": "F32", "offset": 64}],
    "inputs": [{"name": "tokens", "shape": [2, 4], "dtype": "I32"},
               {"name": "labels", "shape": [2, 4], "dtype": "I32"}],
    "outputs": [{"name": "logits", "shape": [2, 4, 8], "dtype": "F32"},
                {"name": "loss", "shape": [], "dtype": "F32"}]})");
}

struct State {
  AlignedBuffer w{128}, m{128}, v{128};
  TrainState ptrs() { return {&w, &m, &v}; }
  void fill(float base) {
    for (int i = 0; i < 32; ++i) {
      w.f32()[i] = base + i;
      m.f32()[i] = base + 100 + i;
      v.f32()[i] = base + 200 + i;
    }
  }
};

TEST_F(CheckpointTest, SavesOnTwoRanksAndLoadsOnOne) {
  Manifest mesh = twoParamManifest();
  std::string dir = file("ck");
  moe::rt::runLocal(2, [&](moe::rt::Communicator &world) {
    moe::rt::MeshGroups groups = moe::rt::makeMeshGroups(world, mesh.mesh);
    RankEnv env;
    env.world = &world;
    env.groups = &groups;
    env.place = RankPlace{mesh.mesh, groups.coords};
    env.root = world.rank() == 0;
    State s;
    // Expert block of rank r = experts r; the replicated norm alike.
    s.w.f32(0)[0] = 10 * world.rank() + 1;
    s.w.f32(0)[1] = 10 * world.rank() + 2;
    s.w.f32(64)[0] = 7;
    s.w.f32(64)[1] = 8;
    s.m.f32(0)[0] = 0.5f * world.rank();
    saveCheckpoint(dir, 3, mesh, env, s.ptrs(), {{"seed", 1}});
  });
  // Only rank 0 writes the replicated norm.
  std::optional<std::string> latest = latestCheckpoint(dir);
  ASSERT_TRUE(latest);
  EXPECT_EQ(*latest, dir + "/step-000003");
  EXPECT_TRUE(fs::exists(*latest + "/rank-00001.safetensors"));

  State loaded;
  LoadedCheckpoint info =
      loadCheckpoint(*latest, oneRankManifest(), nullptr, loaded.ptrs());
  EXPECT_EQ(info.step, 3);
  EXPECT_EQ(info.train["seed"], 1);
  std::vector<float> experts(loaded.w.f32(0), loaded.w.f32(0) + 4);
  EXPECT_EQ(experts, (std::vector<float>{1, 2, 11, 12}));
  EXPECT_EQ(loaded.w.f32(64)[1], 8);
  EXPECT_EQ(loaded.m.f32(0)[2], 0.5f);
}

TEST_F(CheckpointTest, LeftoverTmpDirectoriesAreIgnoredAndOldOnesPruned) {
  Manifest m = oneRankManifest();
  std::string dir = file("ck");
  EXPECT_FALSE(latestCheckpoint(dir));
  RankEnv env;
  for (int64_t step : {10, 20, 30}) {
    State s;
    s.fill(float(step));
    saveCheckpoint(dir, step, m, env, s.ptrs(), Json::object());
  }
  EXPECT_FALSE(fs::exists(dir + "/step-000010"));
  EXPECT_TRUE(fs::exists(dir + "/step-000020"));

  // A crash while saving step 40: its .tmp directory is there, half written.
  fs::create_directories(dir + "/step-000040.tmp");
  std::ofstream(dir + "/step-000040.tmp/index.json") << "{";
  ASSERT_EQ(*latestCheckpoint(dir), dir + "/step-000030");
  State loaded;
  EXPECT_EQ(
      loadCheckpoint(*latestCheckpoint(dir), m, nullptr, loaded.ptrs()).step,
      30);
  EXPECT_EQ(loaded.v.f32()[3], 30 + 200 + 3);
  EXPECT_EQ(loaded.v.f32(64)[1], 30 + 200 + 17);
}

TEST_F(CheckpointTest, MalformedCheckpointsAreOneLineErrors) {
  Manifest m = oneRankManifest();
  std::string dir = file("ck");
  fs::create_directories(dir);
  std::ofstream(dir + "/latest") << "nonsense\n";
  EXPECT_THROW(latestCheckpoint(dir), std::runtime_error);
  std::ofstream(dir + "/latest") << "step-000005\n";
  EXPECT_THROW(latestCheckpoint(dir), std::runtime_error);
  fs::create_directories(dir + "/step-000005");
  std::ofstream(dir + "/step-000005/index.json") << "{\"format\": 1}";
  State s;
  try {
    loadCheckpoint(dir + "/step-000005", m, nullptr, s.ptrs());
    FAIL();
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("index.json: is not a checkpoint"),
              std::string::npos)
        << e.what();
  }
}

//===----------------------------------------------------------------------===//
// PNG
//===----------------------------------------------------------------------===//

uint32_t bigEndian(const std::string &s, size_t at) {
  return uint32_t(uint8_t(s[at])) << 24 | uint32_t(uint8_t(s[at + 1])) << 16 |
         uint32_t(uint8_t(s[at + 2])) << 8 | uint32_t(uint8_t(s[at + 3]));
}

TEST(PlotTest, ScriptHasAxesLegendTitleAndTheFinitePoints) {
  Curve train = {{1, 4.5}, {2, NAN}, {3, 3.25}};
  Curve validation = {{3, 3.5}};
  std::string script =
      lossPlotScript("out dir/it's.png", "m (X): mesh dp=2", train, validation);
  for (const char *part :
       {"set terminal pngcairo size 800,500", "set output 'out dir/it''s.png'",
        "set title 'm (X): mesh dp=2' noenhanced", "set xlabel 'step'",
        "set ylabel 'loss", "title 'train loss'", "title 'validation loss'",
        "$train << EOD\n1 4.5\n3 3.25\nEOD\n",
        "$validation << EOD\n3 3.5\nEOD\n"})
    EXPECT_NE(script.find(part), std::string::npos) << part << "\n" << script;
  // No validation yet: one curve, no empty one in the legend.
  EXPECT_EQ(lossPlotScript("p.png", "t", train, {}).find("validation loss"),
            std::string::npos);
}

TEST(PlotTest, GnuplotWritesThePngAtomically) {
  if (std::string why = gnuplotProblem(); !why.empty())
    GTEST_SKIP() << why;
  std::string dir = ::testing::TempDir();
  std::string path = dir + "/plot-test.png";
  std::remove(path.c_str());
  plotLossCurves(path, "title", {{1, 2.0}, {2, 1.5}, {3, 1.2}}, {{3, 1.3}});
  std::ifstream in(path, std::ios::binary);
  std::string png((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GT(png.size(), 24u);
  EXPECT_EQ(png.compare(0, 8, "\x89PNG\r\n\x1a\n"), 0);
  EXPECT_EQ(png.compare(12, 4, "IHDR"), 0);
  EXPECT_EQ(bigEndian(png, 16), 800u);
  EXPECT_EQ(bigEndian(png, 20), 500u);
  // Nothing left beside it.
  size_t files = 0;
  for (const auto &entry : std::filesystem::directory_iterator(dir))
    files += entry.path().filename().string().rfind("plot-test.png", 0) == 0;
  EXPECT_EQ(files, 1u);
  // A directory that does not exist: one error naming the file.
  try {
    plotLossCurves(dir + "/no/such/p.png", "t", {{1, 1.0}}, {});
    FAIL() << "no error";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("--plot " + dir + "/no/such/p.png"),
              std::string::npos)
        << e.what();
  }
}

} // namespace
