// Embedding and embedding-bag relevance: token ids to per-token relevance.
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
  });
}

// The bag output y_b = sum_t f_t E[id_t] (f_t = 1, the per-sample weight, or 1 / bag size for mean) is split
// over its tokens in proportion to their contributions (Norm rule): R_t = sum_d f_t E[id_t, d] R_bd / st(y_bd).
template <class T, class I>
void embedding_bag(const EmbeddingBagProblem& p) {
  const I* ids = static_cast<const I*>(p.ids);
  const I* offsets = static_cast<const I*>(p.offsets);
  const T* e = static_cast<const T*>(p.weight);
  const T* psw = static_cast<const T*>(p.per_sample_weights);
  const T* r = static_cast<const T*>(p.relevance);
  T* out = static_cast<T*>(p.out);
  const int64_t d = p.dim, pad = p.padding_idx;
  const T stab = T(p.stabilizer);
#pragma omp parallel num_threads(get_num_threads()) if (p.tokens * d >= kParallelGrain)
  {
    std::unique_ptr<T[]> y(new T[d]);
#pragma omp for schedule(dynamic, 16)
    for (int64_t b = 0; b < p.bags; ++b) {
      const int64_t lo = int64_t(offsets[b]), hi = b + 1 < p.bags ? int64_t(offsets[b + 1]) : p.tokens;
      int64_t count = 0;
      for (int64_t t = lo; t < hi; ++t) count += !(pad >= 0 && int64_t(ids[t]) == pad);
      auto factor = [&](int64_t t) -> T {
        if (pad >= 0 && int64_t(ids[t]) == pad) return T(0);
        if (p.mean) return T(1) / T(count);
        return psw ? psw[t] : T(1);
      };
      // Rows are scattered over the table, which rarely fits in cache: fetch a few tokens ahead.
      auto prefetch_row = [&](int64_t t) {
        if (t >= hi) return;
        const char* row = reinterpret_cast<const char*>(e + int64_t(ids[t]) * d);
        for (int64_t byte = 0; byte < d * int64_t(sizeof(T)); byte += 64) {
          __builtin_prefetch(row + byte);
          asm volatile("");  // GCC deletes a loop of prefetches alone as dead code
        }
      };
      constexpr int64_t kAhead = 4;
      for (int64_t k = 0; k < d; ++k) y[k] = T(0);
      for (int64_t t = lo; t < lo + kAhead; ++t) prefetch_row(t);
      for (int64_t t = lo; t < hi; ++t) {
        prefetch_row(t + kAhead);
        const T f = factor(t);
        const T* row = e + int64_t(ids[t]) * d;
#pragma omp simd
        for (int64_t k = 0; k < d; ++k) y[k] += f * row[k];
      }
      for (int64_t k = 0; k < d; ++k) y[k] = r[b * d + k] / stabilize(y[k], stab);
      for (int64_t t = lo; t < hi; ++t) {
        const T f = factor(t);
        const T* row = e + int64_t(ids[t]) * d;
        T acc = T(0);
        // Reordered into vector lanes: one serial chain of adds per token would take 4 cycles per element.
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < d; ++k) acc += row[k] * y[k];
        out[t] = f * acc;
      }
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
