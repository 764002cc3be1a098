//===- SafetensorsTest.cpp - safetensors reader and writer ----------------===//
//
// Round trips through the writer and reader, plus files whose bytes are
// written by hand here (the independent check of the format), every header
// error the reader reports, and the writer's atomic replacement.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Safetensors.h"

#include "TempDirTest.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

using namespace moe::io;
namespace fs = std::filesystem;

namespace {

uint32_t f32Bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

float bitsF32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Each test writes into its own directory (TempDirTest).
class SafetensorsTest : public moe::test::TempDirTest {
protected:
  // Writes the 8-byte little-endian length of `header`, `header`, `data`.
  std::string writeRaw(const std::string &name, const std::string &header,
                       const std::string &data = "") const {
    std::string path = file(name);
    std::ofstream out(path, std::ios::binary);
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i)
      out.put(static_cast<char>((n >> (8 * i)) & 0xff));
    out << header << data;
    return path;
  }

  std::vector<std::string> entries() const {
    std::vector<std::string> result;
    for (const auto &entry : fs::directory_iterator(dir))
      result.push_back(entry.path().filename().string());
    return result;
  }
};

// Expects open(path) to throw a SafetensorsError whose message names the file
// and contains every one of `parts`.
void expectOpenError(const std::string &path,
                     const std::vector<std::string> &parts) {
  try {
    SafetensorsReader::open(path);
    ADD_FAILURE() << "opening " << path << " did not throw";
  } catch (const SafetensorsError &e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path + ": "), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const std::string &part : parts)
      EXPECT_NE(msg.find(part), std::string::npos)
          << "'" << part << "' not in: " << msg;
  }
}

template <typename F>
void expectError(F &&f, const std::string &path,
                 const std::vector<std::string> &parts) {
  try {
    f();
    ADD_FAILURE() << "no SafetensorsError thrown";
  } catch (const SafetensorsError &e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path + ": "), std::string::npos) << msg;
    for (const std::string &part : parts)
      EXPECT_NE(msg.find(part), std::string::npos)
          << "'" << part << "' not in: " << msg;
  }
}

//===----------------------------------------------------------------------===//
// Round trips and hand-made files
//===----------------------------------------------------------------------===//

TEST_F(SafetensorsTest, RoundTripManyDTypesAndShapes) {
  std::vector<float> weight = {1.5f, -2.0f, 3.25f, 0.0f, -0.5f, 1e-3f};
  std::vector<uint16_t> bf16 = {0x3F80, 0xC000, 0x4049, 0x0000};
  std::vector<uint16_t> f16 = {0x3C00, 0x7BFF};
  std::vector<double> f64 = {3.141592653589793};
  std::vector<int64_t> i64 = {-7, 0, 123456789, 42};
  std::vector<int32_t> i32 = {}; // [0, 5]: empty
  std::vector<int16_t> i16 = {-32768, 0, 32767};
  std::vector<int8_t> i8 = {-128, 1, 127};
  uint8_t u8 = 200; // 0-d scalar
  std::vector<uint8_t> flags = {1, 0};
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "7"}};

  std::string path = file("model.safetensors");
  writeSafetensors(path,
                   {{"w.weight", DType::F32, {2, 3}, weight.data()},
                    {"bf", DType::BF16, {4}, bf16.data()},
                    {"half", DType::F16, {2}, f16.data()},
                    {"pi", DType::F64, {1}, f64.data()},
                    {"ids", DType::I64, {2, 2}, i64.data()},
                    {"empty", DType::I32, {0, 5}, i32.data()},
                    {"shorts", DType::I16, {3}, i16.data()},
                    {"bytes", DType::I8, {3}, i8.data()},
                    {"scalar", DType::U8, {}, &u8},
                    {"mask", DType::Bool, {2}, flags.data()}},
                   meta);

  SafetensorsReader r = SafetensorsReader::open(path);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"bf", "bytes", "empty", "half",
                                                 "ids", "mask", "pi", "scalar",
                                                 "shorts", "w.weight"}));
  EXPECT_EQ(r.metadata(), meta);
  EXPECT_TRUE(r.contains("pi"));
  EXPECT_FALSE(r.contains("nope"));

  EXPECT_EQ(r.info("w.weight").dtype, DType::F32);
  EXPECT_EQ(r.info("w.weight").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r.info("w.weight").bytes, 24u);
  EXPECT_EQ(r.info("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(r.info("scalar").bytes, 1u);
  EXPECT_EQ(r.info("empty").shape, (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(r.info("empty").bytes, 0u);
  EXPECT_EQ(r.info("mask").dtype, DType::Bool);

  std::vector<float> gotF(6);
  r.readF32("w.weight", {2, 3}, gotF.data());
  EXPECT_EQ(gotF, weight);
  std::vector<float> gotBf(4);
  r.readF32("bf", {4}, gotBf.data());
  EXPECT_EQ(gotBf, (std::vector<float>{1.0f, -2.0f, bf16ToF32(0x4049), 0.0f}));
  std::vector<float> gotHalf(2);
  r.readF32("half", {2}, gotHalf.data());
  EXPECT_EQ(gotHalf, (std::vector<float>{1.0f, 65504.0f}));

  std::vector<int32_t> gotIds(4);
  r.readI32("ids", {2, 2}, gotIds.data());
  EXPECT_EQ(gotIds, (std::vector<int32_t>{-7, 0, 123456789, 42}));
  r.readI32("empty", {0, 5}, nullptr);

  double gotPi = 0;
  r.readBytes("pi", &gotPi);
  EXPECT_EQ(gotPi, f64[0]);
  std::vector<int64_t> gotI64(4);
  r.readBytes("ids", gotI64.data());
  EXPECT_EQ(gotI64, i64);
  std::vector<int16_t> gotI16(3);
  r.readBytes("shorts", gotI16.data());
  EXPECT_EQ(gotI16, i16);
  std::vector<int8_t> gotI8(3);
  r.readBytes("bytes", gotI8.data());
  EXPECT_EQ(gotI8, i8);
  uint8_t gotU8 = 0;
  r.readBytes("scalar", &gotU8);
  EXPECT_EQ(gotU8, 200);
  std::vector<uint8_t> gotFlags(2);
  r.readBytes("mask", gotFlags.data());
  EXPECT_EQ(gotFlags, flags);

  // No temporary file left behind.
  EXPECT_EQ(entries(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(SafetensorsTest, ReadsHandCraftedFile) {
  // Unpadded header, keys not sorted, tensors stored in another order than
  // their names, metadata first: all allowed by the format.
  std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F32","shape":[1,2],"data_offsets":[8,16]}})";
  float values[4] = {1.0f, -2.5f, 0.125f, 1e30f};
  std::string data(reinterpret_cast<const char *>(values), sizeof values);
  std::string path = writeRaw("hand.safetensors", header, data);

  SafetensorsReader r = SafetensorsReader::open(path);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.metadata().at("format"), "pt");
  EXPECT_EQ(r.info("b").offset, 8 + header.size());
  EXPECT_EQ(r.info("a").offset, 8 + header.size() + 8);
  float a[2], b[2];
  r.readF32("a", {1, 2}, a);
  r.readF32("b", {2}, b);
  EXPECT_EQ(a[0], 0.125f);
  EXPECT_EQ(a[1], 1e30f);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -2.5f);
}

TEST_F(SafetensorsTest, WriterPadsHeaderAndSortsData) {
  float x = 1.0f, y[3] = {2.0f, 3.0f, 4.0f};
  std::string path = file("pad.safetensors");
  writeSafetensors(
      path, {{"zz_odd_name", DType::F32, {}, &x}, {"a", DType::F32, {3}, y}});
  std::string bytes = moe::test::readFile(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 16);
  std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.find('{'), 0u);
  // Only spaces after the closing brace.
  size_t close = header.rfind('}');
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos);
  EXPECT_LT(header.find("\"a\""), header.find("\"zz_odd_name\""));

  SafetensorsReader r = SafetensorsReader::open(path);
  EXPECT_EQ(r.info("a").offset, 8 + n);
  EXPECT_EQ(r.info("a").offset % 8, 0u);
  EXPECT_EQ(r.info("zz_odd_name").offset, 8 + n + 12);
  float data[4];
  std::memcpy(data, bytes.data() + 8 + n, 16);
  EXPECT_EQ(data[0], 2.0f);
  EXPECT_EQ(data[3], 1.0f);
}

TEST_F(SafetensorsTest, HalfPrecisionConvertsExactly) {
  std::vector<uint16_t> bf = {0x3F80, 0xC000, 0x0000, 0x8000,
                              0x7F80, 0xFF80, 0x0001, 0x7FC0};
  std::vector<uint16_t> half = {0x3C00, 0x7BFF, 0x0001, 0x03FF, 0xC000,
                                0x8000, 0x7C00, 0x0400, 0x7E00};
  std::string header =
      R"({"bf":{"dtype":"BF16","shape":[8],"data_offsets":[0,16]},)"
      R"("h":{"dtype":"F16","shape":[3,3],"data_offsets":[16,34]}})";
  std::string data(reinterpret_cast<const char *>(bf.data()), 16);
  data.append(reinterpret_cast<const char *>(half.data()), 18);
  std::string path = writeRaw("half.safetensors", header, data);

  SafetensorsReader r = SafetensorsReader::open(path);
  float gotBf[8];
  r.readF32("bf", {8}, gotBf);
  EXPECT_EQ(gotBf[0], 1.0f);
  EXPECT_EQ(gotBf[1], -2.0f);
  EXPECT_EQ(f32Bits(gotBf[2]), 0x00000000u);
  EXPECT_EQ(f32Bits(gotBf[3]), 0x80000000u);
  EXPECT_EQ(gotBf[4], std::numeric_limits<float>::infinity());
  EXPECT_EQ(gotBf[5], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(f32Bits(gotBf[6]), 0x00010000u); // an fp32 subnormal
  EXPECT_TRUE(std::isnan(gotBf[7]));

  float gotH[9];
  r.readF32("h", {3, 3}, gotH);
  EXPECT_EQ(gotH[0], 1.0f);
  EXPECT_EQ(gotH[1], 65504.0f);
  EXPECT_EQ(gotH[2], std::ldexp(1.0f, -24));    // smallest subnormal
  EXPECT_EQ(gotH[3], std::ldexp(1023.0f, -24)); // largest subnormal
  EXPECT_EQ(gotH[4], -2.0f);
  EXPECT_EQ(f32Bits(gotH[5]), 0x80000000u);
  EXPECT_EQ(gotH[6], std::numeric_limits<float>::infinity());
  EXPECT_EQ(gotH[7], std::ldexp(1.0f, -14)); // smallest normal
  EXPECT_TRUE(std::isnan(gotH[8]));
}

TEST(Bf16Test, RoundsToNearestEven) {
  EXPECT_EQ(f32ToBf16(1.0f), 0x3F80);
  EXPECT_EQ(f32ToBf16(-2.0f), 0xC000);
  EXPECT_EQ(f32ToBf16(0.0f), 0x0000);
  EXPECT_EQ(f32ToBf16(-0.0f), 0x8000);
  // Exactly halfway: to the even neighbour.
  EXPECT_EQ(f32ToBf16(bitsF32(0x3F808000)), 0x3F80);
  EXPECT_EQ(f32ToBf16(bitsF32(0x3F818000)), 0x3F82);
  // Either side of halfway.
  EXPECT_EQ(f32ToBf16(bitsF32(0x3F807FFF)), 0x3F80);
  EXPECT_EQ(f32ToBf16(bitsF32(0x3F808001)), 0x3F81);
  EXPECT_EQ(f32ToBf16(bitsF32(0xBF80C000)), 0xBF81);
  // Rounding carries into the exponent, and past the largest bf16 to inf.
  EXPECT_EQ(f32ToBf16(bitsF32(0x3FFFFFFF)), 0x4000);
  EXPECT_EQ(f32ToBf16(bitsF32(0x7F7FFFFF)), 0x7F80);
  EXPECT_EQ(f32ToBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(f32ToBf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  // NaNs stay NaNs, even with a payload only in the dropped bits.
  EXPECT_TRUE(std::isnan(bf16ToF32(f32ToBf16(std::nanf("")))));
  EXPECT_TRUE(std::isnan(bf16ToF32(f32ToBf16(bitsF32(0x7F800001)))));
  EXPECT_TRUE(std::isnan(bf16ToF32(f32ToBf16(bitsF32(0xFFFFFFFF)))));
  EXPECT_EQ(f32ToBf16(bitsF32(0xFF800001)) & 0x8000, 0x8000);
  // Every bf16 value survives bf16 -> f32 -> bf16.
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    uint16_t bits = static_cast<uint16_t>(b);
    if (std::isnan(bf16ToF32(bits)))
      continue;
    ASSERT_EQ(f32ToBf16(bf16ToF32(bits)), bits) << std::hex << b;
  }
}

//===----------------------------------------------------------------------===//
// Errors
//===----------------------------------------------------------------------===//

TEST_F(SafetensorsTest, FileShorterThanLength) {
  std::string path = file("short.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  expectOpenError(path, {"3 bytes", "at least 8"});
}

TEST_F(SafetensorsTest, MissingFile) {
  expectOpenError(file("absent.safetensors"), {"cannot open"});
}

TEST_F(SafetensorsTest, HeaderLengthLargerThanFile) {
  std::string path = file("big.safetensors");
  std::string bytes =
      std::string("\x00\x10\x00\x00\x00\x00\x00\x00", 8) + R"({"a":{}})";
  std::ofstream(path, std::ios::binary) << bytes;
  expectOpenError(path, {"header length 4096", "larger than the 8 bytes"});
}

struct BadHeader {
  const char *what;
  std::string header;
  size_t dataBytes;
  std::vector<std::string> parts;
};

TEST_F(SafetensorsTest, RejectsMalformedHeaders) {
  const std::string ok = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  std::vector<BadHeader> cases = {
      {"invalid JSON", R"({"a":{"dtype":"F32",)", 8, {"not valid JSON"}},
      {"not an object", "[1,2]", 0, {"header is an array", "JSON object"}},
      {"entry not an object",
       R"({"a":[1]})",
       0,
       {"tensor 'a'", "an array", "expected an object"}},
      {"missing dtype",
       R"({"a":{"shape":[2],"data_offsets":[0,8]}})",
       8,
       {"tensor 'a'", "no \"dtype\""}},
      {"missing shape",
       R"({"a":{"dtype":"F32","data_offsets":[0,8]}})",
       8,
       {"tensor 'a'", "no \"shape\""}},
      {"missing offsets",
       R"({"a":{"dtype":"F32","shape":[2]}})",
       8,
       {"tensor 'a'", "no \"data_offsets\""}},
      {"dtype not a string",
       R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})",
       8,
       {"tensor 'a'", "dtype that is an integer"}},
      {"unknown dtype",
       R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})",
       2,
       {"tensor 'a'", "unknown dtype \"F8_E4M3\"", "expected one of"}},
      {"shape not an array",
       R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})",
       8,
       {"tensor 'a'", "shape that is an integer"}},
      {"negative dim",
       R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
       8,
       {"tensor 'a'", "shape [-2]", "non-negative"}},
      {"fractional dim",
       R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})",
       8,
       {"tensor 'a'", "shape [2.5]"}},
      {"one offset",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}})",
       8,
       {"tensor 'a'", "data_offsets [8]", "[begin, end]"}},
      {"negative offset",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})",
       8,
       {"tensor 'a'", "data_offsets [-8,0]"}},
      {"begin after end",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})",
       8,
       {"tensor 'a'", "begin <= end"}},
      {"end beyond data",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       8,
       {"tensor 'a'", "up to byte 12", "only 8 bytes"}},
      {"size mismatch",
       R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
       8,
       {"tensor 'a'", "8 bytes of data, expected 12 for F32 [3]"}},
      {"overlap",
       "{\"a\":{" + ok + "},\"b\":{\"dtype\":\"I32\",\"shape\":[1]," +
           "\"data_offsets\":[4,8]}}",
       8,
       {"tensor 'b'", "overlapping those of tensor 'a'"}},
      {"duplicate name",
       "{\"a\":{" + ok + "},\"a\":{" + ok + "}}",
       8,
       {"names 'a' twice"}},
      {"metadata not strings",
       "{\"__metadata__\":{\"step\":7},\"a\":{" + ok + "}}",
       8,
       {"__metadata__ entry 'step'", "expected a string"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].what);
    std::string path =
        writeRaw("bad" + std::to_string(i) + ".safetensors", cases[i].header,
                 std::string(cases[i].dataBytes, '\0'));
    expectOpenError(path, cases[i].parts);
  }
}

TEST_F(SafetensorsTest, ReadChecksNameShapeAndDType) {
  std::vector<float> norm(32, 1.0f);
  std::vector<int32_t> ids = {1, 2, 3};
  std::vector<int64_t> wide = {1, int64_t(1) << 40};
  std::string path = file("weights.safetensors");
  writeSafetensors(path, {{"model.norm.weight", DType::F32, {32}, norm.data()},
                          {"ids", DType::I32, {3}, ids.data()},
                          {"wide", DType::I64, {2}, wide.data()}});
  SafetensorsReader r = SafetensorsReader::open(path);
  std::vector<float> f(64);
  std::vector<int32_t> i(64);

  expectError([&] { r.info("model.norm"); }, path, {"no tensor 'model.norm'"});
  expectError([&] { r.readF32("missing", {32}, f.data()); }, path,
              {"no tensor 'missing'"});
  expectError([&] { r.readF32("model.norm.weight", {64}, f.data()); }, path,
              {"tensor 'model.norm.weight' has shape [32], expected [64]"});
  expectError([&] { r.readF32("ids", {3}, f.data()); }, path,
              {"tensor 'ids' has dtype I32, expected F32 (or BF16/F16)"});
  expectError([&] { r.readI32("model.norm.weight", {32}, i.data()); }, path,
              {"tensor 'model.norm.weight' has dtype F32, expected I32"});
  expectError([&] { r.readI32("wide", {2}, i.data()); }, path,
              {"tensor 'wide'", "element 1 = 1099511627776", "int32 range"});
}

TEST_F(SafetensorsTest, TruncatedFileFailsOnOpenNamingTheTensor) {
  std::vector<float> a(4, 1.0f), b(4, 2.0f);
  std::string path = file("trunc.safetensors");
  writeSafetensors(path, {{"a", DType::F32, {4}, a.data()},
                          {"b", DType::F32, {4}, b.data()}});
  uint64_t size = fs::file_size(path);
  fs::resize_file(path, size - 4); // cut into the data of 'b'
  expectOpenError(
      path, {"tensor 'b'", "up to byte 32", "only 28 bytes", "truncated"});
}

TEST_F(SafetensorsTest, TruncatedAfterOpenFailsOnRead) {
  std::vector<float> a(4, 1.0f), b(4, 2.0f);
  std::string path = file("trunc2.safetensors");
  writeSafetensors(path, {{"a", DType::F32, {4}, a.data()},
                          {"b", DType::F32, {4}, b.data()}});
  SafetensorsReader r = SafetensorsReader::open(path);
  fs::resize_file(path, fs::file_size(path) - 4);
  std::vector<float> got(4);
  r.readF32("a", {4}, got.data());
  EXPECT_EQ(got, a);
  expectError([&] { r.readF32("b", {4}, got.data()); }, path,
              {"tensor 'b' cannot be read", "file ends"});
}

//===----------------------------------------------------------------------===//
// Writer failures and atomicity
//===----------------------------------------------------------------------===//

TEST_F(SafetensorsTest, WriteIntoMissingDirectoryThrows) {
  float x = 1.0f;
  std::string path = file("no/such/dir/out.safetensors");
  expectError(
      [&] {
        writeSafetensors(path, {{"x", DType::F32, {}, &x}});
      },
      path, {"cannot create temporary file"});
  EXPECT_TRUE(entries().empty());
}

TEST_F(SafetensorsTest, FailedRenameRemovesTemporaryFile) {
  // The target is a non-empty directory: everything but the rename succeeds.
  float x = 1.0f;
  std::string path = file("target");
  fs::create_directory(path);
  std::ofstream(path + "/keep") << "x";
  expectError(
      [&] {
        writeSafetensors(path, {{"x", DType::F32, {}, &x}});
      },
      path, {"cannot rename"});
  EXPECT_EQ(entries(), std::vector<std::string>{"target"});
}

TEST_F(SafetensorsTest, InvalidTensorsAreRejectedBeforeWriting) {
  float x = 1.0f;
  std::string path = file("out.safetensors");
  expectError(
      [&] {
        writeSafetensors(path, {{"x", DType::F32, {-1}, &x}});
      },
      path, {"tensor 'x'", "[-1]"});
  expectError(
      [&] {
        writeSafetensors(path, {{"x", DType::F32, {2}, nullptr}});
      },
      path, {"tensor 'x' has no data"});
  expectError(
      [&] {
        writeSafetensors(path, {{"__metadata__", DType::F32, {}, &x}});
      },
      path, {"reserved"});
  expectError(
      [&] {
        writeSafetensors(path, {{"", DType::F32, {}, &x}});
      },
      path, {"empty name"});
  expectError(
      [&] {
        writeSafetensors(path, {{"bad\xff", DType::F32, {}, &x}});
      },
      path, {"cannot encode the header", "UTF-8"});
  EXPECT_TRUE(entries().empty());
}

TEST_F(SafetensorsTest, OverwriteIsAtomic) {
  std::vector<float> oldData = {1.0f, 2.0f}, newData = {5.0f, 6.0f, 7.0f};
  std::string path = file("ckpt.safetensors");
  writeSafetensors(path, {{"w", DType::F32, {2}, oldData.data()}},
                   {{"step", "1"}});
  std::string oldBytes = moe::test::readFile(path);

  // A failed write (duplicate names) leaves the old file untouched.
  expectError(
      [&] {
        writeSafetensors(path, {{"w", DType::F32, {3}, newData.data()},
                                {"w", DType::F32, {3}, newData.data()}});
      },
      path, {"tensor 'w' is given twice"});
  EXPECT_EQ(moe::test::readFile(path), oldBytes);
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt.safetensors"});

  // A reader opened on the old file keeps reading it after a replacement.
  SafetensorsReader old = SafetensorsReader::open(path);
  writeSafetensors(path, {{"w", DType::F32, {3}, newData.data()}},
                   {{"step", "2"}});
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt.safetensors"});
  SafetensorsReader r = SafetensorsReader::open(path);
  EXPECT_EQ(r.metadata().at("step"), "2");
  std::vector<float> got(3);
  r.readF32("w", {3}, got.data());
  EXPECT_EQ(got, newData);
  std::vector<float> gotOld(2);
  old.readF32("w", {2}, gotOld.data());
  EXPECT_EQ(gotOld, oldData);
}

TEST_F(SafetensorsTest, ReaderIsMovable) {
  float x = 4.0f;
  std::string path = file("m.safetensors");
  writeSafetensors(path, {{"x", DType::F32, {}, &x}});
  SafetensorsReader a = SafetensorsReader::open(path);
  SafetensorsReader b = std::move(a);
  float got = 0;
  b.readF32("x", {}, &got);
  EXPECT_EQ(got, 4.0f);
  a = std::move(b);
  a.readF32("x", {}, &got);
  EXPECT_EQ(got, 4.0f);
}

} // namespace

//===----------------------------------------------------------------------===//
// Sharded checkpoints (SafetensorsCheckpoint)
//===----------------------------------------------------------------------===//

class ShardedCheckpointTest : public moe::test::TempDirTest {
protected:
  /// Two shards as save_pretrained names them, and their index.
  void writeShards(const std::string &folder) {
    std::filesystem::create_directories(folder);
    writeSafetensors(folder + "/model-00001-of-00002.safetensors",
                     {{"a", DType::F32, {2}, a}, {"b", DType::F32, {3}, b}});
    writeSafetensors(folder + "/model-00002-of-00002.safetensors",
                     {{"c", DType::F32, {1}, c}});
    writeIndex(folder, R"({"metadata": {"total_size": 24}, "weight_map": {
      "a": "model-00001-of-00002.safetensors",
      "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"}})");
  }
  void writeIndex(const std::string &folder, const std::string &json) {
    std::ofstream(folder + "/model.safetensors.index.json") << json;
  }
  std::string errorOf(const std::string &path) {
    try {
      SafetensorsCheckpoint::open(path);
    } catch (const SafetensorsError &e) {
      return e.what();
    }
    return "no error";
  }
  const float a[2] = {1, 2};
  const float b[3] = {3, 4, 5};
  const float c[1] = {6};
};

TEST_F(ShardedCheckpointTest, ReadsEachTensorFromItsShard) {
  std::string folder = file("hf");
  writeShards(folder);
  for (const std::string &path :
       {folder, folder + "/model.safetensors.index.json"}) {
    SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::open(path);
    EXPECT_EQ(ckpt.path(), folder + "/model.safetensors.index.json");
    EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_TRUE(ckpt.contains("c"));
    EXPECT_FALSE(ckpt.contains("d"));
    float got[3] = {0, 0, 0};
    ckpt.readF32("c", {1}, got);
    EXPECT_EQ(got[0], 6.0f);
    ckpt.readF32("b", {3}, got);
    EXPECT_EQ(std::vector<float>(got, got + 3), (std::vector<float>{3, 4, 5}));
    EXPECT_THROW(ckpt.readF32("d", {1}, got), SafetensorsError);
    EXPECT_THROW(ckpt.readF32("a", {3}, got), SafetensorsError); // shape
  }
}

TEST_F(ShardedCheckpointTest, ASingleFileOrAFolderHoldingIt) {
  std::string folder = file("one");
  std::filesystem::create_directories(folder);
  writeSafetensors(folder + "/model.safetensors", {{"a", DType::F32, {2}, a}});
  for (const std::string &path : {folder, folder + "/model.safetensors"}) {
    SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::open(path);
    float got[2] = {0, 0};
    ckpt.readF32("a", {2}, got);
    EXPECT_EQ(got[1], 2.0f);
    EXPECT_EQ(ckpt.names(), std::vector<std::string>{"a"});
  }
}

TEST_F(ShardedCheckpointTest, BadIndexesAreOneLineErrorsNamingTheFiles) {
  std::string folder = file("bad");
  writeShards(folder);
  std::string index = folder + "/model.safetensors.index.json";

  std::filesystem::remove(folder + "/model-00002-of-00002.safetensors");
  EXPECT_EQ(errorOf(folder),
            index +
                ": names shard 'model-00002-of-00002.safetensors' (of "
                "tensor 'c'), which is not a file in " +
                folder);

  writeIndex(folder, R"({"weight_map": {"a": "model-00001-of-00002.safe)");
  EXPECT_NE(errorOf(folder).find(index + ": is not valid JSON"),
            std::string::npos);
  writeIndex(folder, R"({"metadata": {}})");
  EXPECT_EQ(errorOf(index), index + ": has no \"weight_map\" object (tensor "
                                    "name -> shard file)");
  writeIndex(folder, R"({"weight_map": {"a": 7}})");
  EXPECT_EQ(errorOf(index), index + ": weight_map['a'] is not a file name");
  writeIndex(folder, R"({"weight_map": {"a": "../elsewhere.safetensors"}})");
  EXPECT_NE(errorOf(index).find("expected a file name beside the index"),
            std::string::npos);

  // Listed in a shard that does not hold it: found when read.
  writeIndex(folder, R"({"weight_map": {
      "a": "model-00001-of-00002.safetensors",
      "z": "model-00001-of-00002.safetensors"}})");
  SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::open(folder);
  float got[2];
  try {
    ckpt.readF32("z", {2}, got);
    FAIL() << "no error";
  } catch (const SafetensorsError &e) {
    EXPECT_EQ(std::string(e.what()),
              index + ": lists tensor 'z' in shard "
                      "'model-00001-of-00002.safetensors', which does not "
                      "hold it");
  }

  std::string empty = file("empty");
  std::filesystem::create_directories(empty);
  EXPECT_EQ(errorOf(empty),
            empty + ": is a folder without model.safetensors.index.json or "
                    "model.safetensors");
}

TEST_F(ShardedCheckpointTest, WritesShardsAndAnIndexThatReadBack) {
  std::vector<float> big(10, 1.5f), small = {7, 8};
  std::vector<TensorToWrite> tensors = {
      {"a", DType::F32, {2}, a},
      {"big", DType::F32, {10}, big.data()},
      {"small", DType::F32, {2}, small.data()},
      {"c", DType::F32, {1}, c}};
  // 12 bytes per shard at most: a (8) | big (40, alone) | small + c (12).
  std::string folder = file("written");
  writeCheckpoint(folder, tensors, {12, DType::F32});
  for (const char *shard :
       {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors", "model.safetensors.index.json"})
    EXPECT_TRUE(std::filesystem::exists(folder + "/" + shard)) << shard;
  EXPECT_EQ(
      SafetensorsReader::open(folder + "/model-00002-of-00003.safetensors")
          .names(),
      std::vector<std::string>{"big"});
  SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::open(folder);
  std::vector<float> got(10);
  ckpt.readF32("big", {10}, got.data());
  EXPECT_EQ(got, big);
  ckpt.readF32("c", {1}, got.data());
  EXPECT_EQ(got[0], 6.0f);
  std::ifstream index(folder + "/model.safetensors.index.json");
  std::string text((std::istreambuf_iterator<char>(index)), {});
  EXPECT_NE(text.find("\"total_size\": 60"), std::string::npos) << text;

  // Rewritten as one file, the earlier index goes (the reader would prefer
  // it), and back as shards, the single file goes (transformers prefers it).
  std::vector<float> changed(10, -2.0f);
  tensors[1].data = changed.data();
  writeCheckpoint(folder, tensors, {1000, DType::F32});
  EXPECT_FALSE(
      std::filesystem::exists(folder + "/model.safetensors.index.json"));
  SafetensorsCheckpoint::open(folder).readF32("big", {10}, got.data());
  EXPECT_EQ(got, changed);
  writeCheckpoint(folder, tensors, {12, DType::F32});
  EXPECT_FALSE(std::filesystem::exists(folder + "/model.safetensors"));
  EXPECT_TRUE(
      std::filesystem::exists(folder + "/model.safetensors.index.json"));

  // Everything fits: one model.safetensors, here in bf16.
  std::string one = file("one-file");
  writeCheckpoint(one, tensors, {1000, DType::BF16});
  SafetensorsReader reader =
      SafetensorsReader::open(one + "/model.safetensors");
  EXPECT_EQ(reader.info("big").dtype, DType::BF16);
  EXPECT_FALSE(std::filesystem::exists(one + "/model.safetensors.index.json"));
  reader.readF32("small", {2}, got.data());
  EXPECT_EQ(got[1], 8.0f); // exact in bf16

  // A .safetensors target must hold everything.
  try {
    writeCheckpoint(file("x.safetensors"), tensors, {12, DType::F32});
    FAIL() << "no error";
  } catch (const SafetensorsError &e) {
    EXPECT_NE(std::string(e.what()).find("60 bytes of tensors do not fit in "
                                         "one file of at most 12 bytes"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(file("x.safetensors")));
}
