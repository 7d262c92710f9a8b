// The backward sweep over time of a recurrent layer, written once for every device (equations:
// lrptext/kernels/recurrent.py; the rules of Arras et al. 2017). Each step is element-wise work over
// [batch, hidden] plus one [batch, hidden] x [hidden, hidden] product; the steps are serial by nature.
#pragma once
#include <cstdint>

#include "problems.h"
#include "stabilizer.h"

namespace lrptext {

// `lengths` is readable where the Exec runs its loops (the host's array, or a device copy).
template <class T, class Exec>
void recurrent_sweep(const Exec& ex, const RecurrentProblem& p, const int64_t* lengths, int64_t max_length) {
  const T* decay = static_cast<const T*>(p.decay);
  const T* fresh = static_cast<const T*>(p.fresh);
  const T* pre = static_cast<const T*>(p.pre);
  const T* hidden = static_cast<const T*>(p.hidden);
  const T* weight = static_cast<const T*>(p.weight);
  const T* relevance = static_cast<const T*>(p.relevance);
  const T* last = static_cast<const T*>(p.last);
  const T* scale = static_cast<const T*>(p.scale);
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  const int64_t B = p.batch, S = p.steps, H = p.units;
  const T eps = T(p.epsilon), beta = T(p.bias_factor);
  const T inputs = T(p.inputs + p.units);  // the map's inputs where h_{t-1} is one of them
  const bool reverse = p.reverse;

  auto state_buf = ex.template alloc<T>(B * S * H);
  auto carry_buf = ex.template alloc<T>(B * H);
  auto scaled_buf = ex.template alloc<T>(B * H);
  auto back_buf = ex.template alloc<T>(B * H);
  auto term_buf = ex.template alloc<T>(bias ? B * H : 0);
  auto sum_buf = ex.template alloc<T>(bias ? B : 0);
  T* state = state_buf.get();
  T* carry = carry_buf.get();
  T* scaled = scaled_buf.get();
  T* back = back_buf.get();
  T* term = term_buf.get();
  T* sums = sum_buf.get();

  // The states s_t = decay_t s_{t-1} + fresh_t from zero, in each sequence's own time order.
  ex.map(B * H, LRPT_LAMBDA(int64_t i) {
    const int64_t b = i / H, j = i % H, n = lengths[b];
    T s = T(0);
    for (int64_t u = 0; u < n; ++u) {
      const int64_t at = (b * S + (reverse ? n - 1 - u : u)) * H + j;
      s = decay[at] * s + fresh[at];
      state[at] = s;
    }
    carry[i] = T(0);
  });
  ex.map(B * S * H, LRPT_LAMBDA(int64_t i) { out[i] = T(0); });

  for (int64_t k = 0; k < max_length; ++k) {
    // The split of the update and q_t, for every sequence at its k-th step from its end.
    ex.map(B * H, LRPT_LAMBDA(int64_t i) {
      const int64_t b = i / H, j = i % H, n = lengths[b];
      if (k >= n) {
        scaled[i] = T(0);
        if (bias) term[i] = T(0);
        return;
      }
      const int64_t t = reverse ? k : n - 1 - k;
      const bool first = k == n - 1;  // the sequence's first time step: no previous state
      const int64_t at = (b * S + t) * H + j;
      const T r = carry[i] + relevance[at] + (k == 0 ? last[i] : T(0));
      const T total = state[at];
      const T shift = stabilize(total, eps) - total;
      const T half = beta * shift / T(2);
      const T share = r / (total + shift);
      const T a = pre[at];
      const T a_shift = stabilize(a, eps) - a;
      const T q = (first ? fresh[at] + T(2) * half : fresh[at] + half) * share / (a + a_shift);
      out[at] = q;
      scaled[i] = scale ? q * scale[at] : q;
      if (bias) term[i] = (bias[at] + a_shift) * q;
      if (first) {
        carry[i] = T(0);
      } else {
        const int64_t prev = (b * S + (reverse ? t + 1 : t - 1)) * H + j;
        carry[i] = (decay[at] * state[prev] + half) * share;
      }
    });
    // R(h_{t-1}) = h_{t-1} (q_t r_t) W_h (+ the bias share): the product every step waits for.
    ex.template gemm<T>(false, false, B, H, H, scaled, H, weight, H, T(0), back, H);
    if (bias) {
      ex.map(B, LRPT_LAMBDA(int64_t b) {
        T s = T(0);
        for (int64_t j = 0; j < H; ++j) s += term[b * H + j];
        sums[b] = beta * s / inputs;
      });
    }
    ex.map(B * H, LRPT_LAMBDA(int64_t i) {
      const int64_t b = i / H, j = i % H, n = lengths[b];
      if (k >= n - 1) return;  // finished, or at its first step
      const int64_t t = reverse ? k : n - 1 - k;
      const int64_t prev = (b * S + (reverse ? t + 1 : t - 1)) * H + j;
      carry[i] += hidden[prev] * back[i] + (bias ? sums[b] : T(0));
    });
  }
}

}  // namespace lrptext
