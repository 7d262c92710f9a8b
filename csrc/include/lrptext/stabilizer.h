// The LRP stabiliser, written once for the CPU and CUDA kernels (docs/conventions.md, Stabiliser).
#pragma once

#if defined(__CUDACC__)
#define LRPT_HD __host__ __device__
#define LRPT_LAMBDA [=] __host__ __device__
#else
#define LRPT_HD
#define LRPT_LAMBDA [=]
#endif

namespace lrptext {

// st(z, eps) = z + eps * sign(z) with sign(0) = +1, also for -0.0 (zennit's convention):
// every element is shifted, so LRP-0 (eps = 0) divides by zero where z = 0 and yields +-inf.
// Selecting the shift, not the sum, keeps the loops over it branch-free and vectorisable.
template <class T>
LRPT_HD inline T stabilize(T z, T eps) {
  return z + (z >= T(0) ? eps : -eps);
}

// The epsilon rule's quotient in gradient form, a ⊙ g / st(z, eps), in this one order ((a g) / st(z)): the
// kernels that compute it inside another pass (LayerNorm's, attention's) give the same bits as divide_stabilized's
// own pass, which the engine relies on when it picks either.
template <class T>
LRPT_HD inline T stabilized_quotient(T a, T g, T z, T eps) {
  return a * g / stabilize(z, eps);
}

}  // namespace lrptext
