// Element-wise steps of the rules on the CPU (ElementwiseProblem in problems.h): one vectorised loop each.
#include <algorithm>

#include "exec.h"
#include "lrptext/kernels.h"
#include "lrptext/stabilizer.h"

namespace lrptext::cpu {
namespace {

// A few operations per element stream from memory faster than the pool wakes: below this many elements one thread
// does them (with OMP_WAIT_POLICY=PASSIVE, 512 x 384 elements took 0.05 ms on one thread, 0.12 ms on two;
// docs/performance.md).
constexpr int64_t kStreamingGrain = int64_t(1) << 19;
constexpr int64_t kBlock = 4096;

// f(lo, hi) over blocks of the n elements, split over the threads from kStreamingGrain elements on.
template <class F>
void blocks(int64_t n, F f) {
  Exec{}.map(ceil_div(n, kBlock), [=](int64_t b) { f(b * kBlock, std::min(n, (b + 1) * kBlock)); },
             kBlock * kParallelGrain / kStreamingGrain);
}

// out (+)= scale relu(a) b or scale a b; the relu a branch-free select (0 where a <= 0 or NaN), so the loop vectorises
template <class T, bool kRelu, bool kAdd>
void multiply(const ElementwiseProblem& p) {
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* out = static_cast<T*>(p.out);
  const T scale = T(p.scale);
  blocks(p.n, [=](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T x = kRelu ? (a[i] > T(0) ? a[i] : T(0)) : a[i];
      if constexpr (kAdd) out[i] += scale * x * b[i];
      else out[i] = scale * x * b[i];
    }
  });
}

template <class T>
void run(const ElementwiseProblem& p) {
  if (p.op == ElementwiseOp::DivideStabilized) {
    const T* a = static_cast<const T*>(p.a);
    const T* b = static_cast<const T*>(p.b);
    T* out = static_cast<T*>(p.out);
    const T eps = T(p.epsilon);
    blocks(p.n, [=](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) out[i] = a[i] / stabilize(b[i], eps);
    });
  } else if (p.relu_a) {
    p.accumulate ? multiply<T, true, true>(p) : multiply<T, true, false>(p);
  } else {
    p.accumulate ? multiply<T, false, true>(p) : multiply<T, false, false>(p);
  }
}

}  // namespace

void elementwise(const ElementwiseProblem& p) {
  if (p.dtype == DType::Float32) run<float>(p);
  else run<double>(p);
}

}  // namespace lrptext::cpu
