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

// A RoI's samples along each axis, in float: sample j = p * grid + i of the axis
// (bin p, sample i) sits near first + j * step. Only for finding the samples that can
// read a pixel (sample_range); the taps themselves come from the float64 geometry.
struct alignas(16) SampleGrid {
  float first_y, step_y, first_x, step_x;
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
  C10_HOST_DEVICE const Tap<acc_t>* row_taps(int64_t k, int ph) const { return ys + (k * PH + ph) * stride; }
  C10_HOST_DEVICE const Tap<acc_t>* col_taps(int64_t k, int pw) const { return xs + (k * PW + pw) * stride; }
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
    SampleGrid sg{0.f, 0.f, 0.f, 0.f};
    const int level = level_index(a.levels, k, a.count);
    const int image = batch_index(roi[0], a.N);
    if (level >= 0 && image >= 0) {
      const SampledRoi g = sampled_roi(roi + 1, a.scale[level], t.PH, t.PW,
                                       t.geo.sampling_ratio, t.geo.aligned, t.geo.quantize);
      if (g.grid_h > 0 && g.grid_w > 0) {
        const double first_y = sample_coord(g.y0, g.bin_h, 0, 0, g.grid_h), step_y = g.bin_h / g.grid_h;
        const double first_x = sample_coord(g.x0, g.bin_w, 0, 0, g.grid_w), step_x = g.bin_w / g.grid_w;
        const bool no_grid = !(::fabs(first_y) + ::fabs(step_y) * t.PH * g.grid_h < 1e30 &&
                               ::fabs(first_x) + ::fabs(step_x) * t.PW * g.grid_w < 1e30);
        const uint16_t flags = (g.h_clamped ? RoiInfo::kHClamped : 0) | (g.w_clamped ? RoiInfo::kWClamped : 0) |
                               (no_grid ? RoiInfo::kNoGrid : 0);
        r = RoiInfo{image, int16_t(level), flags, g.grid_h, g.grid_w};
        if (!no_grid) sg = SampleGrid{float(first_y), float(step_y), float(first_x), float(step_x)};
        fill_axis(t.ys + k * t.PH * t.stride, g.y0, g.bin_h, t.PH, g.grid_h, t.stride, a.H[level], &e.row0,
                  &e.row1);
        fill_axis(t.xs + k * t.PW * t.stride, g.x0, g.bin_w, t.PW, g.grid_w, t.stride, a.W[level], &e.col0,
                  &e.col1);
      }
    }
    store_table(t.info + k, r);
    store_table(t.extent + k, e);
    store_table(t.grid + k, sg);
    store_table(t.keys + k, r.image >= 0 ? int64_t(r.level) * a.N + r.image : int64_t(a.count) * a.N);
  }
};

template <Sampling S>
constexpr int kTapsPerSample = S == Sampling::Bilinear ? 4 : 1;

// acc[0..V) += the sample's value in V consecutive channels (tap by tap, in the CPU
// kernels' order); nothing for a sample off the map.
template <Sampling S, int V, typename acc_t, typename scalar_t, typename I>
C10_HOST_DEVICE inline void add_sample(acc_t* acc, const Tap<acc_t>& y, const Tap<acc_t>& x,
                                       const scalar_t* src, I s2, I s3) {
  if (!y.valid() || !x.valid()) return;
  ROIOPS_COST(samples, 1);
  const int rows[4] = {y.lo, y.lo, y.hi(), y.hi()};
  const int cols[4] = {x.lo, x.hi(), x.lo, x.hi()};
  const acc_t w[4] = {y.w_lo * x.w_lo, y.w_lo * x.w_hi, y.w_hi * x.w_lo, y.w_hi * x.w_hi};
  for (int j = 0; j < kTapsPerSample<S>; ++j) {
    const Packed<scalar_t, V> v = load_packed<V>(src + rows[j] * s2 + cols[j] * s3);
    for (int c = 0; c < V; ++c) acc[c] += w[j] * acc_t(v.v[c]);
  }
}

// The weight with which a sample reads pixel (h, w): the sum of its taps there
// (0 when it does not read it). The adjoint of add_sample.
template <Sampling S, typename acc_t>
C10_HOST_DEVICE inline acc_t tap_weight(const Tap<acc_t>& y, const Tap<acc_t>& x, int h, int w) {
  acc_t sum = 0;
  if (!y.valid() || !x.valid()) return sum;
  if (y.lo == h && x.lo == w) sum += y.w_lo * x.w_lo;
  if (S == Sampling::Bilinear) {
    const int yh = y.hi(), xh = x.hi();
    if (y.lo == h && xh == w) sum += y.w_lo * x.w_hi;
    if (yh == h && x.lo == w) sum += y.w_hi * x.w_lo;
    if (yh == h && xh == w) sum += y.w_hi * x.w_hi;
  }
  return sum;
}

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
    const Bin b = bin_of(i, a.in.C / V, a.t.PH, a.t.PW, a.channels_fast);
    const int64_t c0 = b.c * V;
    const RoiInfo r = load_table(a.t.info + b.k);
    acc_t value[V];
    int32_t arg[V];
    for (int c = 0; c < V; ++c) value[c] = 0, arg[c] = -1;
    if (r.image >= 0) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      const scalar_t* src = m.plane(r.image, I(c0));
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
            [&](const Tap<acc_t>& y, const Tap<acc_t>& x, int) { add_sample<S, V>(value, y, x, src, m.s2, m.s3); },
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
              add_sample<S, V>(v, y, x, src, m.s2, m.s3);
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
    store_packed<V>(&a.out.at(b.k, c0, b.ph, b.pw), out);
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
    const Bin b = bin_of(i, a.in.C, a.t.PH, a.t.PW, a.channels_fast);
    const RoiInfo r = load_table(a.t.info + b.k);
    const int32_t s = load_packed<1>(&a.argmax.at(b.k, b.c, b.ph, b.pw)).v[0];
    acc_t value = 0;
    if (r.image >= 0 && s >= 0 && s < r.grid_h * r.grid_w) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      add_sample<S, 1>(&value, load_table(a.t.row_taps(b.k, b.ph) + s / r.grid_w),
                       load_table(a.t.col_taps(b.k, b.pw) + s % r.grid_w), m.plane(r.image, I(b.c)), m.s2, m.s3);
    }
    store_packed<1>(&a.out.at(b.k, b.c, b.ph, b.pw), Packed<scalar_t, 1>{{scalar_t(value)}});
  }
};

// The samples j in [0, n) of an axis (SampleGrid: coordinate first + j * step) whose
// taps can touch pixel index x, as [*lo, *hi]; false when there are none. A bilinear
// or nearest tap reads only pixels within 1 of the sample's coordinate (a coordinate
// clamped at the border also lies within 1 of the border pixel), so the range is that
// of coordinates in [x - 1, x + 1], widened for float rounding; the exact taps then
// decide which samples read x.
C10_HOST_DEVICE inline bool sample_range(float first, float step, int n, int x, int* lo, int* hi) {
  const float fx = float(x);
  const float margin = 1.0f / 65536.0f * (::fabsf(first) + ::fabsf(step) * float(n) + ::fabsf(fx) + 1.0f);
  const float a = fx - 1.0f - margin - first, b = fx + 1.0f + margin - first;
  float jl, jh;
  if (step > 0.0f) {
    jl = a / step, jh = b / step;
  } else if (step < 0.0f) {
    jl = b / step, jh = a / step;
  } else {
    jl = a <= 0.0f && b >= 0.0f ? 0.0f : float(n);  // every sample at `first`, or none near x
    jh = float(n - 1);
  }
  if (!(jl <= float(n - 1) && jh >= 0.0f)) return false;
  *lo = jl <= 0.0f ? 0 : int(::floorf(jl));
  *hi = jh >= float(n - 1) ? n - 1 : int(::ceilf(jh));
  return *lo <= *hi;
}

// Input gradient (one thread per V channels of an input pixel of every level: packed
// when every level, grad and argmax are channels_last, else from V planes, see
// gpu_backend.h: kPlaneGroup): the thread walks the
// RoIs listed for its pixel's tile (kernel_common.h: RoiLists) in increasing order,
// finds each RoI's samples near its pixel (sample_range) and sums, in acc_t, the
// gradient of every sample that reads its pixel, bin by bin; it writes its elements
// once. No atomics, no gradient buffer in another dtype, bitwise deterministic.
template <typename scalar_t, typename acc_t, typename I, Mode M, Sampling S, int V>
struct SampledBackwardInput {
  using Args = PixelArgs<scalar_t, I, SampledTable<acc_t>>;
  static constexpr const char* kName = "sampled_backward_input";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Pixel p = pixel_of(i, a.grad_in, a.grad_in.C / V, a.level_start, a.channels_fast);
    const int64_t c0 = p.c * V;
    const SampledTable<acc_t>& t = a.t;
    acc_t acc[V] = {};
    for_each_roi_reading(a, p, [&](int64_t k, const RoiInfo& r) {
      const int gh = r.grid_h, gw = r.grid_w, count = gh * gw;
      const SampleGrid sg = load_table(t.grid + k);
      int y0 = 0, y1 = t.PH * gh - 1, x0 = 0, x1 = t.PW * gw - 1;  // the samples near the pixel
      if (!r.has(RoiInfo::kNoGrid) && (!sample_range(sg.first_y, sg.step_y, t.PH * gh, p.h, &y0, &y1) ||
                                       !sample_range(sg.first_x, sg.step_x, t.PW * gw, p.w, &x0, &x1)))
        return;
      for (int ph = y0 / gh; ph <= y1 / gh; ++ph) {
        const int iy0 = y0 > ph * gh ? y0 - ph * gh : 0, iy1 = y1 < ph * gh + gh - 1 ? y1 - ph * gh : gh - 1;
        const Tap<acc_t>* ys = t.row_taps(k, ph);
        for (int pw = x0 / gw; pw <= x1 / gw; ++pw) {
          const int ix0 = x0 > pw * gw ? x0 - pw * gw : 0, ix1 = x1 < pw * gw + gw - 1 ? x1 - pw * gw : gw - 1;
          const Tap<acc_t>* xs = t.col_taps(k, pw);
          const Packed<scalar_t, V> g = load_channels<V>(&a.grad.at(I(k), I(c0), I(ph), I(pw)), a.grad.s1);
          if (M == Mode::Avg) {
            // Every sample reading the pixel adds tap weight x gradient / count, as the
            // CPU's scatter does (pixels a sample does not read get nothing, even from
            // an infinite gradient).
            const acc_t inv = acc_t(1) / acc_t(count);
            for (int iy = iy0; iy <= iy1; ++iy) {
              const Tap<acc_t> y = load_table(ys + iy);
              if (!y.valid() || (y.lo != p.h && y.hi() != p.h)) continue;
              for (int ix = ix0; ix <= ix1; ++ix) {
                const acc_t w = tap_weight<S>(y, load_table(xs + ix), p.h, p.w);
                if (w != acc_t(0))
                  for (int c = 0; c < V; ++c) acc[c] += w * (acc_t(g.v[c]) * inv);
              }
            }
          } else {
            // Argmax entries come from the forward; out-of-range ones, and samples
            // away from the pixel, add nothing.
            const Packed<int32_t, V> s = load_channels<V>(&a.argmax.at(I(k), I(c0), I(ph), I(pw)), a.argmax.s1);
            for (int c = 0; c < V; ++c) {
              if (s.v[c] < 0 || s.v[c] >= count) continue;
              const int iy = s.v[c] / gw, ix = s.v[c] % gw;
              if (iy < iy0 || iy > iy1 || ix < ix0 || ix > ix1) continue;
              const acc_t w = tap_weight<S>(load_table(ys + iy), load_table(xs + ix), p.h, p.w);
              if (w != acc_t(0)) acc[c] += w * acc_t(g.v[c]);
            }
          }
        }
      }
    });
    const MapView<scalar_t, I>& gi = a.grad_in.level[p.level];
    Packed<scalar_t, V> out;
    for (int c = 0; c < V; ++c) out.v[c] = scalar_t(acc[c]);
    store_channels<V>(gi.plane(I(p.n), I(c0)) + I(p.h) * gi.s2 + I(p.w) * gi.s3, gi.s1, out);
  }
};

// Box gradient, step 1 (one thread per (RoI, channel)): that channel's contribution
// to d(loss)/d(y1, y2, x1, x2) of the scaled box, through the bilinear sample
// positions (roi_geometry.h: sample_fraction), into partial[k, c, 0..3] (float64).
template <typename scalar_t, typename acc_t, typename I, Mode M>
struct SampledBoxGradPartial {
  struct Args {
    Pyramid<const scalar_t, I> in;
    BinView<const scalar_t, I> grad;
    BinView<const int32_t, I> argmax;
    SampledTable<acc_t> t;
    double* partial;  // [K, C, 4]
    int64_t n;        // K * C
  };
  static constexpr const char* kName = "sampled_backward_rois";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const int64_t k = i / a.in.C, c = i % a.in.C;
    const RoiInfo r = load_table(a.t.info + k);
    double d[4] = {0, 0, 0, 0};
    if (r.image >= 0) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      const scalar_t* src = m.plane(r.image, I(c));
      const int count = r.grid_h * r.grid_w;
      for (int ph = 0; ph < a.t.PH; ++ph) {
        for (int pw = 0; pw < a.t.PW; ++pw) {
          acc_t g = acc_t(load_packed<1>(&a.grad.at(I(k), I(c), I(ph), I(pw))).v[0]);
          if (M == Mode::Avg) {
            g /= acc_t(count);
            for (int s = 0; s < count; ++s) through_sample(a, k, r, m, src, ph, pw, s, g, d);
          } else {
            const int32_t s = load_packed<1>(&a.argmax.at(I(k), I(c), I(ph), I(pw))).v[0];
            if (s >= 0 && s < count) through_sample(a, k, r, m, src, ph, pw, s, g, d);
          }
        }
      }
    }
    for (int j = 0; j < 4; ++j) store_table(a.partial + i * 4 + j, d[j]);
  }

  // d[] += the gradient g of sample s of bin (ph, pw) through its position.
  static C10_HOST_DEVICE void through_sample(const Args& a, int64_t k, const RoiInfo& r,
                                             const MapView<const scalar_t, I>& m,
                                             const scalar_t* src, int ph, int pw, int s, acc_t g,
                                             double* d) {
    const int iy = s / r.grid_w, ix = s % r.grid_w;
    const Tap<acc_t> y = load_table(a.t.row_taps(k, ph) + iy);
    const Tap<acc_t> x = load_table(a.t.col_taps(k, pw) + ix);
    if (!y.valid() || !x.valid()) return;
    ROIOPS_COST(samples, 1);
    const int yh = y.hi(), xh = x.hi();
    const acc_t v1 = acc_t(load_packed<1>(src + y.lo * m.s2 + x.lo * m.s3).v[0]);
    const acc_t v2 = acc_t(load_packed<1>(src + y.lo * m.s2 + xh * m.s3).v[0]);
    const acc_t v3 = acc_t(load_packed<1>(src + yh * m.s2 + x.lo * m.s3).v[0]);
    const acc_t v4 = acc_t(load_packed<1>(src + yh * m.s2 + xh * m.s3).v[0]);
    // d(value)/d(sample y), d(value)/d(sample x), times the incoming gradient
    const acc_t sy = g * (x.w_lo * (v3 - v1) + x.w_hi * (v4 - v2)) * y.moves();
    const acc_t sx = g * (y.w_lo * (v2 - v1) + y.w_hi * (v4 - v3)) * x.moves();
    const double fy = sample_fraction(ph, iy, r.grid_h, a.t.PH);
    const double fx = sample_fraction(pw, ix, r.grid_w, a.t.PW);
    const bool h_clamped = r.has(RoiInfo::kHClamped), w_clamped = r.has(RoiInfo::kWClamped);
    d[0] += h_clamped ? double(sy) : sy * (1.0 - fy);
    d[1] += h_clamped ? 0.0 : sy * fy;
    d[2] += w_clamped ? double(sx) : sx * (1.0 - fx);
    d[3] += w_clamped ? 0.0 : sx * fx;
  }
};

// Box gradient, step 2 (one thread per RoI): the channels' partial sums added in
// channel order, scaled back to image coordinates, into grad_rois[k] = (0, x1, y1,
// x2, y2) (float64).
struct SampledBoxGradReduce {
  struct Args {
    const double* partial;  // [K, C, 4]
    const RoiInfo* info;
    double scale[kMaxLevels];
    int64_t C;
    double* grad_rois;  // [K, 5]
    int64_t n;          // K
  };
  static constexpr const char* kName = "sampled_backward_rois_reduce";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t k = pos.index();
    if (k >= a.n) return;
    double d[4] = {0, 0, 0, 0};
    for (int64_t c = 0; c < a.C; ++c)
      for (int j = 0; j < 4; ++j) d[j] += a.partial[(k * a.C + c) * 4 + j];
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
