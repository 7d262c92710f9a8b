// The recurrent layers' sweep over time on CUDA (csrc/include/lrptext/recurrent_rules.h): per step a few
// element-wise launches and one cuBLAS product, the steps one after another on the stream.
#include <algorithm>

#include "exec.cuh"
#include "lrptext/kernels.h"
#include "lrptext/recurrent_rules.h"

namespace lrptext::cuda {

void recurrent_sweep(const RecurrentProblem& p) {
  DeviceGuard guard(p.relevance);
  Exec ex{static_cast<cudaStream_t>(p.stream)};
  const int64_t max_length = p.batch ? *std::max_element(p.lengths, p.lengths + p.batch) : 0;
  auto lengths = ex.alloc<int64_t>(p.batch);
  check(cudaMemcpyAsync(lengths.get(), p.lengths, size_t(p.batch) * sizeof(int64_t), cudaMemcpyHostToDevice,
                        ex.stream), "cudaMemcpyAsync");
  if (p.dtype == DType::Float32) lrptext::recurrent_sweep<float>(ex, p, lengths.get(), max_length);
  else lrptext::recurrent_sweep<double>(ex, p, lengths.get(), max_length);
}

}  // namespace lrptext::cuda
