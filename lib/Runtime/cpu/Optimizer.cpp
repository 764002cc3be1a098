//===- Optimizer.cpp - Gradient norms and AdamW ---------------------------===//
//
// The sum of squares behind the global gradient norm and the AdamW step,
// and the CPU backend's methods for the calls; their operands are fp32
// whatever the storage.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/CpuKernels.h"

#include "CpuBackend.h"
#include "KernelUtils.h"

#include <cmath>
#include <string>

using namespace moe::cpu::detail;

namespace moe::cpu {

double sumSquares(const float *x, int64_t n) {
  checkSize("sumSquares", "n", n);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i)
    sum += double(x[i]) * x[i];
  return sum;
}

void adamw(float *param, const float *grad, float *m, float *v, int64_t n,
           float lr, float beta1, float beta2, float eps, float weightDecay,
           float gradScale, int64_t step) {
  const char *kernel = "adamw";
  checkSize(kernel, "n", n);
  if (step < 1)
    fail(kernel, "step must be at least 1, got " + std::to_string(step));
  float decay = float(1.0 - double(lr) * double(weightDecay));
  double biasCorrection1 = 1.0 - std::pow(double(beta1), double(step));
  double biasCorrection2 = 1.0 - std::pow(double(beta2), double(step));
  float stepSize = float(double(lr) / biasCorrection1);
  float biasCorrection2Sqrt = float(std::sqrt(biasCorrection2));
  float oneMinusBeta1 = 1.0f - beta1, oneMinusBeta2 = 1.0f - beta2;
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i] * gradScale;
    float p = param[i] * decay;
    // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(...).
    float mi = m[i] + oneMinusBeta1 * (g - m[i]);
    float vi = v[i] * beta2 + oneMinusBeta2 * g * g;
    float denom = std::sqrt(vi) / biasCorrection2Sqrt + eps;
    param[i] = p - stepSize * (mi / denom);
    m[i] = mi;
    v[i] = vi;
  }
}

} // namespace moe::cpu

//===----------------------------------------------------------------------===//
// The backend methods of these calls
//===----------------------------------------------------------------------===//

namespace moe::rt {

// The optimizer's operands are fp32 whatever the storage.
void CpuBackend::sumSquares(const float *x, double *out, int64_t n) {
  *out = cpu::sumSquares(x, n);
}

void CpuBackend::adamw(float *param, const float *grad, float *m, float *v,
                       int64_t n, float lr, float beta1, float beta2, float eps,
                       float weightDecay, float gradScale, int64_t step) {
  cpu::adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay,
             gradScale, step);
}

} // namespace moe::rt
