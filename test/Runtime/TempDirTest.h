//===- TempDirTest.h - A gtest fixture with a private directory -*- C++ -*-===//
//
// Shared by the runtime tests that write files: each test gets its own
// directory under testing::TempDir(), removed after the test.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_RUNTIME_TEMPDIRTEST_H
#define MOE_TEST_RUNTIME_TEMPDIRTEST_H

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace moe::test {

class TempDirTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "moe_test_XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    ASSERT_NE(::mkdtemp(buf.data()), nullptr);
    dir = buf.data();
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  /// The path of `name` inside the test's directory.
  std::string file(const std::string &name) const {
    return (std::filesystem::path(dir) / name).string();
  }

  std::string dir;
};

/// The whole content of the file at `path` ("" when it cannot be read).
inline std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

} // namespace moe::test

#endif // MOE_TEST_RUNTIME_TEMPDIRTEST_H
