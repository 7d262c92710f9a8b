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

// f(lo, hi) over blocks of the n elements, split over the threads from kStreamingGrain elements on, or from
// kParallelGrain on for work of about an operation per element per block element (compute_bound).
template <class F>
void blocks(int64_t n, F f, bool compute_bound = false) {
  Exec{}.map(ceil_div(n, kBlock), [=](int64_t b) { f(b * kBlock, std::min(n, (b + 1) * kBlock)); },
             compute_bound ? kBlock : kBlock * kParallelGrain / kStreamingGrain);
}

// out[lo, hi) (+)= scale act(a) b
template <class T, Activation A, bool kAdd>
inline __attribute__((always_inline)) void product_loop(const T* a, const T* b, T* out, T scale, int64_t lo,
                                                        int64_t hi) {
  for (int64_t i = lo; i < hi; ++i) {
    const T x = activate<A>(a[i]);
    if constexpr (kAdd) out[i] += scale * x * b[i];
    else out[i] = scale * x * b[i];
  }
}

// The float products with GELU, its tanh form and SiLU, in AVX-512 where the CPU has it (exec.h): Φ costs some
// 40 vector operations per group of elements, and 16-wide vectors halved a GELU product's time (Sapphire Rapids,
// 128 x 1536 elements on one core: 296 -> 145 µs, less than torch's GELU alone and a product after it).
LRPTEXT_AVX512_CLONE void activated_products(Activation act, bool add, const float* a, const float* b, float* out,
                                             float scale, int64_t lo, int64_t hi) {
  switch (act) {
    case Activation::GELU:
      return add ? product_loop<float, Activation::GELU, true>(a, b, out, scale, lo, hi)
                 : product_loop<float, Activation::GELU, false>(a, b, out, scale, lo, hi);
    case Activation::GELUTanh:
      return add ? product_loop<float, Activation::GELUTanh, true>(a, b, out, scale, lo, hi)
                 : product_loop<float, Activation::GELUTanh, false>(a, b, out, scale, lo, hi);
    default:
      return add ? product_loop<float, Activation::SiLU, true>(a, b, out, scale, lo, hi)
                 : product_loop<float, Activation::SiLU, false>(a, b, out, scale, lo, hi);
  }
}

// out (+)= scale act(a) b (activations.h: branch-free in float, so the loops vectorise)
template <class T, Activation A, bool kAdd>
void multiply(const ElementwiseProblem& p) {
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* out = static_cast<T*>(p.out);
  const T scale = T(p.scale);
  constexpr bool kStreaming = A == Activation::Identity || A == Activation::ReLU;
  blocks(p.n, [=](int64_t lo, int64_t hi) {
    if constexpr (std::is_same_v<T, float> && !kStreaming) activated_products(A, kAdd, a, b, out, scale, lo, hi);
    else product_loop<T, A, kAdd>(a, b, out, scale, lo, hi);
  }, !kStreaming);
}

template <class T, Activation A>
void multiply_into(const ElementwiseProblem& p) {
  p.accumulate ? multiply<T, A, true>(p) : multiply<T, A, false>(p);
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
    return;
  }
  switch (p.activation_a) {
    case Activation::Identity: return multiply_into<T, Activation::Identity>(p);
    case Activation::ReLU: return multiply_into<T, Activation::ReLU>(p);
    case Activation::GELU: return multiply_into<T, Activation::GELU>(p);
    case Activation::GELUTanh: return multiply_into<T, Activation::GELUTanh>(p);
    case Activation::SiLU: return multiply_into<T, Activation::SiLU>(p);
  }
}

}  // namespace

void elementwise(const ElementwiseProblem& p) {
  if (p.dtype == DType::Float32) run<float>(p);
  else run<double>(p);
}

}  // namespace lrptext::cpu
