// The thread bodies of roi_pool on the GPU; see kernel_common.h for how they are
// launched and emulated. Bins, sums and the argmax follow the CPU kernels
// (csrc/cpu/roi_pool_cpu.cpp): integer bins from roi_geometry.h's pool_bin, the
// argmax as pixel index h * W + w, long sums in float64 runs.
#pragma once

#include "kernel_common.h"

namespace roiops::gpu {

// Every RoI's bins, computed once per launch: bin row ph of RoI k covers rows
// [ybins[k, ph, 0], ybins[k, ph, 1]) (empty when begin >= end); likewise columns.
struct PoolTable {
  RoiInfo* info;  // [K] (grid fields unused)
  int* ybins;     // [K, PH, 2]
  int* xbins;     // [K, PW, 2]
  int64_t* keys;  // [K]: the RoI's group (RoiGroups)
  int PH, PW;
  C10_HOST_DEVICE const int* rows(int64_t k, int ph) const { return ybins + (k * PH + ph) * 2; }
  C10_HOST_DEVICE const int* cols(int64_t k, int pw) const { return xbins + (k * PW + pw) * 2; }
};

// One thread per RoI.
struct BuildPoolTable {
  using Args = TableArgs<PoolTable>;

  static C10_HOST_DEVICE void fill_axis(int* bins, const PoolAxis& axis, int pooled, int size,
                                        int* lo, int* hi) {
    for (int p = 0; p < pooled; ++p) {
      pool_bin(axis, p, pooled, size, &bins[2 * p], &bins[2 * p + 1]);
      if (bins[2 * p] < bins[2 * p + 1]) {
        *lo = bins[2 * p] < *lo ? bins[2 * p] : *lo;
        *hi = bins[2 * p + 1] - 1 > *hi ? bins[2 * p + 1] - 1 : *hi;
      }
    }
  }

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t k = pos.index();
    if (k >= a.n) return;
    const PoolTable& t = a.t;
    const double* roi = a.rois + k * 5;
    RoiInfo r{-1, 0, 0, 0, false, false, kEmptyLo, kEmptyHi, kEmptyLo, kEmptyHi};
    const int level = level_index(a.levels, k, a.count);
    const int image = batch_index(roi[0], a.N);
    if (level >= 0 && image >= 0) {
      r.level = level;
      const double scale = a.scale[level];
      fill_axis(t.ybins + k * t.PH * 2, pool_axis(roi[2], roi[4], scale), t.PH, a.H[level],
                &r.row0, &r.row1);
      fill_axis(t.xbins + k * t.PW * 2, pool_axis(roi[1], roi[3], scale), t.PW, a.W[level],
                &r.col0, &r.col1);
      if (r.row0 <= r.row1 && r.col0 <= r.col1) r.image = image;
    }
    t.info[k] = r;
    t.keys[k] = r.image >= 0 ? int64_t(r.level) * a.N + r.image : int64_t(a.count) * a.N;
  }
};

// Forward (one thread per V channels of an output bin; V > 1 only for channels_last
// maps and output, loaded and stored packed): the mean over the bin's pixels, or the
// first maximum in row-major order (NaN first) and its pixel index. Also the avg-mode
// JVP.
template <typename scalar_t, typename acc_t, typename I, Mode M, int V>
struct PoolForward {
  using Args = BinArgs<scalar_t, I, PoolTable>;

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Bin b = bin_of(i, a.in.C / V, a.t.PH, a.t.PW, a.channels_fast);
    const int64_t c0 = b.c * V;
    const RoiInfo r = a.t.info[b.k];
    const int* ys = a.t.rows(b.k, b.ph);
    const int* xs = a.t.cols(b.k, b.pw);
    acc_t value[V];
    int32_t arg[V];
    for (int c = 0; c < V; ++c) value[c] = 0, arg[c] = -1;
    if (r.image >= 0 && ys[0] < ys[1] && xs[0] < xs[1]) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      const scalar_t* src = m.plane(r.image, I(c0));
      const int64_t count = int64_t(ys[1] - ys[0]) * (xs[1] - xs[0]);
      if (M == Mode::Avg) {
        double total[V] = {};  // runs of kSumRun pixels, as on the CPU
        int64_t in_run = 0;
        for (int h = ys[0]; h < ys[1]; ++h)
          for (int w = xs[0]; w < xs[1]; ++w) {
            const Packed<scalar_t, V> v = load_packed<V>(src + I(h) * m.s2 + I(w) * m.s3);
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
        for (int h = ys[0]; h < ys[1]; ++h)
          for (int w = xs[0]; w < xs[1]; ++w) {
            const Packed<scalar_t, V> v = load_packed<V>(src + I(h) * m.s2 + I(w) * m.s3);
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
    store_packed<V>(&a.out.at(b.k, c0, b.ph, b.pw), out);
    if (M == Mode::Max && a.argmax.data)
      for (int c = 0; c < V; ++c) a.argmax.at(b.k, c0 + c, b.ph, b.pw) = arg[c];
  }
};

// Whether pixel index p = h * W + w lies in bin (ph, pw) of RoI k.
C10_HOST_DEVICE inline bool pool_contains(const PoolTable& t, int64_t k, int ph, int pw,
                                          int32_t p, int W) {
  const int* ys = t.rows(k, ph);
  const int* xs = t.cols(k, pw);
  if (p < 0 || W <= 0 || ys[0] >= ys[1] || xs[0] >= xs[1]) return false;
  const int h = p / W, w = p % W;
  return h >= ys[0] && h < ys[1] && w >= xs[0] && w < xs[1];
}

// Max-mode JVP (one thread per output element): the tangent at the argmax pixel; 0
// when the argmax is not a pixel of the bin.
template <typename scalar_t, typename I>
struct PoolGather {
  using Args = BinArgs<scalar_t, I, PoolTable>;

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Bin b = bin_of(i, a.in.C, a.t.PH, a.t.PW, a.channels_fast);
    const RoiInfo r = a.t.info[b.k];
    const int32_t p = a.argmax.at(b.k, b.c, b.ph, b.pw);
    scalar_t value = scalar_t(0);
    if (r.image >= 0) {
      const MapView<const scalar_t, I>& m = a.in.level[r.level];
      if (pool_contains(a.t, b.k, b.ph, b.pw, p, m.W))
        value = m.plane(r.image, I(b.c))[I(p / m.W) * m.s2 + I(p % m.W) * m.s3];
    }
    a.out.at(b.k, b.c, b.ph, b.pw) = value;
  }
};

// Input gradient (one thread per V channels of an input pixel of every level), as
// SampledBackwardInput: the group's RoIs in a fixed order, every bin holding the
// pixel, one write.
template <typename scalar_t, typename acc_t, typename I, Mode M, int V>
struct PoolBackwardInput {
  using Args = PixelArgs<scalar_t, I, PoolTable>;

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const Pixel p = pixel_of(i, a.grad_in, a.grad_in.C / V, a.level_start, a.channels_fast);
    const int64_t c0 = p.c * V;
    const PoolTable& t = a.t;
    const MapView<scalar_t, I>& gi = a.grad_in.level[p.level];
    const int32_t pixel = int32_t(int64_t(p.h) * gi.W + p.w);
    const int64_t group = int64_t(p.level) * a.grad_in.N + p.n;
    acc_t acc[V] = {};
    for (int64_t q = a.groups.start[group]; q < a.groups.start[group + 1]; ++q) {
      const int64_t k = a.groups.order[q];
      const RoiInfo r = t.info[k];
      if (p.h < r.row0 || p.h > r.row1 || p.w < r.col0 || p.w > r.col1) continue;
      for (int ph = 0; ph < t.PH; ++ph) {
        const int* ys = t.rows(k, ph);
        if (p.h < ys[0] || p.h >= ys[1]) continue;
        for (int pw = 0; pw < t.PW; ++pw) {
          const int* xs = t.cols(k, pw);
          if (p.w < xs[0] || p.w >= xs[1]) continue;
          const Packed<scalar_t, V> g = load_packed<V>(&a.grad.at(I(k), I(c0), I(ph), I(pw)));
          if (M == Mode::Avg) {
            const acc_t count = acc_t(int64_t(ys[1] - ys[0]) * (xs[1] - xs[0]));
            for (int c = 0; c < V; ++c) acc[c] += acc_t(g.v[c]) / count;
          } else {
            const Packed<int32_t, V> s = load_packed<V>(&a.argmax.at(I(k), I(c0), I(ph), I(pw)));
            for (int c = 0; c < V; ++c)
              if (s.v[c] == pixel) acc[c] += acc_t(g.v[c]);
          }
        }
      }
    }
    Packed<scalar_t, V> out;
    for (int c = 0; c < V; ++c) out.v[c] = scalar_t(acc[c]);
    store_packed<V>(gi.plane(I(p.n), I(c0)) + I(p.h) * gi.s2 + I(p.w) * gi.s3, out);
  }
};

}  // namespace roiops::gpu
