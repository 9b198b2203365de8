// The backward kernels' schedule: (level, image, channel block, window) tasks, each
// accumulating its window of the input gradient from its group's RoIs in a fixed order.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "../op_common.h"
#include "channel_loops.h"
#include "maps.h"
#include "parallel.h"
#include "tier_counts.h"
#include "transpose.h"

namespace roiops::cpu {

// Whether GradWindow::add_at adds a vector of channels at pixels of their own with one
// gather and one scatter (AVX-512 floats) rather than one channel at a time.
template <typename acc_t>
constexpr bool kScatterAdds =
#if defined(CPU_CAPABILITY_AVX512)
    std::is_same_v<acc_t, float>;
#else
    false;
#endif

// Where a backward task accumulates the input gradient: channels [0, n) of the
// pixels in rows [y0, y1) and columns [x0, x1) of one image, with contiguous
// channels. That is the gradient itself when the map is channels-last, and a
// channels-last scratch copied out to the planes at the end of the task when it is
// planar (for_each_backward_task), so both layouts scatter whole channel vectors.
// A position-sensitive task's window holds n * PH * PW input channels per pixel;
// for_bin(b) is the window of bin b's n channels (channel stride cs).
template <typename acc_t>
struct GradWindow {
  acc_t* data;      // channel 0 of pixel (y0, x0)
  int64_t rs, ps;   // row and pixel strides
  int64_t y0, y1, x0, x1;
  int64_t width;    // of the map
  // Map offset y * rs + x * ps of pixel (y0, x0), and whether the window is whole
  // rows laid out densely (rs == width * ps), so that pixel y * width + x is at
  // (that - y0 * width) * ps: the max-mode loops then index without a division.
  int64_t origin = y0 * rs + x0 * ps;
  bool whole_rows = x0 == 0 && x1 == width && rs == width * ps;
  // Whether pixel offsets within the window fit int32 lanes (add_at).
  bool int32_offsets = whole_rows && y0 * width <= INT32_MAX && (y1 - y0) * rs <= INT32_MAX;
  int64_t cs = 1;        // between the channels a bin's gradient adds into
  int64_t bin_step = 0;  // from bin b's channel 0 to bin b + 1's (0: every bin adds to the same)

  GradWindow for_bin(int64_t b) const {
    GradWindow w = *this;
    w.data += b * bin_step;
    return w;
  }

  bool has_row(int64_t y) const { return y >= y0 && y < y1; }
  bool has_col(int64_t x) const { return x >= x0 && x < x1; }
  bool overlaps(const Footprint& f) const {
    return f.y0 < y1 && f.y1 > y0 && f.x0 < x1 && f.x1 > x0;
  }
  bool covers(const Footprint& f) const {
    return f.y0 >= y0 && f.y1 <= y1 && f.x0 >= x0 && f.x1 <= x1;
  }
  acc_t* at(int64_t y, int64_t x) const { return data + (y - y0) * rs + (x - x0) * ps; }
  // (y, x)[c] += w * g[c] for c in [0, n); nothing when (y, x) is outside.
  void add(int64_t y, int64_t x, acc_t w, const acc_t* g, int64_t n) const {
    if (has_row(y) && has_col(x)) axpy(at(y, x), w, g, n);
  }
  // d[c * cs] += w * g[c] for c in [0, n): the adjoint of one tap of accumulate_taps,
  // rounded the same way (product, then sum).
  void axpy(acc_t* d, acc_t w, const acc_t* g, int64_t n) const {
    using Vec = at::vec::Vectorized<acc_t>;
    if (cs != 1) {
      for (int64_t c = 0; c < n; ++c) d[c * cs] += w * g[c];
      return;
    }
    int64_t c = 0;
    for (; c + Vec::size() <= n; c += Vec::size())
      (Vec::loadu(d + c) + Vec(w) * Vec::loadu(g + c)).store(d + c);
    for (; c < n; ++c) d[c] += w * g[c];
  }
  // Pixel p = y * width + x, or null when it lies outside the window.
  acc_t* pixel(int64_t p) const {
    if (whole_rows) {
      const uint64_t q = uint64_t(p - y0 * width);
      return q < uint64_t((y1 - y0) * width) ? data + int64_t(q) * ps : nullptr;
    }
    const int64_t y = p / width, x = p % width;
    return has_row(y) && has_col(x) ? at(y, x) : nullptr;
  }
  // d[c] += g[c] for c in [0, n), d the channel run of pixel p[c]; pixels outside the
  // window are skipped: max mode's scatter. Offsets are computed a vector at a time, so
  // the scalar loop is one load, add and store per channel instead of pixel()'s
  // bounds, multiply and null checks.
  void add_at(const int32_t* p, const acc_t* g, int64_t n) const {
    using IVec = at::vec::Vectorized<int32_t>;
    int64_t c = 0;
    if (int32_offsets) {
      int32_t off[kChannelBlock];
      const IVec zero(0), none(-1), base(int32_t(y0 * width)), span(int32_t((y1 - y0) * width));
      const IVec stride(static_cast<int32_t>(ps)), lanes = IVec::arange(0, 1);
      for (; c + IVec::size() <= n; c += IVec::size()) {
        const IVec pixel = IVec::loadu(p + c), q = pixel - base;
        const IVec inside = (pixel >= zero) & (q >= zero) & (q < span);
        const IVec o = IVec::blendv(none, q * stride + lanes + IVec(int32_t(c)), inside);
#if defined(CPU_CAPABILITY_AVX512)
        // The lanes' addresses differ (channels c..c+15 of pixels ps >= n >= 16
        // apart), so no lane's store hides another's, and each lane adds what the
        // scalar loop would: the same bits.
        if constexpr (kScatterAdds<acc_t>) {
          const __m512i oi = o;
          const __mmask16 m = _mm512_cmpge_epi32_mask(oi, _mm512_setzero_si512());
          const __m512 d = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, oi, data, 4);
          _mm512_mask_i32scatter_ps(data, m, oi, _mm512_add_ps(d, _mm512_loadu_ps(g + c)), 4);
          continue;
        }
#endif
        o.store(off + c);
      }
      if constexpr (!kScatterAdds<acc_t>)
        for (int64_t i = 0; i < c; ++i)
          if (off[i] >= 0) data[off[i]] += g[i];
    }
    for (; c < n; ++c)
      if (acc_t* d = pixel(p[c])) d[c] += g[c];
  }
};

// How a backward task's level is split into windows: `down` x `across` windows of at
// most `rows` x `cols` pixels (none for an empty map).
struct Windows {
  int64_t rows, cols, down, across;

  // The whole map: channels-last accumulators are the gradient itself.
  static Windows whole(int64_t H, int64_t W) {
    const int64_t n = H > 0 && W > 0;
    return {H, W, n, n};
  }
  // Windows of a planar map whose scratch holds `pixels` pixels: rows, and columns too
  // when one row does not fit, split into equal windows rather than a thin last one.
  static Windows of(int64_t H, int64_t W, int64_t pixels) {
    Windows s = whole(H, W);
    if (s.down == 0) return s;
    const int64_t cols = std::min(W, pixels);
    const int64_t rows = std::min(H, pixels / cols);
    s.down = (H + rows - 1) / rows;
    s.across = (W + cols - 1) / cols;
    s.rows = (H + s.down - 1) / s.down;
    s.cols = (W + s.across - 1) / s.across;
    return s;
  }
};

// The backward kernels' schedule: tasks are (level, image, channel block, window),
// each running `body(k, c0, n, geometry, window)` for every RoI k of its (level,
// image) group whose footprint overlaps the window, in increasing k: every pixel
// sums its contributions in the same order for any thread count, and no two tasks
// write the same pixel, so the result is bitwise deterministic without atomics. Tasks
// cover every element of `gi`, which they zero (channels-last accumulators) or store
// whole from a zeroed scratch (planar ones), so `gi` need not be initialized: zeroing
// it first would write a planar gradient twice.
// `build(geometry, k)` fills RoI k's geometry (with its Footprint); each thread keeps
// the geometries of its current group (up to kGeometryCacheBytes) for all its tasks.
// `gi` holds one accumulator per level in that level's memory format. Channel blocks
// are blocks of output channels; `cm` gives the input channels each one's gradient
// adds into (a run of n * PH * PW for the position-sensitive ops, whose planar scratch
// holds each bin's n channels as one run, so their adds are vectorized too).
//
// Planar input gradients are accumulated kChannelBlock channels at a time, as
// channels-last ones are, in a channels-last scratch of at most kScratchBytes (a 50 x 84
// map of 64 floats), split into windows of rows (and of columns for very wide maps)
// when a plane is larger. 64 channels rather than an L2-sized block of 16: each RoI
// visit pays the per-bin work (argmax decode, bounds, loads, prefetches) once for all 64
// channels (docs/performance-notes.md).
template <typename Geometry, typename acc_t, typename Build, typename Body>
void for_each_backward_task(const Maps<acc_t>& gi, const RoiBuckets& buckets, const ChannelMap& cm,
                            const Build& build, const Body& body) {
  const int64_t N = gi.batch, C = cm.output_channels(gi.channels), L = gi.count();
  const bool planar = !gi.channels_contiguous();
  const int64_t block = kChannelBlock;
  const int64_t blocks = (C + block - 1) / block;
  // A position-sensitive block accumulates n * PH * PW channels per pixel: the scratch
  // holds as many pixels of the widest block there is (R-FCN has fewer than 64 output
  // channels), and at least one.
  const int64_t widest = cm.per_bin ? std::max<int64_t>(1, std::min(block, C)) : block;
  const int64_t scratch_pixels = std::max<int64_t>(1, kScratchBytes / int64_t(widest * cm.group * sizeof(acc_t)));
  std::vector<Windows> split(L);
  for (int64_t l = 0; l < L; ++l)
    split[l] = planar ? Windows::of(gi.heights[l], gi.widths[l], scratch_pixels)
                      : Windows::whole(gi.heights[l], gi.widths[l]);
  const int64_t groups = N * L;
  std::vector<int64_t> first(groups + 1, 0);  // first task of each group
  for (int64_t g = 0; g < groups; ++g) {
    const Windows& s = split[g / N];
    first[g + 1] = first[g] + blocks * s.down * s.across;
  }

  // Handed out one task at a time: tasks cost as much as their group's RoIs, and a
  // static split of a fused pyramid's tasks gives one thread the P2 and P3 levels and
  // the other the rest.
  parallel_dynamic(first[groups], 1, [&](auto& claim) {
    std::vector<acc_t> scratch(planar ? scratch_pixels * widest * cm.group : 0);
    std::vector<Geometry> cache;
    Geometry spare;
    int64_t cached_group = -1, cached = 0, t0, t1;
    while (claim(t0, t1)) for (int64_t task = t0; task < t1; ++task) {
      const int64_t group = std::upper_bound(first.begin(), first.end(), task) - first.begin() - 1;
      const int64_t level = group / N, image = group % N;
      const Windows& s = split[level];
      const int64_t local = task - first[group], windows = s.down * s.across;
      const int64_t c0 = (local / windows) * block, n = std::min(block, C - c0);
      const int64_t y0 = (local % windows) / s.across * s.rows, x0 = (local % windows) % s.across * s.cols;
      const int64_t y1 = std::min(y0 + s.rows, gi.heights[level]);
      const int64_t x1 = std::min(x0 + s.cols, gi.widths[level]);
      const View4<acc_t>& g = gi.views[level];
      acc_t* plane = g.data + image * g.s0 + cm.input_channel(c0, 0) * g.s1;
      const int64_t run = n * cm.group;  // accumulated channels per pixel
      const int64_t W = gi.widths[level];
      count_tier(!planar        ? &TierCounts::channels_last_windows
                 : s.across > 1 ? &TierCounts::column_windows
                 : s.down > 1   ? &TierCounts::row_windows
                                : &TierCounts::plane_windows);
      GradWindow<acc_t> w{plane + y0 * g.s2 + x0 * g.s3, g.s2, g.s3, y0, y1, x0, x1, W};
      if (planar) {
        w = {scratch.data(), (x1 - x0) * run, run, y0, y1, x0, x1, W};
        w.bin_step = cm.per_bin * n;
        std::fill_n(scratch.data(), (y1 - y0) * (x1 - x0) * run, acc_t(0));
      } else {
        w.cs = cm.group;
        w.bin_step = cm.per_bin;
        for (int64_t y = y0; y < y1; ++y)
          for (int64_t x = x0; x < x1; ++x) fill_channels(w.at(y, x), acc_t(0), run);
      }
      const int64_t begin = buckets.start[group], end = buckets.start[group + 1];
      if (group != cached_group) {
        cached_group = group;
        cache.resize(end - begin);
        int64_t bytes = 0;
        for (cached = 0; cached < end - begin && bytes < kGeometryCacheBytes; ++cached) {
          build(cache[cached], buckets.order[begin + cached]);
          bytes += cache[cached].bytes();
        }
      }
      for (int64_t i = begin; i < end; ++i) {
        const int64_t k = buckets.order[i];
        const bool hit = i - begin < cached;
        if (!hit) {
          build(spare, k);
          count_tier(&TierCounts::rebuilt_geometries);
        }
        const Geometry& r = hit ? cache[i - begin] : spare;
        if (w.overlaps(r.footprint)) body(k, c0, n, r, w);
      }
      if (!planar) continue;
      for (int64_t b = 0; b < cm.group; ++b)
        for (int64_t y = y0; y < y1; ++y)
          store_planes(plane + cm.input_channel(0, b) * g.s1 + y * g.s2 + x0 * g.s3, cm.group * g.s1, g.s3,
                       w.at(y, x0) + b * n, x1 - x0, n, run);
    }
  });
}

}  // namespace roiops::cpu
