// Input checks on CUDA memory; each returns the first offending index (or -1) to the host.
#include <cmath>

#include "exec.cuh"
#include "lrptext/kernels.h"

namespace lrptext::cuda {
namespace {

// Smallest index i in [0, n) with bad(i), or -1; the search runs on the device, one int64 comes back.
template <class F>
int64_t first_index(const void* any_ptr, int64_t n, void* stream_ptr, F bad) {
  if (n <= 0) return -1;
  DeviceGuard guard(any_ptr);
  Exec ex{static_cast<cudaStream_t>(stream_ptr)};
  auto first = ex.alloc<unsigned long long>(1);
  unsigned long long* fp = first.get();
  const unsigned long long none = static_cast<unsigned long long>(n);
  ex.map(1, [=] __device__(int64_t) { *fp = none; });
  ex.map(n, [=] __device__(int64_t i) {
    if (bad(i)) atomicMin(fp, static_cast<unsigned long long>(i));
  });
  unsigned long long host = none;
  check(cudaMemcpyAsync(&host, fp, sizeof(host), cudaMemcpyDeviceToHost, ex.stream), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(ex.stream), "cudaStreamSynchronize");
  return host == none ? -1 : int64_t(host);
}

template <class I>
int64_t invalid_id(const I* ids, int64_t n, int64_t num_embeddings, void* stream) {
  return first_index(ids, n, stream, [=] __device__(int64_t i) {
    return int64_t(ids[i]) < 0 || int64_t(ids[i]) >= num_embeddings;
  });
}

template <class I>
int64_t invalid_offset(const I* off, int64_t bags, int64_t tokens, void* stream) {
  return first_index(off, bags, stream, [=] __device__(int64_t b) {
    const int64_t o = int64_t(off[b]);
    return (b == 0 && o != 0) || o > tokens || (b > 0 && o < int64_t(off[b - 1]));
  });
}

template <class T>
int64_t nonfinite(const T* x, int64_t n, void* stream) {
  return first_index(x, n, stream, [=] __device__(int64_t i) { return !isfinite(x[i]); });
}

}  // namespace

int64_t first_invalid_id(IdType t, const void* ids, int64_t n, int64_t num_embeddings, void* stream) {
  if (t == IdType::Int32) return invalid_id(static_cast<const int32_t*>(ids), n, num_embeddings, stream);
  return invalid_id(static_cast<const int64_t*>(ids), n, num_embeddings, stream);
}

int64_t first_invalid_offset(IdType t, const void* offsets, int64_t bags, int64_t tokens, void* stream) {
  if (t == IdType::Int32) return invalid_offset(static_cast<const int32_t*>(offsets), bags, tokens, stream);
  return invalid_offset(static_cast<const int64_t*>(offsets), bags, tokens, stream);
}

int64_t first_nonfinite(DType t, const void* data, int64_t n, void* stream) {
  if (t == DType::Float32) return nonfinite(static_cast<const float*>(data), n, stream);
  return nonfinite(static_cast<const double*>(data), n, stream);
}

}  // namespace lrptext::cuda
