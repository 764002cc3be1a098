//===- moe-calibrate.cpp - Measure this machine's hardware profile --------===//
//
//   mpirun -np 2 moe-calibrate -o cpu.json     # ranks are MPI processes
//   moe-calibrate --ranks 2 -o cpu.json        # ranks are threads
//   moec model.mlir --mesh auto --devices 2 --hardware cpu.json
//
// Every rank runs the measurements at once, as the ranks of a training run
// share the machine: the runtime's own CPU kernels for the matrix rate (f32,
// and bf16 storage widened around it as the CPU backend does), an
// elementwise add for the memory bandwidth and for the fixed cost of an op,
// and the communicator's all-reduce for the latency of a step and the
// bandwidth. Rank 0 writes the profile (docs/layout.md) as JSON. All ranks
// are on this one host: the profile's node is all of them, and the network
// figures repeat the node's.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/BFloat16.h"
#include "moe/Runtime/Communicator.h"
#include "moe/Runtime/CpuKernels.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string output;
  std::string name = "calibrated";
  int ranks = 0; ///< threads; 0 under an MPI launcher
};

/// What one rank measured.
struct Measured {
  double flopsF32 = 0, flopsBF16 = 0, bandwidth = 0, opLatency = 0;
  double commLatency = 0, commBandwidth = 0;
};

/// The median of `reps` timed runs of `fn`, after one warm-up run, with
/// every rank starting each run together.
double timeIt(moe::rt::Communicator &comm, int reps,
              const std::function<void()> &fn) {
  fn();
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    comm.barrier();
    auto start = Clock::now();
    fn();
    times.push_back(
        std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

Measured measure(moe::rt::Communicator &comm) {
  Measured m;
  // A GEMM of the size of a small model's projections: 256 x 1024 x 1024.
  const int64_t rows = 256, in = 1024, out = 1024;
  std::vector<float> x(rows * in, 0.5f), w(out * in, 0.25f), y(rows * out);
  double flops = 2.0 * rows * in * out;
  m.flopsF32 =
      flops / timeIt(comm, 5, [&] {
        moe::cpu::linear(x.data(), rows, in, w.data(), out, nullptr, y.data());
      });
  // bf16 storage: widened to f32 around the same kernel.
  std::vector<uint16_t> xb(x.size()), wb(w.size()), yb(y.size());
  std::vector<float> xf(x.size()), wf(w.size());
  moe::rt::narrowToBf16(x.data(), xb.data(), static_cast<int64_t>(x.size()));
  moe::rt::narrowToBf16(w.data(), wb.data(), static_cast<int64_t>(w.size()));
  m.flopsBF16 = flops / timeIt(comm, 5, [&] {
                  moe::rt::widenBf16(xb.data(), xf.data(),
                                     static_cast<int64_t>(xb.size()));
                  moe::rt::widenBf16(wb.data(), wf.data(),
                                     static_cast<int64_t>(wb.size()));
                  moe::cpu::linear(xf.data(), rows, in, wf.data(), out, nullptr,
                                   y.data());
                  moe::rt::narrowToBf16(y.data(), yb.data(),
                                        static_cast<int64_t>(y.size()));
                });
  // Memory: an add over 3 x 32 MiB, read twice and written once.
  const int64_t n = 8 << 20;
  std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n);
  m.bandwidth = 3.0 * 4 * n / timeIt(comm, 5, [&] {
                  moe::cpu::add(a.data(), b.data(), n, c.data());
                });
  // The fixed cost of an op: a 64-element add, averaged over many.
  const int calls = 2000;
  m.opLatency = timeIt(comm, 3,
                       [&] {
                         for (int i = 0; i < calls; ++i)
                           moe::cpu::add(a.data(), b.data(), 64, c.data());
                       }) /
                calls;
  // The communicator: a one-element all-reduce is 2 (n - 1) ring steps of
  // latency; 16 Mi elements add 2 (n - 1) / n of its 64 MiB at the
  // bandwidth.
  int size = comm.size();
  if (size > 1) {
    double steps = 2.0 * (size - 1);
    std::vector<float> one(1, 1.0f);
    const int small = 200;
    m.commLatency =
        timeIt(comm, 3,
               [&] {
                 for (int i = 0; i < small; ++i)
                   comm.allReduceSum(one.data(), 1, moe::rt::CommDType::F32);
               }) /
        small / steps;
    const int64_t big = 16 << 20;
    std::vector<float> buffer(big, 1.0f);
    double seconds = timeIt(comm, 3, [&] {
      comm.allReduceSum(buffer.data(), big, moe::rt::CommDType::F32);
    });
    double share = 2.0 * (size - 1) / size;
    m.commBandwidth =
        share * 4 * big / std::max(seconds - steps * m.commLatency, 1e-9);
  }
  return m;
}

std::string number(double x) {
  char text[32];
  std::snprintf(text, sizeof text, "%.4g", x);
  return text;
}

int writeProfile(const Options &options, const Measured &m, int ranks) {
  long pages = sysconf(_SC_PHYS_PAGES), pageSize = sysconf(_SC_PAGESIZE);
  double memory = static_cast<double>(pages) * pageSize / ranks;
  // One rank alone has no communicator to measure: the profile then
  // carries the memory bandwidth, which is what a copy between ranks of
  // one host would reach at best.
  double bandwidth = m.commBandwidth > 0 ? m.commBandwidth : m.bandwidth;
  double latency = m.commLatency > 0 ? m.commLatency : m.opLatency;
  std::string json =
      "{\"name\": \"" + options.name + "\",\n" +
      " \"matmul_flops_f32\": " + number(m.flopsF32) + ",\n" +
      " \"matmul_flops_bf16\": " + number(m.flopsBF16) + ",\n" +
      " \"memory_bandwidth\": " + number(m.bandwidth) + ",\n" +
      " \"op_latency\": " + number(m.opLatency) + ",\n" +
      " \"devices_per_node\": " + std::to_string(std::max(ranks, 64)) + ",\n" +
      " \"intra_node_bandwidth\": " + number(bandwidth) + ",\n" +
      " \"intra_node_latency\": " + number(latency) + ",\n" +
      " \"inter_node_bandwidth\": " + number(bandwidth) + ",\n" +
      " \"inter_node_latency\": " + number(latency) + ",\n" +
      " \"memory_bytes\": " + number(memory) + "}\n";
  if (options.output.empty() || options.output == "-") {
    std::cout << json;
    return 0;
  }
  std::string partial = options.output + ".partial";
  {
    std::ofstream file(partial);
    file << json;
    if (!file) {
      std::cerr << "moe-calibrate: error: cannot write '" << options.output
                << "'\n";
      std::remove(partial.c_str());
      return 1;
    }
  }
  if (std::rename(partial.c_str(), options.output.c_str()) != 0) {
    std::cerr << "moe-calibrate: error: cannot write '" << options.output
              << "'\n";
    std::remove(partial.c_str());
    return 1;
  }
  std::cerr << "moe-calibrate: wrote " << options.output << " (" << ranks
            << " ranks): matmul " << number(m.flopsF32 / 1e9)
            << " GFLOP/s f32, " << number(m.flopsBF16 / 1e9) << " bf16; memory "
            << number(m.bandwidth / 1e9) << " GB/s; all-reduce "
            << number(bandwidth / 1e9) << " GB/s, " << number(latency * 1e6)
            << " us a step\n";
  return 0;
}

int usage(const char *message) {
  std::cerr << "moe-calibrate: error: " << message
            << "\nusage: moe-calibrate [--ranks N] [--name NAME] [-o FILE]\n";
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char * {
      return i + 1 < argc ? argv[++i] : nullptr;
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << "moe-calibrate: measure this machine's hardware profile "
                   "for moec --mesh auto --hardware FILE\n"
                   "  --ranks N    ranks as threads (default 2; under "
                   "mpirun: the MPI processes)\n"
                   "  --name NAME  the profile's name (default calibrated)\n"
                   "  -o FILE      where to write the JSON (default: "
                   "stdout)\n";
      return 0;
    }
    const char *v = nullptr;
    if ((arg == "-o" || arg == "--ranks" || arg == "--name") && !(v = value()))
      return usage(("missing value after " + arg).c_str());
    if (arg == "-o")
      options.output = v;
    else if (arg == "--name")
      options.name = v;
    else if (arg == "--ranks") {
      char *end = nullptr;
      long n = std::strtol(v, &end, 10);
      if (*v == '\0' || *end != '\0' || n < 1 || n > 256)
        return usage("--ranks must be a number from 1 to 256");
      options.ranks = static_cast<int>(n);
    } else
      return usage(("unknown argument '" + arg + "'").c_str());
  }
  if (options.name.find_first_of("\"\\") != std::string::npos)
    return usage("--name must not contain quotes or backslashes");

  try {
#ifdef MOE_CALIBRATE_MPI
    if (moe::rt::underMpiLauncher() && options.ranks == 0) {
      moe::rt::MpiSession session(&argc, &argv);
      std::unique_ptr<moe::rt::Communicator> world = moe::rt::mpiWorld();
      Measured m = measure(*world);
      return world->rank() == 0 ? writeProfile(options, m, world->size()) : 0;
    }
#else
    if (moe::rt::underMpiLauncher() && options.ranks == 0)
      return usage("this moe-calibrate was built without MPI: use --ranks N");
#endif
    int ranks = options.ranks > 0 ? options.ranks : 2;
    std::vector<std::unique_ptr<moe::rt::Communicator>> comms =
        moe::rt::makeLocalCommunicators(ranks);
    std::vector<Measured> results(ranks);
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r)
      threads.emplace_back([&, r] { results[r] = measure(*comms[r]); });
    for (std::thread &t : threads)
      t.join();
    return writeProfile(options, results[0], ranks);
  } catch (const std::exception &e) {
    std::cerr << "moe-calibrate: error: " << e.what() << "\n";
    return 1;
  }
}
