// Convolution relevance (1-d is 2-d with a height of one), in tiles of positions so that the column matrix of a
// tile stays in cache: F gathers a tile of input columns (im2col) and multiplies; G of a stride-1 convolution is
// the convolution of the relevance with the transposed kernel, the same gather over the relevance with the
// weight rearranged; G of a strided convolution, of one that widens the channels four times or more (whose
// input-side columns are the fewer), or of one whose samples have fewer positions than its transposed columns
// have rows (deep in an image network) multiplies into columns and scatters them back (col2im), which was faster
// there (measurements: docs/performance.md). Samples much smaller than a tile (8x8 images) share tiles in F and in
// the scattered G. A 3x3 convolution of stride 1 with enough channels and positions takes Winograd's way instead
// (winograd.h).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <utility>
#include <vector>

#include "exec.h"
#include "lrptext/kernels.h"
#include "lrptext/linear_rules.h"
#include "winograd.h"

namespace lrptext::cpu {
namespace {

// Floats in one tile's column matrix: large enough for an efficient GEMM, small enough to stay in cache.
constexpr int64_t kTileBudget = int64_t(1) << 18;
// The fewest positions in a tile (where the budget allows fewer), as every GEMM first copies (packs) the whole
// weight, and small tiles pay for that copy again and again (measurements: docs/performance.md).
constexpr int64_t kMinTile = 256;
// A weight of more floats than this no longer fits in cache, so each pack reads it from memory: four times the
// positions per tile (measurements: docs/performance.md).
constexpr int64_t kLargeWeight = int64_t(1) << 20;

// WinogradMode::Auto takes Winograd's way (winograd.h) for 3x3 convolutions of stride 1 with at least this many
// channels on either side and 2x2 output tiles in a pass. With fewer, its transforms cost more than its GEMMs save
// (measurements: docs/performance.md).
constexpr int64_t kWinogradChannels = 64;
constexpr int64_t kWinogradTiles = 128;
// Nor where the transformed weight (16 floats per channel pair) outgrows the pass's input more than this many
// times: deep layers of small batches, where it adds more memory than its time saving is worth (measurements:
// docs/performance.md).
constexpr int64_t kWinogradWeightToInput = 3;

std::atomic<WinogradMode> g_winograd{WinogradMode::Auto};

bool winograd_shape(const ConvShape& s) {
  return s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 && s.groups == 1;
}

// Whether a pass of a convolution of Winograd's shape goes its way: `tiles` 2x2 output tiles from `input` floats.
bool winograd_pass(const ConvShape& s, WinogradMode mode, int64_t tiles, int64_t input) {
  if (mode == WinogradMode::Auto)
    return std::min(s.cin, s.cout) >= kWinogradChannels && tiles >= kWinogradTiles &&
           16 * s.cin * s.cout <= kWinogradWeightToInput * input;
  return mode == WinogradMode::Always;
}

// Which source element each tap of a destination position reads: a destination grid of `rows` x `cols`
// positions, tap (ki, kj) of position (r, c) reads source row r * step_h + ki * tap_h + off_h and column
// c * step_w + kj * tap_w + off_w of every source channel (zero outside the source).
struct Taps {
  int64_t channels, src_h, src_w, rows, cols, kh, kw, step_h, step_w, tap_h, tap_w, off_h, off_w;

  int64_t count() const { return channels * kh * kw; }
  // Unit steps and a source as wide as the destination (a "same" convolution): see FlatTap.
  bool same_grid() const { return step_h == 1 && step_w == 1 && src_w == cols; }

  // Destination columns [lo, hi) whose tap kj reads inside the source row.
  void valid_columns(int64_t kj, int64_t* lo, int64_t* hi) const {
    const int64_t shift = kj * tap_w + off_w;
    *lo = shift >= 0 ? 0 : (-shift + step_w - 1) / step_w;
    *hi = src_w - shift <= 0 ? 0 : std::min(cols, (src_w - shift + step_w - 1) / step_w);
    if (*hi < *lo) *hi = *lo;
  }

  // Calls segment(tap row t, source row, shift, columns [a, b) clipped to the valid ones, offset of column a
  // in the tile) for the positions [p0, p1) of tap row t, where column c reads source row[c * step_w + shift];
  // `blank(t, from, to)` is called for the tile's columns that read outside the source.
  template <class T, class Seg, class Blank>
  void walk(T* src, int64_t t, int64_t p0, int64_t p1, Seg segment, Blank blank) const {
    const int64_t ch = t / (kh * kw), ki = (t / kw) % kh, kj = t % kw;
    int64_t lo, hi;
    valid_columns(kj, &lo, &hi);
    T* plane = src + ch * src_h * src_w;
    const int64_t shift = kj * tap_w + off_w;
    for (int64_t r = p0 / cols; r * cols < p1; ++r) {
      const int64_t a = std::max(p0 - r * cols, int64_t(0)), b = std::min(p1 - r * cols, cols);
      const int64_t at = r * cols + a - p0;  // where column a sits in the tile
      const int64_t sr = r * step_h + ki * tap_h + off_h;
      const int64_t va = std::max(a, lo), vb = std::min(b, hi);
      if (sr < 0 || sr >= src_h || vb <= va) {
        blank(t, at, at + b - a);
        continue;
      }
      blank(t, at, at + va - a);
      segment(t, plane + sr * src_w, shift, va, vb, at + va - a);
      blank(t, at + vb - a, at + b - a);
    }
  }

  // col[t][p - p0] = the source element tap t of position p reads, for the positions [p0, p1); the rows of col
  // are ld apart (ld >= p1 - p0: several samples' columns side by side). positive: its positive part (relu).
  template <class T>
  void gather(const T* src, T* col, int64_t ld, int64_t p0, int64_t p1, bool parallel, bool positive = false) const {
    const int64_t len = p1 - p0, step = step_w;
    const bool flat = same_grid();
    const auto blank = [&](int64_t t, int64_t from, int64_t to) {
      std::fill(col + t * ld + from, col + t * ld + to, T(0));
    };
    const auto copy = [&](int64_t t, const T* row, int64_t shift, int64_t a, int64_t b, int64_t at) {
      T* dst = col + t * ld + at;
      if (positive)
        for (int64_t c = a; c < b; ++c) dst[c - a] = std::max(row[c * step + shift], T(0));
      else if (step == 1) std::copy(row + a + shift, row + b + shift, dst);
      else
        for (int64_t c = a; c < b; ++c) dst[c - a] = row[c * step + shift];
    };
    const bool split = parallel && count() * len >= kParallelGrain;
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (split)
    for (int64_t t = 0; t < count(); ++t) {
      if (flat) gather_flat(src, col + t * ld, t, p0, p1, positive);
      else walk(src, t, p0, p1, copy, blank);
    }
  }

  // One tap row on a "same" grid (unit steps, a source as wide as the destination): every position p in
  // [first, last) reads element p + shift of the source plane, except those whose column wrapped around a row
  // edge (outside [lo, hi)), which read nothing; so a tile's tap row is one copy (or one add) and a fix-up of
  // the wrapped columns. Row by row was slow on small images. last <= first when the tap reads nothing.
  struct FlatTap {
    int64_t plane, shift, first, last, lo, hi;
  };

  FlatTap flat_tap(int64_t t, int64_t p0, int64_t p1) const {
    const int64_t ch = t / (kh * kw), ki = (t / kw) % kh, kj = t % kw;
    const int64_t dr = ki * tap_h + off_h, dc = kj * tap_w + off_w;
    FlatTap f{ch * src_h * src_w, dr * cols + dc, 0, 0, 0, 0};
    valid_columns(kj, &f.lo, &f.hi);
    const int64_t row_lo = std::max(int64_t(0), -dr), row_hi = std::min(rows, src_h - dr);
    if (row_hi <= row_lo || f.hi <= f.lo) return f;
    f.first = std::max(p0, row_lo * cols + f.lo);
    f.last = std::min(p1, (row_hi - 1) * cols + f.hi);
    return f;
  }

  // Zeroes the tile entries (position p at tile[p - p0]) of the wrapped columns in [first, last).
  template <class T>
  void zero_wrapped(const FlatTap& f, T* tile, int64_t p0) const {
    if (f.lo == 0 && f.hi == cols) return;
    for (int64_t r = f.first / cols; r * cols < f.last; ++r) {
      const int64_t row = r * cols;
      for (int64_t c = std::max(row, f.first); c < std::min(row + f.lo, f.last); ++c) tile[c - p0] = T(0);
      for (int64_t c = std::max(row + f.hi, f.first); c < std::min(row + cols, f.last); ++c) tile[c - p0] = T(0);
    }
  }

  // gather() of one tap row on a "same" grid.
  template <class T>
  void gather_flat(const T* src, T* out, int64_t t, int64_t p0, int64_t p1, bool positive) const {
    const FlatTap f = flat_tap(t, p0, p1);
    if (f.last <= f.first) {
      std::fill(out, out + (p1 - p0), T(0));
      return;
    }
    const T* from = src + f.plane + f.first + f.shift;
    std::fill(out, out + (f.first - p0), T(0));
    if (positive)
      for (int64_t i = 0; i < f.last - f.first; ++i) out[f.first - p0 + i] = std::max(from[i], T(0));
    else std::copy(from, from + (f.last - f.first), out + (f.first - p0));
    std::fill(out + (f.last - p0), out + (p1 - p0), T(0));
    zero_wrapped(f, out, p0);
  }

  // scatter_add() of one tap row on a "same" grid: the wrapped columns are zeroed in the tile (scratch), so
  // that the one add over [first, last) adds nothing where they land.
  template <class T>
  void scatter_add_flat(T* col, T* src, int64_t t, int64_t p0, int64_t p1) const {
    const FlatTap f = flat_tap(t, p0, p1);
    if (f.last <= f.first) return;
    zero_wrapped(f, col, p0);
    const T* from = col + (f.first - p0);
    T* to = src + f.plane + f.first + f.shift;
    for (int64_t i = 0; i < f.last - f.first; ++i) to[i] += from[i];
  }

  // The adjoint of gather: src[...] += col[t][p - p0] for every tap t of the positions [p0, p1); col is
  // scratch and may be changed. Parallel over source channels, so that no two threads add into one element.
  template <class T>
  void scatter_add(T* col, int64_t ld, T* src, int64_t p0, int64_t p1, bool parallel) const {
    const int64_t len = p1 - p0, step = step_w, per_channel = kh * kw;
    const bool flat = same_grid();
    const auto none = [](int64_t, int64_t, int64_t) {};
    const auto add = [&](int64_t t, T* row, int64_t shift, int64_t a, int64_t b, int64_t at) {
      const T* from = col + t * ld + at;
      T* to = row + a * step + shift;
      if (step == 1)
        for (int64_t c = 0; c < b - a; ++c) to[c] += from[c];
      else
        for (int64_t c = 0; c < b - a; ++c) to[c * step] += from[c];
    };
    const bool split = parallel && count() * len >= kParallelGrain;
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (split)
    for (int64_t ch = 0; ch < channels; ++ch)
      for (int64_t t = ch * per_channel; t < (ch + 1) * per_channel; ++t) {
        if (flat) scatter_add_flat(col + t * ld, src, t, p0, p1);
        else walk(src, t, p0, p1, add, none);
      }
  }
};

template <class T>
struct ConvOp {
  ConvShape s;
  int64_t cin_g, cout_g, K, HW, in_sz, out_sz;
  bool direct;  // 1x1 kernel, stride 1, no padding: the input already is its column matrix
  bool unit_stride;
  // A 1-d convolution of stride 1 (one row, any padding and dilation): tap k of output position p reads input
  // position p - pw + k dw, so F and G are one GEMM per tap over shifted views, with no column matrix (which a
  // text CNN's long documents would fill per thread; measurements: docs/performance.md).
  bool shifted;
  Taps forward_taps;   // F: output positions read the input
  Taps backward_taps;  // G of a stride-1 convolution: input positions read the output
  // Winograd's shape (3x3, stride 1, no dilation, one group) and allowed for the rule (see winograd_rule); the
  // WinogradMode read once, so that a change during the call does not mix the two ways.
  bool winograd;
  WinogradMode winograd_mode;
  Winograd<T> winograd_forward, winograd_backward;

  explicit ConvOp(const ConvShape& c, bool winograd_allowed = true)
      : s(c), cin_g(c.cin / c.groups), cout_g(c.cout / c.groups), K(cin_g * c.kh * c.kw), HW(c.ho * c.wo),
        in_sz(c.cin * c.h * c.w), out_sz(c.cout * c.ho * c.wo),
        direct(c.kh == 1 && c.kw == 1 && c.sh == 1 && c.sw == 1 && c.ph == 0 && c.pw == 0),
        unit_stride(c.sh == 1 && c.sw == 1),
        shifted(c.h == 1 && c.kh == 1 && c.ho == 1 && c.sw == 1 && c.groups == 1 && !direct),
        forward_taps{cin_g, c.h, c.w, c.ho, c.wo, c.kh, c.kw, c.sh, c.sw, c.dh, c.dw, -c.ph, -c.pw},
        // oh = ih + ph - ki dh: the transposed convolution of a stride-1 convolution reads backwards
        backward_taps{cout_g, c.ho, c.wo, c.h, c.w, c.kh, c.kw, 1, 1, -c.dh, -c.dw, c.ph, c.pw},
        winograd(winograd_allowed && winograd_shape(c)), winograd_mode(g_winograd.load()),
        winograd_forward{c.cin, c.cout, c.h, c.w, c.ho, c.wo, c.ph, c.pw, false},
        // the flipped kernel reads output oh + ki - (2 - ph) for input oh
        winograd_backward{c.cout, c.cin, c.ho, c.wo, c.h, c.w, 2 - c.ph, 2 - c.pw, true} {}

  bool use_winograd(const Winograd<T>& pass, int64_t n) const {
    return winograd && winograd_pass(s, winograd_mode, pass.tiles(n), n * pass.src_ch * pass.src_h * pass.src_w);
  }

  int64_t batch() const { return s.batch; }
  int64_t in_size() const { return in_sz; }
  int64_t out_size() const { return out_sz; }
  int64_t in_channels() const { return s.cin; }
  int64_t out_channels() const { return s.cout; }
  int64_t weight_size() const { return s.cout * K; }
  // Whether n samples are worth splitting over the threads: a few images of a small network (the digits CNN at
  // batch 1, 1.2M multiply-adds) take less time on one thread than waking the pool does.
  bool worth_threads(int64_t n) const { return get_num_threads() > 1 && n * s.cout * HW * K >= kParallelFlops; }
  int64_t min_tile() const { return cout_g * K > kLargeWeight ? 4 * kMinTile : kMinTile; }  // one group's weight
  // Positions per tile whose column matrix has `rows` rows, before splitting evenly over threads.
  int64_t tile_positions(int64_t rows) const { return std::max(min_tile(), kTileBudget / std::max<int64_t>(rows, 1)); }

  // Samples whose columns go side by side into one tile of a column matrix with `rows` rows, when a sample has
  // far fewer positions than a tile holds (small images): one GEMM of many positions, not one per sample, each
  // packing the whole weight again (measurements: docs/performance.md). The
  // blocks split evenly over the threads, at least one each. 1 (a tile per sample) for grouped convolutions.
  int64_t samples_per_tile(int64_t n, int64_t rows, int64_t positions) const {
    const int64_t fit = tile_positions(rows) / std::max<int64_t>(positions, 1);
    if (s.groups != 1 || direct || fit < 2) return 1;
    const int64_t threads = get_num_threads();
    const int64_t blocks = ceil_div(std::max(ceil_div(n, fit), std::min(n, threads)), threads) * threads;
    return ceil_div(n, blocks);
  }

  // Runs block(b0, b1, col, parallel_inside) over the samples in blocks of nb, across the threads or one after
  // another with the parallelism inside.
  template <class F>
  void for_blocks(const Exec& ex, int64_t n, int64_t nb, int64_t col_size, F block) const {
    const int64_t blocks = ceil_div(n, nb);
    const bool across = worth_threads(n) && blocks >= get_num_threads();
    ex.run_items<T>(blocks, across, col_size, [&](int64_t i, T* col, bool parallel) {
      block(i * nb, std::min(n, (i + 1) * nb), col, parallel);
    });
  }

  // Samples b0..b1 of a [batch, channels, HW] tensor side by side in `to`: [channels, (b1 - b0) * HW], rows ld apart.
  static void to_side_by_side(const T* from, int64_t channels, int64_t hw, int64_t b0, int64_t b1, T* to, int64_t ld) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t ch = 0; ch < channels; ++ch) {
        const T* src = from + (b * channels + ch) * hw;
        std::copy(src, src + hw, to + ch * ld + (b - b0) * hw);
      }
  }

  // The inverse of to_side_by_side, into beta * to + from (beta = 0 never reads `to`).
  static void from_side_by_side(const T* from, int64_t ld, int64_t channels, int64_t hw, int64_t b0, int64_t b1,
                                T* to, T beta) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t ch = 0; ch < channels; ++ch) {
        const T* src = from + ch * ld + (b - b0) * hw;
        T* dst = to + (b * channels + ch) * hw;
        if (beta == T(0)) std::copy(src, src + hw, dst);
        else
          for (int64_t i = 0; i < hw; ++i) dst[i] = beta * dst[i] + src[i];
      }
  }

  // a = beta * a, where beta = 0 never reads a (it may hold anything).
  static void scale(T* a, int64_t size, T beta) {
    if (beta == T(0)) std::fill(a, a + size, T(0));
    else if (beta != T(1))
      for (int64_t i = 0; i < size; ++i) a[i] *= beta;
  }

  // Runs tile(b, g, p0, p1, col, parallel_inside) over every sample, group and tile of `positions` positions
  // whose column matrix has `rows` rows (gathered into `col` unless in_place). The tiles run in parallel when
  // they split evenly over the threads, else one after another with the parallelism inside the gather and the
  // GEMM (which then splits the weight's rows: a few positions against a large weight, as deep in an image
  // network at batch 1).
  template <class F>
  void for_tiles(const Exec& ex, int64_t n, int64_t positions, int64_t rows, bool in_place, F tile) const {
    const int64_t threads = get_num_threads(), units = n * s.groups;
    int64_t tiles = ceil_div(positions, tile_positions(rows));
    int64_t even = tiles;  // the fewest tiles that give every thread the same number
    while (units * even % threads) ++even;
    if (ceil_div(positions, even) >= min_tile() / 2) tiles = even;
    const int64_t len = ceil_div(positions, tiles);
    tiles = ceil_div(positions, len);
    const int64_t items = units * tiles;
    const bool across = worth_threads(n) && (items % threads == 0 || items >= 4 * threads);
    ex.run_items<T>(items, across, in_place ? 0 : rows * len, [&](int64_t item, T* col, bool parallel) {
      const int64_t t = item % tiles, g = (item / tiles) % s.groups, b = item / (tiles * s.groups);
      tile(b, g, t * len, std::min(positions, (t + 1) * len), col, parallel);
    });
  }

  // positive: of x's positive part (relu(x)), taken as the columns are gathered.
  void forward(const Exec& ex, const T* x, int64_t n, const T* w, T* y, T beta, bool positive = false) const {
    if (shifted && !positive) return shifted_forward(ex, x, n, w, y, beta);
    if (use_winograd(winograd_forward, n))
      return winograd_forward.run(ex, x, n, transformed(ex, w), y, beta, positive);
    if (const int64_t nb = samples_per_tile(n, K, HW); nb > 1) {
      const int64_t width = nb * HW;  // the block's columns, then its output before it goes to each sample
      return for_blocks(ex, n, nb, (K + s.cout) * width, [&](int64_t b0, int64_t b1, T* col, bool parallel) {
        T* out = col + K * width;
        for (int64_t b = b0; b < b1; ++b)
          forward_taps.gather(x + b * in_sz, col + (b - b0) * HW, width, 0, HW, parallel, positive);
        ex.gemm<T>(false, false, s.cout, (b1 - b0) * HW, K, w, K, col, width, T(0), out, width);
        from_side_by_side(out, width, s.cout, HW, b0, b1, y, beta);
      });
    }
    const bool in_place = direct && !positive;  // the input itself is the column matrix
    for_tiles(ex, n, HW, K, in_place, [&](int64_t b, int64_t g, int64_t p0, int64_t p1, T* col, bool parallel) {
      const T* xg = x + b * in_sz + g * cin_g * s.h * s.w;
      T* yg = y + b * out_sz + g * cout_g * HW + p0;
      const T* w_g = w + g * cout_g * K;
      if (in_place) return ex.gemm<T>(false, false, cout_g, p1 - p0, K, w_g, K, xg + p0, HW, beta, yg, HW);
      forward_taps.gather(xg, col, p1 - p0, p0, p1, parallel, positive);
      ex.gemm<T>(false, false, cout_g, p1 - p0, K, w_g, K, col, p1 - p0, beta, yg, HW);
    });
  }

  void backward(const Exec& ex, const T* r, int64_t n, const T* w, T* c, T beta) const {
    const int64_t P = s.h * s.w;
    if (shifted) {
      shifted_backward(ex, r, n, w, c, beta);
    } else if (use_winograd(winograd_backward, n)) {
      winograd_backward.run(ex, r, n, transformed(ex, w), c, beta, false);
    } else if (direct) {
      for_tiles(ex, n, P, 0, true, [&](int64_t b, int64_t g, int64_t p0, int64_t p1, T*, bool) {
        ex.gemm<T>(true, false, K, p1 - p0, cout_g, w + g * cout_g * K, K, r + b * out_sz + g * cout_g * HW + p0,
                   HW, beta, c + b * in_sz + g * cin_g * P + p0, P);
      });
    } else if (unit_stride && cout_g < 4 * cin_g && P >= cout_g * s.kh * s.kw) {
      transposed_backward(ex, r, n, w, c, beta);
    } else {
      scattered_backward(ex, r, n, w, c, beta);
    }
  }

  // Winograd's transform of a weight, made once per op: a rule's F and G passes (and gamma's chunks of samples)
  // read the same few weights, which all outlive the op.
  mutable std::vector<std::pair<const T*, Exec::Buffer<T>>> transformed_;
  const T* transformed(const Exec& ex, const T* w) const {
    for (const auto& [from, u] : transformed_)
      if (from == w) return u.get();
    transformed_.emplace_back(w, Winograd<T>::transform_weight(ex, w, s.cout, s.cin));
    return transformed_.back().second.get();
  }

  // The weight tap-major, [kw][cout][cin]: each tap's [cout, cin] matrix contiguous for its GEMM.
  Exec::Buffer<T> taps_first(const Exec& ex, const T* w) const {
    auto wk = ex.alloc<T>(weight_size());
    T* out = wk.get();
    const int64_t kw = s.kw, rows = s.cout * s.cin;
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t k = 0; k < kw; ++k) out[k * rows + row] = w[row * kw + k];
    return wk;
  }

  // The positions [lo, hi) of a row of `length` whose tap reads inside a row of `source`: position p reads
  // p + shift.
  static void tap_range(int64_t length, int64_t source, int64_t shift, int64_t* lo, int64_t* hi) {
    *lo = std::max<int64_t>(0, -shift);
    *hi = std::max(*lo, std::min(length, source - shift));
  }

  // y[:, p] = beta y[:, p] + sum over taps k of W_k x[:, p - pw + k dw], for tiles of output positions.
  void shifted_forward(const Exec& ex, const T* x, int64_t n, const T* w, T* y, T beta) const {
    const auto wk = taps_first(ex, w);
    const T* wkp = wk.get();
    for_tiles(ex, n, HW, K, true, [&](int64_t b, int64_t, int64_t p0, int64_t p1, T*, bool) {
      T* yb = y + b * out_sz;
      const T* xb = x + b * in_sz;
      for (int64_t co = 0; co < s.cout; ++co) scale(yb + co * HW + p0, p1 - p0, beta);
      for (int64_t k = 0; k < s.kw; ++k) {
        const int64_t shift = k * s.dw - s.pw;
        int64_t lo, hi;
        tap_range(HW, s.w, shift, &lo, &hi);
        lo = std::max(lo, p0), hi = std::min(hi, p1);
        if (lo < hi)
          ex.gemm<T>(false, false, s.cout, hi - lo, s.cin, wkp + k * s.cout * s.cin, s.cin, xb + lo + shift, s.w,
                     T(1), yb + lo, HW);
      }
    });
  }

  // c[:, q] = beta c[:, q] + sum over taps k of W_k^T r[:, q + pw - k dw], for tiles of input positions.
  void shifted_backward(const Exec& ex, const T* r, int64_t n, const T* w, T* c, T beta) const {
    const auto wk = taps_first(ex, w);
    const T* wkp = wk.get();
    const int64_t P = s.w;
    for_tiles(ex, n, P, s.cout * s.kw, true, [&](int64_t b, int64_t, int64_t q0, int64_t q1, T*, bool) {
      T* cb = c + b * in_sz;
      const T* rb = r + b * out_sz;
      for (int64_t ci = 0; ci < s.cin; ++ci) scale(cb + ci * P + q0, q1 - q0, beta);
      for (int64_t k = 0; k < s.kw; ++k) {
        const int64_t shift = s.pw - k * s.dw;
        int64_t lo, hi;
        tap_range(P, HW, shift, &lo, &hi);
        lo = std::max(lo, q0), hi = std::min(hi, q1);
        if (lo < hi)
          ex.gemm<T>(true, false, s.cin, hi - lo, s.cout, wkp + k * s.cout * s.cin, s.cin, rb + lo + shift, HW,
                     T(1), cb + lo, P);
      }
    });
  }

  // G as a convolution: c[ci, p] = sum over (co, tap) of wt[ci, (co, tap)] r[co, the output the tap reads].
  void transposed_backward(const Exec& ex, const T* r, int64_t n, const T* w, T* c, T beta) const {
    const int64_t P = s.h * s.w, taps = s.kh * s.kw, KT = cout_g * taps;
    const auto wt = ex.alloc<T>(weight_size());
    T* wtp = wt.get();
    const int64_t rows = s.groups * cin_g;  // wt[g][ci][co][tap] = w[g][co][ci][tap]
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (weight_size() >= kParallelGrain)
    for (int64_t gi = 0; gi < rows; ++gi) {
      const int64_t g = gi / cin_g, ci = gi % cin_g;
      for (int64_t co = 0; co < cout_g; ++co) {
        const T* from = w + ((g * cout_g + co) * cin_g + ci) * taps;
        std::copy(from, from + taps, wtp + (gi * cout_g + co) * taps);
      }
    }
    for_tiles(ex, n, P, KT, false, [&](int64_t b, int64_t g, int64_t p0, int64_t p1, T* col, bool parallel) {
      backward_taps.gather(r + b * out_sz + g * cout_g * HW, col, p1 - p0, p0, p1, parallel);
      ex.gemm<T>(false, false, cin_g, p1 - p0, KT, wtp + g * cin_g * KT, KT, col, p1 - p0, beta,
                 c + b * in_sz + g * cin_g * P + p0, P);
    });
  }

  // G through input-side columns: per sample, each tile of output positions multiplied into columns and added
  // back where its taps read. Tiles of one sample share input elements, so they run one after another.
  void scattered_backward(const Exec& ex, const T* r, int64_t n, const T* w, T* c, T beta) const {
    const int64_t P = s.h * s.w, len = std::min(HW, tile_positions(K));
    if (const int64_t nb = samples_per_tile(n, K, HW); nb > 1) {
      const int64_t width = nb * HW;  // the block's columns, then its relevance side by side (one row stride)
      return for_blocks(ex, n, nb, (K + s.cout) * width, [&](int64_t b0, int64_t b1, T* col, bool parallel) {
        T* rb = col + K * width;
        to_side_by_side(r, s.cout, HW, b0, b1, rb, width);
        ex.gemm<T>(true, false, K, (b1 - b0) * HW, s.cout, w, K, rb, width, T(0), col, width);
        for (int64_t b = b0; b < b1; ++b) {
          scale(c + b * in_sz, in_sz, beta);
          forward_taps.scatter_add(col + (b - b0) * HW, width, c + b * in_sz, 0, HW, parallel);
        }
      });
    }
    const auto sample = [&](int64_t b, T* col, bool parallel) {
      for (int64_t g = 0; g < s.groups; ++g) {
        T* cg = c + b * in_sz + g * cin_g * P;
        scale(cg, cin_g * P, beta);
        for (int64_t p0 = 0; p0 < HW; p0 += len) {
          const int64_t p1 = std::min(HW, p0 + len);
          ex.gemm<T>(true, false, K, p1 - p0, cout_g, w + g * cout_g * K, K, r + b * out_sz + g * cout_g * HW + p0,
                     HW, T(0), col, p1 - p0);
          forward_taps.scatter_add(col, p1 - p0, cg, p0, p1, parallel);
        }
      }
    };
    ex.run_items<T>(n, worth_threads(n) && n >= get_num_threads(), K * len, sample);
  }
};

// Whether a rule's passes may take Winograd's way. Its rounding is relative to the largest term of a 4x4 block of
// inputs, so a quotient s_j = R_j / D_j far larger than its neighbours leaks into their sums, where direct sums
// multiply it by exact zeros. Relevance from a network is proportional to each neuron's activation, so for
// epsilon, gamma and z+ (D_j >= z_j wherever R_j is not zero) s_j stays bounded; alpha-beta's beta term (D_j the
// sum of the negative contributions, near zero wherever all contribute positively), flat and w^2 (D_j from the
// weights alone) have no such bound, and z^B is a first layer of three channels: they keep direct sums.
bool winograd_rule(const RuleParams& r) {
  return r.kind == Rule::Epsilon || r.kind == Rule::Gamma || (r.kind == Rule::AlphaBeta && r.beta == 0.0);
}

template <class T>
void run(const LinearProblem& p, const ConvShape& s) {
  Exec ex;
  ConvOp<T> op(s, winograd_rule(p.rule));
  LinearRelevance<T, Exec, ConvOp<T>>(ex, op, p).run();
}

template <class T>
void forward(const ConvForwardProblem& p) {
  Exec ex;
  const ConvShape& s = p.shape;
  T* y = static_cast<T*>(p.out);
  ConvOp<T>(s).forward(ex, static_cast<const T*>(p.input), s.batch, static_cast<const T*>(p.weight), y, T(0));
  if (!p.bias) return;
  const T* b = static_cast<const T*>(p.bias);
  ex.map_channels(s.batch, s.cout, s.ho * s.wo, [=](int64_t i, int64_t ch) { y[i] += b[ch]; });
}

}  // namespace

void conv_relevance(const LinearProblem& p, const ConvShape& s) {
  if (p.dtype == DType::Float32) run<float>(p, s);
  else run<double>(p, s);
}

void conv_forward(const ConvForwardProblem& p) {
  if (p.dtype == DType::Float32) forward<float>(p);
  else forward<double>(p);
}

void set_winograd(WinogradMode m) { g_winograd = m; }

WinogradMode get_winograd() { return g_winograd; }

}  // namespace lrptext::cpu
