// LayerNorm and softmax relevance on CUDA: one thread per row (csrc/include/lrptext/row_rules.h).
#include "exec.cuh"
#include "lrptext/kernels.h"
#include "lrptext/row_rules.h"

namespace lrptext::cuda {

void row_relevance(const RowProblem& p) {
  DeviceGuard guard(p.relevance);
  Exec ex{static_cast<cudaStream_t>(p.stream)};
  if (p.dtype == DType::Float32) lrptext::row_relevance<float>(ex, p);
  else lrptext::row_relevance<double>(ex, p);
}

}  // namespace lrptext::cuda
