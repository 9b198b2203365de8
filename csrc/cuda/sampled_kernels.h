// The thread bodies of the sampled ops (roi_align, roi_warp) on the GPU; see
// kernel_common.h for how they are launched and emulated. The arithmetic follows
// the CPU kernels (csrc/cpu/sampled_roi_cpu.h) step by step: the same float64
// geometry (roi_geometry.h), taps, accumulation order and float64 long sums.
#pragma once

#include "kernel_common.h"

namespace roiops::gpu {

struct SampledGeometry {
  int sampling_ratio;  // 0 = adaptive
  bool aligned, quantize;
};

// A sample's taps along one axis (AxisTaps) as the tables store them: 16 bytes for
// float weights, aligned so that one vector load reads the record. AxisTaps' flags
// are folded into the indices: lo = -1 for a sample off the map (it reads 0), hi
// bit-complemented where the coordinate was clamped (moves = 0).
template <typename acc_t>
struct alignas(sizeof(acc_t) == 4 ? 16 : 8) Tap {
  int lo, hi_bits;
  acc_t w_lo, w_hi;
  C10_HOST_DEVICE bool valid() const { return lo >= 0; }
  C10_HOST_DEVICE int hi() const { return hi_bits < 0 ? ~hi_bits : hi_bits; }
  C10_HOST_DEVICE acc_t moves() const { return hi_bits < 0 ? acc_t(0) : acc_t(1); }
};

template <typename acc_t>
C10_HOST_DEVICE inline Tap<acc_t> pack_tap(const AxisTaps<acc_t>& t) {
  if (!t.valid) return Tap<acc_t>{-1, 0, acc_t(0), acc_t(0)};
  return Tap<acc_t>{t.lo, t.moves != acc_t(0) ? t.hi : ~t.hi, t.w_lo, t.w_hi};
}

// A RoI's n samples along one axis, in float: sample j = p * grid + i of the axis (bin
// p, sample i) sits near first + j / inv_step (inv_step = 0: every sample at first).
// Only for finding the samples that can read a pixel (sample_span); the taps
// themselves come from the float64 geometry. slack is the RoI's part of the rounding
// margin, so that finding them takes no division.
struct alignas(16) AxisGrid {
  float first, inv_step, slack;
  int n;
};
struct SampleGrid {
  AxisGrid y, x;
};

// The samples j in [0, n) of an axis whose taps can touch a pixel index in [x0, x1],
// as [*lo, *hi]; false when there are none. A bilinear or nearest tap reads only
// pixels within 1 of the sample's coordinate (a coordinate clamped at the border also
// lies within 1 of the border pixel), so the range is that of coordinates in
// [x0 - 1, x1 + 1], widened by 2^-16 of the magnitudes involved, far more than float
// rounding; the exact taps then decide which samples read which pixel.
C10_HOST_DEVICE inline bool sample_span(const AxisGrid& g, int x0, int x1, int* lo, int* hi) {
  const float f0 = float(x0), f1 = float(x1);
  const float margin = g.slack + (::fabsf(f0) + ::fabsf(f1)) * (1.0f / 65536.0f);
  const float a = f0 - 1.0f - margin - g.first, b = f1 + 1.0f + margin - g.first;
  const int n = g.n;
  float jl, jh;
  if (g.inv_step > 0.0f) {
    jl = a * g.inv_step, jh = b * g.inv_step;
  } else if (g.inv_step < 0.0f) {
    jl = b * g.inv_step, jh = a * g.inv_step;
  } else {
    jl = a <= 0.0f && b >= 0.0f ? 0.0f : float(n);  // every sample at `first`, or none near
    jh = float(n - 1);
  }
  if (!(jl <= float(n - 1) && jh >= 0.0f)) return false;
  *lo = jl <= 0.0f ? 0 : int(::floorf(jl));
  *hi = jh >= float(n - 1) ? n - 1 : int(::ceilf(jh));
  return *lo <= *hi;
}

// The AxisGrid of n samples from `first`, `step` apart (float64), or false when it
// does not fit float (then every sample is a candidate: RoiInfo::kNoGrid).
C10_HOST_DEVICE inline bool axis_grid(double first, double step, int n, AxisGrid* g) {
  const double extent = ::fabs(first) + ::fabs(step) * n;
  const double inv = step != 0.0 ? 1.0 / step : 0.0;
  if (!(extent < 1e30 && ::fabs(inv) < 1e30)) return false;
  *g = AxisGrid{float(first), float(inv), float((extent + 1.0) / 65536.0), n};
  return true;
}

// Which bins of one axis of a RoI read one pixel index in the avg input gradient, and
// with what weight there (the bin's tap weights summed in sample order): bins first()
// .. first() + count() - 1, weights w[0 ..). One 16-byte load for float weights (two
// for double). Bins of at least a pixel leave at most kSlots per index; an index read
// by more (or a RoI without a SampleGrid) is kMany, and the thread then finds the
// samples itself.
template <typename acc_t>
struct alignas(16) AxisReads {
  static constexpr int kSlots = 3;
  static constexpr int kMany = -1;
  int span;  // first * 4 + count, or kMany
  acc_t w[kSlots];
  C10_HOST_DEVICE bool many() const { return span == kMany; }
  C10_HOST_DEVICE int first() const { return span >> 2; }
  C10_HOST_DEVICE int count() const { return span & 3; }
  C10_HOST_DEVICE int last() const { return first() + count() - 1; }
  // The weight of bin u (0 outside the record), without indexing w at run time.
  C10_HOST_DEVICE acc_t at(int u) const {
    const int d = u - first();
    return d < 0 || d >= count() ? acc_t(0) : d == 0 ? w[0] : d == 1 ? w[1] : w[2];
  }
};

// Every RoI's sample taps, computed once per launch in float64 and rounded to acc_t:
// entry (k, p, i) of ys / xs is sample i of bin row / column p of RoI k, with `stride`
// entries per bin (the explicit sampling_ratio, or kMaxAdaptiveGrid for adaptive
// grids).
template <typename acc_t>
struct SampledTable {
  RoiInfo* info;      // [K]
  Footprint* extent;  // [K]
  SampleGrid* grid;   // [K]
  Tap<acc_t>* ys;     // [K, PH, stride]
  Tap<acc_t>* xs;     // [K, PW, stride]
  int64_t* keys;      // [K]: the RoI's group (RoiGroups)
  int stride;
  int PH, PW;
  SampledGeometry geo;
  // Avg input gradient only (BuildAxisReads; null otherwise): record (k, y) of
  // row_reads and (k, x) of col_reads at k * reads_h + y and k * reads_w + x.
  AxisReads<acc_t>* row_reads = nullptr;
  AxisReads<acc_t>* col_reads = nullptr;
  int reads_h = 0, reads_w = 0;
  C10_HOST_DEVICE const Tap<acc_t>* row_taps(int64_t k, int ph) const { return ys + (k * PH + ph) * stride; }
  C10_HOST_DEVICE const Tap<acc_t>* col_taps(int64_t k, int pw) const { return xs + (k * PW + pw) * stride; }

  // Which rows and columns of the tile at (row0, col0) RoI k's sample taps touch
  // (kernel_common.h: ListEntry).
  C10_HOST_DEVICE uint32_t tile_mask(int64_t k, const Footprint&, int row0, int col0) const {
    const RoiInfo r = load_table(info + k);
    const bool every = r.has(RoiInfo::kNoGrid);
    return gpu::tile_mask(axis_bits(ys + k * PH * stride, r.grid_h, PH, &grid[k].y, every, row0),
                          axis_bits(xs + k * PW * stride, r.grid_w, PW, &grid[k].x, every, col0));
  }
  // The bits of pixels first .. first + kTile - 1 that some sample tap of one axis
  // touches (every sample a candidate when `every`, else those sample_span finds).
  // Samples 1/1024 to 1 pixel apart touch every pixel between the first and the last
  // valid one's taps (valid samples are consecutive, and their coordinates, below
  // 2^32 in magnitude, are rounded far less than a step, so monotonic), so then only
  // those two are read.
  C10_HOST_DEVICE uint32_t axis_bits(const Tap<acc_t>* taps, int grid, int pooled, const AxisGrid* g,
                                     bool every, int first) const {
    const int n = pooled * grid;
    int j0 = 0, j1 = n - 1;
    auto tap = [&](int j) { return load_table(taps + (j / grid) * stride + j % grid); };
    if (!every) {
      const AxisGrid grid_g = load_table(g);
      if (!sample_span(grid_g, first, first + kTile - 1, &j0, &j1)) return 0u;
      if (::fabsf(grid_g.inv_step) >= 1.0f && ::fabsf(grid_g.inv_step) <= 1024.0f) {
        Tap<acc_t> a = tap(j0), b = tap(j1);
        while (!a.valid() && j0 < j1) a = tap(++j0);
        while (!b.valid() && j1 > j0) b = tap(--j1);
        if (!a.valid()) return 0u;
        const int lo = a.lo < b.lo ? a.lo : b.lo, hi = a.hi() > b.hi() ? a.hi() : b.hi();
        return span_bits(lo, hi, first);
      }
    }
    uint32_t bits = 0;
    for (int j = j0; j <= j1; ++j) {
      const Tap<acc_t> t = tap(j);
      if (t.valid()) bits |= span_bits(t.lo, t.lo, first) | span_bits(t.hi(), t.hi(), first);
    }
    return bits;
  }
};

// One thread per RoI: its RoiInfo, taps, bin extents and group key.
template <typename acc_t, Sampling S>
struct BuildSampledTable {
  using Args = TableArgs<SampledTable<acc_t>>;
  static constexpr const char* kName = "sampled_table";

  // Fills one axis of RoI k's table; returns the touched range in lo/hi.
  static C10_HOST_DEVICE void fill_axis(Tap<acc_t>* taps, double start, double bin, int pooled, int grid,
                                        int stride, int64_t size, int* lo, int* hi) {
    for (int p = 0; p < pooled; ++p)
      for (int i = 0; i < grid; ++i) {
        const AxisTaps<acc_t> t = axis_taps<S, acc_t>(sample_coord(start, bin, p, i, grid), size);
        store_table(taps + p * stride + i, pack_tap(t));
        if (t.valid) {
          *lo = t.lo < *lo ? t.lo : *lo;
          *hi = t.hi > *hi ? t.hi : *hi;
        }
      }
  }

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t k = pos.index();
    if (k >= a.n) return;
    const SampledTable<acc_t>& t = a.t;
    const double* roi = a.rois + k * 5;
    RoiInfo r{-1, 0, 0, 0, 0};
    Footprint e{kEmptyLo, kEmptyHi, kEmptyLo, kEmptyHi};
    SampleGrid sg{};
    const int level = level_index(a.levels, k, a.count);
    const int image = batch_index(roi[0], a.N);
    if (level >= 0 && image >= 0) {
      const SampledRoi g = sampled_roi(roi + 1, a.scale[level], t.PH, t.PW,
                                       t.geo.sampling_ratio, t.geo.aligned, t.geo.quantize);
      if (g.grid_h > 0 && g.grid_w > 0) {
        const double first_y = sample_coord(g.y0, g.bin_h, 0, 0, g.grid_h), step_y = g.bin_h / g.grid_h;
        const double first_x = sample_coord(g.x0, g.bin_w, 0, 0, g.grid_w), step_x = g.bin_w / g.grid_w;
        const bool no_grid = !(axis_grid(first_y, step_y, t.PH * g.grid_h, &sg.y) &&
                               axis_grid(first_x, step_x, t.PW * g.grid_w, &sg.x));
        const uint16_t flags = (g.h_clamped ? RoiInfo::kHClamped : 0) | (g.w_clamped ? RoiInfo::kWClamped : 0) |
                               (no_grid ? RoiInfo::kNoGrid : 0);
        r = RoiInfo{image, int16_t(level), flags, g.grid_h, g.grid_w};
        ROIOPS_COST_MAX(longest_walk, t.PH * g.grid_h + t.PW * g.grid_w);
        fill_axis(t.ys + k * t.PH * t.stride, g.y0, g.bin_h, t.PH, g.grid_h, t.stride, a.H[level], &e.row0,
                  &e.row1);
        fill_axis(t.xs + k * t.PW * t.stride, g.x0, g.bin_w, t.PW, g.grid_w, t.stride, a.W[level], &e.col0,
                  &e.col1);
      }
    }
    store_table(t.info + k, r);
    store_table(t.extent + k, e);
    store_table(&t.grid[k].y, sg.y);
    store_table(&t.grid[k].x, sg.x);
    store_table(t.keys + k, r.image >= 0 ? int64_t(r.level) * a.N + r.image : int64_t(a.count) * a.N);
  }
};

template <Sampling S>
constexpr int kTapsPerSample = S == Sampling::Bilinear ? 4 : 1;

// acc[0..V) += the sample's value in V channels `s1` apart (tap by tap, in the CPU
// kernels' order); nothing for a sample off the map. Counted as one sample per
// 16-byte pack (channels_last) or per channel (NCHW).
template <Sampling S, int V, typename acc_t, typename scalar_t, typename I>
C10_HOST_DEVICE inline void add_sample(acc_t* acc, const Tap<acc_t>& y, const Tap<acc_t>& x,
                                       const scalar_t* src, I s1, I s2, I s3) {
  if (!y.valid() || !x.valid()) return;
  ROIOPS_COST(samples, (channel_accesses<V, scalar_t>(s1)));
  const int rows[4] = {y.lo, y.lo, y.hi(), y.hi()};
  const int cols[4] = {x.lo, x.hi(), x.lo, x.hi()};
  const acc_t w[4] = {y.w_lo * x.w_lo, y.w_lo * x.w_hi, y.w_hi * x.w_lo, y.w_hi * x.w_hi};
  for (int j = 0; j < kTapsPerSample<S>; ++j) {
    const Packed<scalar_t, V> v = load_channels<V>(src + rows[j] * s2 + cols[j] * s3, s1);
    for (int c = 0; c < V; ++c) acc[c] += w[j] * acc_t(v.v[c]);
  }
}

// The weight with which a sample's taps along one axis read pixel index x (0 when
// they do not): a sample reads pixel (h, w) with axis_weight(y, h) * axis_weight(x, w),
// the adjoint of add_sample.
template <Sampling S, typename acc_t>
C10_HOST_DEVICE inline acc_t axis_weight(const Tap<acc_t>& t, int x) {
  if (!t.valid()) return acc_t(0);
  acc_t w = t.lo == x ? t.w_lo : acc_t(0);
  if (S == Sampling::Bilinear && t.hi() == x) w += t.w_hi;
  return w;
}

// w[q] = the summed axis weights at pixel index x + q (q < P) of samples [i0, i1] of
// one bin's taps; each tap is loaded once.
template <Sampling S, int P, typename acc_t>
C10_HOST_DEVICE inline void bin_axis_weights(const Tap<acc_t>* taps, int i0, int i1, int x, acc_t* w) {
  ROIOPS_UNROLL
  for (int q = 0; q < P; ++q) w[q] = 0;
  for (int i = i0; i <= i1; ++i) {
    const Tap<acc_t> t = load_table(taps + i);
    ROIOPS_UNROLL
    for (int q = 0; q < P; ++q) w[q] += axis_weight<S>(t, x + q);
  }
}

// The samples [*i0, *i1] of bin p (grid samples per bin) among the axis samples
// [lo, hi], numbered within the bin.
C10_HOST_DEVICE inline void bin_samples(int lo, int hi, int p, int grid, int* i0, int* i1) {
  *i0 = lo > p * grid ? lo - p * grid : 0;
  *i1 = hi < p * grid + grid - 1 ? hi - p * grid : grid - 1;
}

// The avg input gradient's AxisReads, one thread per (RoI, kTile rows) and (RoI, kTile
// columns) of the largest map: for each index of the RoI's own map, the RoI's bins with
// samples near it (sample_span) and a nonzero summed weight there, summed as the input
// gradient sums them (bin_axis_weights, in sample order), so it adds the same values
// whether it reads a record or the taps. Indices beyond the RoI's map, and RoIs that
// read nothing (never listed), get no records: no thread reads them.
template <typename acc_t, Sampling S>
struct BuildAxisReads {
  struct Args {
    SampledTable<acc_t> t;
    int H[kMaxLevels], W[kMaxLevels];
    int64_t rows;  // K * row bands: the row threads come first
    int64_t n;     // rows + K * column bands
  };
  static constexpr const char* kName = "sampled_axis_reads";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const SampledTable<acc_t>& t = a.t;
    const bool row = i < a.rows;
    const int per_roi = row ? t.reads_h : t.reads_w, bands = (per_roi + kTile - 1) / kTile;
    const int64_t j = row ? i : i - a.rows, k = j / bands;
    const RoiInfo r = load_table(t.info + k);
    if (r.image < 0) return;
    const int x0 = int(j % bands) * kTile, size = row ? a.H[r.level] : a.W[r.level];
    const int x1 = x0 + kTile < size ? x0 + kTile : size;  // the band's indices: [x0, x1)
    if (x0 >= x1) return;
    AxisReads<acc_t>* out = (row ? t.row_reads + k * t.reads_h : t.col_reads + k * t.reads_w);
    if (r.has(RoiInfo::kNoGrid)) {
      for (int x = x0; x < x1; ++x) store_table(out + x, AxisReads<acc_t>{AxisReads<acc_t>::kMany, {}});
      return;
    }
    const Footprint e = load_table(t.extent + k);
    const int lo = row ? e.row0 : e.col0, hi = row ? e.row1 : e.col1;  // the indices it reads
    AxisGrid g{};
    if (lo < x1 && hi >= x0) g = load_table(row ? &t.grid[k].y : &t.grid[k].x);
    for (int x = x0; x < x1; ++x) {
      AxisReads<acc_t> rec{0, {}};
      int s0, s1;
      if (x >= lo && x <= hi && sample_span(g, x, x, &s0, &s1))
        rec = reads_at(row ? t.ys + k * t.PH * t.stride : t.xs + k * t.PW * t.stride, t.stride,
                       row ? r.grid_h : r.grid_w, s0, s1, x);
      store_table(out + x, rec);
    }
  }

  // The record of index x, given that only samples [lo, hi] of the axis can read it.
  static C10_HOST_DEVICE AxisReads<acc_t> reads_at(const Tap<acc_t>* taps, int stride, int grid, int lo,
                                                   int hi, int x) {
    constexpr int kSlots = AxisReads<acc_t>::kSlots;
    AxisReads<acc_t> rec{0, {}};
    int first = -1, n = 0;
    for (int u = lo / grid; u <= hi / grid; ++u) {
      int i0, i1;
      acc_t w;
      bin_samples(lo, hi, u, grid, &i0, &i1);
      bin_axis_weights<S, 1>(taps + u * stride, i0, i1, x, &w);
      if (w == acc_t(0)) continue;
      if (first < 0) first = u;
      n = u - first + 1;
      if (n > kSlots || first >= (1 << 28)) return AxisReads<acc_t>{AxisReads<acc_t>::kMany, {}};
      ROIOPS_UNROLL
      for (int slot = 0; slot < kSlots; ++slot)  // no run-time index: w stays in registers
        if (slot == n - 1) rec.w[slot] = w;
    }
    if (n > 0) rec.span = first * 4 + n;
    return rec;
  }
};

// Bins of at most this many sample columns keep their column taps in registers.
constexpr int kCachedCols = 4;

// Calls f(y, x, s) for every sample of a bin, row by row (s = iy * gw + ix), and
// row_end() after each row: each row tap is read once per bin, each column tap once
// per bin when the bin has at most kCachedCols columns (else once per sample).
template <typename acc_t, typename F, typename R>
C10_HOST_DEVICE inline void for_each_sample(const Tap<acc_t>* ys, const Tap<acc_t>* xs, int gh, int gw, F&& f,
                                            R&& row_end) {
  if (gw <= kCachedCols) {
    Tap<acc_t> xt[kCachedCols];
    ROIOPS_UNROLL
    for (int j = 0; j < kCachedCols; ++j)
      if (j < gw) xt[j] = load_table(xs + j);
    for (int iy = 0; iy < gh; ++iy) {
      const Tap<acc_t> y = load_table(ys + iy);
      ROIOPS_UNROLL
      for (int j = 0; j < kCachedCols; ++j)
        if (j < gw) f(y, xt[j], iy * gw + j);
      row_end();
    }
  } else {
    for (int iy = 0; iy < gh; ++iy) {
      const Tap<acc_t> y = load_table(ys + iy);
      for (int ix = 0; ix < gw; ++ix) f(y, load_table(xs + ix), iy * gw + ix);
      row_end();
    }
  }
}

// Forward (one thread per V channels of an output bin; V > 1 only for channels_last
// maps and output, whose channels it loads and stores packed): the bin's mean, or its
// first maximum (NaN first) and that sample's index into the argmax. Also the
// avg-mode JVP.
template <typename scalar_t, typename acc_t, typename I, Mode M, Sampling S, int V>
struct SampledForward {
  using Args = BinArgs<scalar_t, I, SampledTable<acc_t>>;
  static constexpr const char* kName = "sampled_forward";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Bin b = bin_of(i, a.out_channels() / V, a.t.PH, a.t.PW, a.channels_fast);
    const int64_t c0 = b.c * V;
    const RoiInfo r = load_table(a.t.info + b.k);
    acc_t value[V];
    int32_t arg[V];
    for (int c = 0; c < V; ++c) value[c] = 0, arg[c] = -1;
    if (r.image >= 0) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      const scalar_t* src = bin_plane(m, a.cm, r.image, c0, b.ph * a.t.PW + b.pw);
      const I cs = channel_stride(m, a.cm);
      const Tap<acc_t>* ys = a.t.row_taps(b.k, b.ph);
      const Tap<acc_t>* xs = a.t.col_taps(b.k, b.pw);
      const int count = r.grid_h * r.grid_w;
      if (M == Mode::Avg) {
        // Up to kSumRun samples in one acc_t sum; beyond, one row's sum (at most
        // kMaxSamplingRatio terms) at a time into float64 totals, as on the CPU.
        const bool long_sum = count > kSumRun;
        double total[V] = {};
        for_each_sample(
            ys, xs, r.grid_h, r.grid_w,
            [&](const Tap<acc_t>& y, const Tap<acc_t>& x, int) { add_sample<S, V>(value, y, x, src, cs, m.s2, m.s3); },
            [&] {
              if (!long_sum) return;
              for (int c = 0; c < V; ++c) total[c] += double(value[c]), value[c] = 0;
            });
        for (int c = 0; c < V; ++c)
          value[c] = long_sum ? acc_t(total[c] / double(count)) : value[c] * (acc_t(1) / acc_t(count));
      } else {
        for_each_sample(
            ys, xs, r.grid_h, r.grid_w,
            [&](const Tap<acc_t>& y, const Tap<acc_t>& x, int s) {
              acc_t v[V] = {};
              add_sample<S, V>(v, y, x, src, cs, m.s2, m.s3);
              for (int c = 0; c < V; ++c)
                if (s == 0 || v[c] > value[c] || (v[c] != v[c] && value[c] == value[c])) {
                  value[c] = v[c];
                  arg[c] = s;
                }
            },
            [] {});
      }
    }
    Packed<scalar_t, V> out;
    for (int c = 0; c < V; ++c) out.v[c] = scalar_t(value[c]);
    store_channels<V>(&a.out.at(b.k, c0, b.ph, b.pw), a.out.s1, out);
    if (M == Mode::Max && a.argmax.data)
      for (int c = 0; c < V; ++c) store_table(&a.argmax.at(b.k, c0 + c, b.ph, b.pw), arg[c]);
  }
};

// Max-mode JVP (one thread per output element): the tangent at the forward's argmax
// sample; 0 for an out-of-range argmax.
template <typename scalar_t, typename acc_t, typename I, Sampling S>
struct SampledGather {
  using Args = BinArgs<scalar_t, I, SampledTable<acc_t>>;
  static constexpr const char* kName = "sampled_jvp";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Bin b = bin_of(i, a.out_channels(), a.t.PH, a.t.PW, a.channels_fast);
    const RoiInfo r = load_table(a.t.info + b.k);
    const int32_t s = load_packed<1>(&a.argmax.at(b.k, b.c, b.ph, b.pw)).v[0];
    acc_t value = 0;
    if (r.image >= 0 && s >= 0 && s < r.grid_h * r.grid_w) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      add_sample<S, 1>(&value, load_table(a.t.row_taps(b.k, b.ph) + s / r.grid_w),
                       load_table(a.t.col_taps(b.k, b.pw) + s % r.grid_w),
                       bin_plane(m, a.cm, r.image, b.c, b.ph * a.t.PW + b.pw), m.s1, m.s2, m.s3);
    }
    store_packed<1>(&a.out.at(b.k, b.c, b.ph, b.pw), Packed<scalar_t, 1>{{scalar_t(value)}});
  }
};


// Input gradient (one thread per V channels of a strip of kPixels pixels of a row,
// see kernel_common.h: Pixel, and gpu_launch.h: dispatch_channels): the thread walks
// the RoIs listed for its strip's tile (kernel_common.h: RoiLists) in increasing
// order and finds each RoI's samples near its strip (sample_span). Bilinear weights
// are separable, so a bin's samples read a pixel with (summed row weights) x (summed
// column weights): the thread adds that times the bin's gradient / count (avg), or the
// argmax sample's weight times the gradient (max), loading a bin's gradient once for
// the strip and only when some sample of it reads one of its pixels. The row weights
// are shared by the strip's pixels, the column weights computed per pixel. It writes
// its elements once. No atomics, no gradient buffer in another dtype, bitwise
// deterministic; each pixel's sum is the same whatever the strip width.
template <typename scalar_t, typename acc_t, typename I, Mode M, Sampling S, int V>
struct SampledBackwardInput {
  using Args = PixelArgs<scalar_t, I, SampledTable<acc_t>>;
  static constexpr const char* kName = "sampled_backward_input";
  static constexpr int kPixels = kStripPixels;
  // Column bins (avg) or sample columns (max) whose weights a thread keeps in
  // registers per RoI or bin.
  static constexpr int kCachedBins = 4;
  using Weights = acc_t[kPixels];  // one per pixel of the strip

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Pixel p = pixel_of<kPixels>(i, a.grad_in, a.grad_in.C / V, a.level_start, a.channels_fast);
    const PixelChannels pc = pixel_channels<V>(p, a.cm);
    const int64_t c0 = pc.c0;
    const SampledTable<acc_t>& t = a.t;
    acc_t acc[kPixels][V] = {};
    for_each_roi_reading(a, p, [&](int64_t k, const RoiInfo& r) {
      if constexpr (M == Mode::Avg)
        if (t.row_reads && add_from_reads(a, k, r, p, c0, acc)) return;
      const int gh = r.grid_h, gw = r.grid_w;
      int y0 = 0, y1 = t.PH * gh - 1, x0 = 0, x1 = t.PW * gw - 1;  // the samples near the strip
      if (!r.has(RoiInfo::kNoGrid) &&
          (!sample_span(load_table(&t.grid[k].y), p.h, p.h, &y0, &y1) ||
           !sample_span(load_table(&t.grid[k].x), p.w, p.w + p.width - 1, &x0, &x1)))
        return;
      if (a.cm.per_bin != 0) {  // position-sensitive: only the thread's bin reads its channels
        const int ph = int(pc.bin / t.PW), pw = int(pc.bin % t.PW);
        y0 = y0 > ph * gh ? y0 : ph * gh, y1 = y1 < ph * gh + gh - 1 ? y1 : ph * gh + gh - 1;
        x0 = x0 > pw * gw ? x0 : pw * gw, x1 = x1 < pw * gw + gw - 1 ? x1 : pw * gw + gw - 1;
        if (y0 > y1 || x0 > x1) return;
      }
      // The column bins' summed weights at each pixel, in registers when there are few.
      const int pw0 = x0 / gw, pw1 = x1 / gw;
      auto column_weights = [&](int pw, acc_t* w) {
        int ix0, ix1;
        bin_samples(x0, x1, pw, gw, &ix0, &ix1);
        bin_axis_weights<S, kPixels>(t.col_taps(k, pw), ix0, ix1, p.w, w);
      };
      const bool cached = pw1 - pw0 < kCachedBins;
      Weights wx[kCachedBins];
      ROIOPS_UNROLL
      for (int j = 0; j < kCachedBins; ++j)
        if (cached && pw0 + j <= pw1) column_weights(pw0 + j, wx[j]);
      for (int ph = y0 / gh; ph <= y1 / gh; ++ph) {
        int iy0, iy1;
        bin_samples(y0, y1, ph, gh, &iy0, &iy1);
        acc_t wy;
        bin_axis_weights<S, 1>(t.row_taps(k, ph), iy0, iy1, p.h, &wy);
        if (wy == acc_t(0)) continue;  // no sample of the bin row reads the row
        if (cached) {
          ROIOPS_UNROLL
          for (int j = 0; j < kCachedBins; ++j)
            if (pw0 + j <= pw1) add_bin(a, k, r, p, c0, ph, pw0 + j, iy0, iy1, x0, x1, wy, wx[j], acc);
        } else {
          for (int pw = pw0; pw <= pw1; ++pw) {
            Weights w;
            column_weights(pw, w);
            add_bin(a, k, r, p, c0, ph, pw, iy0, iy1, x0, x1, wy, w, acc);
          }
        }
      }
    });
    store_strip<kPixels, V>(a.grad_in.level[p.level], a.cm, p, pc, acc);
  }

  // Avg: acc[q] += RoI k's gradient through pixel q of the strip, from the AxisReads
  // of the strip's row and of each of its pixels' columns; false when they do not tell
  // (kMany, or more than kCachedBins column bins near the strip): then the caller
  // finds the samples itself.
  static C10_HOST_DEVICE bool add_from_reads(const Args& a, int64_t k, const RoiInfo& r, const Pixel& p,
                                             int64_t c0, acc_t (*acc)[V]) {
    const SampledTable<acc_t>& t = a.t;
    const AxisReads<acc_t> ry = load_table(t.row_reads + k * t.reads_h + p.h);
    if (ry.many()) return false;
    if (ry.count() == 0) return true;
    AxisReads<acc_t> rx[kPixels];
    int u0 = kEmptyLo, u1 = kEmptyHi;  // the column bins any pixel's record holds
    ROIOPS_UNROLL
    for (int q = 0; q < kPixels; ++q) {
      rx[q] = q < p.width ? load_table(t.col_reads + k * t.reads_w + p.w + q) : AxisReads<acc_t>{0, {}};
      if (rx[q].many()) return false;
      if (rx[q].count() == 0) continue;
      u0 = rx[q].first() < u0 ? rx[q].first() : u0;
      u1 = rx[q].last() > u1 ? rx[q].last() : u1;
    }
    if (u0 > u1) return true;
    if (u1 - u0 >= kCachedBins) return false;
    Weights wx[kCachedBins];
    ROIOPS_UNROLL
    for (int j = 0; j < kCachedBins; ++j)
      ROIOPS_UNROLL
      for (int q = 0; q < kPixels; ++q) wx[j][q] = rx[q].at(u0 + j);
    ROIOPS_UNROLL
    for (int i = 0; i < AxisReads<acc_t>::kSlots; ++i) {
      if (i >= ry.count()) break;
      if (ry.w[i] == acc_t(0)) continue;
      ROIOPS_UNROLL
      for (int j = 0; j < kCachedBins; ++j)
        if (u0 + j <= u1) add_bin(a, k, r, p, c0, ry.first() + i, u0 + j, 0, 0, 0, 0, ry.w[i], wx[j], acc);
    }
    return true;
  }

  // acc[q] += bin (ph, pw)'s gradient through pixel q of the strip, given that the
  // bin's samples in rows [iy0, iy1] read the strip's row with total weight wy (> 0)
  // and the RoI's sample columns [x0, x1] read pixel q with total weight wx[q]
  // (pixels a sample does not read get nothing, even from an infinite gradient).
  static C10_HOST_DEVICE void add_bin(const Args& a, int64_t k, const RoiInfo& r, const Pixel& p, int64_t c0,
                                      int ph, int pw, int iy0, int iy1, int x0, int x1, acc_t wy,
                                      const Weights& wx, acc_t (*acc)[V]) {
    bool any = false;
    ROIOPS_UNROLL
    for (int q = 0; q < kPixels; ++q) any = any || wx[q] != acc_t(0);
    if (!any) return;
    if (M == Mode::Avg) {
      const int count = r.grid_h * r.grid_w;
      const Packed<scalar_t, V> g = load_channels<V>(&a.grad.at(I(k), I(c0), I(ph), I(pw)), a.grad.s1);
      ROIOPS_UNROLL
      for (int q = 0; q < kPixels; ++q) {
        if (wx[q] == acc_t(0)) continue;
        const acc_t scaled = wy * wx[q] * (acc_t(1) / acc_t(count));
        for (int c = 0; c < V; ++c) acc[q][c] += scaled * acc_t(g.v[c]);
      }
      return;
    }
    // Max: only the argmax sample's weight counts (argmax entries from the forward;
    // those outside the rectangle of samples near the strip, out-of-range ones
    // included, add nothing).
    const int gw = r.grid_w;
    int ix0, ix1;
    bin_samples(x0, x1, pw, gw, &ix0, &ix1);
    const Packed<int32_t, V> s = load_channels<V>(&a.argmax.at(I(k), I(c0), I(ph), I(pw)), a.argmax.s1);
    const int s_lo = iy0 * gw + ix0, s_hi = iy1 * gw + ix1;
    bool near = false;
    for (int c = 0; c < V; ++c) near = near || (s.v[c] >= s_lo && s.v[c] <= s_hi);
    if (!near) return;
    const Packed<scalar_t, V> g = load_channels<V>(&a.grad.at(I(k), I(c0), I(ph), I(pw)), a.grad.s1);
    const Tap<acc_t>* ys = a.t.row_taps(k, ph);
    const Tap<acc_t>* xs = a.t.col_taps(k, pw);
    if (iy1 - iy0 < kCachedBins && ix1 - ix0 < kCachedBins) {
      // Few samples near the strip (always at sampling ratio <= 4): sample by sample,
      // its weights at the pixels, added to the channels whose argmax it is (a
      // compare per channel, no lookup indexed by the argmax).
      Weights wc[kCachedBins];
      ROIOPS_UNROLL
      for (int j = 0; j < kCachedBins; ++j)
        if (ix0 + j <= ix1) bin_axis_weights<S, kPixels>(xs, ix0 + j, ix0 + j, p.w, wc[j]);
      for (int iy = iy0; iy <= iy1; ++iy) {
        const acc_t wy = axis_weight<S>(load_table(ys + iy), p.h);
        if (wy == acc_t(0)) continue;
        ROIOPS_UNROLL
        for (int j = 0; j < kCachedBins; ++j) {
          if (ix0 + j > ix1) break;
          const int32_t sample = iy * gw + ix0 + j;
          ROIOPS_UNROLL
          for (int q = 0; q < kPixels; ++q) {
            const acc_t ws = wc[j][q] * wy;
            if (ws == acc_t(0)) continue;
            for (int c = 0; c < V; ++c) acc[q][c] += s.v[c] == sample ? ws * acc_t(g.v[c]) : acc_t(0);
          }
        }
      }
      return;
    }
    // Many samples near the strip (adaptive or large grids): channel by channel, its
    // argmax sample's weights from the table.
    for (int c = 0; c < V; ++c) {
      const int32_t sc = s.v[c];
      if (sc < s_lo || sc > s_hi || sc % gw < ix0 || sc % gw > ix1) continue;
      const acc_t wy = axis_weight<S>(load_table(ys + sc / gw), p.h);
      Weights w;
      bin_axis_weights<S, kPixels>(xs, sc % gw, sc % gw, p.w, w);
      for (int q = 0; q < kPixels; ++q) {
        const acc_t ws = w[q] * wy;
        if (ws != acc_t(0)) acc[q][c] += ws * acc_t(g.v[c]);
      }
    }
  }
};

// Box gradient, step 1 (one thread per V channels of a RoI, as the forward's
// threads take them): those channels' contribution to d(loss)/d(y1, y2, x1, x2) of
// the scaled box, through the bilinear sample positions (roi_geometry.h:
// sample_fraction), into partial[k, group, 0..3] (float64). Per sample the channels'
// derivatives are summed in acc_t, so float64 work (the sample's position fractions
// and the four sums) is per sample, not per channel.
template <typename scalar_t, typename acc_t, typename I, Mode M, int V>
struct SampledBoxGradPartial {
  struct Args {
    Pyramid<const scalar_t, I> in;
    BinView<const scalar_t, I> grad;
    BinView<const int32_t, I> argmax;
    SampledTable<acc_t> t;
    ChannelMap cm;
    double* partial;  // [K, output channels / V, 4]
    int64_t n;        // K * C / V
  };
  static constexpr const char* kName = "sampled_backward_rois";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const int64_t groups = a.cm.output_channels(a.in.C) / V, k = i / groups, c0 = (i % groups) * V;
    const RoiInfo r = load_table(a.t.info + k);
    double d[4] = {0, 0, 0, 0};
    if (r.image >= 0) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      const int count = r.grid_h * r.grid_w;
      for (int ph = 0; ph < a.t.PH; ++ph) {
        for (int pw = 0; pw < a.t.PW; ++pw) {
          const scalar_t* src = bin_plane(m, a.cm, r.image, c0, ph * a.t.PW + pw);
          const Packed<scalar_t, V> gv = load_channels<V>(&a.grad.at(I(k), I(c0), I(ph), I(pw)), a.grad.s1);
          acc_t g[V];
          if (M == Mode::Avg) {
            for (int c = 0; c < V; ++c) g[c] = acc_t(gv.v[c]) / acc_t(count);
            for (int s = 0; s < count; ++s) through_sample(a, k, r, m, src, ph, pw, s, g, d);
          } else {
            // Each channel through its own argmax sample (the others' gradients zeroed).
            const Packed<int32_t, V> sv = load_channels<V>(&a.argmax.at(I(k), I(c0), I(ph), I(pw)), a.argmax.s1);
            for (int c = 0; c < V; ++c) {
              const int32_t s = sv.v[c];
              if (s < 0 || s >= count) continue;
              bool seen = false;  // a sample already taken for an earlier channel
              for (int e = 0; e < c; ++e) seen = seen || sv.v[e] == s;
              if (seen) continue;
              for (int e = 0; e < V; ++e) g[e] = sv.v[e] == s ? acc_t(gv.v[e]) : acc_t(0);
              through_sample(a, k, r, m, src, ph, pw, s, g, d);
            }
          }
        }
      }
    }
    for (int j = 0; j < 4; ++j) store_table(a.partial + i * 4 + j, d[j]);
  }

  // d[] += the gradients g[0..V) of sample s of bin (ph, pw) through its position.
  static C10_HOST_DEVICE void through_sample(const Args& a, int64_t k, const RoiInfo& r,
                                             const MapView<const scalar_t, I>& m, const scalar_t* src, int ph,
                                             int pw, int s, const acc_t* g, double* d) {
    const int iy = s / r.grid_w, ix = s % r.grid_w;
    const Tap<acc_t> y = load_table(a.t.row_taps(k, ph) + iy);
    const Tap<acc_t> x = load_table(a.t.col_taps(k, pw) + ix);
    if (!y.valid() || !x.valid()) return;
    const I cs = channel_stride(m, a.cm);
    ROIOPS_COST(samples, (channel_accesses<V, scalar_t>(cs)));
    const int yh = y.hi(), xh = x.hi();
    const Packed<scalar_t, V> v1 = load_channels<V>(src + y.lo * m.s2 + x.lo * m.s3, cs);
    const Packed<scalar_t, V> v2 = load_channels<V>(src + y.lo * m.s2 + xh * m.s3, cs);
    const Packed<scalar_t, V> v3 = load_channels<V>(src + yh * m.s2 + x.lo * m.s3, cs);
    const Packed<scalar_t, V> v4 = load_channels<V>(src + yh * m.s2 + xh * m.s3, cs);
    // d(value)/d(sample y), d(value)/d(sample x), times the incoming gradients, summed
    // over the channels
    acc_t sy = 0, sx = 0;
    for (int c = 0; c < V; ++c) {
      const acc_t a1 = acc_t(v1.v[c]), a2 = acc_t(v2.v[c]), a3 = acc_t(v3.v[c]), a4 = acc_t(v4.v[c]);
      sy += g[c] * (x.w_lo * (a3 - a1) + x.w_hi * (a4 - a2));
      sx += g[c] * (y.w_lo * (a2 - a1) + y.w_hi * (a4 - a3));
    }
    sy *= y.moves();
    sx *= x.moves();
    const double fy = sample_fraction(ph, iy, r.grid_h, a.t.PH);
    const double fx = sample_fraction(pw, ix, r.grid_w, a.t.PW);
    const bool h_clamped = r.has(RoiInfo::kHClamped), w_clamped = r.has(RoiInfo::kWClamped);
    d[0] += h_clamped ? double(sy) : sy * (1.0 - fy);
    d[1] += h_clamped ? 0.0 : sy * fy;
    d[2] += w_clamped ? double(sx) : sx * (1.0 - fx);
    d[3] += w_clamped ? 0.0 : sx * fx;
  }
};

// Box gradient, step 2 (one thread per RoI): the channel groups' partial sums added
// in channel order, scaled back to image coordinates, into grad_rois[k] = (0, x1, y1,
// x2, y2) (float64).
struct SampledBoxGradReduce {
  struct Args {
    const double* partial;  // [K, groups, 4]
    const RoiInfo* info;
    double scale[kMaxLevels];
    int64_t groups;
    double* grad_rois;  // [K, 5]
    int64_t n;          // K
  };
  static constexpr const char* kName = "sampled_backward_rois_reduce";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t k = pos.index();
    if (k >= a.n) return;
    double d[4] = {0, 0, 0, 0};
    for (int64_t c = 0; c < a.groups; ++c)
      for (int j = 0; j < 4; ++j) d[j] += a.partial[(k * a.groups + c) * 4 + j];
    const double scale = a.info[k].image >= 0 ? a.scale[a.info[k].level] : 0.0;
    double* row = a.grad_rois + k * 5;
    row[0] = 0;
    row[1] = d[2] * scale;  // x1
    row[2] = d[0] * scale;  // y1
    row[3] = d[3] * scale;  // x2
    row[4] = d[1] * scale;  // y2
  }
};

}  // namespace roiops::gpu
