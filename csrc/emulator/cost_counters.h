// What the emulated CUDA kernels load, store and visit, counted per kernel while a
// cost measurement runs (roiops._C.emulator_costs; benchmarks/gpu_costs.py). The
// kernels report through ROIOPS_COST (csrc/cuda/kernel_common.h), which CUDA builds
// compile to nothing. Counting runs the emulated grid on one thread (EmuLauncher), so
// the counters need no synchronisation; outside a measurement nothing is counted.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace roiops::gpu {

struct CostCounters {
  int64_t launches = 0;
  int64_t threads = 0;      // threads launched (grid size, not rounded up to blocks)
  int64_t data_loads = 0;   // loads of maps, output gradients and argmax (packed: one each)
  int64_t data_bytes = 0;
  int64_t table_loads = 0;  // loads of per-RoI tables and RoI lists
  int64_t table_bytes = 0;
  int64_t stores = 0;
  int64_t store_bytes = 0;
  int64_t samples = 0;      // sample (or pixel) reads of map data, per thread
  int64_t roi_visits = 0;     // RoI list entries an input-gradient thread looked at
  int64_t roi_footprint = 0;  // ... whose RoI's footprint held its pixel
  int64_t roi_useful = 0;     // ... whose RoI can read its pixel (a tap in its row and column)
  int64_t longest_walk = 0;   // the most steps one thread's loop took (RoIs walked, taps built):
                              // its chain of dependent loads, which no other thread shortens
};

// The measurement: kernel name -> counters, and the counters of the running launch
// (null when not counting).
inline std::map<std::string, CostCounters>& cost_registry() {
  static std::map<std::string, CostCounters> registry;
  return registry;
}
inline bool& cost_counting() {
  static bool on = false;
  return on;
}
inline CostCounters*& active_costs() {
  static CostCounters* active = nullptr;
  return active;
}

inline void count_cost(int64_t CostCounters::*field, int64_t amount) {
  if (CostCounters* c = active_costs()) c->*field += amount;
}
inline void count_cost_max(int64_t CostCounters::*field, int64_t amount) {
  if (CostCounters* c = active_costs()) c->*field = amount > c->*field ? amount : c->*field;
}

}  // namespace roiops::gpu
