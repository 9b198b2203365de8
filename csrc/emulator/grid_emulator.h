// The CPU emulation of a CUDA launch: every thread of every block of the grid runs
// the kernel's per-thread function (csrc/cuda/kernel_common.h) on host memory. The
// kernels share no memory between threads and use no barriers, so running blocks in
// parallel (at::parallel_for) and threads one after another is a faithful schedule.
// What it cannot check: anything a real GPU adds (memory coalescing, occupancy,
// device-side floating-point differences) — see the README's GPU-only list.
// While a cost measurement runs (cost_counters.h) the grid runs on one thread, its
// counts credited to the kernel's name.
#pragma once

#include <ATen/Parallel.h>

#include "../cuda/kernel_common.h"
#include "cost_counters.h"

namespace roiops::gpu {

struct EmuLauncher {
  struct NoGuard {};
  static NoGuard guard(const at::Tensor&) { return {}; }

  template <class Kernel>
  static void launch(const typename Kernel::Args& a) {
    static_assert(sizeof(typename Kernel::Args) <= kMaxKernelArgs, "kernel arguments too large");
    if (a.n <= 0) return;
    const int64_t blocks = (a.n + kThreadsPerBlock - 1) / kThreadsPerBlock;
    if (cost_counting()) {
      CostCounters& c = cost_registry()[Kernel::kName];
      c.launches += 1;
      c.threads += a.n;
      active_costs() = &c;
      for (int64_t b = 0; b < blocks; ++b)
        for (int t = 0; t < kThreadsPerBlock; ++t) Kernel::run(a, ThreadPos{b, t, kThreadsPerBlock});
      active_costs() = nullptr;
      return;
    }
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int t = 0; t < kThreadsPerBlock; ++t)
          Kernel::run(a, ThreadPos{b, t, kThreadsPerBlock});
    });
  }
};

}  // namespace roiops::gpu
