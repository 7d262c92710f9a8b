// Element-wise steps of the rules on the CPU (ElementwiseProblem in problems.h): one vectorised loop each.
#include "exec.h"
#include "lrptext/kernels.h"
#include "lrptext/stabilizer.h"

namespace lrptext::cpu {
namespace {

template <class T>
void run(const ElementwiseProblem& p) {
  Exec ex;
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* out = static_cast<T*>(p.out);
  if (p.op == ElementwiseOp::DivideStabilized) {
    const T eps = T(p.epsilon);
    ex.map(p.n, [=](int64_t i) { out[i] = a[i] / stabilize(b[i], eps); });
    return;
  }
  const T scale = T(p.scale);
  if (p.accumulate) ex.map(p.n, [=](int64_t i) { out[i] += scale * a[i] * b[i]; });
  else if (p.scale == 1.0) ex.map(p.n, [=](int64_t i) { out[i] = a[i] * b[i]; });
  else ex.map(p.n, [=](int64_t i) { out[i] = scale * a[i] * b[i]; });
}

}  // namespace

void elementwise(const ElementwiseProblem& p) {
  if (p.dtype == DType::Float32) run<float>(p);
  else run<double>(p);
}

}  // namespace lrptext::cpu
