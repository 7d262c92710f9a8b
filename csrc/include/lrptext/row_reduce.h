// Reductions along one row in eight independent lanes: a single running total is a chain of dependent additions
// that the compiler may not reorder (floating point), so it would neither vectorise nor pipeline.
#pragma once
#include <cstdint>

#include "stabilizer.h"  // LRPT_HD

namespace lrptext {

template <class T>
LRPT_HD inline T row_sum(const T* x, int64_t n) {
  T lane[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lane[l] += x[j + l];
  T total = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (; j < n; ++j) total += x[j];
  return total;
}

// Σ_j (x_j − mean)²
template <class T>
LRPT_HD inline T row_squared_deviation(const T* x, int64_t n, T mean) {
  T lane[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lane[l] += (x[j + l] - mean) * (x[j + l] - mean);
  T total = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (; j < n; ++j) total += (x[j] - mean) * (x[j] - mean);
  return total;
}

template <class T>
LRPT_HD inline T row_max(const T* x, int64_t n, T floor) {
  T lane[8] = {floor, floor, floor, floor, floor, floor, floor, floor};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lane[l] = x[j + l] > lane[l] ? x[j + l] : lane[l];
  T top = floor;
  for (int l = 0; l < 8; ++l) top = lane[l] > top ? lane[l] : top;
  for (; j < n; ++j) top = x[j] > top ? x[j] : top;
  return top;
}

}  // namespace lrptext
