#include "exec.h"
#include "lrptext/dense_op.h"
#include "lrptext/kernels.h"
#include "lrptext/linear_rules.h"

namespace lrptext::cpu {
namespace {

template <class T>
void run(const LinearProblem& p, const DenseShape& s) {
  Exec ex;
  DenseOp<T, Exec> op{s};
  LinearRelevance<T, Exec, DenseOp<T, Exec>>(ex, op, p).run();
}

}  // namespace

void dense_relevance(const LinearProblem& p, const DenseShape& s) {
  if (p.dtype == DType::Float32) run<float>(p, s);
  else run<double>(p, s);
}

void prepare_rule_weights(const PrepareProblem& p) {
  Exec ex;
  if (p.dtype == DType::Float32) lrptext::prepare_rule_weights<float>(ex, p);
  else lrptext::prepare_rule_weights<double>(ex, p);
}

}  // namespace lrptext::cpu
