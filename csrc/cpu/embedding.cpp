// Embedding and embedding-bag relevance: token ids to per-token relevance.
#include <algorithm>
#include <cstdint>
#include <memory>

#include "exec.h"
#include "lrptext/kernels.h"
#include "lrptext/stabilizer.h"

namespace lrptext::cpu {
namespace {

// An embedding is a lookup, so the relevance at its output already belongs to one token each:
// the per-token relevance is the sum over the embedding axis, and padding tokens get none.
template <class T, class I>
void embedding(const EmbeddingProblem& p) {
  const I* ids = static_cast<const I*>(p.ids);
  const T* r = static_cast<const T*>(p.relevance);
  T* out = static_cast<T*>(p.out);
  const int64_t d = p.dim, pad = p.padding_idx;
  Exec().map(p.tokens, [=](int64_t t) {
    const bool padded = pad >= 0 && int64_t(ids[t]) == pad;
    if (p.reduce) {
      T acc = T(0);
      if (!padded) {
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < d; ++k) acc += r[t * d + k];
      }
      out[t] = acc;
    } else {
      for (int64_t k = 0; k < d; ++k) out[t * d + k] = padded ? T(0) : r[t * d + k];
    }
  }, d);
}

// The bag kernel's loops in AVX2 + FMA where the CPU has them (LRPTEXT_AVX2_CLONE, exec.h): on W5's rows in the
// cache, a standalone copy of these loops took 1.3x the time with the baseline's 4-wide products (interleaved
// medians; AVX-512 gained nothing more).

// Table rows are fetched ahead (prefetch_row, exec.h): they are scattered over the table, where the hardware
// prefetchers cannot follow. (Measured on W5's table, 24 MB: fetching 4 to 64 rows ahead or none took the same
// time, whether the rows sat in the 32 MiB L3 or had been evicted; kept, at no cost, for larger tables.)

// One bag of the embedding-bag relevance (below): tokens [lo, hi), the bag's relevance r[d], its output y[d] (null:
// summed here first, one more read of the rows), s[d] scratch.
template <class T, class I>
LRPTEXT_AVX2_CLONE void bag_relevance(const EmbeddingBagProblem& p, int64_t lo, int64_t hi, const T* r, const T* y,
                                      T* s) {
  const I* ids = static_cast<const I*>(p.ids);
  const T* e = static_cast<const T*>(p.weight);
  const T* psw = static_cast<const T*>(p.per_sample_weights);
  T* out = static_cast<T*>(p.out);
  const int64_t d = p.dim, pad = p.padding_idx;
  auto padded = [&](int64_t t) { return pad >= 0 && int64_t(ids[t]) == pad; };
  auto row = [&](int64_t t) { return e + int64_t(ids[t]) * d; };
  int64_t count = 0;
  for (int64_t t = lo; t < hi; ++t) count += !padded(t);
  const T inverse_count = count ? T(1) / T(count) : T(0);
  auto factor = [&](int64_t t) -> T {
    if (padded(t)) return T(0);
    return p.mean ? inverse_count : psw ? psw[t] : T(1);
  };
  // Rows fetched ahead of the one read: two groups.
  constexpr int64_t kGroup = 4, kAhead = 8;
  for (int64_t t = lo; t < std::min(hi, lo + kAhead); ++t) prefetch_row(row(t), d);
  if (y) {
    for (int64_t k = 0; k < d; ++k) s[k] = y[k];
  } else {
    for (int64_t k = 0; k < d; ++k) s[k] = T(0);
    for (int64_t t = lo; t < hi; ++t) {
      if (padded(t)) continue;
      const T f = factor(t);
      const T* x = row(t);
#pragma omp simd
      for (int64_t k = 0; k < d; ++k) s[k] += f * x[k];
    }
  }
  const T stab = T(p.stabilizer);
#pragma omp simd
  for (int64_t k = 0; k < d; ++k) s[k] = r[k] / stabilize(s[k], stab);
  int64_t t = lo;
  // Four rows against one s: four independent sums (one chain of adds would wait on each add's latency) and
  // one load of s for four rows.
  for (; t + kGroup <= hi; t += kGroup) {
    for (int64_t a = t + kAhead; a < std::min(hi, t + kAhead + kGroup); ++a) prefetch_row(row(a), d);
    const T *x0 = row(t), *x1 = row(t + 1), *x2 = row(t + 2), *x3 = row(t + 3);
    T a0 = T(0), a1 = T(0), a2 = T(0), a3 = T(0);
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t k = 0; k < d; ++k) {
      a0 += x0[k] * s[k];
      a1 += x1[k] * s[k];
      a2 += x2[k] * s[k];
      a3 += x3[k] * s[k];
    }
    const T sums[kGroup] = {a0, a1, a2, a3};
    for (int64_t i = 0; i < kGroup; ++i) out[t + i] = padded(t + i) ? T(0) : factor(t + i) * sums[i];
  }
  for (; t < hi; ++t) {
    const T* x = row(t);
    T acc = T(0);
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < d; ++k) acc += x[k] * s[k];
    out[t] = padded(t) ? T(0) : factor(t) * acc;
  }
}

// The bag output y_b = sum_t f_t E[id_t] (f_t = 1, the per-sample weight, or 1 / bag size for mean) is split
// over its tokens in proportion to their contributions (Norm rule): R_t = f_t sum_d E[id_t, d] s_bd with
// s_bd = R_bd / st(y_bd). With y given (the forward pass's output) each token's row is read once.
template <class T, class I>
void embedding_bag(const EmbeddingBagProblem& p) {
  const I* offsets = static_cast<const I*>(p.offsets);
  const T* r = static_cast<const T*>(p.relevance);
  const T* y = static_cast<const T*>(p.output);
  const int64_t d = p.dim;
#pragma omp parallel num_threads(get_num_threads()) if (p.tokens * d >= kParallelGrain)
  {
    std::unique_ptr<T[]> s(new T[d]);
    // Bags one at a time: on a shared machine a thread that is scheduled out leaves its bags to the others.
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < p.bags; ++b) {
      const int64_t lo = int64_t(offsets[b]), hi = b + 1 < p.bags ? int64_t(offsets[b + 1]) : p.tokens;
      bag_relevance<T, I>(p, lo, hi, r + b * d, y ? y + b * d : nullptr, s.get());
    }
  }
}

template <class T>
void embedding_typed(const EmbeddingProblem& p) {
  if (p.id_type == IdType::Int32) embedding<T, int32_t>(p);
  else embedding<T, int64_t>(p);
}

template <class T>
void embedding_bag_typed(const EmbeddingBagProblem& p) {
  if (p.id_type == IdType::Int32) embedding_bag<T, int32_t>(p);
  else embedding_bag<T, int64_t>(p);
}

}  // namespace

void embedding_relevance(const EmbeddingProblem& p) {
  if (p.dtype == DType::Float32) embedding_typed<float>(p);
  else embedding_typed<double>(p);
}

void embedding_bag_relevance(const EmbeddingBagProblem& p) {
  if (p.dtype == DType::Float32) embedding_bag_typed<float>(p);
  else embedding_bag_typed<double>(p);
}

}  // namespace lrptext::cpu
