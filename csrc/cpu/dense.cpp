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

template <class T>
void forward(const DenseForwardProblem& p) {
  Exec ex;
  T* y = static_cast<T*>(p.out);
  DenseOp<T, Exec>{p.shape}.forward(ex, static_cast<const T*>(p.input), p.shape.rows,
                                     static_cast<const T*>(p.weight), y, T(0));
  if (!p.bias) return;
  const T* b = static_cast<const T*>(p.bias);
  ex.map_samples(p.shape.rows, p.shape.out, [=](int64_t i, int64_t j) { y[i] += b[j]; });
}

}  // namespace

void dense_relevance(const LinearProblem& p, const DenseShape& s) {
  if (p.dtype == DType::Float32) run<float>(p, s);
  else run<double>(p, s);
}

void dense_forward(const DenseForwardProblem& p) {
  if (p.dtype == DType::Float32) forward<float>(p);
  else forward<double>(p);
}

void prepare_rule_weights(const PrepareProblem& p) {
  Exec ex;
  if (p.dtype == DType::Float32) lrptext::prepare_rule_weights<float>(ex, p);
  else lrptext::prepare_rule_weights<double>(ex, p);
}

}  // namespace lrptext::cpu
