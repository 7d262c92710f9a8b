// The LRP rules for a linear map (dense or convolution), written once for every device.
//
// A rule is a handful of forward passes F(x', W') and transposed passes G(s, W') of the layer's linear map
// with modified inputs x' and weights W', glued by element-wise steps. `Op` supplies F and G for one layer
// kind (dense: GEMM; conv: im2col + GEMM), `Exec` supplies memory, element-wise maps and GEMMs for one
// device. Equations: docs/conventions.md; Montavon et al. 2019 (Layer-Wise Relevance Propagation: An Overview).
#pragma once
#include <algorithm>
#include <cstdint>

#include "problems.h"
#include "rule_table.h"
#include "stabilizer.h"

namespace lrptext {
enum class BiasMod : int { Plain, Positive, Negative, GammaPositive, GammaNegative, Square };
enum class Factor : int { Input, Positive, Negative, Low, High, One };

template <class T>
LRPT_HD inline T modify_weight(WeightMod m, T w, T gamma) {
  const T pos = w > T(0) ? w : T(0), neg = w < T(0) ? w : T(0);
  switch (m) {
    case WeightMod::Positive: return pos;
    case WeightMod::Negative: return neg;
    case WeightMod::GammaPositive: return w + gamma * pos;
    case WeightMod::GammaNegative: return w + gamma * neg;
    case WeightMod::Square: return w * w;
    default: return T(1);
  }
}

template <class T>
LRPT_HD inline T modify_bias(BiasMod m, T b, T gamma) {
  switch (m) {
    case BiasMod::Plain: return b;
    case BiasMod::Positive: return b > T(0) ? b : T(0);
    case BiasMod::Negative: return b < T(0) ? b : T(0);
    case BiasMod::GammaPositive: return b + gamma * (b > T(0) ? b : T(0));
    case BiasMod::GammaNegative: return b + gamma * (b < T(0) ? b : T(0));
    default: return b * b;
  }
}

template <class T, class Exec>
void prepare_rule_weights(Exec& ex, const PrepareProblem& p) {
  const RuleTraits& rule = rule_traits(p.rule.kind);
  const WeightMod ma = rule.weight_a, mb = rule.weight_b;
  const int n = rule.modified_weights;
  const T* w = static_cast<const T*>(p.weight);
  const T gamma = T(p.rule.gamma);
  T* a = static_cast<T*>(p.out_a);
  T* b = static_cast<T*>(p.out_b);
  if (n >= 1) ex.map(p.size, LRPT_LAMBDA(int64_t i) { a[i] = modify_weight(ma, w[i], gamma); });
  if (n == 2) ex.map(p.size, LRPT_LAMBDA(int64_t i) { b[i] = modify_weight(mb, w[i], gamma); });
}

// One summand of the input relevance: sign * factor(x_i) * c_i, c = G(s, W') a transposed pass.
template <class T>
struct Term {
  Factor factor;
  T sign;
  const T* c;
};

template <class T>
struct Terms {
  Term<T> t[3] = {};
  int n = 0;
  void add(Factor f, T sign, const T* c) { t[n++] = Term<T>{f, sign, c}; }
};

template <class T>
LRPT_HD inline T factor_value(Factor f, T x, T low, T high) {
  switch (f) {
    case Factor::Input: return x;
    case Factor::Positive: return x > T(0) ? x : T(0);
    case Factor::Negative: return x < T(0) ? x : T(0);
    case Factor::Low: return low;
    case Factor::High: return high;
    default: return T(1);
  }
}

template <class T>
LRPT_HD inline T term_sum(const Terms<T>& ts, const T* x, const T* low, const T* high, int64_t i, int64_t ch) {
  const T lo = low ? low[ch] : T(0), hi = high ? high[ch] : T(0);
  T acc = T(0);
  for (int k = 0; k < ts.n; ++k) acc += ts.t[k].sign * factor_value(ts.t[k].factor, x[i], lo, hi) * ts.t[k].c[i];
  return acc;
}

// Terms without bounds, branch-free so that loops over them vectorise: each factor is pos x+ + neg x- + one
// with per-term constants (x = x+ + x- exactly, as one of them is zero). A plain struct: device lambdas copy it.
template <class T, int N>
struct Coefficients {
  T pos[N], neg[N], one[N];
  const T* c[N];

  explicit Coefficients(const Terms<T>& ts) {
    for (int k = 0; k < N; ++k) {
      const Factor f = ts.t[k].factor;
      const T sign = ts.t[k].sign;
      pos[k] = f == Factor::Input || f == Factor::Positive ? sign : T(0);
      neg[k] = f == Factor::Input || f == Factor::Negative ? sign : T(0);
      one[k] = f == Factor::One ? sign : T(0);
      c[k] = ts.t[k].c;
    }
  }

  LRPT_HD T at(T x, int64_t i) const {
    const T xp = x > T(0) ? x : T(0), xn = x < T(0) ? x : T(0);
    T acc = T(0);
    for (int k = 0; k < N; ++k) acc += (pos[k] * xp + neg[k] * xn + one[k]) * c[k][i];
    return acc;
  }
};

// Members are public because nvcc's extended lambdas may not be defined in private member functions.
// relu_input: the input x is a ReLU's pre-activation and every rule reads relu(x) (Factor::Positive in the last
// step, Op::forward(..., positive = true) in products), so the engine need not keep or compute relu(x).
template <class T, class Exec, class Op>
struct LinearRelevance {
  LinearRelevance(Exec& ex, const Op& op, const LinearProblem& p)
      : ex_(ex), op_(op), p_(p),
        x_(static_cast<const T*>(p.input)), w_(static_cast<const T*>(p.weight)),
        bias_(static_cast<const T*>(p.bias)), r_(static_cast<const T*>(p.relevance)),
        B_(op.batch()), I_(op.in_size()), O_(op.out_size()),
        C_(op.in_channels()), P_(op.in_size() / op.in_channels()),
        OC_(op.out_channels()), Q_(op.out_size() / op.out_channels()) {}

  void run() {
    switch (p_.rule.kind) {
      case Rule::Epsilon: return epsilon();
      case Rule::Gamma: return gamma();
      case Rule::AlphaBeta: return alpha_beta();
      case Rule::ZBox: return zbox();
      case Rule::WSquare: return squared(WeightMod::Square, p_.rule.use_bias);
      case Rule::Flat: return squared(WeightMod::One, false);
    }
  }

  using Buffer = typename Exec::template Buffer<T>;

  Buffer alloc(int64_t n) { return ex_.template alloc<T>(n); }

  const T* weight(WeightMod m, const void* given, Buffer& storage) {
    if (given) return static_cast<const T*>(given);
    storage = alloc(op_.weight_size());
    T* out = storage.get();
    const T* w = w_;
    const T gamma = T(p_.rule.gamma);
    ex_.map(op_.weight_size(), LRPT_LAMBDA(int64_t i) { out[i] = modify_weight(m, w[i], gamma); });
    return out;
  }

  // y[b, o, q] += bias_mod(b[o]) over `batch` samples.
  void add_bias(T* y, int64_t batch, BiasMod m) {
    if (!bias_) return;
    const T* bias = bias_;
    const T gamma = T(p_.rule.gamma);
    ex_.map_channels(batch, OC_, Q_, LRPT_LAMBDA(int64_t i, int64_t o) { y[i] += modify_bias(m, bias[o], gamma); });
  }

  bool has_negative_input() {
    if (p_.relu_input) return false;
    const T* x = x_;
    return ex_.any(B_ * I_, LRPT_LAMBDA(int64_t i) { return x[i] < T(0); });
  }

  // x+ and x- as buffers; when x >= 0 everywhere (or x+ is read from x, relu_input), x+ is x and x- is not needed.
  const T* split_input(bool has_neg, Buffer& pos, Buffer& neg) {
    if (!has_neg) return x_;
    pos = alloc(B_ * I_);
    neg = alloc(B_ * I_);
    T* xp = pos.get();
    T* xn = neg.get();
    const T* x = x_;
    ex_.map(B_ * I_, LRPT_LAMBDA(int64_t i) {
      xp[i] = x[i] > T(0) ? x[i] : T(0);
      xn[i] = x[i] < T(0) ? x[i] : T(0);
    });
    return xp;
  }

  // out = sum over terms of sign * factor(x) * c, optionally summed over input channels.
  void finish(const Terms<T>& terms) {
    bool bounds = false;
    for (int k = 0; k < terms.n; ++k)
      bounds = bounds || terms.t[k].factor == Factor::Low || terms.t[k].factor == Factor::High;
    if (bounds) return finish_with_bounds(terms);
    switch (terms.n) {
      case 1: return finish_with(Coefficients<T, 1>(terms));
      case 2: return finish_with(Coefficients<T, 2>(terms));
      default: return finish_with(Coefficients<T, 3>(terms));
    }
  }

  template <int N>
  void finish_with(const Coefficients<T, N>& co) {
    T* out = static_cast<T*>(p_.out);
    const T* x = x_;
    if (p_.reduce_channels) ex_.channel_sum(B_, C_, P_, out, LRPT_LAMBDA(int64_t i, int64_t) { return co.at(x[i], i); });
    else if (p_.accumulate) ex_.map(B_ * I_, LRPT_LAMBDA(int64_t i) { out[i] += co.at(x[i], i); });
    else ex_.map(B_ * I_, LRPT_LAMBDA(int64_t i) { out[i] = co.at(x[i], i); });
  }

  void finish_with_bounds(const Terms<T>& terms) {
    T* out = static_cast<T*>(p_.out);
    const T* x = x_;
    const T* low = static_cast<const T*>(p_.low);
    const T* high = static_cast<const T*>(p_.high);
    const Terms<T> ts = terms;
    const auto at = LRPT_LAMBDA(int64_t i, int64_t ch) { return term_sum(ts, x, low, high, i, ch); };
    if (p_.reduce_channels) ex_.channel_sum(B_, C_, P_, out, at);
    else if (p_.accumulate) ex_.map_channels(B_, C_, P_, LRPT_LAMBDA(int64_t i, int64_t ch) { out[i] += at(i, ch); });
    else ex_.map_channels(B_, C_, P_, LRPT_LAMBDA(int64_t i, int64_t ch) { out[i] = at(i, ch); });
  }

  // Where G writes its first term: the output itself, which finish() then overwrites element by element, unless
  // channels are summed (the output is smaller) or the output is added to. Saves one input-sized buffer per layer.
  T* first_term(Buffer& storage) {
    if (!p_.reduce_channels && !p_.accumulate) return static_cast<T*>(p_.out);
    storage = alloc(B_ * I_);
    return storage.get();
  }

  void zero(T* y, int64_t n) {
    ex_.map(n, LRPT_LAMBDA(int64_t i) { y[i] = T(0); });
  }

  // z from the forward pass when given, else recomputed as F(x, W) + b.
  const T* forward_z(Buffer& storage) {
    if (p_.z) return static_cast<const T*>(p_.z);
    storage = alloc(B_ * O_);
    op_.forward(ex_, x_, B_, w_, storage.get(), T(0), p_.relu_input);
    add_bias(storage.get(), B_, BiasMod::Plain);
    return storage.get();
  }

  // Where R / denominator goes: R's own buffer when the caller handed it over, else a fresh one.
  T* quotient(Buffer& storage) {
    if (p_.relevance_writable) return const_cast<T*>(r_);
    storage = alloc(B_ * O_);
    return storage.get();
  }

  // LRP-0 / epsilon: R_i = x_i sum_j w_ji R_j / st(z_j, eps).
  void epsilon() {
    Buffer zs;
    const T* z = forward_z(zs);
    Buffer s, cs;
    T* sp = quotient(s);
    const T* r = r_;
    const T eps = T(p_.rule.epsilon);
    ex_.map(B_ * O_, LRPT_LAMBDA(int64_t i) { sp[i] = r[i] / stabilize(z[i], eps); });
    T* c = first_term(cs);
    op_.backward(ex_, sp, B_, w_, c, T(0));
    Terms<T> t;
    t.add(p_.relu_input ? Factor::Positive : Factor::Input, T(1), c);  // relu(x) is x's positive part
    finish(t);
  }

  // alpha-beta: R_i = sum_j (alpha a_ij / st(A_j) - beta n_ij / st(N_j)) R_j with
  // a_ij = x+ w+ + x- w-, A_j = sum_i a_ij + b+;  n_ij = x+ w- + x- w+, N_j = sum_i n_ij + b-.
  void alpha_beta() {
    Buffer wps, wns, xps, xns;
    const T* wp = weight(WeightMod::Positive, p_.weight_a, wps);
    const T* wn = weight(WeightMod::Negative, p_.weight_b, wns);
    const bool neg = has_negative_input();
    const T* xp = split_input(neg, xps, xns);
    const T* xn = neg ? xns.get() : nullptr;
    const bool with_beta = p_.rule.beta != 0.0;

    Buffer a = alloc(B_ * O_), n;
    op_.forward(ex_, xp, B_, wp, a.get(), T(0), p_.relu_input);
    if (neg) op_.forward(ex_, xn, B_, wn, a.get(), T(1));
    add_bias(a.get(), B_, BiasMod::Positive);
    if (with_beta) {
      n = alloc(B_ * O_);
      op_.forward(ex_, xp, B_, wn, n.get(), T(0), p_.relu_input);
      if (neg) op_.forward(ex_, xn, B_, wp, n.get(), T(1));
      add_bias(n.get(), B_, BiasMod::Negative);
    }
    // s_a = alpha R / st(A) in place of A; s_n = -beta R / st(N) in place of N.
    T* sa = a.get();
    T* sn = with_beta ? n.get() : nullptr;
    const T* r = r_;
    const T alpha = T(p_.rule.alpha), beta = T(p_.rule.beta), stab = T(p_.rule.stabilizer);
    ex_.map(B_ * O_, LRPT_LAMBDA(int64_t i) {
      sa[i] = alpha * r[i] / stabilize(sa[i], stab);
      if (sn) sn[i] = -beta * r[i] / stabilize(sn[i], stab);
    });

    Buffer cps, cn;
    T* cp = first_term(cps);
    op_.backward(ex_, sa, B_, wp, cp, T(0));
    if (with_beta) op_.backward(ex_, sn, B_, wn, cp, T(1));
    Terms<T> t;
    t.add(neg || p_.relu_input ? Factor::Positive : Factor::Input, T(1), cp);
    if (neg) {
      cn = alloc(B_ * I_);
      op_.backward(ex_, sa, B_, wn, cn.get(), T(0));
      if (with_beta) op_.backward(ex_, sn, B_, wp, cn.get(), T(1));
      t.add(Factor::Negative, T(1), cn.get());
    }
    finish(t);
  }

  // gamma: where z_j > 0, m_ij = (x+ (w + g w+) + x- (w + g w-)) / st(sum + b + g b+); where z_j < 0 the two
  // weights swap and the bias is b + g b-; where z_j = 0, m_ij = 0. Branches whose outputs carry no relevance
  // are skipped (after a ReLU, z <= 0 receives none). The samples go in chunks of about Exec::kChunkOutputs
  // outputs, so that the denominator holds a chunk's outputs, not the batch's (CPU only: a GPU takes the batch at
  // once, as more launches would cost more than the memory is worth; measurements: docs/performance.md).
  void gamma() {
    Buffer zs, was, wbs, xps, xns;
    const T* z = forward_z(zs);
    const T* r = r_;
    const bool need_pos = ex_.any(B_ * O_, LRPT_LAMBDA(int64_t i) { return (z[i] > T(0)) & (r[i] != T(0)); });
    const bool need_neg = ex_.any(B_ * O_, LRPT_LAMBDA(int64_t i) { return (z[i] < T(0)) & (r[i] != T(0)); });
    if (!need_pos && !need_neg) {  // no relevance to pass: nothing to add, or zeros
      if (!p_.accumulate) zero(static_cast<T*>(p_.out), p_.reduce_channels ? B_ * P_ : B_ * I_);
      return;
    }
    const T* wa = weight(WeightMod::GammaPositive, p_.weight_a, was);
    const T* wb = weight(WeightMod::GammaNegative, p_.weight_b, wbs);
    const bool neg = has_negative_input();
    const T* xp = split_input(neg, xps, xns);
    const T* xn = neg ? xns.get() : nullptr;

    Buffer cps, cn = neg ? alloc(B_ * I_) : Buffer();
    T* cp = first_term(cps);
    // With one branch, the quotient may go into R's buffer when handed over, and the denominator is freed first.
    const bool in_place = p_.relevance_writable && !(need_pos && need_neg);
    const int64_t chunk = O_ >= Exec::kChunkOutputs ? 1 : Exec::kChunkOutputs / std::max<int64_t>(O_, 1);
    for (int64_t b0 = 0; b0 < B_; b0 += chunk) {
      const Samples at{b0, std::min(chunk, B_ - b0)};
      if (need_pos) gamma_branch(at, z, xp, xn, wa, wb, BiasMod::GammaPositive, true, cp, cn.get(), true, in_place);
      if (need_neg)
        gamma_branch(at, z, xp, xn, wb, wa, BiasMod::GammaNegative, false, cp, cn.get(), !need_pos, in_place);
    }

    Terms<T> t;
    t.add(neg || p_.relu_input ? Factor::Positive : Factor::Input, T(1), cp);
    if (neg) t.add(Factor::Negative, T(1), cn.get());
    finish(t);
  }

  struct Samples {
    int64_t first, count;
  };

  // One gamma branch over some samples: denominator with (w_pos_in, w_neg_in) applied to (x+, x-), masked by the
  // sign of z; its transposed passes written into (first branch) or added to cp and cn.
  void gamma_branch(Samples at, const T* z, const T* xp, const T* xn, const T* w_pos_in, const T* w_neg_in,
                    BiasMod bm, bool positive, T* cp, T* cn, bool first, bool in_place) {
    const int64_t n = at.count, in = at.first * I_, out = at.first * O_;
    Buffer denominator = alloc(n * O_);
    T* d = denominator.get();
    op_.forward(ex_, xp + in, n, w_pos_in, d, T(0), p_.relu_input);
    if (xn) op_.forward(ex_, xn + in, n, w_neg_in, d, T(1));
    add_bias(d, n, bm);
    const T* r = r_ + out;
    const T* zc = z + out;
    T* s = in_place ? const_cast<T*>(r) : d;
    const T stab = T(p_.rule.stabilizer), sign = positive ? T(1) : T(-1);
    ex_.map(n * O_, LRPT_LAMBDA(int64_t i) {  // a select, not a branch on z's sign: the loop vectorises
      const T q = r[i] / stabilize(d[i], stab);
      s[i] = sign * zc[i] > T(0) ? q : T(0);
    });
    if (in_place) denominator = Buffer();
    const T acc = first ? T(0) : T(1);
    op_.backward(ex_, s, n, w_pos_in, cp + in, acc);
    if (xn) op_.backward(ex_, s, n, w_neg_in, cn + in, acc);
  }

  // z^B: c_ij = x_i w_ji - l_i w+_ji - h_i w-_ji, R_i = sum_j c_ij / st(sum_k c_kj) R_j (no bias).
  void zbox() {
    Buffer wps, wns;
    const T* wp = weight(WeightMod::Positive, p_.weight_a, wps);
    const T* wn = weight(WeightMod::Negative, p_.weight_b, wns);
    const T* low = static_cast<const T*>(p_.low);
    const T* high = static_cast<const T*>(p_.high);
    // The bounds as one input sample; F of a constant sample is computed once for the whole batch.
    Buffer lo = alloc(I_), hi = alloc(I_), bounds = alloc(O_);
    T* lp = lo.get();
    T* hp = hi.get();
    ex_.map_channels(1, C_, P_, LRPT_LAMBDA(int64_t i, int64_t ch) {
      lp[i] = low[ch];
      hp[i] = high[ch];
    });
    op_.forward(ex_, lp, 1, wp, bounds.get(), T(0));
    op_.forward(ex_, hp, 1, wn, bounds.get(), T(1));

    Buffer s = alloc(B_ * O_);
    T* sp = s.get();
    op_.forward(ex_, x_, B_, w_, sp, T(0));
    const T* bp = bounds.get();
    const T* r = r_;
    const T stab = T(p_.rule.stabilizer);
    ex_.map_samples(B_, O_, LRPT_LAMBDA(int64_t i, int64_t j) { sp[i] = r[i] / stabilize(sp[i] - bp[j], stab); });

    Buffer cs, cl = alloc(B_ * I_), ch = alloc(B_ * I_);
    T* c = first_term(cs);
    op_.backward(ex_, sp, B_, w_, c, T(0));
    op_.backward(ex_, sp, B_, wp, cl.get(), T(0));
    op_.backward(ex_, sp, B_, wn, ch.get(), T(0));
    Terms<T> t;
    t.add(Factor::Input, T(1), c);
    t.add(Factor::Low, T(-1), cl.get());
    t.add(Factor::High, T(-1), ch.get());
    finish(t);
  }

  // w^2 (and flat, with w = 1 and no bias): R_i = sum_j w_ji^2 / st(sum_k w_jk^2 + b_j^2) R_j. The denominator
  // is F(1, w^2) over the input's support, so zero padding of a convolution is not counted.
  void squared(WeightMod m, bool with_bias) {
    Buffer ws;
    const T* w2 = weight(m, p_.weight_a, ws);
    Buffer ones = alloc(I_), d = alloc(O_);
    T* onep = ones.get();
    ex_.map(I_, LRPT_LAMBDA(int64_t i) { onep[i] = T(1); });
    op_.forward(ex_, onep, 1, w2, d.get(), T(0));
    if (with_bias) add_bias(d.get(), 1, BiasMod::Square);

    Buffer s, cs;
    T* sp = quotient(s);
    const T* dp = d.get();
    const T* r = r_;
    const T stab = T(p_.rule.stabilizer);
    ex_.map_samples(B_, O_, LRPT_LAMBDA(int64_t i, int64_t j) { sp[i] = r[i] / stabilize(dp[j], stab); });
    T* c = first_term(cs);
    op_.backward(ex_, sp, B_, w2, c, T(0));
    Terms<T> t;
    t.add(Factor::One, T(1), c);
    finish(t);
  }

  Exec& ex_;
  const Op& op_;
  const LinearProblem& p_;
  const T* x_;
  const T* w_;
  const T* bias_;
  const T* r_;
  const int64_t B_, I_, O_, C_, P_, OC_, Q_;
};

}  // namespace lrptext
