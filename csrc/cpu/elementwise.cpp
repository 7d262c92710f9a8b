// Element-wise steps of the rules on the CPU (ElementwiseProblem in problems.h): one vectorised loop each.
#include <algorithm>
#include <type_traits>

#include "exec.h"
#include "lrptext/activations.h"
#include "lrptext/kernels.h"
#include "lrptext/stabilizer.h"

namespace lrptext::cpu {
namespace {

// A few operations per element stream from memory faster than the pool wakes: below this many elements one thread
// does them (with OMP_WAIT_POLICY=PASSIVE, 512 x 384 elements took 0.05 ms on one thread, 0.12 ms on two;
// docs/performance.md).
constexpr int64_t kStreamingGrain = int64_t(1) << 19;
constexpr int64_t kBlock = 4096;

// f(lo, hi) over blocks of the n elements, split over the threads from kStreamingGrain elements on; a
// compute-bound loop (an activation computed per element) from kParallelGrain elements on.
template <class F>
void blocks(int64_t n, F f, bool compute_bound = false) {
  Exec{}.map(ceil_div(n, kBlock), [=](int64_t b) { f(b * kBlock, std::min(n, (b + 1) * kBlock)); },
             compute_bound ? kBlock : kBlock * kParallelGrain / kStreamingGrain);
}

// Elements [lo, hi) of the step (activations.h: branch-free in float, so each loop vectorises; the pointers are
// this call's own locals, which the compiler keeps in registers).
template <class T, Activation A>
inline __attribute__((always_inline)) void steps(const ElementwiseProblem& p, int64_t lo, int64_t hi) {
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  const T* factor = static_cast<const T*>(p.factor);
  T* out = static_cast<T*>(p.out);
  if (p.op == ElementwiseOp::DivideStabilized) {
    const T eps = T(p.epsilon);
    if (factor) {
      for (int64_t i = lo; i < hi; ++i) out[i] = stabilized_quotient(activate<A>(factor[i]), a[i], b[i], eps);
    } else {
      for (int64_t i = lo; i < hi; ++i) out[i] = a[i] / stabilize(b[i], eps);
    }
    return;
  }
  const T scale = T(p.scale);
  if (p.accumulate) {
    for (int64_t i = lo; i < hi; ++i) out[i] += scale * activate<A>(a[i]) * b[i];
  } else {
    for (int64_t i = lo; i < hi; ++i) out[i] = scale * activate<A>(a[i]) * b[i];
  }
}

template <class T>
inline __attribute__((always_inline)) void steps(const ElementwiseProblem& p, int64_t lo, int64_t hi) {
  switch (p.activation) {
    case Activation::Identity: return steps<T, Activation::Identity>(p, lo, hi);
    case Activation::ReLU: return steps<T, Activation::ReLU>(p, lo, hi);
    case Activation::GELU: return steps<T, Activation::GELU>(p, lo, hi);
    case Activation::GELUTanh: return steps<T, Activation::GELUTanh>(p, lo, hi);
    case Activation::SiLU: return steps<T, Activation::SiLU>(p, lo, hi);
  }
}

// The float steps with GELU, its tanh form or SiLU, in AVX-512 where the CPU has it (exec.h): Φ costs some 40
// vector operations per group of elements, and 16-wide vectors halved a GELU product's time (Sapphire Rapids,
// 128 x 1536 elements on one core: 296 -> 145 µs, less than torch's GELU alone and a product after it).
LRPTEXT_AVX512_CLONE void activated_steps(const ElementwiseProblem& p, int64_t lo, int64_t hi) {
  steps<float>(p, lo, hi);
}

template <class T>
void run(const ElementwiseProblem& p) {
  // an activation other than ReLU makes the loop compute-bound: split over the threads from fewer elements on
  const bool heavy = p.activation != Activation::Identity && p.activation != Activation::ReLU &&
                     (p.op == ElementwiseOp::Multiply || p.factor);
  blocks(p.n, [&p, heavy](int64_t lo, int64_t hi) {
    if constexpr (std::is_same_v<T, float>) {
      if (heavy) return activated_steps(p, lo, hi);
    }
    steps<T>(p, lo, hi);
  }, heavy);
}

}  // namespace

void elementwise(const ElementwiseProblem& p) {
  if (p.dtype == DType::Float32) run<float>(p);
  else run<double>(p);
}

}  // namespace lrptext::cpu
