// The forward kernels' schedule: which (RoI, channel block) tasks run in what order,
// and what copy of the pixels each reads (a transposed plane, a RoI's tile, or the map
// itself). Every way computes the same bits.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "../op_common.h"
#include "maps.h"
#include "parallel.h"
#include "tier_counts.h"
#include "tiles.h"
#include "tuning.h"

namespace roiops::cpu {

// One forward task: pool output channels [c0, c0 + n) of RoI k, reading `src` through
// `view` and `geometry`, which address a channels-last copy of the pixels for planar
// maps (so the vectorized loops apply to them too) and the map itself otherwise; `at`
// is the same RoI in map coordinates. view.s1 is the stride between output channels'
// inputs. Bin b reads from bin_src(b): the same channels in every bin for the plain
// ops (bin_step 0), channel c * PH * PW + b for the position-sensitive ones
// (ChannelMap), whose copies hold each bin's n channels as one run.
template <typename scalar_t, typename Geometry>
struct ForwardTask {
  int64_t k, c0, n;
  const Geometry& at;
  const Geometry& geometry;
  const View4<const scalar_t>& view;
  const scalar_t* src;
  int64_t bin_step = 0;
  const scalar_t* bin_src(int64_t bin) const { return src + bin * bin_step; }
};

// The RoIs grouped by (level, image), each group in the order the forward pools it: top
// to bottom (by the boxes' vertical centres), so that consecutive RoIs read nearby
// rows, still in L2 when the map (or plane block) is larger. Only the forward reorders:
// each RoI writes its own outputs, while the backward's increasing-RoI order is what
// makes its sums reproducible. NaN centres (boxes with NaN or opposite infinite edges,
// which pool nothing) sort as 0: a comparison with a NaN would not be an ordering,
// which std::stable_sort requires.
template <typename T>
RoiBuckets rois_top_to_bottom(const RoiRows& rois, const Maps<T>& in) {
  RoiBuckets buckets = bucket_rois(rois, in.batch, in);
  std::vector<double> centre(rois.count);
  for (int64_t k = 0; k < rois.count; ++k) {
    const double y = rois.twice_centre_y(k);
    centre[k] = std::isnan(y) ? 0.0 : y;
  }
  const std::vector<int64_t> given = counting_tiers() ? buckets.order : std::vector<int64_t>();
  for (size_t g = 0; g + 1 < buckets.start.size(); ++g)
    std::stable_sort(buckets.order.begin() + buckets.start[g], buckets.order.begin() + buckets.start[g + 1],
                     [&](int64_t a, int64_t b) { return centre[a] < centre[b]; });
  for (size_t i = 0; i < given.size(); ++i) count_tier(&TierCounts::reordered_rois, given[i] != buckets.order[i]);
  return buckets;
}

// Planar maps whose plane, for one channel block, fits kPlaneBytes are transposed
// whole, once per (level, image, block), into a channels-last copy that all of that
// image's RoIs read: cheaper than per-RoI tiles once the RoIs would gather more pixels
// than the plane has (kPlaneRoiPixels per RoI), at the cost of a buffer of up to
// kPlaneBytes per thread. Blocks are kChannelBlock channels where that fits, so each
// sample's tap arithmetic serves 64 channels, else kPlanarBlock channels. With few plane
// blocks (a 64-channel map is one) each block's RoIs are split into parts, so that
// every thread has work and the threads end together; a thread that takes consecutive
// parts of one block transposes it once. (Not one block at a time shared by all
// threads in two parallel steps: on a loaded machine every step waits for a
// descheduled thread.) Measurements: docs/performance-notes.md. A position-sensitive
// block of n output channels copies their n * PH * PW input planes.
struct PlaneTask {
  int64_t group, c0, n;  // channels [c0, c0 + n) of group `group`'s plane
  int64_t begin, end;    // its RoIs order[begin, end)
};
struct PlanePlan {
  std::vector<PlaneTask> tasks;
  std::vector<char> pooled;  // RoIs that a plane task pools
  int64_t elems = 0;         // of the largest plane block
};

template <typename scalar_t>
PlanePlan plan_planes(const Maps<const scalar_t>& in, const RoiBuckets& buckets, int64_t K, int64_t C,
                      const ChannelMap& cm) {
  PlanePlan plan;
  plan.pooled.assign(K, 0);
  std::vector<PlaneTask> blocks;
  for (int64_t g = 0; g + 1 < int64_t(buckets.start.size()); ++g) {
    const int64_t level = g / in.batch, begin = buckets.start[g], end = buckets.start[g + 1];
    const int64_t pixels = in.heights[level] * in.widths[level];
    const int64_t bytes = pixels * int64_t(sizeof(scalar_t)) * cm.group;
    const int64_t width = bytes * kChannelBlock <= kPlaneBytes ? kChannelBlock : kPlanarBlock;
    if (pixels == 0 || bytes * width > kPlaneBytes || (end - begin) * kPlaneRoiPixels < pixels)
      continue;
    for (int64_t c0 = 0; c0 < C; c0 += width) blocks.push_back({g, c0, std::min(width, C - c0), begin, end});
    count_tier(width == kChannelBlock ? &TierCounts::plane_blocks : &TierCounts::narrow_plane_blocks,
               (C + width - 1) / width);
    plan.elems = std::max(plan.elems, pixels * width * cm.group);
    for (int64_t i = begin; i < end; ++i) plan.pooled[buckets.order[i]] = 1;
  }
  const int64_t want = kPlanePartsPerThread * at::get_num_threads();
  for (const PlaneTask& p : blocks) {
    const int64_t count = p.end - p.begin;
    const int64_t parts = std::clamp<int64_t>((want + int64_t(blocks.size()) - 1) / int64_t(blocks.size()),
                                              1, std::max<int64_t>(1, count / kMinPlanePart));
    for (int64_t i = 0; i < parts; ++i)
      plan.tasks.push_back({p.group, p.c0, p.n, p.begin + count * i / parts, p.begin + count * (i + 1) / parts});
    if (parts > 1) count_tier(&TierCounts::plane_block_parts, parts);
  }
  return plan;
}

// Runs the plane tasks, each thread transposing a plane block when its task's block
// differs from its previous one's. A position-sensitive block is copied bin-major per
// pixel: bin b's n channels (input channels c * PH * PW + b) form one run, read with
// channel stride 1.
template <typename scalar_t, typename Geometry, typename Build, typename Body>
void run_plane_tasks(const Maps<const scalar_t>& in, const RoiBuckets& buckets, const PlanePlan& plan,
                     const ChannelMap& cm, const Build& build, const Body& body) {
  const std::vector<PlaneTask>& tasks = plan.tasks;
  parallel_dynamic(int64_t(tasks.size()), 1, [&](auto& claim) {
    Geometry r;
    TileIndex whole;
    std::unique_ptr<scalar_t[]> plane(new scalar_t[plan.elems]);
    View4<const scalar_t> v(nullptr, 0, 0, 0, 0);
    int64_t have = -1;  // the task whose block is in `plane`
    int64_t t0, t1;
    while (claim(t0, t1)) {
      const auto [g, c0, n, begin, end] = tasks[t0];
      if (have < 0 || tasks[have].group != g || tasks[have].c0 != c0) {
        const int64_t level = g / in.batch;
        const View4<const scalar_t>& lev = in.views[level];
        whole.rows.resize(in.heights[level]);
        whole.cols.resize(in.widths[level]);
        std::iota(whole.rows.begin(), whole.rows.end(), 0);
        std::iota(whole.cols.begin(), whole.cols.end(), 0);
        const scalar_t* image = lev.data + (g % in.batch) * lev.s0;
        for (int64_t b = 0; b < cm.group; ++b)
          v = gather_tile(plane.get() + b * n, image + cm.input_channel(c0, b) * lev.s1,
                          cm.group * lev.s1, lev.s2, lev.s3, whole, n, n * cm.group);
        v.data = plane.get();
      }
      have = t0;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t k = buckets.order[i];
        build(r, k);
        body(ForwardTask<scalar_t, Geometry>{k, c0, n, r, r, v, v.data, cm.per_bin * n});
      }
    }
  });
}

// Runs the (RoI, channel block) tasks of the RoIs no plane task pooled. Channels-last
// maps: RoI-major (each RoI's geometry is built once; every tap reads a whole channel
// run anyway), in rois_top_to_bottom's order, so that consecutive tasks read one map (a
// fused pyramid's RoIs interleave levels). Planar maps: block-major (a pyramid of
// planes is far larger than the caches; this keeps one block of planes hot across all
// RoIs), each task reading a channels-last tile of the RoI's footprint when it fits
// (Geometry::to_tile). Position-sensitive RoIs read in place: each reads an input
// channel inside one bin only, so a tile of its footprint would copy PH * PW times what
// it reads.
template <typename scalar_t, typename Geometry, typename Build, typename Body>
void run_roi_tasks(const Maps<const scalar_t>& in, const RoiBuckets& buckets, const PlanePlan& plan,
                   int64_t K, int64_t C, const ChannelMap& cm, const Build& build, const Body& body) {
  const bool planar = !in.channels_contiguous();
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  parallel_dynamic(blocks * K, kRoiChunk, [&](auto& claim) {
    Geometry r, tiled;
    TileIndex index;
    std::unique_ptr<scalar_t[]> tile(planar ? new scalar_t[kMaxTilePixels * kChannelBlock] : nullptr);
    int64_t i0, i1, built = -1;
    while (claim(i0, i1)) for (int64_t i = i0; i < i1; ++i) {
      const int64_t k = planar ? i % K : buckets.order[i / blocks];
      const int64_t c0 = (planar ? i / K : i % blocks) * kChannelBlock;
      const int64_t n = std::min(kChannelBlock, C - c0);
      if (planar && plan.pooled[k]) continue;
      if (k != built) build(r, k), built = k;
      const View4<const scalar_t>& lev = in.views[r.level];
      const scalar_t* src = lev.data + r.image * lev.s0 + cm.input_channel(c0, 0) * lev.s1;
      if (planar && cm.per_bin == 0 && r.to_tile(tiled, index)) {
        count_tier(&TierCounts::roi_tiles);
        const View4<const scalar_t> v = gather_tile(tile.get(), src, lev.s1, lev.s2, lev.s3, index, n);
        body(ForwardTask<scalar_t, Geometry>{k, c0, n, r, tiled, v, v.data});
      } else {
        count_tier(planar ? &TierCounts::planar_in_place : &TierCounts::channels_last_tasks);
        const View4<const scalar_t> v(lev.data, lev.s0, cm.group * lev.s1, lev.s2, lev.s3);
        body(ForwardTask<scalar_t, Geometry>{k, c0, n, r, r, v, src, cm.per_bin * lev.s1});
      }
    }
  });
}

// Pools every (RoI, output channel block) of a forward once: `build(geometry, k)`
// fills RoI k's geometry and `body(task)` pools one ForwardTask. C is the output's
// channels; `cm` says which input channels they read. Planar maps run their plane
// tasks (plan_planes) first, then the other RoIs' tasks (run_roi_tasks).
template <typename scalar_t, typename Geometry, typename Build, typename Body>
void for_each_forward_task(const Maps<const scalar_t>& in, const RoiRows& rois, int64_t C,
                           const ChannelMap& cm, const Build& build, const Body& body) {
  const int64_t K = rois.count;
  const RoiBuckets buckets = rois_top_to_bottom(rois, in);
  const PlanePlan plan = in.channels_contiguous() ? PlanePlan{} : plan_planes(in, buckets, K, C, cm);
  run_plane_tasks<scalar_t, Geometry>(in, buckets, plan, cm, build, body);
  run_roi_tasks<scalar_t, Geometry>(in, buckets, plan, K, C, cm, build, body);
}

}  // namespace roiops::cpu
