// Every tuning constant of the CPU kernels, each with the reason for its value in a
// line; the measurements behind them are in docs/performance-notes.md. None changes a
// result: every tier computes the same bits. The tests size their cases from these
// (kTuning, exported as roiops._cpu_<variant>.tuning; tests/test_cpu_tiers.py).
#pragma once

#include <cstdint>
#include <utility>

namespace roiops::cpu {

// Channels per task and per on-stack accumulator: a few cache lines, a multiple of
// every vector width.
constexpr int64_t kChannelBlock = 64;

// RoIs a thread claims at a time from a RoI loop (parallel_dynamic): RoIs differ in
// cost by orders of magnitude, so chunks stay small.
constexpr int64_t kRoiChunk = 4;

// Largest footprint transposed into a per-RoI tile; larger ones (huge adaptive grids)
// are read in place, bounding the per-thread tile buffer.
constexpr int64_t kMaxTilePixels = 4096;

// Side of the square blocks transposed in registers (8 floats of an AVX2 vector).
constexpr int kTransposeRun = 8;

// Most consecutive columns a tile gather transposes at once: few streams of 256 bytes
// suit the prefetchers better than many of 32.
constexpr int64_t kGatherRun = 64;

// Bytes of a plane block (kChannelBlock channels, else kPlanarBlock) transposed whole
// for all of an image's RoIs: an FPN P3 plane of 64 floats and a P2 plane of 16 fit.
constexpr int64_t kPlaneBytes = 8 << 20;
// Channels of a plane block when kChannelBlock channels do not fit kPlaneBytes.
constexpr int64_t kPlanarBlock = 16;
// Pixels a typical RoI's tile holds (7 x 7 bins of 2 x 2 samples touch up to 28 x 28):
// a plane is transposed whole once its RoIs would gather more pixels than it has.
constexpr int64_t kPlaneRoiPixels = 256;
// Fewest RoIs in a part of a plane block's RoIs: each part transposes its block again
// unless one thread takes consecutive parts.
constexpr int64_t kMinPlanePart = 16;
// Parts wanted per thread across all plane blocks, so that the threads end together.
constexpr int64_t kPlanePartsPerThread = 4;

// Bytes of a planar input gradient's channels-last scratch (a 50 x 84 map of 64
// floats): 64 channels per RoI visit beat an L2-sized block of 16.
constexpr int64_t kScratchBytes = 1280 << 10;

// Bytes of RoI geometry a backward thread keeps per (level, image) group for all its
// tasks; RoIs beyond are rebuilt per task.
constexpr int64_t kGeometryCacheBytes = 32 << 20;

// Elements of a per-thread staging buffer (an output block, or a gradient block read
// bin-major): 64 KB of floats stays in L2.
constexpr int64_t kStageElems = 16 << 10;

// Bins ahead that a channels-last output-gradient read prefetches: the next bins of the
// increasing-k walk; further ahead gains nothing.
constexpr int64_t kPrefetchBins = 8;

// Most output bytes stored through the caches, whatever the last-level cache: a larger
// one is a server socket's, shared by dozens of cores.
constexpr int64_t kMaxCachedOutputBytes = 32 << 20;

// Vectors of channels a bin's sums hold in registers: a whole 64-channel block where
// that is 8 vectors (AVX2 floats: 8 sums, 4 weights and a product fit 16 registers).
constexpr int sum_unroll(int64_t lanes) { return lanes == 8 ? 8 : 4; }

// The constants the tests size their cases from (roiops._cpu_<variant>.tuning).
constexpr std::pair<const char*, int64_t> kTuning[] = {
    {"channel_block", kChannelBlock},
    {"roi_chunk", kRoiChunk},
    {"max_tile_pixels", kMaxTilePixels},
    {"transpose_run", kTransposeRun},
    {"gather_run", kGatherRun},
    {"plane_bytes", kPlaneBytes},
    {"planar_block", kPlanarBlock},
    {"plane_roi_pixels", kPlaneRoiPixels},
    {"min_plane_part", kMinPlanePart},
    {"plane_parts_per_thread", kPlanePartsPerThread},
    {"scratch_bytes", kScratchBytes},
    {"geometry_cache_bytes", kGeometryCacheBytes},
    {"stage_elems", kStageElems},
    {"prefetch_bins", kPrefetchBins},
    {"max_cached_output_bytes", kMaxCachedOutputBytes},
};

}  // namespace roiops::cpu
