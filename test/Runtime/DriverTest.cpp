//===- DriverTest.cpp - The pieces of the model executable's driver -------===//
//
// Manifest validation (one case per error), weights loading with stacked
// experts and its errors, save -> load round trips, the random init rules,
// token id parsing, default labels, flags and sampling. The command line as a
// whole is tested on a fake model by DriverCliTest.
//
//===----------------------------------------------------------------------===//

#include "driver/model/AlignedBuffer.h"
#include "driver/cli/CommandLine.h"
#include "driver/model/Manifest.h"
#include "driver/model/Sampling.h"
#include "driver/model/Tokens.h"
#include "driver/model/Weights.h"
#include "moe/Runtime/Safetensors.h"

#include "TempDirTest.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace moe::driver;
using moe::io::DType;
using moe::io::SafetensorsError;
using moe::io::SafetensorsReader;
using moe::io::TensorToWrite;
// ordered_json keeps the manifest keys (the mesh axes) in the order written.
using json = nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

// Runs `fn`, which must throw E; returns the message.
template <typename E> std::string errorOf(const std::function<void()> &fn) {
  try {
    fn();
  } catch (const E &e) {
    return e.what();
  } catch (const std::exception &e) {
    ADD_FAILURE() << "threw another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

#define EXPECT_ONE_LINE_CONTAINING(message, part)                              \
  do {                                                                         \
    std::string text_ = (message);                                             \
    EXPECT_NE(text_.find(part), std::string::npos) << text_;                   \
    EXPECT_EQ(text_.find('\n'), std::string::npos) << text_;                   \
  } while (0)

//===----------------------------------------------------------------------===//
// Manifest
//===----------------------------------------------------------------------===//

// embed [4, 8] at 0, stacked experts [3, 2, 4] at 128, a norm [8] at 256, a
// bias [2] at 320: 328 bytes.
json validManifest() {
  return json::parse(R"({
    "format": "moe-model/1", "function": "forward",
    "entry": "moe_entry_forward",
    "weights_bytes": 328, "arena_bytes": 4096, "unplanned_bytes": 8192,
    "params": [
      {"name": "model.embed_tokens.weight", "shape": [4, 8], "dtype": "F32",
       "offset": 0},
      {"name": "model.layers.0.mlp.experts.{e}.gate_proj.weight",
       "shape": [3, 2, 4], "dtype": "F32", "offset": 128},
      {"name": "model.norm.weight", "shape": [8], "dtype": "F32",
       "offset": 256},
      {"name": "model.layers.0.mlp.gate.e_score_correction_bias",
       "shape": [2], "dtype": "F32", "offset": 320, "balances_layer": 0}
    ],
    "inputs": [{"name": "tokens", "shape": [2, 3], "dtype": "I32"},
               {"name": "labels", "shape": [2, 3], "dtype": "I32"}],
    "outputs": [{"name": "logits", "shape": [2, 3, 4], "dtype": "F32"},
                {"name": "loss", "shape": [], "dtype": "F32"}],
    "ignore_index": -100,
    "vocab_chars": "ab\nc",
    "mesh": {"dp": 4, "cp": 1, "tp": 1, "ep": 4}
  })");
}

Manifest parsed(const json &m) { return parseManifest(m.dump()); }

std::string manifestError(const json &m) {
  return errorOf<std::runtime_error>([&] { parsed(m); });
}

TEST(ManifestTest, ParsesTheFields) {
  Manifest m = parsed(validManifest());
  EXPECT_EQ(m.function, "forward");
  EXPECT_EQ(m.entry, "moe_entry_forward");
  EXPECT_EQ(m.weightsBytes, 328u);
  EXPECT_EQ(m.arenaBytes, 4096u);
  EXPECT_EQ(m.unplannedBytes, 8192u);
  ASSERT_EQ(m.params.size(), 4u);
  EXPECT_FALSE(m.params[0].stacked);
  EXPECT_TRUE(m.params[1].stacked);
  EXPECT_EQ(m.params[3].balancesLayer, std::optional<int64_t>(0));
  EXPECT_EQ(m.params[0].balancesLayer, std::nullopt);
  EXPECT_EQ(m.params[1].numSlices(), 3);
  EXPECT_EQ(m.params[1].sliceShape(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(m.params[1].sliceName(2),
            "model.layers.0.mlp.experts.2.gate_proj.weight");
  EXPECT_EQ(m.params[1].bytes(), 96u);
  EXPECT_EQ(m.totalParameters(), 32u + 24u + 8u + 2u);
  EXPECT_EQ(m.batch, 2);
  EXPECT_EQ(m.seq, 3);
  EXPECT_EQ(m.vocab, 4);
  EXPECT_EQ(m.ignoreIndex, -100);
  EXPECT_EQ(m.vocabChars, (std::vector<std::string>{"a", "b", "\n", "c"}));
  EXPECT_EQ(m.mesh.dp, 4);
  EXPECT_EQ(m.mesh.cp, 1);
  EXPECT_EQ(m.mesh.ep, 4);
  EXPECT_FALSE(m.mesh.sp);
  EXPECT_EQ(m.mesh.etp, 1);
}

// Under bf16 storage the manifest's offsets are the entries' bf16 blob; the
// driver lays out the fp32 blob (master weights, gradients, checkpoints) in
// the same order and alignment.
TEST(ManifestTest, Bf16StorageLaysOutAnFp32Blob) {
  json j = validManifest();
  j["storage"] = "BF16";
  const uint64_t stored[] = {0, 64, 128, 192};
  for (size_t i = 0; i < 4; ++i) {
    j["params"][i]["dtype"] = "BF16";
    j["params"][i]["offset"] = stored[i];
  }
  j["weights_bytes"] = 256;
  j["outputs"][0]["dtype"] = "BF16";
  Manifest m = parsed(j);
  EXPECT_TRUE(m.bf16Storage());
  EXPECT_EQ(m.storageWeightsBytes, 256u);
  EXPECT_EQ(m.weightsBytes, 384u); // 128 + 128 (96 aligned) + 64 + 64
  const uint64_t master[] = {0, 128, 256, 320};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(m.params[i].storageOffset, stored[i]) << i;
    EXPECT_EQ(m.params[i].offset, master[i]) << i;
  }
  EXPECT_EQ(m.params[1].storageBytes(), 48u);
  EXPECT_EQ(m.params[1].bytes(), 96u);
  // The logits must be bf16 too.
  j["outputs"][0]["dtype"] = "F32";
  EXPECT_ONE_LINE_CONTAINING(manifestError(j), "outputs[0].dtype");
  // An fp32 model's offsets are the blob's.
  Manifest f = parsed(validManifest());
  EXPECT_FALSE(f.bf16Storage());
  EXPECT_EQ(f.storageWeightsBytes, f.weightsBytes);
  EXPECT_EQ(f.params[2].storageOffset, f.params[2].offset);
}

TEST(ManifestTest, OptionalFieldsHaveDefaults) {
  json j = validManifest();
  j.erase("ignore_index");
  j.erase("vocab_chars");
  j.erase("mesh");
  Manifest m = parsed(j);
  EXPECT_EQ(m.ignoreIndex, -100);
  EXPECT_FALSE(m.hasVocabChars());
  EXPECT_EQ(m.mesh.worldSize(), 1);
}

TEST(ManifestTest, VocabCharsAreUtf8Characters) {
  json j = validManifest();
  j["vocab_chars"] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"; // a é € 😀
  Manifest m = parsed(j);
  EXPECT_EQ(m.vocabChars[1], "\xc3\xa9");
  EXPECT_EQ(m.vocabChars[3], "\xf0\x9f\x98\x80");
}

// Each case: a change to the valid manifest and the field the error names.
struct ManifestCase {
  const char *field;
  std::function<void(json &)> change;
};

TEST(ManifestTest, EveryProblemNamesItsField) {
  const ManifestCase cases[] = {
      {"format", [](json &m) { m["format"] = "moe-model/2"; }},
      {"format", [](json &m) { m.erase("format"); }},
      {"function", [](json &m) { m["function"] = 3; }},
      {"entry", [](json &m) { m.erase("entry"); }},
      {"weights_bytes", [](json &m) { m["weights_bytes"] = -1; }},
      {"arena_bytes", [](json &m) { m["arena_bytes"] = "big"; }},
      {"unplanned_bytes", [](json &m) { m.erase("unplanned_bytes"); }},
      {"params", [](json &m) { m["params"] = json::object(); }},
      {"params[2]", [](json &m) { m["params"][2] = 7; }},
      {"params[0].name", [](json &m) { m["params"][0]["name"] = ""; }},
      {"params[0].shape",
       [](json &m) {
         m["params"][0]["shape"] = {4, -8};
       }},
      {"params[0].dtype", [](json &m) { m["params"][0]["dtype"] = "BF16"; }},
      {"storage", [](json &m) { m["storage"] = "FP8"; }},
      // A bf16 model with an fp32 parameter.
      {"params[1].dtype",
       [](json &m) {
         m["storage"] = "BF16";
         for (json &p : m["params"])
           p["dtype"] = "BF16";
         m["params"][1]["dtype"] = "F32";
       }},
      {"params[0].offset", [](json &m) { m["params"][0].erase("offset"); }},
      // Not a multiple of 64.
      {"params[2].offset", [](json &m) { m["params"][2]["offset"] = 260; }},
      // Ends past weights_bytes.
      {"params[3].offset", [](json &m) { m["params"][3]["offset"] = 384; }},
      // Inside params[1] (bytes 128 to 224).
      {"params[2].offset", [](json &m) { m["params"][2]["offset"] = 192; }},
      {"params[1].name",
       [](json &m) { m["params"][1]["name"] = "a.{e}.b.{e}"; }},
      {"params[1].shape",
       [](json &m) { m["params"][1]["shape"] = json::array(); }},
      // experts.{e} with e = 0 names the same tensor as params[0].
      {"params[1].name",
       [](json &m) {
         m["params"][0]["name"] = "x.0.w";
         m["params"][1]["name"] = "x.{e}.w";
       }},
      {"params[3].balances_layer",
       [](json &m) { m["params"][3]["balances_layer"] = -1; }},
      // Only an unsplit vector can be a router's expert bias.
      {"params[0].balances_layer",
       [](json &m) { m["params"][0]["balances_layer"] = 0; }},
      {"inputs[0].name", [](json &m) { m["inputs"][0]["name"] = "ids"; }},
      {"inputs[1].dtype", [](json &m) { m["inputs"][1]["dtype"] = "I64"; }},
      {"inputs", [](json &m) { m["inputs"].erase(1); }},
      {"inputs[1].shape",
       [](json &m) {
         m["inputs"][1]["shape"] = {2, 4};
       }},
      {"inputs[0].shape", [](json &m) { m["inputs"][0]["shape"] = {6}; }},
      {"outputs[0].shape",
       [](json &m) {
         m["outputs"][0]["shape"] = {2, 4, 4};
       }},
      {"outputs[1].shape", [](json &m) { m["outputs"][1]["shape"] = {1}; }},
      {"outputs", [](json &m) { m["outputs"].push_back(m["outputs"][1]); }},
      {"ignore_index", [](json &m) { m["ignore_index"] = 2; }},
      {"ignore_index", [](json &m) { m["ignore_index"] = 1.5; }},
      {"vocab_chars", [](json &m) { m["vocab_chars"] = "abc"; }},
      {"vocab_chars", [](json &m) { m["vocab_chars"] = "abca"; }},
      {"mesh.ep", [](json &m) { m["mesh"]["ep"] = 0; }},
      {"mesh", [](json &m) { m["mesh"] = json::array(); }},
      {"mesh.pp", [](json &m) { m["mesh"]["pp"] = 2; }},
      {"mesh", [](json &m) { m["mesh"]["ep"] = 3; }}, // ep must divide dp*cp
      {"mesh.sp", [](json &m) { m["mesh"]["sp"] = 1; }},
      {"mesh", [](json &m) { m["mesh"]["sp"] = true; }}, // sp needs tp > 1
      {"mesh.etp", [](json &m) { m["mesh"]["etp"] = "2"; }},
      {"mesh", [](json &m) { m["mesh"]["etp"] = 2; }}, // etp is 1 or tp
  };
  for (const ManifestCase &c : cases) {
    json m = validManifest();
    c.change(m);
    std::string message = manifestError(m);
    EXPECT_EQ(message.rfind("manifest: '" + std::string(c.field) + "' ", 0), 0u)
        << "expected the error to name '" << c.field << "', got: " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(ManifestTest, ReadsSequenceAndExpertTensorParallelism) {
  json j = validManifest();
  j["mesh"]["tp"] = 2;
  j["mesh"]["etp"] = 2;
  j["mesh"]["sp"] = true;
  Manifest m = parsed(j);
  EXPECT_EQ(m.mesh.tp, 2);
  EXPECT_EQ(m.mesh.etp, 2);
  EXPECT_TRUE(m.mesh.sp);
  EXPECT_EQ(m.mesh.worldSize(), 8);
}

TEST(ManifestTest, RejectsTextThatIsNotAJsonObject) {
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<std::runtime_error>([] { parseManifest("{\"format\":\n"); }),
      "manifest: not valid JSON");
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<std::runtime_error>([] { parseManifest("[1, 2]"); }),
      "expected a JSON object");
}

TEST(ManifestTest, RejectsInvalidUtf8InVocabChars) {
  json m = validManifest();
  m["vocab_chars"] = "ab";
  std::string text = m.dump();
  // nlohmann refuses to write invalid UTF-8, so patch the bytes in.
  text.replace(text.find("\"ab\""), 4, "\"a\xe2\x82\"");
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<std::runtime_error>([&] { parseManifest(text); }), "manifest:");
}

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

class WeightsTest : public moe::test::TempDirTest {
protected:
  void SetUp() override {
    TempDirTest::SetUp();
    manifest = parsed(validManifest());
  }

  // Every HF tensor of the manifest with distinct values (tensor k, element
  // i holds 10 k + i), the norm as BF16 (exact for these values), plus
  // `extra` and minus `drop`.
  std::string writeCheckpoint(const std::string &name,
                              const std::string &drop = "",
                              const std::vector<TensorToWrite> &extra = {}) {
    std::vector<TensorToWrite> tensors;
    int k = 0;
    for (const ParamInfo &p : manifest.params)
      for (int64_t e = 0; e < p.numSlices(); ++e, ++k) {
        std::string tensorName = p.sliceName(e);
        int64_t n = p.numElements() / p.numSlices();
        std::vector<float> &values = storage[tensorName];
        for (int64_t i = 0; i < n; ++i)
          values.push_back(10.0f * k + i);
        if (tensorName == drop)
          continue;
        if (tensorName == "model.norm.weight") {
          std::vector<uint16_t> &bits = bf16Storage[tensorName];
          for (float v : values)
            bits.push_back(moe::io::f32ToBf16(v));
          tensors.push_back(
              {tensorName, DType::BF16, p.sliceShape(), bits.data()});
        } else {
          tensors.push_back(
              {tensorName, DType::F32, p.sliceShape(), values.data()});
        }
      }
    tensors.insert(tensors.end(), extra.begin(), extra.end());
    std::string path = file(name);
    moe::io::writeSafetensors(path, tensors);
    return path;
  }

  Manifest manifest;
  std::map<std::string, std::vector<float>> storage;
  std::map<std::string, std::vector<uint16_t>> bf16Storage;
};

TEST_F(WeightsTest, LoadsStackedExpertsIntoTheirSlices) {
  float extraValue = 1.0f;
  std::string path =
      writeCheckpoint("w.safetensors", "",
                      {{"lm_head.bias", DType::F32, {1}, &extraValue},
                       {"a.extra", DType::F32, {1}, &extraValue}});
  LoadedWeights loaded = loadWeights(manifest, path);
  ASSERT_EQ(loaded.blob.size(), 328u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(loaded.blob.data()) % 64, 0u);

  const float *embed = loaded.blob.f32(0);
  EXPECT_EQ(embed[0], 0.0f);
  EXPECT_EQ(embed[31], 31.0f);
  // Expert e is tensor 1 + e: its 8 values start at 128 + 32 e bytes.
  for (int e = 0; e < 3; ++e) {
    const float *expert = loaded.blob.f32(128 + 32 * e);
    EXPECT_EQ(expert[0], 10.0f * (1 + e)) << "expert " << e;
    EXPECT_EQ(expert[7], 10.0f * (1 + e) + 7) << "expert " << e;
  }
  const float *norm = loaded.blob.f32(256); // BF16 in the file.
  EXPECT_EQ(norm[0], 40.0f);
  EXPECT_EQ(norm[7], 47.0f);
  EXPECT_EQ(loaded.blob.f32(320)[1], 51.0f);
  // The gaps between parameters stay zero.
  EXPECT_EQ(loaded.blob.f32(288)[0], 0.0f);
  EXPECT_EQ(loaded.unusedTensors,
            (std::vector<std::string>{"a.extra", "lm_head.bias"}));
}

TEST_F(WeightsTest, MissingTensorNamesFileAndTensor) {
  std::string path = writeCheckpoint(
      "w.safetensors", "model.layers.0.mlp.experts.1.gate_proj.weight");
  std::string message =
      errorOf<SafetensorsError>([&] { loadWeights(manifest, path); });
  EXPECT_ONE_LINE_CONTAINING(message,
                             "'model.layers.0.mlp.experts.1.gate_proj.weight'");
  EXPECT_ONE_LINE_CONTAINING(message, path);
}

TEST_F(WeightsTest, WrongShapeNamesTheTensor) {
  std::vector<float> values(6);
  std::string path = writeCheckpoint(
      "w.safetensors", "model.layers.0.mlp.experts.2.gate_proj.weight",
      {{"model.layers.0.mlp.experts.2.gate_proj.weight",
        DType::F32,
        {3, 2},
        values.data()}});
  std::string message =
      errorOf<SafetensorsError>([&] { loadWeights(manifest, path); });
  EXPECT_ONE_LINE_CONTAINING(
      message, "'model.layers.0.mlp.experts.2.gate_proj.weight' has shape "
               "[3, 2], expected [2, 4]");
}

TEST_F(WeightsTest, WrongDtypeNamesTheTensor) {
  std::vector<int32_t> values(8);
  std::string path =
      writeCheckpoint("w.safetensors", "model.norm.weight",
                      {{"model.norm.weight", DType::I32, {8}, values.data()}});
  std::string message =
      errorOf<SafetensorsError>([&] { loadWeights(manifest, path); });
  EXPECT_ONE_LINE_CONTAINING(message, "'model.norm.weight' has dtype I32");
}

TEST_F(WeightsTest, TruncatedFileNamesTheFile) {
  std::string path = writeCheckpoint("w.safetensors");
  fs::resize_file(path, fs::file_size(path) - 4);
  std::string message =
      errorOf<SafetensorsError>([&] { loadWeights(manifest, path); });
  EXPECT_ONE_LINE_CONTAINING(message, path);
  EXPECT_ONE_LINE_CONTAINING(message, "truncated");
}

TEST_F(WeightsTest, SaveThenLoadRoundTrips) {
  AlignedBuffer blob(manifest.weightsBytes);
  initRandomWeights(manifest, blob, 7);
  std::string path = file("saved.safetensors");
  saveWeights(manifest, blob, path);

  SafetensorsReader reader = SafetensorsReader::open(path);
  EXPECT_EQ(reader.names(),
            (std::vector<std::string>{
                "model.embed_tokens.weight",
                "model.layers.0.mlp.experts.0.gate_proj.weight",
                "model.layers.0.mlp.experts.1.gate_proj.weight",
                "model.layers.0.mlp.experts.2.gate_proj.weight",
                "model.layers.0.mlp.gate.e_score_correction_bias",
                "model.norm.weight"}));
  EXPECT_EQ(reader.info("model.layers.0.mlp.experts.1.gate_proj.weight").shape,
            (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(reader.metadata().at("format"), "pt");

  LoadedWeights loaded = loadWeights(manifest, path);
  EXPECT_EQ(std::memcmp(loaded.blob.data(), blob.data(), blob.size()), 0);
  EXPECT_TRUE(loaded.unusedTensors.empty());
}

TEST(AlignedBufferTest, IsAlignedZeroedAndNeverNull) {
  for (uint64_t bytes : {0u, 1u, 63u, 64u, 1000u}) {
    AlignedBuffer buffer(bytes);
    ASSERT_NE(buffer.data(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer.data()) % 64, 0u);
    EXPECT_EQ(buffer.size(), bytes);
    for (uint64_t i = 0; i < bytes; ++i)
      ASSERT_EQ(buffer.data()[i], 0);
  }
}

//===----------------------------------------------------------------------===//
// Random init
//===----------------------------------------------------------------------===//

TEST(InitRandomTest, IsDeterministicAndDependsOnTheSeed) {
  Manifest m = parsed(validManifest());
  AlignedBuffer a(m.weightsBytes), b(m.weightsBytes), c(m.weightsBytes);
  initRandomWeights(m, a, 42);
  initRandomWeights(m, b, 42);
  initRandomWeights(m, c, 43);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0);
  EXPECT_NE(std::memcmp(a.data(), c.data(), a.size()), 0);
}

TEST(InitRandomTest, OnesForNormsZerosForOtherVectors) {
  Manifest m = parsed(validManifest());
  AlignedBuffer blob(m.weightsBytes);
  initRandomWeights(m, blob, 1);
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(blob.f32(256)[i], 1.0f) << "model.norm.weight";
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(blob.f32(320)[i], 0.0f) << "e_score_correction_bias";

  std::vector<float> v(4, 7.0f);
  for (const char *name : {"model.layers.3.input_layernorm.weight",
                           "model.layers.3.post_attention_layernorm.weight",
                           "model.layers.3.self_attn.q_norm.weight",
                           "model.layers.3.self_attn.k_norm.weight"}) {
    initRandomTensor(name, 1, 4, 9, 0.02, v.data());
    EXPECT_EQ(v, std::vector<float>(4, 1.0f)) << name;
  }
  initRandomTensor("model.layers.3.self_attn.q_proj.bias", 1, 4, 9, 0.02,
                   v.data());
  EXPECT_EQ(v, std::vector<float>(4, 0.0f));
}

// A stacked slice equals the HF tensor drawn on its own, whatever the
// parameter's position in the blob.
TEST(InitRandomTest, StackedSlicesAreTheirHfTensors) {
  json j = validManifest();
  Manifest m = parsed(j);
  AlignedBuffer blob(m.weightsBytes);
  initRandomWeights(m, blob, 5);
  for (int e = 0; e < 3; ++e) {
    std::vector<float> alone(8);
    initRandomTensor(m.params[1].sliceName(e), 2, 8, 5, 0.02, alone.data());
    EXPECT_EQ(std::memcmp(alone.data(), blob.f32(128 + 32 * e), 32), 0)
        << "expert " << e;
  }

  // Swap the embedding and the experts in the blob: same tensors.
  j["params"][0]["offset"] = 128;
  j["params"][1]["offset"] = 0;
  j["params"][2]["offset"] = 256;
  Manifest swapped = parsed(j);
  AlignedBuffer other(swapped.weightsBytes);
  initRandomWeights(swapped, other, 5);
  EXPECT_EQ(std::memcmp(other.f32(128), blob.f32(0), 128), 0);
  EXPECT_EQ(std::memcmp(other.f32(0), blob.f32(128), 96), 0);
}

TEST(InitRandomTest, MatricesAreNormalWithTheGivenStd) {
  for (double std : {0.02, 1.0}) {
    std::vector<float> v(100001);
    initRandomTensor("model.layers.0.mlp.down_proj.weight", 2, v.size(), 3, std,
                     v.data());
    double sum = 0, sumSq = 0;
    for (float x : v) {
      sum += x;
      sumSq += double(x) * x;
    }
    double mean = sum / v.size();
    double sd = std::sqrt(sumSq / v.size() - mean * mean);
    EXPECT_NEAR(mean, 0.0, 0.02 * std);
    EXPECT_NEAR(sd, std, 0.01 * std);
  }
}

// Pins the generator, so that a change to it (and to every checkpoint made
// with --init-random) is deliberate. The values were computed independently
// (Python, from the description in Weights.h).
TEST(InitRandomTest, ValuesArePinned) {
  std::vector<float> v(5);
  initRandomTensor("w", 2, 5, 0, 1.0, v.data());
  const float expected[] = {0.759189069f, 0.294781178f, -0.540431798f,
                            -0.244946882f, 0.202519909f};
  for (int i = 0; i < 5; ++i)
    EXPECT_FLOAT_EQ(v[i], expected[i]) << "element " << i;
}

//===----------------------------------------------------------------------===//
// Token ids and characters
//===----------------------------------------------------------------------===//

TEST(TokensTest, ParsesCommaAndWhitespaceSeparatedIds) {
  EXPECT_EQ(parseIds("tokens", "1,2, 3\n4\t5 ,6"),
            (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(parseIds("tokens", "  -7  "), (std::vector<int64_t>{-7}));
  EXPECT_TRUE(parseIds("tokens", " ").empty());
}

TEST(TokensTest, MalformedIdsAreUsageErrors) {
  struct Case {
    const char *text;
    const char *part;
  } cases[] = {
      {"1,,2", "--tokens: item 1 is empty"},
      {",1", "--tokens: item 0 is empty"},
      {"1,", "--tokens ends with a comma"},
      {"1 x 3", "--tokens: item 1 'x' is not an integer"},
      {"1.5", "'1.5' is not an integer"},
      {"99999999999999999999", "is not an integer"},
  };
  for (const Case &c : cases)
    EXPECT_ONE_LINE_CONTAINING(
        errorOf<UsageError>([&] { parseIds("tokens", c.text); }), c.part);
}

TEST(TokensTest, IdsOutsideTheVocabularyNamePositionAndValue) {
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<std::runtime_error>([] {
        checkIds("tokens", {0, 1, 2, 3, 16, 5}, 16, false, -100, 3);
      }),
      "--tokens: id at position 4 (row 1, column 1) "
      "is 16, expected 0 <= id < 16");
  EXPECT_ONE_LINE_CONTAINING(errorOf<std::runtime_error>([] {
                               checkIds("tokens", {-100}, 16, false, -100);
                             }),
                             "position 0 is -100");
  EXPECT_EQ(checkIds("labels", {3, -100}, 16, true, -100),
            (std::vector<int32_t>{3, -100}));
  EXPECT_ONE_LINE_CONTAINING(errorOf<std::runtime_error>([] {
                               checkIds("labels", {-1}, 16, true, -100);
                             }),
                             "or the ignore index -100");
  EXPECT_ONE_LINE_CONTAINING(errorOf<std::runtime_error>([] {
                               checkIdCount("tokens", {1, 2, 3}, 2, 4);
                             }),
                             "--tokens has 3 ids, expected 8 (batch 2 x seq 4");
}

TEST(TokensTest, DefaultLabelsShiftEachRow) {
  EXPECT_EQ(defaultLabels({1, 2, 3, 4, 5, 6}, 2, 3, -100),
            (std::vector<int32_t>{2, 3, -100, 5, 6, -100}));
  EXPECT_EQ(defaultLabels({9, 8}, 2, 1, -1), (std::vector<int32_t>{-1, -1}));
}

TEST(TokensTest, EncodesCharacters) {
  std::vector<std::string> vocab = {"\n", "a", "b", "\xc3\xa9"};
  EXPECT_EQ(encodeChars("prompt",
                        "ab\n\xc3\xa9"
                        "a",
                        vocab),
            (std::vector<int32_t>{1, 2, 0, 3, 1}));
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<std::runtime_error>([&] { encodeChars("prompt", "abz", vocab); }),
      "--prompt: character 'z' at position 2 is not in the model's vocabulary");
  EXPECT_ONE_LINE_CONTAINING(errorOf<std::runtime_error>(
                                 [&] { encodeChars("prompt", "a\tb", vocab); }),
                             "character '\\t' at position 1");
  EXPECT_ONE_LINE_CONTAINING(errorOf<std::runtime_error>([&] {
                               encodeChars("prompt", "a\xc3", vocab);
                             }),
                             "--prompt: invalid UTF-8 at byte 1");
}

//===----------------------------------------------------------------------===//
// Flags
//===----------------------------------------------------------------------===//

const CommandSpec kCommand{
    "run", "", "", {{"seed", "S", ""}, {"tokens", "IDS", ""}}};

TEST(CommandLineTest, ParsesBothFlagForms) {
  ParsedFlags flags = parseFlags(kCommand, {"--seed", "3", "--tokens=-1,2"});
  EXPECT_EQ(flags.get("seed"), "3");
  EXPECT_EQ(flags.get("tokens"), "-1,2");
  // A value may start with dashes.
  EXPECT_EQ(parseFlags(kCommand, {"--tokens", "--seed"}).get("tokens"),
            "--seed");
}

TEST(CommandLineTest, MalformedFlagsAreUsageErrors) {
  using Args = std::vector<std::string>;
  EXPECT_ONE_LINE_CONTAINING(errorOf<UsageError>([] {
                               parseFlags(kCommand, Args{"--sed", "3"});
                             }),
                             "unknown flag '--sed' for 'run'");
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<UsageError>([] { parseFlags(kCommand, Args{"--seed"}); }),
      "--seed needs a value");
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<UsageError>([] {
        parseFlags(kCommand, Args{"--seed=1", "--seed", "2"});
      }),
      "--seed is given twice");
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<UsageError>([] { parseFlags(kCommand, Args{"seed"}); }),
      "unexpected argument 'seed'");
  EXPECT_TRUE(wantsHelp({"--seed", "1", "-h"}));
}

TEST(CommandLineTest, NumbersAreStrict) {
  EXPECT_EQ(parseInteger("top-k", "5", 0, 10), 5);
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<UsageError>([] { parseInteger("top-k", "5x", 0, 10); }),
      "--top-k '5x' is not an integer");
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<UsageError>([] { parseInteger("top-k", "-1", 0, 10); }),
      "--top-k is -1, expected 0 <= value <= 10");
  EXPECT_EQ(parseSeed("seed", "18446744073709551615"), UINT64_MAX);
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<UsageError>([] { parseSeed("seed", "-1"); }), "--seed '-1'");
  EXPECT_EQ(parseReal("temperature", "0.5", 0.0), 0.5);
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<UsageError>([] { parseReal("temperature", "hot", 0.0); }),
      "--temperature 'hot' is not a finite number");
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<UsageError>([] { parseReal("temperature", "nan", 0.0); }),
      "not a finite number");
  EXPECT_ONE_LINE_CONTAINING(
      errorOf<UsageError>([] { parseReal("temperature", "-0.5", 0.0); }),
      "--temperature is -0.5, expected a value >= 0");
}

//===----------------------------------------------------------------------===//
// Sampling
//===----------------------------------------------------------------------===//

TEST(SamplingTest, GreedyIsArgmaxWithTiesToTheLowerId) {
  const float logits[] = {0.5f, 2.0f, -1.0f, 2.0f};
  std::mt19937_64 rng(0);
  EXPECT_EQ(argmax(logits, 4), 1);
  EXPECT_EQ(sampleToken(logits, 4, {0.0, 0}, rng), 1);
  EXPECT_EQ(sampleToken(logits, 4, {0.0, 3}, rng), 1);
}

TEST(SamplingTest, TemperatureSamplingIsReproducible) {
  std::vector<float> logits = {0.1f, 0.3f, -0.2f, 1.0f, 0.0f};
  auto draw = [&](uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> ids;
    for (int i = 0; i < 50; ++i)
      ids.push_back(sampleToken(logits.data(), 5, {0.8, 0}, rng));
    return ids;
  };
  EXPECT_EQ(draw(11), draw(11));
  EXPECT_NE(draw(11), draw(12));
}

TEST(SamplingTest, FrequenciesFollowTheSoftmax) {
  const float logits[] = {1.0f, 2.0f, 0.0f, -INFINITY};
  const double temperature = 2.0;
  double weights[3], total = 0;
  for (int i = 0; i < 3; ++i)
    total += weights[i] = std::exp(logits[i] / temperature);
  std::mt19937_64 rng(3);
  int counts[4] = {};
  const int draws = 100000;
  for (int i = 0; i < draws; ++i)
    ++counts[sampleToken(logits, 4, {temperature, 0}, rng)];
  for (int i = 0; i < 3; ++i)
    EXPECT_NEAR(double(counts[i]) / draws, weights[i] / total, 0.01)
        << "token " << i;
  EXPECT_EQ(counts[3], 0) << "a -inf logit is never drawn";
}

TEST(SamplingTest, TopKNeverPicksOutsideTheTopK) {
  std::mt19937_64 gen(99);
  std::normal_distribution<float> normal;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> logits(32);
    for (float &l : logits)
      l = normal(gen);
    std::vector<float> sorted = logits;
    std::sort(sorted.rbegin(), sorted.rend());
    const int k = 1 + trial % 5;
    std::mt19937_64 rng(trial);
    for (int i = 0; i < 200; ++i) {
      int32_t id = sampleToken(logits.data(), 32, {5.0, k}, rng);
      EXPECT_GE(logits[id], sorted[k - 1]) << "k " << k;
    }
    EXPECT_EQ(sampleToken(logits.data(), 32, {1.0, 1}, rng),
              argmax(logits.data(), 32));
  }
}

TEST(SamplingTest, NanLogitsAreAnError) {
  const float logits[] = {0.0f, NAN};
  std::mt19937_64 rng(0);
  EXPECT_ONE_LINE_CONTAINING(errorOf<std::runtime_error>([&] {
                               sampleToken(logits, 2, {1.0, 0}, rng);
                             }),
                             "the logit of token 1 is NaN");
}

} // namespace
