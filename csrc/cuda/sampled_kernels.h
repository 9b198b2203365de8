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

// Every RoI's sample taps, computed once per launch in float64 and rounded to acc_t:
// entry (k, p, i) of ys / xs is sample i of bin row / column p of RoI k, with `stride`
// entries per bin (the explicit sampling_ratio, or kMaxAdaptiveGrid for adaptive
// grids). ybins / xbins hold each bin's first and last touched row / column.
template <typename acc_t>
struct SampledTable {
  RoiInfo* info;          // [K]
  AxisTaps<acc_t>* ys;    // [K, PH, stride]
  AxisTaps<acc_t>* xs;    // [K, PW, stride]
  int* ybins;             // [K, PH, 2]
  int* xbins;             // [K, PW, 2]
  int64_t* keys;          // [K]: the RoI's group (RoiGroups)
  int stride;
  int PH, PW;
  SampledGeometry geo;
  C10_HOST_DEVICE const AxisTaps<acc_t>* row_taps(int64_t k, int ph) const {
    return ys + (k * PH + ph) * stride;
  }
  C10_HOST_DEVICE const AxisTaps<acc_t>* col_taps(int64_t k, int pw) const {
    return xs + (k * PW + pw) * stride;
  }
};

// One thread per RoI: its RoiInfo, taps, bin extents and group key.
template <typename acc_t, Sampling S>
struct BuildSampledTable {
  using Args = TableArgs<SampledTable<acc_t>>;

  // Fills one axis of RoI k's table; returns the touched range in lo/hi.
  static C10_HOST_DEVICE void fill_axis(AxisTaps<acc_t>* taps, int* bins, double start,
                                        double bin, int pooled, int grid, int stride,
                                        int64_t size, int* lo, int* hi) {
    for (int p = 0; p < pooled; ++p) {
      int b0 = kEmptyLo, b1 = kEmptyHi;
      for (int i = 0; i < grid; ++i) {
        const AxisTaps<acc_t> t = axis_taps<S, acc_t>(sample_coord(start, bin, p, i, grid), size);
        taps[p * stride + i] = t;
        if (t.valid) {
          b0 = t.lo < b0 ? t.lo : b0;
          b1 = t.hi > b1 ? t.hi : b1;
        }
      }
      bins[2 * p] = b0;
      bins[2 * p + 1] = b1;
      *lo = b0 < *lo ? b0 : *lo;
      *hi = b1 > *hi ? b1 : *hi;
    }
  }

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t k = pos.index();
    if (k >= a.n) return;
    const SampledTable<acc_t>& t = a.t;
    const double* roi = a.rois + k * 5;
    RoiInfo r{-1, 0, 0, 0, false, false, kEmptyLo, kEmptyHi, kEmptyLo, kEmptyHi};
    const int level = level_index(a.levels, k, a.count);
    const int image = batch_index(roi[0], a.N);
    if (level >= 0 && image >= 0) {
      const SampledRoi g = sampled_roi(roi + 1, a.scale[level], t.PH, t.PW,
                                       t.geo.sampling_ratio, t.geo.aligned, t.geo.quantize);
      if (g.grid_h > 0 && g.grid_w > 0) {
        r = RoiInfo{image, level, g.grid_h, g.grid_w, g.h_clamped, g.w_clamped,
                    kEmptyLo, kEmptyHi, kEmptyLo, kEmptyHi};
        fill_axis(t.ys + k * t.PH * t.stride, t.ybins + k * t.PH * 2, g.y0, g.bin_h, t.PH,
                  g.grid_h, t.stride, a.H[level], &r.row0, &r.row1);
        fill_axis(t.xs + k * t.PW * t.stride, t.xbins + k * t.PW * 2, g.x0, g.bin_w, t.PW,
                  g.grid_w, t.stride, a.W[level], &r.col0, &r.col1);
      }
    }
    t.info[k] = r;
    t.keys[k] = r.image >= 0 ? int64_t(r.level) * a.N + r.image : int64_t(a.count) * a.N;
  }
};

template <Sampling S>
constexpr int kTapsPerSample = S == Sampling::Bilinear ? 4 : 1;

// acc[0..V) += the sample's value in V consecutive channels (tap by tap, in the CPU
// kernels' order); nothing for a sample off the map.
template <Sampling S, int V, typename acc_t, typename scalar_t, typename I>
C10_HOST_DEVICE inline void add_sample(acc_t* acc, const AxisTaps<acc_t>& y,
                                       const AxisTaps<acc_t>& x, const scalar_t* src, I s2, I s3) {
  if (!y.valid || !x.valid) return;
  const int rows[4] = {y.lo, y.lo, y.hi, y.hi};
  const int cols[4] = {x.lo, x.hi, x.lo, x.hi};
  const acc_t w[4] = {y.w_lo * x.w_lo, y.w_lo * x.w_hi, y.w_hi * x.w_lo, y.w_hi * x.w_hi};
  for (int j = 0; j < kTapsPerSample<S>; ++j) {
    const Packed<scalar_t, V> v = load_packed<V>(src + rows[j] * s2 + cols[j] * s3);
    for (int c = 0; c < V; ++c) acc[c] += w[j] * acc_t(v.v[c]);
  }
}

// The weight with which a sample reads pixel (h, w): the sum of its taps there
// (0 when it does not read it). The adjoint of add_sample.
template <Sampling S, typename acc_t>
C10_HOST_DEVICE inline acc_t tap_weight(const AxisTaps<acc_t>& y, const AxisTaps<acc_t>& x,
                                        int h, int w) {
  acc_t sum = 0;
  if (!y.valid || !x.valid) return sum;
  if (y.lo == h && x.lo == w) sum += y.w_lo * x.w_lo;
  if (S == Sampling::Bilinear) {
    if (y.lo == h && x.hi == w) sum += y.w_lo * x.w_hi;
    if (y.hi == h && x.lo == w) sum += y.w_hi * x.w_lo;
    if (y.hi == h && x.hi == w) sum += y.w_hi * x.w_hi;
  }
  return sum;
}

// Forward (one thread per V channels of an output bin; V > 1 only for channels_last
// maps and output, whose channels it loads and stores packed): the bin's mean, or its
// first maximum (NaN first) and that sample's index into the argmax. Also the
// avg-mode JVP.
template <typename scalar_t, typename acc_t, typename I, Mode M, Sampling S, int V>
struct SampledForward {
  using Args = BinArgs<scalar_t, I, SampledTable<acc_t>>;

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Bin b = bin_of(i, a.in.C / V, a.t.PH, a.t.PW, a.channels_fast);
    const int64_t c0 = b.c * V;
    const RoiInfo r = a.t.info[b.k];
    acc_t value[V];
    int32_t arg[V];
    for (int c = 0; c < V; ++c) value[c] = 0, arg[c] = -1;
    if (r.image >= 0) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      const scalar_t* src = m.plane(r.image, I(c0));
      const AxisTaps<acc_t>* ys = a.t.row_taps(b.k, b.ph);
      const AxisTaps<acc_t>* xs = a.t.col_taps(b.k, b.pw);
      const int count = r.grid_h * r.grid_w;
      if (M == Mode::Avg) {
        if (count <= kSumRun) {
          for (int iy = 0; iy < r.grid_h; ++iy)
            for (int ix = 0; ix < r.grid_w; ++ix) add_sample<S, V>(value, ys[iy], xs[ix], src, m.s2, m.s3);
          const acc_t inv = acc_t(1) / acc_t(count);
          for (int c = 0; c < V; ++c) value[c] *= inv;
        } else {
          double total[V] = {};  // one row's sum (<= kMaxSamplingRatio terms) at a time
          for (int iy = 0; iy < r.grid_h; ++iy) {
            acc_t row[V] = {};
            for (int ix = 0; ix < r.grid_w; ++ix) add_sample<S, V>(row, ys[iy], xs[ix], src, m.s2, m.s3);
            for (int c = 0; c < V; ++c) total[c] += double(row[c]);
          }
          for (int c = 0; c < V; ++c) value[c] = acc_t(total[c] / double(count));
        }
      } else {
        int s = 0;
        for (int iy = 0; iy < r.grid_h; ++iy)
          for (int ix = 0; ix < r.grid_w; ++ix, ++s) {
            acc_t v[V] = {};
            add_sample<S, V>(v, ys[iy], xs[ix], src, m.s2, m.s3);
            for (int c = 0; c < V; ++c)
              if (s == 0 || v[c] > value[c] || (v[c] != v[c] && value[c] == value[c])) {
                value[c] = v[c];
                arg[c] = s;
              }
          }
      }
    }
    Packed<scalar_t, V> out;
    for (int c = 0; c < V; ++c) out.v[c] = scalar_t(value[c]);
    store_packed<V>(&a.out.at(b.k, c0, b.ph, b.pw), out);
    if (M == Mode::Max && a.argmax.data)
      for (int c = 0; c < V; ++c) a.argmax.at(b.k, c0 + c, b.ph, b.pw) = arg[c];
  }
};

// Max-mode JVP (one thread per output element): the tangent at the forward's argmax
// sample; 0 for an out-of-range argmax.
template <typename scalar_t, typename acc_t, typename I, Sampling S>
struct SampledGather {
  using Args = BinArgs<scalar_t, I, SampledTable<acc_t>>;

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Bin b = bin_of(i, a.in.C, a.t.PH, a.t.PW, a.channels_fast);
    const RoiInfo r = a.t.info[b.k];
    const int32_t s = a.argmax.at(b.k, b.c, b.ph, b.pw);
    acc_t value = 0;
    if (r.image >= 0 && s >= 0 && s < r.grid_h * r.grid_w) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      add_sample<S, 1>(&value, a.t.row_taps(b.k, b.ph)[s / r.grid_w],
                       a.t.col_taps(b.k, b.pw)[s % r.grid_w], m.plane(r.image, I(b.c)), m.s2, m.s3);
    }
    a.out.at(b.k, b.c, b.ph, b.pw) = scalar_t(value);
  }
};

// Input gradient (one thread per V channels of an input pixel of every level; V > 1
// only when every level, grad and argmax are channels_last): the thread walks its
// (level, image) group's RoIs in a fixed order and sums, in acc_t, the gradient of
// every sample that reads its pixel; it writes its elements once. No atomics, no
// gradient buffer in another dtype, bitwise deterministic.
template <typename scalar_t, typename acc_t, typename I, Mode M, Sampling S, int V>
struct SampledBackwardInput {
  using Args = PixelArgs<scalar_t, I, SampledTable<acc_t>>;

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Pixel p = pixel_of(i, a.grad_in, a.grad_in.C / V, a.level_start, a.channels_fast);
    const int64_t c0 = p.c * V;
    const SampledTable<acc_t>& t = a.t;
    const int64_t group = int64_t(p.level) * a.grad_in.N + p.n;
    acc_t acc[V] = {};
    for (int64_t q = a.groups.start[group]; q < a.groups.start[group + 1]; ++q) {
      const int64_t k = a.groups.order[q];
      const RoiInfo r = t.info[k];
      if (p.h < r.row0 || p.h > r.row1 || p.w < r.col0 || p.w > r.col1) continue;
      const int count = r.grid_h * r.grid_w;
      for (int ph = 0; ph < t.PH; ++ph) {
        const int* yb = t.ybins + (k * t.PH + ph) * 2;
        if (p.h < yb[0] || p.h > yb[1]) continue;
        const AxisTaps<acc_t>* ys = t.row_taps(k, ph);
        for (int pw = 0; pw < t.PW; ++pw) {
          const int* xb = t.xbins + (k * t.PW + pw) * 2;
          if (p.w < xb[0] || p.w > xb[1]) continue;
          const AxisTaps<acc_t>* xs = t.col_taps(k, pw);
          const Packed<scalar_t, V> g = load_packed<V>(&a.grad.at(I(k), I(c0), I(ph), I(pw)));
          if (M == Mode::Avg) {
            // Every sample reading the pixel adds tap weight x gradient / count, as the
            // CPU's scatter does (pixels a sample does not read get nothing, even from
            // an infinite gradient).
            const acc_t inv = acc_t(1) / acc_t(count);
            for (int iy = 0; iy < r.grid_h; ++iy) {
              if (!ys[iy].valid || (ys[iy].lo != p.h && ys[iy].hi != p.h)) continue;
              for (int ix = 0; ix < r.grid_w; ++ix) {
                const acc_t w = tap_weight<S>(ys[iy], xs[ix], p.h, p.w);
                if (w != acc_t(0))
                  for (int c = 0; c < V; ++c) acc[c] += w * (acc_t(g.v[c]) * inv);
              }
            }
          } else {
            // Argmax entries come from the forward; out-of-range ones are skipped.
            const Packed<int32_t, V> s = load_packed<V>(&a.argmax.at(I(k), I(c0), I(ph), I(pw)));
            for (int c = 0; c < V; ++c) {
              if (s.v[c] < 0 || s.v[c] >= count) continue;
              const acc_t w = tap_weight<S>(ys[s.v[c] / r.grid_w], xs[s.v[c] % r.grid_w], p.h, p.w);
              if (w != acc_t(0)) acc[c] += w * acc_t(g.v[c]);
            }
          }
        }
      }
    }
    const MapView<scalar_t, I>& gi = a.grad_in.level[p.level];
    Packed<scalar_t, V> out;
    for (int c = 0; c < V; ++c) out.v[c] = scalar_t(acc[c]);
    store_packed<V>(gi.plane(I(p.n), I(c0)) + I(p.h) * gi.s2 + I(p.w) * gi.s3, out);
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

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const int64_t k = i / a.in.C, c = i % a.in.C;
    const RoiInfo r = a.t.info[k];
    double d[4] = {0, 0, 0, 0};
    if (r.image >= 0) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      const scalar_t* src = m.plane(r.image, I(c));
      const int count = r.grid_h * r.grid_w;
      for (int ph = 0; ph < a.t.PH; ++ph) {
        for (int pw = 0; pw < a.t.PW; ++pw) {
          acc_t g = acc_t(a.grad.at(I(k), I(c), I(ph), I(pw)));
          if (M == Mode::Avg) {
            g /= acc_t(count);
            for (int s = 0; s < count; ++s) through_sample(a, k, r, m, src, ph, pw, s, g, d);
          } else {
            const int32_t s = a.argmax.at(I(k), I(c), I(ph), I(pw));
            if (s >= 0 && s < count) through_sample(a, k, r, m, src, ph, pw, s, g, d);
          }
        }
      }
    }
    for (int j = 0; j < 4; ++j) a.partial[i * 4 + j] = d[j];
  }

  // d[] += the gradient g of sample s of bin (ph, pw) through its position.
  static C10_HOST_DEVICE void through_sample(const Args& a, int64_t k, const RoiInfo& r,
                                             const MapView<const scalar_t, I>& m,
                                             const scalar_t* src, int ph, int pw, int s, acc_t g,
                                             double* d) {
    const int iy = s / r.grid_w, ix = s % r.grid_w;
    const AxisTaps<acc_t>& y = a.t.row_taps(k, ph)[iy];
    const AxisTaps<acc_t>& x = a.t.col_taps(k, pw)[ix];
    if (!y.valid || !x.valid) return;
    const acc_t v1 = acc_t(src[y.lo * m.s2 + x.lo * m.s3]);
    const acc_t v2 = acc_t(src[y.lo * m.s2 + x.hi * m.s3]);
    const acc_t v3 = acc_t(src[y.hi * m.s2 + x.lo * m.s3]);
    const acc_t v4 = acc_t(src[y.hi * m.s2 + x.hi * m.s3]);
    // d(value)/d(sample y), d(value)/d(sample x), times the incoming gradient
    const acc_t sy = g * (x.w_lo * (v3 - v1) + x.w_hi * (v4 - v2)) * y.moves;
    const acc_t sx = g * (y.w_lo * (v2 - v1) + y.w_hi * (v4 - v3)) * x.moves;
    const double fy = sample_fraction(ph, iy, r.grid_h, a.t.PH);
    const double fx = sample_fraction(pw, ix, r.grid_w, a.t.PW);
    d[0] += r.h_clamped ? double(sy) : sy * (1.0 - fy);
    d[1] += r.h_clamped ? 0.0 : sy * fy;
    d[2] += r.w_clamped ? double(sx) : sx * (1.0 - fx);
    d[3] += r.w_clamped ? 0.0 : sx * fx;
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
