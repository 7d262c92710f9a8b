// The recurrent layers' sweep over time on the CPU (csrc/include/lrptext/recurrent_rules.h).
#include <algorithm>

#include "exec.h"
#include "lrptext/kernels.h"
#include "lrptext/recurrent_rules.h"

namespace lrptext::cpu {

void recurrent_sweep(const RecurrentProblem& p) {
  Exec ex;
  const int64_t max_length = p.batch ? *std::max_element(p.lengths, p.lengths + p.batch) : 0;
  if (p.dtype == DType::Float32) lrptext::recurrent_sweep<float>(ex, p, p.lengths, max_length);
  else lrptext::recurrent_sweep<double>(ex, p, p.lengths, max_length);
}

}  // namespace lrptext::cpu
