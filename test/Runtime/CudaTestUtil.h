//===- CudaTestUtil.h - Shared pieces of the CUDA kernel tests --*- C++ -*-===//
//
// Every CUDA test compares a moe::cuda kernel with its moe::cpu twin on the
// same random inputs. Without a usable GPU each test skips with
// "skipped: no GPU", so CI (which builds the CUDA backend but has no GPU)
// reports them as skipped instead of passing them silently.
//
// Tolerances: storage is fp32 today and both sides accumulate in fp32 (the
// CPU in a different order, cuBLAS possibly with another blocking), so the
// default is a relative error of 1e-4 against the largest reference magnitude
// (see docs/cuda.md). bf16 storage will get its own tolerances there.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_RUNTIME_CUDATESTUTIL_H
#define MOE_TEST_RUNTIME_CUDATESTUTIL_H

#include "cuda/Device.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace moe::cuda::test {

/// Device memory holding a copy of a host vector; download() copies back
/// after waiting for the device.
template <typename T> class DeviceBuffer {
public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    check(cudaMalloc(&ptr_, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc");
    check(cudaMemset(ptr_, 0, std::max<size_t>(n, 1) * sizeof(T)), "cudaMemset");
    // The kernels run on the Device's non-blocking stream, which does not
    // wait for the legacy stream these copies use.
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }
  explicit DeviceBuffer(const std::vector<T> &host) : DeviceBuffer(host.size()) {
    check(cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T),
                     cudaMemcpyHostToDevice),
          "cudaMemcpy to device");
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;

  T *get() const { return ptr_; }
  operator T *() const { return ptr_; }
  std::vector<T> download() const {
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    std::vector<T> host(n_);
    check(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost),
          "cudaMemcpy to host");
    return host;
  }

private:
  T *ptr_ = nullptr;
  size_t n_ = 0;
};

inline std::vector<float> randomFloats(size_t n, uint64_t seed, float lo = -1.f,
                                       float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(rng);
  return v;
}

inline std::vector<int32_t> randomInts(size_t n, uint64_t seed, int32_t lo,
                                       int32_t hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t &x : v)
    x = dist(rng);
  return v;
}

/// topK distinct experts per token drawn from `allowed`.
inline std::vector<int32_t> distinctRouting(uint64_t seed, int64_t tokens,
                                            int64_t topK,
                                            std::vector<int32_t> allowed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> indices;
  for (int64_t t = 0; t < tokens; ++t) {
    std::shuffle(allowed.begin(), allowed.end(), rng);
    indices.insert(indices.end(), allowed.begin(), allowed.begin() + topK);
  }
  return indices;
}

/// max |actual - expected| / max(max |expected|, tiny) <= rtol.
inline void expectClose(const std::vector<float> &actual,
                        const std::vector<float> &expected, double rtol,
                        const std::string &what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double scale = 1e-30, worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    scale = std::max(scale, std::fabs(double(expected[i])));
    if (!std::isfinite(actual[i])) {
      ADD_FAILURE() << what << ": element " << i << " is " << actual[i];
      return;
    }
    double d = std::fabs(double(actual[i]) - double(expected[i]));
    if (d > worst) {
      worst = d;
      at = i;
    }
  }
  EXPECT_LE(worst / scale, rtol)
      << what << ": worst at element " << at << ": " << actual[at] << " vs "
      << expected[at] << " (scale " << scale << ")";
}

/// The fixture of every CUDA test: skips without a GPU, else owns a Device.
class CudaTest : public ::testing::Test {
protected:
  void SetUp() override {
    if (deviceCount() == 0)
      GTEST_SKIP() << "skipped: no GPU";
    dev = std::make_unique<Device>(0);
  }
  std::unique_ptr<Device> dev;
};

} // namespace moe::cuda::test

#endif // MOE_TEST_RUNTIME_CUDATESTUTIL_H
