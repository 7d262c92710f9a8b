// LayerNorm and softmax relevance on the CPU: one row per task (csrc/include/lrptext/row_rules.h).
#include "exec.h"
#include "lrptext/kernels.h"
#include "lrptext/row_rules.h"

namespace lrptext::cpu {

void row_relevance(const RowProblem& p) {
  Exec ex;
  if (p.dtype == DType::Float32) lrptext::row_relevance<float>(ex, p);
  else lrptext::row_relevance<double>(ex, p);
}

}  // namespace lrptext::cpu
