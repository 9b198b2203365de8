// How often the CPU schedulers took each tier (plane blocks, tiles, windows, output
// staging, ...), counted only while a test asks (roiops._cpu_<variant>.tier_counts,
// tests/test_cpu_tiers.py), so that tests sized from the tuning constants can show
// that they reach the tier they were sized for. Outside a count this costs one relaxed
// load per task.
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>

namespace roiops::cpu {

struct TierCounts {
  // Forward.
  std::atomic<int64_t> plane_blocks{0};         // whole planes of kChannelBlock channels transposed
  std::atomic<int64_t> narrow_plane_blocks{0};  // ... of kPlanarBlock channels
  std::atomic<int64_t> plane_block_parts{0};    // parts of plane blocks split for the threads
  std::atomic<int64_t> roi_tiles{0};            // planar (RoI, block) tasks read through a tile
  std::atomic<int64_t> planar_in_place{0};      // ... read in place
  std::atomic<int64_t> channels_last_tasks{0};  // channels-last (RoI, block) tasks
  std::atomic<int64_t> reordered_rois{0};       // RoIs the top-to-bottom sort moved
  std::atomic<int64_t> staged_outputs{0};       // output blocks staged, stored once per task
  std::atomic<int64_t> in_place_outputs{0};     // ... stored bin by bin
  std::atomic<int64_t> streamed_outputs{0};     // ... staged, written around the caches
  // Backward.
  std::atomic<int64_t> channels_last_windows{0};  // tasks accumulating in the gradient itself
  std::atomic<int64_t> plane_windows{0};          // planar tasks whose scratch holds the plane
  std::atomic<int64_t> row_windows{0};            // ... a window of rows
  std::atomic<int64_t> column_windows{0};         // ... a window of rows and columns
  std::atomic<int64_t> staged_bin_reads{0};       // RoI blocks of grad / argmax transposed whole
  std::atomic<int64_t> bin_by_bin_reads{0};       // ... read bin by bin
  std::atomic<int64_t> rebuilt_geometries{0};     // RoI geometries built again past the cache
};

// Each counter by the name Python reads it under.
constexpr std::pair<const char*, std::atomic<int64_t> TierCounts::*> kTierFields[] = {
    {"plane_blocks", &TierCounts::plane_blocks},
    {"narrow_plane_blocks", &TierCounts::narrow_plane_blocks},
    {"plane_block_parts", &TierCounts::plane_block_parts},
    {"roi_tiles", &TierCounts::roi_tiles},
    {"planar_in_place", &TierCounts::planar_in_place},
    {"channels_last_tasks", &TierCounts::channels_last_tasks},
    {"reordered_rois", &TierCounts::reordered_rois},
    {"staged_outputs", &TierCounts::staged_outputs},
    {"in_place_outputs", &TierCounts::in_place_outputs},
    {"streamed_outputs", &TierCounts::streamed_outputs},
    {"channels_last_windows", &TierCounts::channels_last_windows},
    {"plane_windows", &TierCounts::plane_windows},
    {"row_windows", &TierCounts::row_windows},
    {"column_windows", &TierCounts::column_windows},
    {"staged_bin_reads", &TierCounts::staged_bin_reads},
    {"bin_by_bin_reads", &TierCounts::bin_by_bin_reads},
    {"rebuilt_geometries", &TierCounts::rebuilt_geometries},
};

inline TierCounts& tier_counts() {
  static TierCounts counts;
  return counts;
}
inline std::atomic<bool>& tier_counting() {
  static std::atomic<bool> on{false};
  return on;
}

inline bool counting_tiers() { return tier_counting().load(std::memory_order_relaxed); }

inline void count_tier(std::atomic<int64_t> TierCounts::*tier, int64_t amount = 1) {
  if (counting_tiers()) (tier_counts().*tier).fetch_add(amount, std::memory_order_relaxed);
}

}  // namespace roiops::cpu
