// Large workspaces, mapped from the system and kept for the next kernel call (up to kRetainedBytes), as malloc
// keeps freed heap memory. A fresh mapping's first touch faults on every page, which took a large share of a
// small network's explanation at a large batch, where torch's gradient, whose buffers come back from malloc's
// heap, pays nothing (measurements: docs/performance.md).
#include <sys/mman.h>

#include <mutex>
#include <new>
#include <vector>

#include "exec.h"
#include "lrptext/kernels.h"

namespace lrptext::cpu {
namespace {

// About what malloc keeps by default at most (twice its largest mmap threshold of 32 MiB) for torch's tensors.
constexpr size_t kRetainedBytes = size_t(64) << 20;

std::mutex retained_mutex;
std::vector<Mapping> retained;  // oldest first
size_t retained_bytes = 0;

void unmap_all(const std::vector<Mapping>& mappings) {
  for (const Mapping& m : mappings) munmap(m.data, m.bytes);
}

}  // namespace

Mapping take_mapping(size_t bytes) {
  std::vector<Mapping> too_small;
  {
    std::lock_guard<std::mutex> lock(retained_mutex);
    auto best = retained.end();
    for (auto it = retained.begin(); it != retained.end(); ++it)
      if (it->bytes >= bytes && (best == retained.end() || it->bytes < best->bytes)) best = it;
    if (best != retained.end()) {
      const Mapping m = *best;
      retained.erase(best);
      retained_bytes -= m.bytes;
      return m;
    }
    // None fits: the kept ones are smaller than what is asked now (the relevance pass of a CNN walks towards
    // larger images), so keeping them while mapping more would only raise the peak.
    too_small.swap(retained);
    retained_bytes = 0;
  }
  unmap_all(too_small);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return {p, bytes};
}

void give_back_mapping(Mapping m) {
  std::vector<Mapping> evicted;
  {
    std::lock_guard<std::mutex> lock(retained_mutex);
    retained.push_back(m);
    retained_bytes += m.bytes;
    while (retained_bytes > kRetainedBytes) {
      evicted.push_back(retained.front());
      retained_bytes -= retained.front().bytes;
      retained.erase(retained.begin());
    }
  }
  unmap_all(evicted);
}

size_t release_workspaces() {
  std::vector<Mapping> all;
  {
    std::lock_guard<std::mutex> lock(retained_mutex);
    all.swap(retained);
    retained_bytes = 0;
  }
  size_t bytes = 0;
  for (const Mapping& m : all) bytes += m.bytes;
  unmap_all(all);
  return bytes;
}

}  // namespace lrptext::cpu
