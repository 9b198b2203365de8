// Dynamic scheduling of the CPU kernels' parallel loops.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace roiops::cpu {

// at::parallel_for splits a range into one static chunk per thread; RoIs differ in
// cost by orders of magnitude (adaptive grids, off-map boxes), so the RoI loops hand
// out small chunks on demand instead. `worker(claim)` runs once per thread (so it
// can keep per-thread buffers) and loops `while (claim(begin, end))`. Results do not
// depend on the schedule: every RoI writes only its own outputs.
template <typename Worker>
void parallel_dynamic(int64_t n, int64_t chunk, const Worker& worker) {
  std::atomic<int64_t> next{0};
  auto claim = [&](int64_t& begin, int64_t& end) {
    begin = next.fetch_add(chunk);
    end = std::min(n, begin + chunk);
    return begin < n;
  };
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), (n + chunk - 1) / chunk);
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { worker(claim); });
}

}  // namespace roiops::cpu
