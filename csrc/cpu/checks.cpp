// Input checks the bindings run before a kernel: token ids in range, offsets well formed, values finite.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "exec.h"
#include "lrptext/kernels.h"

namespace lrptext::cpu {
namespace {

template <class I>
int64_t first_invalid_id_of(const I* ids, int64_t n, int64_t num_embeddings) {
  int64_t first = n;
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) reduction(min : first) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; ++i)
    if (int64_t(ids[i]) < 0 || int64_t(ids[i]) >= num_embeddings) first = std::min(first, i);
  return first == n ? -1 : first;
}

template <class I>
int64_t first_invalid_offset_of(const I* offsets, int64_t bags, int64_t tokens) {
  for (int64_t b = 0; b < bags; ++b) {
    const int64_t o = int64_t(offsets[b]);
    if ((b == 0 && o != 0) || o > tokens || (b > 0 && o < int64_t(offsets[b - 1]))) return b;
  }
  return -1;
}

template <class T>
int64_t first_nonfinite_of(const T* x, int64_t n) {
  int64_t first = n;
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) reduction(min : first) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) first = std::min(first, i);
  return first == n ? -1 : first;
}

}  // namespace

int64_t first_invalid_id(IdType t, const void* ids, int64_t n, int64_t num_embeddings) {
  if (t == IdType::Int32) return first_invalid_id_of(static_cast<const int32_t*>(ids), n, num_embeddings);
  return first_invalid_id_of(static_cast<const int64_t*>(ids), n, num_embeddings);
}

int64_t first_invalid_offset(IdType t, const void* offsets, int64_t bags, int64_t tokens) {
  if (t == IdType::Int32) return first_invalid_offset_of(static_cast<const int32_t*>(offsets), bags, tokens);
  return first_invalid_offset_of(static_cast<const int64_t*>(offsets), bags, tokens);
}

int64_t first_nonfinite(DType t, const void* data, int64_t n) {
  if (t == DType::Float32) return first_nonfinite_of(static_cast<const float*>(data), n);
  return first_nonfinite_of(static_cast<const double*>(data), n);
}

}  // namespace lrptext::cpu
