// The thread bodies of roi_pool on the GPU; see kernel_common.h for how they are
// launched and emulated. Bins, sums and the argmax follow the CPU kernels
// (csrc/cpu/roi_pool_cpu.cpp): integer bins from roi_geometry.h's pool_bin, the
// argmax as pixel index h * W + w, long sums in float64 runs.
#pragma once

#include "kernel_common.h"

namespace roiops::gpu {

// A bin's half-open row (or column) range [lo, hi), empty when lo >= hi, read with
// one 8-byte load.
struct alignas(8) Span {
  int lo, hi;
};

// Every RoI's bins, computed once per launch: bin row ph of RoI k covers rows
// [ybins[k, ph].lo, ybins[k, ph].hi) (empty when lo >= hi); likewise columns.
struct PoolTable {
  RoiInfo* info;      // [K] (grid fields unused)
  Footprint* extent;  // [K]
  Span* ybins;    // [K, PH]
  Span* xbins;    // [K, PW]
  int64_t* keys;  // [K]: the RoI's group (RoiGroups)
  int PH, PW;
  PoolRule rule;  // roi_pool's bins or ps_roi_pool's (roi_geometry.h: pool_bin)
  C10_HOST_DEVICE Span rows(int64_t k, int ph) const { return load_table(ybins + k * PH + ph); }
  C10_HOST_DEVICE Span cols(int64_t k, int pw) const { return load_table(xbins + k * PW + pw); }
  // Every pixel of the footprint lies in a bin (kernel_common.h: ListEntry).
  C10_HOST_DEVICE uint32_t tile_mask(int64_t, const Footprint& e, int row0, int col0) const {
    return gpu::tile_mask(span_bits(e.row0, e.row1, row0), span_bits(e.col0, e.col1, col0));
  }
};

// One thread per RoI.
struct BuildPoolTable {
  using Args = TableArgs<PoolTable>;
  static constexpr const char* kName = "pool_table";

  static C10_HOST_DEVICE void fill_axis(Span* bins, const PoolAxis& axis, int pooled, int size, int* lo,
                                        int* hi) {
    for (int p = 0; p < pooled; ++p) {
      Span b;
      pool_bin(axis, p, pooled, size, &b.lo, &b.hi);
      store_table(bins + p, b);
      if (b.lo < b.hi) {
        *lo = b.lo < *lo ? b.lo : *lo;
        *hi = b.hi - 1 > *hi ? b.hi - 1 : *hi;
      }
    }
  }

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t k = pos.index();
    if (k >= a.n) return;
    const PoolTable& t = a.t;
    const double* roi = a.rois + k * 5;
    RoiInfo r{-1, 0, 0, 0, 0};
    Footprint e{kEmptyLo, kEmptyHi, kEmptyLo, kEmptyHi};
    const int level = level_index(a.levels, k, a.count);
    const int image = batch_index(roi[0], a.N);
    if (level >= 0 && image >= 0) {
      r.level = int16_t(level);
      ROIOPS_COST_MAX(longest_walk, t.PH + t.PW);
      const double scale = a.scale[level];
      fill_axis(t.ybins + k * t.PH, pool_axis(roi[2], roi[4], scale, t.rule), t.PH, a.H[level], &e.row0, &e.row1);
      fill_axis(t.xbins + k * t.PW, pool_axis(roi[1], roi[3], scale, t.rule), t.PW, a.W[level], &e.col0, &e.col1);
      if (!e.empty()) r.image = image;
    }
    store_table(t.info + k, r);
    store_table(t.extent + k, e);
    store_table(t.keys + k, r.image >= 0 ? int64_t(r.level) * a.N + r.image : int64_t(a.count) * a.N);
  }
};

// Forward (one thread per V channels of an output bin; V > 1 only for channels_last
// maps and output, loaded and stored packed): the mean over the bin's pixels, or the
// first maximum in row-major order (NaN first) and its pixel index. Also the avg-mode
// JVP.
template <typename scalar_t, typename acc_t, typename I, Mode M, int V>
struct PoolForward {
  using Args = BinArgs<scalar_t, I, PoolTable>;
  static constexpr const char* kName = "pool_forward";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Bin b = bin_of(i, a.out_channels() / V, a.t.PH, a.t.PW, a.channels_fast);
    const int64_t c0 = b.c * V;
    const RoiInfo r = load_table(a.t.info + b.k);
    const Span ys = a.t.rows(b.k, b.ph);
    const Span xs = a.t.cols(b.k, b.pw);
    acc_t value[V];
    int32_t arg[V];
    for (int c = 0; c < V; ++c) value[c] = 0, arg[c] = -1;
    if (r.image >= 0 && ys.lo < ys.hi && xs.lo < xs.hi) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      const scalar_t* src = bin_plane(m, a.cm, r.image, c0, b.ph * a.t.PW + b.pw);
      const I cs = channel_stride(m, a.cm);
      const int64_t count = int64_t(ys.hi - ys.lo) * (xs.hi - xs.lo);
      ROIOPS_COST(samples, (count * channel_accesses<V, scalar_t>(cs)));
      if (M == Mode::Avg) {
        double total[V] = {};  // runs of kSumRun pixels, as on the CPU
        int64_t in_run = 0;
        for (int h = ys.lo; h < ys.hi; ++h)
          for (int w = xs.lo; w < xs.hi; ++w) {
            const Packed<scalar_t, V> v = load_channels<V>(src + I(h) * m.s2 + I(w) * m.s3, cs);
            for (int c = 0; c < V; ++c) value[c] += acc_t(v.v[c]);
            if (count > kSumRun && ++in_run == kSumRun) {
              for (int c = 0; c < V; ++c) total[c] += double(value[c]), value[c] = 0;
              in_run = 0;
            }
          }
        for (int c = 0; c < V; ++c)
          value[c] = count <= kSumRun ? value[c] / acc_t(count)
                                      : acc_t((total[c] + double(value[c])) / double(count));
      } else {
        bool first = true;
        for (int h = ys.lo; h < ys.hi; ++h)
          for (int w = xs.lo; w < xs.hi; ++w) {
            const Packed<scalar_t, V> v = load_channels<V>(src + I(h) * m.s2 + I(w) * m.s3, cs);
            const int32_t pixel = int32_t(int64_t(h) * m.W + w);
            for (int c = 0; c < V; ++c) {
              const acc_t x = acc_t(v.v[c]);
              if (first || x > value[c] || (x != x && value[c] == value[c])) {
                value[c] = x;
                arg[c] = pixel;
              }
            }
            first = false;
          }
      }
    }
    Packed<scalar_t, V> out;
    for (int c = 0; c < V; ++c) out.v[c] = scalar_t(value[c]);
    store_channels<V>(&a.out.at(b.k, c0, b.ph, b.pw), a.out.s1, out);
    if (M == Mode::Max && a.argmax.data)
      for (int c = 0; c < V; ++c) store_table(&a.argmax.at(b.k, c0 + c, b.ph, b.pw), arg[c]);
  }
};

// Whether pixel index p = h * W + w lies in bin (ph, pw) of RoI k.
C10_HOST_DEVICE inline bool pool_contains(const PoolTable& t, int64_t k, int ph, int pw,
                                          int32_t p, int W) {
  const Span ys = t.rows(k, ph);
  const Span xs = t.cols(k, pw);
  if (p < 0 || W <= 0 || ys.lo >= ys.hi || xs.lo >= xs.hi) return false;
  const int h = p / W, w = p % W;
  return h >= ys.lo && h < ys.hi && w >= xs.lo && w < xs.hi;
}

// Max-mode JVP (one thread per output element): the tangent at the argmax pixel; 0
// when the argmax is not a pixel of the bin.
template <typename scalar_t, typename I>
struct PoolGather {
  using Args = BinArgs<scalar_t, I, PoolTable>;
  static constexpr const char* kName = "pool_jvp";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Bin b = bin_of(i, a.out_channels(), a.t.PH, a.t.PW, a.channels_fast);
    const RoiInfo r = load_table(a.t.info + b.k);
    const int32_t p = load_packed<1>(&a.argmax.at(b.k, b.c, b.ph, b.pw)).v[0];
    Packed<scalar_t, 1> value{{scalar_t(0)}};
    if (r.image >= 0) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      if (pool_contains(a.t, b.k, b.ph, b.pw, p, m.W))
        value = load_packed<1>(bin_plane(m, a.cm, r.image, b.c, b.ph * a.t.PW + b.pw) + I(p / m.W) * m.s2 +
                               I(p % m.W) * m.s3);
    }
    store_packed<1>(&a.out.at(b.k, b.c, b.ph, b.pw), value);
  }
};

// Calls f(p, span) for every roi_pool bin whose span [lo, hi) holds one of the pixel
// indices [x0, x1], stopping at the first bin that starts beyond them.
template <typename F>
C10_HOST_DEVICE inline void for_each_pool_bin_holding(const Span* spans, int pooled, int x0, int x1, F&& f) {
  for (int p = 0; p < pooled; ++p) {
    const Span s = load_table(spans + p);
    if (s.lo > x1) break;
    if (x0 < s.hi) f(p, s);
  }
}

// Input gradient (one thread per V channels of a strip of kPixels pixels of a row,
// as SampledBackwardInput): the RoIs listed for the strip's tile in increasing order,
// every bin holding one of its pixels (each bin's gradient and argmax loaded once for
// the strip), one write per pixel.
template <typename scalar_t, typename acc_t, typename I, Mode M, int V>
struct PoolBackwardInput {
  using Args = PixelArgs<scalar_t, I, PoolTable>;
  static constexpr const char* kName = "pool_backward_input";
  static constexpr int kPixels = kStripPixels;

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Pixel p = pixel_of<kPixels>(i, a.grad_in, a.grad_in.C / V, a.level_start, a.channels_fast);
    const PixelChannels pc = pixel_channels<V>(p, a.cm);
    const int64_t c0 = pc.c0;
    const PoolTable& t = a.t;
    const MapView<scalar_t, I>& gi = a.grad_in.level[p.level];
    const int w1 = p.w + p.width - 1;
    const int32_t first = int32_t(int64_t(p.h) * gi.W + p.w);  // the strip's pixels are first + q
    acc_t acc[kPixels][V] = {};
    for_each_roi_reading(a, p, [&](int64_t k, const RoiInfo&) {
      for_each_pool_bin_holding(t.ybins + k * t.PH, t.PH, p.h, p.h, [&](int ph, const Span& ys) {
        for_each_pool_bin_holding(t.xbins + k * t.PW, t.PW, p.w, w1, [&](int pw, const Span& xs) {
          if (a.cm.per_bin != 0 && ph * t.PW + pw != pc.bin) return;  // position-sensitive: the thread's bin only
          const Packed<scalar_t, V> g = load_channels<V>(&a.grad.at(I(k), I(c0), I(ph), I(pw)), a.grad.s1);
          if (M == Mode::Avg) {
            const acc_t count = acc_t(int64_t(ys.hi - ys.lo) * (xs.hi - xs.lo));
            ROIOPS_UNROLL
            for (int q = 0; q < kPixels; ++q)
              if (p.w + q >= xs.lo && p.w + q < xs.hi)
                for (int c = 0; c < V; ++c) acc[q][c] += acc_t(g.v[c]) / count;
          } else {
            const Packed<int32_t, V> s = load_channels<V>(&a.argmax.at(I(k), I(c0), I(ph), I(pw)), a.argmax.s1);
            // A select per pixel, not acc[s - first]: an index known only at run time
            // would put the accumulators in local memory on a GPU.
            for (int c = 0; c < V; ++c) {
              ROIOPS_UNROLL
              for (int q = 0; q < kPixels; ++q) acc[q][c] += s.v[c] == first + q ? acc_t(g.v[c]) : acc_t(0);
            }
          }
        });
      });
    });
    store_strip<kPixels, V>(gi, a.cm, p, pc, acc);
  }
};

}  // namespace roiops::gpu
