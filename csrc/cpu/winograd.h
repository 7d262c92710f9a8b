// A 3x3 convolution of stride 1 by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2016, "Fast
// Algorithms for Convolutional Neural Networks"): each 2x2 block of outputs ("tile") comes from the 4x4 block of
// inputs under it as A^T [(G g G^T) . (B^T d B)] A, 16 multiplications per channel pair where the direct way takes
// 36. Summed over the channels, the 16 element-wise products become 16 GEMMs [out, in] x [in, tiles]. On VGG-16's
// wide layers this beats both columns (im2col) and torch's own (oneDNN) convolution (measurements:
// docs/performance.md). The transposed pass of such a convolution is one too (the kernel
// flipped, its channels swapped, padding 2 - p); the flip swaps rows 0 and 3 of G, so its transformed weight is the
// forward one's with rows and columns 0 and 3 swapped, read transposed: one transform serves F and G.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "exec.h"

namespace lrptext::cpu {

template <class T>
struct Winograd {
  // One pass: src [n, src_ch, src_h, src_w] -> dst [n, dst_ch, dst_h, dst_w], where dst (r, c) reads
  // src (r - pad_h + i, c - pad_w + j) for i, j < 3, zero outside. transposed: the transposed pass of the
  // convolution whose weight was transformed (its [out, in] matrices read as [in, out]).
  int64_t src_ch, dst_ch, src_h, src_w, dst_h, dst_w, pad_h, pad_w;
  bool transposed;

  // Tiles per block: each block's 16 GEMMs pack the whole transformed weight, so fewer tiles pay more for that,
  // and more leave the cache (measurements: docs/performance.md).
  static constexpr int64_t kBlockTiles = 128;

  int64_t tile_rows() const { return (dst_h + 1) / 2; }
  int64_t tile_cols() const { return (dst_w + 1) / 2; }
  int64_t tiles(int64_t n) const { return n * tile_rows() * tile_cols(); }

  // The transformed weight of w [out, in, 3, 3]: 16 matrices G g G^T [out, in], weight_stride(out, in) apart.
  // The padding keeps the 16 rows one kernel writes off the same cache sets (measurements: docs/performance.md).
  static int64_t weight_stride(int64_t out, int64_t in) { return out * in + 16; }

  static Exec::Buffer<T> transform_weight(const Exec& ex, const T* w, int64_t out, int64_t in) {
    const int64_t stride = weight_stride(out, in);
    auto u = ex.alloc<T>(16 * stride);
    T* up = u.get();
    const T half = T(0.5);
#pragma omp parallel for schedule(static) num_threads(get_num_threads()) if (out * in * 9 >= kParallelGrain)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t c = 0; c < in; ++c) {
        const T* g = w + (o * in + c) * 9;
        T t[4][3];  // G g
        for (int j = 0; j < 3; ++j) {
          t[0][j] = g[j];
          t[1][j] = half * (g[j] + g[3 + j] + g[6 + j]);
          t[2][j] = half * (g[j] - g[3 + j] + g[6 + j]);
          t[3][j] = g[6 + j];
        }
        T* at = up + o * in + c;
        for (int i = 0; i < 4; ++i) {  // (G g) G^T
          at[(4 * i + 0) * stride] = t[i][0];
          at[(4 * i + 1) * stride] = half * (t[i][0] + t[i][1] + t[i][2]);
          at[(4 * i + 2) * stride] = half * (t[i][0] - t[i][1] + t[i][2]);
          at[(4 * i + 3) * stride] = t[i][2];
        }
      }
    return u;
  }

  // dst = beta dst + the pass over n samples with the transformed weight u; positive: of src's positive part.
  void run(const Exec& ex, const T* src, int64_t n, const T* u, T* dst, T beta, bool positive) const {
    const int64_t total = tiles(n), threads = get_num_threads();
    int64_t blocks = ceil_div(ceil_div(total, kBlockTiles), threads) * threads;  // the same number for every thread
    const int64_t len = ceil_div(total, blocks);
    blocks = ceil_div(total, len);
    // Per block: the transformed inputs V [16, src_ch, len] and products M [16, dst_ch, len], then four rows for
    // the input patches of one tile row and four for their column transforms (two output rows reuse them).
    const int64_t rows_size = 2 * tile_cols() + 2, size = 16 * len * (src_ch + dst_ch) + 8 * rows_size;
    // One after another (a single thread, or fewer blocks than threads), the GEMMs split over the threads.
    ex.run_items<T>(blocks, threads > 1 && blocks >= threads, size, [&](int64_t i, T* work, bool) {
      block(ex, src, u, dst, beta, positive, i * len, std::min(total, (i + 1) * len), len, work);
    });
  }

  // Tiles [t0, t1) of the flattened (sample, tile row, tile column) order, which run along tile rows.
  template <class F>
  void for_segments(int64_t t0, int64_t t1, F segment) const {
    const int64_t per_sample = tile_rows() * tile_cols();
    for (int64_t t = t0; t < t1;) {
      const int64_t b = t / per_sample, ty = t % per_sample / tile_cols(), tx = t % tile_cols();
      const int64_t count = std::min(tile_cols() - tx, t1 - t);
      segment(b, ty, tx, count, t - t0);
      t += count;
    }
  }

  void block(const Exec& ex, const T* src, const T* u, T* dst, T beta, bool positive, int64_t t0, int64_t t1,
             int64_t len, T* work) const {
    T* v = work;
    T* m = v + 16 * src_ch * len;
    T* rows = m + 16 * dst_ch * len;
    const int64_t v_stride = src_ch * len, m_stride = dst_ch * len, n = t1 - t0;
    for_segments(t0, t1, [&](int64_t b, int64_t ty, int64_t tx, int64_t count, int64_t at) {
      for (int64_t c = 0; c < src_ch; ++c)
        transform_input(src + (b * src_ch + c) * src_h * src_w, ty, tx, count, positive, rows, v + c * len + at,
                        v_stride);
    });
    const int64_t us = weight_stride(transposed ? src_ch : dst_ch, transposed ? dst_ch : src_ch);
    for (int k = 0; k < 16; ++k) {
      const int64_t i = k / 4, j = k % 4;
      if (transposed) {  // U_G[i][j] = U_F[s(i)][s(j)]^T, s swapping 0 and 3
        const auto s = [](int64_t e) { return e == 0 ? 3 : e == 3 ? 0 : e; };
        ex.gemm<T>(true, false, dst_ch, n, src_ch, u + (4 * s(i) + s(j)) * us, dst_ch, v + k * v_stride, len, T(0),
                   m + k * m_stride, len);
      } else {
        ex.gemm<T>(false, false, dst_ch, n, src_ch, u + k * us, src_ch, v + k * v_stride, len, T(0),
                   m + k * m_stride, len);
      }
    }
    for_segments(t0, t1, [&](int64_t b, int64_t ty, int64_t tx, int64_t count, int64_t at) {
      for (int64_t o = 0; o < dst_ch; ++o)
        transform_output(m + o * len + at, m_stride, count, rows, dst + (b * dst_ch + o) * dst_h * dst_w, ty, tx,
                         beta);
    });
  }

  // B^T d B of the tiles (ty, tx..tx + count) of one source plane, into v (tile i at v[i], component k at
  // v[k * v_stride + i]). rows: scratch of 8 rows of 2 count + 2.
  void transform_input(const T* plane, int64_t ty, int64_t tx, int64_t count, bool positive, T* rows, T* v,
                       int64_t v_stride) const {
    const int64_t width = 2 * count + 2, c0 = 2 * tx - pad_w;  // the patches' columns c0 .. c0 + width
    const int64_t lo = std::clamp<int64_t>(-c0, 0, width), hi = std::clamp<int64_t>(src_w - c0, lo, width);
    T* d[4];
    T* e[4];
    for (int i = 0; i < 4; ++i) {
      d[i] = rows + i * width;
      e[i] = rows + (4 + i) * width;
      const int64_t r = 2 * ty - pad_h + i;
      if (r < 0 || r >= src_h) {
        std::fill(d[i], d[i] + width, T(0));
        continue;
      }
      const T* from = plane + r * src_w + c0;
      std::fill(d[i], d[i] + lo, T(0));
      if (positive)
        for (int64_t q = lo; q < hi; ++q) d[i][q] = std::max(from[q], T(0));
      else std::copy(from + lo, from + hi, d[i] + lo);
      std::fill(d[i] + hi, d[i] + width, T(0));
    }
    for (int64_t q = 0; q < width; ++q) {  // B^T d: along the columns
      e[0][q] = d[0][q] - d[2][q];
      e[1][q] = d[1][q] + d[2][q];
      e[2][q] = d[2][q] - d[1][q];
      e[3][q] = d[1][q] - d[3][q];
    }
    for (int i = 0; i < 4; ++i) {  // (B^T d) B: along the rows, two columns per tile
      const T* r = e[i];
      T* v0 = v + 4 * i * v_stride;
      T* v1 = v0 + v_stride;
      T* v2 = v1 + v_stride;
      T* v3 = v2 + v_stride;
      for (int64_t t = 0; t < count; ++t) {
        const T* q = r + 2 * t;
        v0[t] = q[0] - q[2];
        v1[t] = q[1] + q[2];
        v2[t] = q[2] - q[1];
        v3[t] = q[1] - q[3];
      }
    }
  }

  // A^T m A of the tiles (ty, tx..tx + count) of one output plane (tile i's component k at m[k * m_stride + i]),
  // clipped to the plane: plane = beta plane + result (beta = 0 never reads it). rows: scratch of 4 count.
  void transform_output(const T* m, int64_t m_stride, int64_t count, T* rows, T* plane, int64_t ty, int64_t tx,
                        T beta) const {
    T* y0 = rows;
    T* y1 = rows + 2 * count;
    for (int64_t t = 0; t < count; ++t) {
      T a0[4], a1[4];
      for (int j = 0; j < 4; ++j) {
        const T m0 = m[j * m_stride + t], m1 = m[(4 + j) * m_stride + t], m2 = m[(8 + j) * m_stride + t],
                m3 = m[(12 + j) * m_stride + t];
        a0[j] = m0 + m1 + m2;
        a1[j] = m1 - m2 - m3;
      }
      y0[2 * t] = a0[0] + a0[1] + a0[2];
      y0[2 * t + 1] = a0[1] - a0[2] - a0[3];
      y1[2 * t] = a1[0] + a1[1] + a1[2];
      y1[2 * t + 1] = a1[1] - a1[2] - a1[3];
    }
    const int64_t c0 = 2 * tx, c1 = std::min(dst_w, 2 * (tx + count));
    for (int i = 0; i < 2 && 2 * ty + i < dst_h; ++i) {
      const T* from = rows + i * 2 * count;
      T* to = plane + (2 * ty + i) * dst_w + c0;
      if (beta == T(0)) std::copy(from, from + (c1 - c0), to);
      else
        for (int64_t q = 0; q < c1 - c0; ++q) to[q] = beta * to[q] + from[q];
    }
  }
};

}  // namespace lrptext::cpu
