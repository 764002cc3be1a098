//===- FfnKernels.cpp - The dense SwiGLU MLP and shared experts -----------===//
//
// The SwiGLU feed-forward of dense layers and of the shared experts (with
// their optional sigmoid gate), their gradients, and the CPU backend's
// methods for the calls. Rows run in blocks (KernelUtils.h: swigluRows).
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuKernels.h"

#include "CpuBackend.h"
#include "KernelUtils.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using namespace moe::cpu::detail;

namespace moe::cpu {

void swigluMlp(const float *x, int64_t rows, int64_t hidden, const float *gate,
               const float *up, const float *down, int64_t inter, float *out) {
  checkSize("swigluMlp", "rows", rows);
  checkSize("swigluMlp", "hidden", hidden);
  checkSize("swigluMlp", "inter", inter);
  int64_t blockSize = 2 * swigluBlockRows(rows) * inter;
  Scratch scratch("swigluMlp", Scratch::bytes<float>(blockSize));
  swigluRows("swigluMlp", x, rows, hidden, gate, up, down, inter,
             scratch.take<float>(blockSize), out);
}

void sharedExperts(const float *x, int64_t rows, int64_t hidden,
                   const float *gate, const float *up, const float *down,
                   int64_t inter, const float *sharedGate, float *out) {
  swigluMlp(x, rows, hidden, gate, up, down, inter, out);
  if (!sharedGate)
    return;
  std::vector<float> gateLogits(rows);
  project("sharedExperts", x, rows, hidden, sharedGate, 1, gateLogits.data());
  for (int64_t r = 0; r < rows; ++r) {
    float g = sigmoid(gateLogits[r]);
    for (int64_t i = 0; i < hidden; ++i)
      out[r * hidden + i] *= g;
  }
}

void swigluMlpGrad(const float *dy, const float *x, int64_t rows,
                   int64_t hidden, const float *gate, const float *up,
                   const float *down, int64_t inter, float *dx, float *dgate,
                   float *dup, float *ddown) {
  const char *kernel = "swigluMlpGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "inter", inter);
  std::vector<float> scratch(4 * swigluBlockRows(rows) * inter);
  swigluRowsGrad(kernel, dy, x, rows, hidden, gate, up, down, inter,
                 /*weightBeta=*/0.0f, scratch.data(), dx, dgate, dup, ddown);
}

void sharedExpertsGrad(const float *dy, const float *x, int64_t rows,
                       int64_t hidden, const float *gate, const float *up,
                       const float *down, int64_t inter,
                       const float *sharedGate, float *dx, float *dgate,
                       float *dup, float *ddown, float *dsharedGate) {
  if (!sharedGate) {
    swigluMlpGrad(dy, x, rows, hidden, gate, up, down, inter, dx, dgate, dup,
                  ddown);
    return;
  }
  const char *kernel = "sharedExpertsGrad";
  checkSize(kernel, "rows", rows);
  checkSize(kernel, "hidden", hidden);
  checkSize(kernel, "inter", inter);
  // out = sigmoid(z) * m with z = x . sharedGate and m the SwiGLU output.
  std::vector<float> z(rows), mlpOut(rows * hidden);
  std::vector<float> scratch(4 * swigluBlockRows(rows) * inter);
  project(kernel, x, rows, hidden, sharedGate, 1, z.data());
  swigluRows(kernel, x, rows, hidden, gate, up, down, inter, scratch.data(),
             mlpOut.data());
  // dz = sigmoid'(z) * (dy . m); then mlpOut becomes dm = sigmoid(z) * dy.
  for (int64_t r = 0; r < rows; ++r) {
    float s = sigmoid(z[r]);
    double dot = 0.0;
    for (int64_t i = 0; i < hidden; ++i) {
      float &m = mlpOut[r * hidden + i];
      dot += double(dy[r * hidden + i]) * m;
      m = s * dy[r * hidden + i];
    }
    z[r] = float(dot * s * (1.0f - s));
  }
  swigluRowsGrad(kernel, mlpOut.data(), x, rows, hidden, gate, up, down, inter,
                 /*weightBeta=*/0.0f, scratch.data(), dx, dgate, dup, ddown);
  std::vector<double> dsg(hidden, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < hidden; ++i) {
      dx[r * hidden + i] += z[r] * sharedGate[i];
      dsg[i] += double(z[r]) * x[r * hidden + i];
    }
  for (int64_t i = 0; i < hidden; ++i)
    dsharedGate[i] = float(dsg[i]);
}

} // namespace moe::cpu

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

namespace moe::rt {

void CpuBackend::mlp(const float *x, const float *gate, const float *up,
                     const float *down, float *out, int64_t rows,
                     int64_t hidden, int64_t inter) {
  Widened w(storage_);
  int64_t nw = inter * hidden;
  cpu::swigluMlp(w.in(x, rows * hidden), rows, hidden, w.in(gate, nw),
                 w.in(up, nw), w.in(down, nw), inter,
                 w.out(out, rows * hidden));
  w.store();
}

void CpuBackend::sharedExperts(const float *x, const float *gate,
                               const float *up, const float *down,
                               const float *sharedGate, float *out,
                               int64_t rows, int64_t hidden, int64_t inter) {
  Widened w(storage_);
  int64_t nw = inter * hidden;
  cpu::sharedExperts(w.in(x, rows * hidden), rows, hidden, w.in(gate, nw),
                     w.in(up, nw), w.in(down, nw), inter,
                     w.in(sharedGate, hidden), w.out(out, rows * hidden));
  w.store();
}

void CpuBackend::mlpGrad(const float *dy, const float *x, const float *gate,
                         const float *up, const float *down, float *dx,
                         float *dgate, float *dup, float *ddown, int64_t rows,
                         int64_t hidden, int64_t inter) {
  Widened w(storage_);
  int64_t n = rows * hidden, nw = inter * hidden;
  cpu::swigluMlpGrad(w.in(dy, n), w.in(x, n), rows, hidden, w.in(gate, nw),
                     w.in(up, nw), w.in(down, nw), inter, w.out(dx, n),
                     w.out(dgate, nw), w.out(dup, nw), w.out(ddown, nw));
  w.store();
}

void CpuBackend::sharedExpertsGrad(const float *dy, const float *x,
                                   const float *gate, const float *up,
                                   const float *down, const float *sharedGate,
                                   float *dx, float *dgate, float *dup,
                                   float *ddown, float *dsharedGate,
                                   int64_t rows, int64_t hidden,
                                   int64_t inter) {
  Widened w(storage_);
  int64_t n = rows * hidden, nw = inter * hidden;
  cpu::sharedExpertsGrad(w.in(dy, n), w.in(x, n), rows, hidden, w.in(gate, nw),
                         w.in(up, nw), w.in(down, nw), inter,
                         w.in(sharedGate, hidden), w.out(dx, n),
                         w.out(dgate, nw), w.out(dup, nw), w.out(ddown, nw),
                         w.out(dsharedGate, hidden));
  w.store();
}

} // namespace moe::rt
