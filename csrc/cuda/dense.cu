#include "exec.cuh"
#include "lrptext/dense_op.h"
#include "lrptext/kernels.h"
#include "lrptext/linear_rules.h"

namespace lrptext::cuda {
namespace {

template <class T>
void run(const LinearProblem& p, const DenseShape& s) {
  DeviceGuard guard(p.input);
  Exec ex{static_cast<cudaStream_t>(p.stream)};
  DenseOp<T, Exec> op{s};
  LinearRelevance<T, Exec, DenseOp<T, Exec>>(ex, op, p).run();
}

}  // namespace

void dense_relevance(const LinearProblem& p, const DenseShape& s) {
  if (p.dtype == DType::Float32) run<float>(p, s);
  else run<double>(p, s);
}

void prepare_rule_weights(const PrepareProblem& p) {
  DeviceGuard guard(p.weight);
  Exec ex{static_cast<cudaStream_t>(p.stream)};
  if (p.dtype == DType::Float32) lrptext::prepare_rule_weights<float>(ex, p);
  else lrptext::prepare_rule_weights<double>(ex, p);
}

}  // namespace lrptext::cuda
