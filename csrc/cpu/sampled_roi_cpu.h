// CPU kernels of the sampled RoI ops: roi_align and roi_warp differ only in the box
// transform (roi_geometry.h: sampled_roi's `quantize`, a runtime argument), so
// sampled_roi_cpu.cpp instantiates these templates once for both. Every kernel reads
// a Maps (one feature map, or the levels of a pyramid for the fused multilevel ops).
// Forward is parallel over RoIs; the input gradient is parallel over (level, image,
// channel block) with each group's RoIs in a fixed order, so it is bitwise
// deterministic for any thread count; the box gradient is parallel over RoIs.
#pragma once

#include "../op_common.h"
#include "backward_schedule.h"
#include "bin_reader.h"
#include "channel_loops.h"
#include "forward_schedule.h"
#include "output_block.h"

namespace roiops::cpu {

template <Sampling S>
constexpr int kTapsOf = S == Sampling::Bilinear ? 4 : 1;

// The taps of one bin's samples: sample (iy, ix) reads rows y(iy, ix) and columns
// x(iy, ix). An axis-aligned RoI's rows depend on iy only and its columns on ix only;
// a rotated RoI's (Turned) samples each have rows and columns of their own. A type per
// kind, so the axis-aligned loops index as directly as before rotated RoIs existed.
template <typename acc_t, bool Turned>
struct BinTaps {
  const AxisTaps<acc_t>* ys;
  const AxisTaps<acc_t>* xs;
  int64_t grid_w;
  const AxisTaps<acc_t>& y(int iy, int ix) const { return ys[Turned ? iy * grid_w + ix : iy]; }
  const AxisTaps<acc_t>& x(int iy, int ix) const { return xs[Turned ? iy * grid_w + ix : ix]; }
};

// One RoI's geometry plus the taps of every sample row and column, computed once per
// RoI (in double, roi_geometry.h) and shared by all channels, with weights rounded to
// acc_t: ys[ph * grid_h + iy], xs[pw * grid_w + ix] for an axis-aligned RoI, and one
// entry per sample, ((ph * PW + pw) * grid_h + iy) * grid_w + ix, in both for a rotated
// one (roi_align_rotated).
template <typename acc_t>
struct RoiSamples {
  SampledRoi g{};
  RotatedRoi turned{};  // the rotated box, when `rotated`; g is then turned.box
  bool rotated = false;
  int64_t pooled_w = 0;
  int64_t image = 0;
  std::vector<AxisTaps<acc_t>> ys, xs;

  int64_t level = 0;
  double inv_grid_w = 0;
  Footprint footprint;  // of the valid taps

  // RoI k of `rois`, on its level of `maps`.
  template <Sampling S, typename T>
  void build(const RoiRows& rois, int64_t k, const Maps<T>& maps, const SampledArgs& a) {
    const double* roi = rois[k];
    image = rois.image(k);
    level = maps.level_of(k);
    rotated = a.rotated;
    pooled_w = a.pooled_w;
    const int64_t H = maps.heights[level], W = maps.widths[level];
    if (rotated) {
      turned = rotated_roi(roi + 1, maps.scales[level], int(a.pooled_h), int(a.pooled_w),
                           a.sampling_ratio, a.aligned, a.clockwise);
      g = turned.box;
    } else {
      g = sampled_roi(roi + 1, maps.scales[level], int(a.pooled_h), int(a.pooled_w),
                      a.sampling_ratio, a.aligned, a.quantize);
    }
    inv_grid_w = g.grid_w > 0 ? 1.0 / g.grid_w : 0.0;
    if (rotated) {
      ys.resize(a.pooled_h * a.pooled_w * g.grid_h * g.grid_w);
      xs.resize(ys.size());
      for (int ph = 0, s = 0; ph < a.pooled_h; ++ph)
        for (int pw = 0; pw < a.pooled_w; ++pw)
          for (int iy = 0; iy < g.grid_h; ++iy)
            for (int ix = 0; ix < g.grid_w; ++ix, ++s) {
              double y, x;
              rotated_sample(turned, sample_coord(g.y0, g.bin_h, ph, iy, g.grid_h),
                             sample_coord(g.x0, g.bin_w, pw, ix, g.grid_w), &y, &x);
              ys[s] = axis_taps<S, acc_t>(y, H);
              xs[s] = axis_taps<S, acc_t>(x, W);
            }
    } else {
      ys.resize(a.pooled_h * g.grid_h);
      xs.resize(a.pooled_w * g.grid_w);
      for (int p = 0; p < a.pooled_h; ++p)
        for (int i = 0; i < g.grid_h; ++i)
          ys[p * g.grid_h + i] =
              axis_taps<S, acc_t>(sample_coord(g.y0, g.bin_h, p, i, g.grid_h), H);
      for (int p = 0; p < a.pooled_w; ++p)
        for (int i = 0; i < g.grid_w; ++i)
          xs[p * g.grid_w + i] =
              axis_taps<S, acc_t>(sample_coord(g.x0, g.bin_w, p, i, g.grid_w), W);
    }
    const auto [y0, y1] = span(ys, H);
    const auto [x0, x1] = span(xs, W);
    footprint = {y0, y1, x0, x1};
  }

  int64_t bytes() const { return int64_t((ys.size() + xs.size()) * sizeof(AxisTaps<acc_t>)); }

  // This RoI with every valid tap renumbered into the compact tile `t` (cleared
  // first); false when it has no samples or the footprint is too large to tile.
  bool to_tile(RoiSamples& tiled, TileIndex& t) const {
    if (count() == 0) return false;
    t.clear();
    for (const AxisTaps<acc_t>& y : ys)
      if (y.valid) t.rows.push_back(y.lo), t.rows.push_back(y.hi);
    for (const AxisTaps<acc_t>& x : xs)
      if (x.valid) t.cols.push_back(x.lo), t.cols.push_back(x.hi);
    t.finish();
    if (t.pixels() > kMaxTilePixels) return false;
    tiled.g = g;
    tiled.turned = turned;
    tiled.rotated = rotated;
    tiled.pooled_w = pooled_w;
    tiled.inv_grid_w = inv_grid_w;
    tiled.image = tiled.level = 0;
    tiled.ys = ys;
    tiled.xs = xs;
    for (AxisTaps<acc_t>& y : tiled.ys)
      if (y.valid) y.lo = t.row(y.lo), y.hi = t.row(y.hi);
    for (AxisTaps<acc_t>& x : tiled.xs)
      if (x.valid) x.lo = t.col(x.lo), x.hi = t.col(x.hi);
    return true;
  }

  int count() const { return g.grid_h * g.grid_w; }
  // [lowest, highest + 1) of the valid taps' indices on one axis; empty if none.
  static std::pair<int64_t, int64_t> span(const std::vector<AxisTaps<acc_t>>& taps, int64_t size) {
    int64_t lo = size, hi = -1;
    for (const AxisTaps<acc_t>& t : taps)
      if (t.valid) lo = std::min<int64_t>(lo, t.lo), hi = std::max<int64_t>(hi, t.hi);
    return hi < lo ? std::pair<int64_t, int64_t>{0, 0} : std::pair<int64_t, int64_t>{lo, hi + 1};
  }
  // Row of sample s (s = iy * grid_w + ix) without an integer division, which would
  // dominate the max-mode loops: s < 2^20 (kMaxSamplingRatio^2), so the double
  // quotient is far from rounding across an integer.
  int row_of(int s) const { return static_cast<int>((s + 0.5) * inv_grid_w); }
  // Bin (ph, pw)'s taps; Turned must be `rotated` (with_bin chooses it).
  template <bool Turned>
  BinTaps<acc_t, Turned> bin(int64_t ph, int64_t pw) const {
    const int64_t gh = g.grid_h, gw = g.grid_w;
    if constexpr (Turned) {
      const int64_t first = (ph * pooled_w + pw) * gh * gw;
      return {ys.data() + first, xs.data() + first, gw};
    } else {
      return {ys.data() + ph * gh, xs.data() + pw * gw, gw};
    }
  }
  // f(taps of bin (ph, pw)), with the taps' type of this RoI's kind.
  template <typename F>
  auto with_bin(int64_t ph, int64_t pw, const F& f) const {
    return rotated ? f(bin<true>(ph, pw)) : f(bin<false>(ph, pw));
  }
  // Row and column of sample s in its bin's sub-grid.
  std::pair<int, int> cell(int s) const {
    const int iy = row_of(s);
    return {iy, s - iy * g.grid_w};
  }
  // The (row, column) taps of sample s of bin (ph, pw).
  std::pair<const AxisTaps<acc_t>*, const AxisTaps<acc_t>*> sample(int64_t ph, int64_t pw, int s) const {
    const auto [iy, ix] = cell(s);
    return with_bin(ph, pw, [&](const auto& b) { return std::pair{&b.y(iy, ix), &b.x(iy, ix)}; });
  }
};

// The 2-D taps of sample s (row-major over the bin's sub-grid) for a feature map with
// row stride sh and column stride sw; false when the sample lies off the map (reads 0).
template <Sampling S, typename acc_t>
inline bool sample_taps(Taps<acc_t, kTapsOf<S>>& t, const AxisTaps<acc_t>& y,
                        const AxisTaps<acc_t>& x, int64_t sh, int64_t sw) {
  if (!y.valid || !x.valid) return false;
  t.off[0] = y.lo * sh + x.lo * sw;
  t.w[0] = y.w_lo * x.w_lo;
  if constexpr (S == Sampling::Bilinear) {
    t.off[1] = y.lo * sh + x.hi * sw;
    t.off[2] = y.hi * sh + x.lo * sw;
    t.off[3] = y.hi * sh + x.hi * sw;
    t.w[1] = y.w_lo * x.w_hi;
    t.w[2] = y.w_hi * x.w_lo;
    t.w[3] = y.w_hi * x.w_hi;
  }
  return true;
}

template <Sampling S, typename acc_t>
inline bool sample_taps(Taps<acc_t, kTapsOf<S>>& t, const RoiSamples<acc_t>& r,
                        int64_t ph, int64_t pw, int s, int64_t sh, int64_t sw) {
  const auto [y, x] = r.sample(ph, pw, s);
  return sample_taps<S>(t, *y, *x, sh, sw);
}

// Mean of the samples of bin `b` (RoiSamples::bin) of RoI r for channels [0, n) of `src`
// (pointing at channel c0 of image r.image): the avg forward. Grids of more than kSumRun samples add each sample
// row's sum (at most kMaxSamplingRatio terms) into double.
template <Sampling S, typename scalar_t, typename acc_t, typename Bin>
inline void bin_mean(acc_t* out, const RoiSamples<acc_t>& r, const Bin& b,
                     const View4<const scalar_t>& v, const scalar_t* src, int64_t n) {
  Taps<acc_t, kTapsOf<S>> t;
  const int gh = r.g.grid_h, gw = r.g.grid_w;
  const int count = gh * gw;
  if (count <= kSumRun) {
    // Every sample's taps, computed once for all of the block's channel runs rather
    // than once per run.
    Taps<acc_t, kTapsOf<S>> taps[kSumRun];
    int m = 0;
    for (int iy = 0; iy < gh; ++iy)
      for (int ix = 0; ix < gw; ++ix) m += sample_taps<S>(taps[m], b.y(iy, ix), b.x(iy, ix), v.s2, v.s3);
    const acc_t inv = acc_t(1) / acc_t(count > 0 ? count : 1);
    sum_taps(
        out, src, v.s1, n,
        [&](auto&& add) {
          for (int i = 0; i < m; ++i) add(taps[i]);
        },
        [&](auto sum) { return sum * decltype(sum)(inv); });
    return;
  }
  fill_channels(out, acc_t(0), n);
  double total[kChannelBlock] = {};
  for (int iy = 0; iy < gh; ++iy) {
    for (int ix = 0; ix < gw; ++ix)
      if (sample_taps<S>(t, b.y(iy, ix), b.x(iy, ix), v.s2, v.s3)) accumulate_taps(out, src, v.s1, n, t);
    for (int64_t c = 0; c < n; ++c) total[c] += double(out[c]);
    fill_channels(out, acc_t(0), n);
  }
  for (int64_t c = 0; c < n; ++c) out[c] = acc_t(total[c] / double(count));
}

// Largest sample value and the index of the first sample attaining it, per channel
// (takes_max). Off-map samples count as 0. Only meaningful when r.count() > 0. Channel
// runs keep their maximum and index in registers (by_channel_runs).
template <Sampling S, typename scalar_t, typename acc_t>
inline void bin_argmax(acc_t* best, index_of<acc_t>* arg, acc_t* scratch,
                       const RoiSamples<acc_t>& r, int64_t ph, int64_t pw,
                       const View4<const scalar_t>& v, const scalar_t* src, int64_t n) {
  using Vec = at::vec::Vectorized<acc_t>;
  using Idx = index_of<acc_t>;
  using IVec = at::vec::Vectorized<Idx>;
  Taps<acc_t, kTapsOf<S>> t;
  const int gh = r.g.grid_h, gw = r.g.grid_w;
  const BinTaps<acc_t, false> bin = r.template bin<false>(ph, pw);  // max mode: axis-aligned RoIs only
  by_channel_runs<acc_t>(
      n, v.s1,
      [&](int64_t c, auto unroll) {
        constexpr int U = decltype(unroll)::value;
        Vec b[U];
        IVec idx[U];
        // Sample (iy, ix) as 0 + its taps, rounded as accumulate_taps into a zeroed scratch.
        auto value = [&](Vec* x, int iy, int ix) {
          for (int u = 0; u < U; ++u) x[u] = Vec(acc_t(0));
          if (sample_taps<S>(t, bin.y(iy, ix), bin.x(iy, ix), v.s2, v.s3)) add_taps<U>(x, src, c, t);
        };
        value(b, 0, 0);
        for (int u = 0; u < U; ++u) idx[u] = IVec(Idx(0));
        for (int iy = 0, s = 0; iy < gh; ++iy)
          for (int ix = 0; ix < gw; ++ix, ++s) {
            if (s == 0) continue;
            Vec x[U];
            value(x, iy, ix);
            const IVec index(static_cast<Idx>(s));
            for (int u = 0; u < U; ++u) {
              const Vec take = takes_max(x[u], b[u]);
              b[u] = Vec::blendv(b[u], x[u], take);
              idx[u] = IVec::blendv(idx[u], index, at::vec::cast<Idx>(take));
            }
          }
        for (int u = 0; u < U; ++u) {
          b[u].store(best + c + u * Vec::size());
          idx[u].store(arg + c + u * Vec::size());
        }
      },
      [&](int64_t c0) {
        const int64_t m = n - c0;
        for (int s = 0; s < r.count(); ++s) {
          fill_channels(scratch, acc_t(0), m);
          if (sample_taps<S>(t, r, ph, pw, s, v.s2, v.s3))
            accumulate_taps(scratch, src + c0 * v.s1, v.s1, m, t);
          update_max(best + c0, arg + c0, scratch, 1, m, s);
        }
      });
}

// Value of channel c (src already offset to it) at sample s; 0 off the map.
template <Sampling S, typename scalar_t, typename acc_t>
inline acc_t sample_value(const RoiSamples<acc_t>& r, int64_t ph, int64_t pw, int s,
                          int64_t sh, int64_t sw, const scalar_t* src) {
  Taps<acc_t, kTapsOf<S>> t;
  if (!sample_taps<S>(t, r, ph, pw, s, sh, sw)) return acc_t(0);
  acc_t v = 0;
  for (int j = 0; j < kTapsOf<S>; ++j) v += t.w[j] * acc_t(src[t.off[j]]);
  return v;
}

// Forward: the pooled output and, in max mode, each bin's argmax sample (-1 for a
// bin without samples), which the backward and the double backward reuse. Also the
// avg-mode Jacobian-vector product (the forward is linear there), run on a tangent.
// Scheduling and planar tiles: for_each_forward_task (forward_schedule.h), which also
// gives each bin its input channels (a.channels: ps_roi_align's per-bin channels).
template <typename scalar_t, Mode M, Sampling S>
void sampled_forward(const Maps<const scalar_t>& in, const at::Tensor& rois, at::Tensor& out,
                     at::Tensor& argmax, const SampledArgs& a) {
  using acc_t = acc_type<scalar_t>;
  using Roi = RoiSamples<acc_t>;
  const View4<scalar_t> o = view4<scalar_t>(out);
  const View4<int32_t> am = argmax_view<int32_t>(argmax);
  const bool around_caches = writes_around_caches(out, argmax);
  const RoiRows rows(rois);
  TORCH_INTERNAL_ASSERT(M == Mode::Avg || !a.rotated, "max mode pools axis-aligned RoIs only");

  for_each_forward_task<scalar_t, Roi>(
      in, rows, out.size(1), a.channels,
      [&](Roi& r, int64_t k) { r.template build<S>(rows, k, in, a); },
      [&](const ForwardTask<scalar_t, Roi>& t) {
        const Roi& r = t.geometry;
        const int64_t n = t.n;
        acc_t acc[kChannelBlock], scratch[kChannelBlock];
        index_of<acc_t> arg[kChannelBlock];
        OutputBlock<scalar_t> block(o, am, t.k, t.c0, n, a.pooled_h, a.pooled_w, around_caches);
        for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
          for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
            const scalar_t* src = t.bin_src(ph * a.pooled_w + pw);
            if (r.count() == 0) {
              fill_channels(acc, acc_t(0), n);
              fill_channels(arg, index_of<acc_t>(-1), n);
            } else if constexpr (M == Mode::Avg) {
              r.with_bin(ph, pw, [&](const auto& b) { bin_mean<S>(acc, r, b, t.view, src, n); });
            } else {
              bin_argmax<S>(acc, arg, scratch, r, ph, pw, t.view, src, n);
            }
            block.put(ph, pw, acc, M == Mode::Max ? arg : nullptr);
          }
        }
        block.finish();
      });
}

// Max-mode Jacobian-vector product: each bin's output is the tangent's value at the
// forward's argmax sample.
template <typename scalar_t, Sampling S>
void sampled_gather(const Maps<const scalar_t>& tangent, const at::Tensor& argmax,
                    const at::Tensor& rois, at::Tensor& out, const SampledArgs& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t K = rois.size(0), C = out.size(1);
  const View4<scalar_t> o = view4<scalar_t>(out);
  const View4<const int32_t> am = argmax_view<const int32_t>(argmax);
  const RoiRows rows(rois);

  parallel_dynamic(K, kRoiChunk, [&](auto& claim) {
    RoiSamples<acc_t> r;
    int64_t k0, k1;
    while (claim(k0, k1)) for (int64_t k = k0; k < k1; ++k) {
      r.template build<S>(rows, k, tangent, a);
      const View4<const scalar_t>& v = tangent.views[r.level];
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ph = 0; ph < a.pooled_h; ++ph)
          for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
            const int32_t s = am.data[k * am.s0 + c * am.s1 + ph * am.s2 + pw * am.s3];
            const acc_t value = s < 0 || s >= r.count() ? acc_t(0)
                                      : sample_value<S>(r, ph, pw, s, v.s2, v.s3,
                                                        v.data + r.image * v.s0 + c * v.s1);
            o.data[k * o.s0 + c * o.s1 + ph * o.s2 + pw * o.s3] = scalar_t(value);
          }
    }
  });
}

// The adjoint of one sample at taps y, x: add(row, column, weight) for each of its
// taps, in sample_taps' order and with its weights.
template <Sampling S, typename acc_t, typename Add>
inline void for_each_tap(const AxisTaps<acc_t>& y, const AxisTaps<acc_t>& x, const Add& add) {
  add(y.lo, x.lo, y.w_lo * x.w_lo);
  if constexpr (S == Sampling::Bilinear) {
    add(y.lo, x.hi, y.w_lo * x.w_hi);
    add(y.hi, x.lo, y.w_hi * x.w_lo);
    add(y.hi, x.hi, y.w_hi * x.w_hi);
  }
}

// Avg mode's input gradient of bin `b` (RoiSamples::bin): gout[c] (the output gradient over the
// sample count) at every tap of every sample. `covered`: every tap of the RoI lands in
// the window, so taps are addressed as in the forward, without bounds checks.
template <Sampling S, typename acc_t, typename Bin>
inline void add_bin_mean_grad(const GradWindow<acc_t>& w, const RoiSamples<acc_t>& r, const Bin& b,
                              bool covered, const acc_t* gout, int64_t n) {
  Taps<acc_t, kTapsOf<S>> t;
  for (int iy = 0; iy < r.g.grid_h; ++iy) {
    for (int ix = 0; ix < r.g.grid_w; ++ix) {
      const AxisTaps<acc_t>& y = b.y(iy, ix);
      const AxisTaps<acc_t>& x = b.x(iy, ix);
      if (!y.valid || !(w.has_row(y.lo) || w.has_row(y.hi))) continue;
      if (covered) {
        if (!sample_taps<S>(t, y, x, w.rs, w.ps)) continue;
        for (int j = 0; j < kTapsOf<S>; ++j) w.axpy(w.data + (t.off[j] - w.origin), t.w[j], gout, n);
      } else if (x.valid) {
        for_each_tap<S>(y, x, [&](int64_t yy, int64_t xx, acc_t wt) { w.add(yy, xx, wt, gout, n); });
      }
    }
  }
}

// Max mode's input gradient of bin (ph, pw): g[c] at the taps of channel c's argmax
// sample arg[c]. Argmax entries come from the forward; out-of-range ones (a corrupted
// tensor passed to this op directly) are skipped rather than followed.
template <Sampling S, typename acc_t>
inline void add_bin_argmax_grad(const GradWindow<acc_t>& w, const RoiSamples<acc_t>& r, int64_t ph,
                                int64_t pw, bool covered, const acc_t* g, const int32_t* arg, int64_t n) {
  Taps<acc_t, kTapsOf<S>> t;
  const BinTaps<acc_t, false> b = r.template bin<false>(ph, pw);  // max mode: axis-aligned RoIs only
  for (int64_t c = 0; c < n; ++c) {
    if (arg[c] < 0 || arg[c] >= r.count()) continue;
    const auto [iy, ix] = r.cell(arg[c]);
    const AxisTaps<acc_t>& y = b.y(iy, ix);
    const AxisTaps<acc_t>& x = b.x(iy, ix);
    if (!sample_taps<S>(t, y, x, w.rs, w.ps)) continue;
    if (covered) {
      for (int j = 0; j < kTapsOf<S>; ++j) w.data[t.off[j] - w.origin + c] += t.w[j] * g[c];
      continue;
    }
    for_each_tap<S>(y, x, [&](int64_t yy, int64_t xx, acc_t wt) {
      if (w.has_row(yy) && w.has_col(xx)) w.at(yy, xx)[c] += wt * g[c];
    });
  }
}

// Input gradient: the exact adjoint of sampled_forward. `gi` views one acc_t tensor
// per level, in that level's memory format, zero on entry; `shape` gives the levels'
// sizes (their values are not read: max mode uses the forward's argmax). Scheduling,
// windows and determinism: for_each_backward_task (backward_schedule.h), whose
// GradWindow::for_bin gives ps_roi_align's bins their own channels.
template <typename scalar_t, Mode M, Sampling S>
void sampled_backward_input(const at::Tensor& grad, const at::Tensor& argmax,
                            const Maps<const scalar_t>& shape, const at::Tensor& rois,
                            const Maps<acc_type<scalar_t>>& gi, const SampledArgs& a) {
  using acc_t = acc_type<scalar_t>;
  using Roi = RoiSamples<acc_t>;
  const int64_t K = rois.size(0);
  const BinReader<scalar_t> go{view4<const scalar_t>(grad), K, a.pooled_h, a.pooled_w};
  const BinReader<int32_t> am{argmax_view<const int32_t>(argmax), K, a.pooled_h, a.pooled_w};
  const RoiRows rows(rois);
  TORCH_INTERNAL_ASSERT(M == Mode::Avg || !a.rotated, "max mode pools axis-aligned RoIs only");

  for_each_backward_task<Roi>(
      gi, bucket_rois(rows, shape.batch, shape), a.channels,
      [&](Roi& r, int64_t k) { r.template build<S>(rows, k, shape, a); },
      [&](int64_t k, int64_t c0, int64_t n, const Roi& r, const GradWindow<acc_t>& whole) {
        if (r.count() == 0) return;
        GradWindow<acc_t> bin_window = whole;
        // Whether every tap of this RoI lands in the window (always with channels-last maps).
        const bool covered = whole.covers(r.footprint);
        BinCursor<acc_t, scalar_t> grads(go, k, c0, n);
        BinCursor<int32_t, int32_t> args(am, k, c0, n);
        acc_t gout[kChannelBlock];
        for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
          for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
            const acc_t* g = grads(ph, pw);
            const GradWindow<acc_t>& w =
                a.channels.per_bin ? (bin_window = whole.for_bin(ph * a.pooled_w + pw)) : whole;
            if constexpr (M == Mode::Avg) {
              const acc_t inv = acc_t(1) / acc_t(r.count());
              for (int64_t c = 0; c < n; ++c) gout[c] = g[c] * inv;
              r.with_bin(ph, pw, [&](const auto& b) { add_bin_mean_grad<S>(w, r, b, covered, gout, n); });
            } else {
              add_bin_argmax_grad<S>(w, r, ph, pw, covered, g, args(ph, pw), n);
            }
          }
        }
      });
}

// Adds to d, d(loss)/d(y1, y2, x1, x2) of RoI r's scaled box (or d/d(cx', cy', w', h',
// angle) of a rotated one: add_rotated_sample_grad), the gradient through sample s of
// bin (ph, pw): channels [0, n) of `src`, read through v, weighted by g.
template <typename scalar_t, typename acc_t>
inline void add_sample_box_grad(double* d, const RoiSamples<acc_t>& r, int64_t ph, int64_t pw, int s,
                                const View4<const scalar_t>& v, const scalar_t* src, const acc_t* g,
                                int64_t n, const SampledArgs& a) {
  const auto [iy, ix] = r.cell(s);
  const auto [yp, xp] = r.sample(ph, pw, s);
  const AxisTaps<acc_t>& y = *yp;
  const AxisTaps<acc_t>& x = *xp;
  if (!y.valid || !x.valid) return;
  acc_t sy = 0, sx = 0;  // d(value)/d(sample y), /d(sample x), summed over channels
  for (int64_t c = 0; c < n; ++c) {
    const scalar_t* p = src + c * v.s1;
    const acc_t v1 = acc_t(p[y.lo * v.s2 + x.lo * v.s3]);
    const acc_t v2 = acc_t(p[y.lo * v.s2 + x.hi * v.s3]);
    const acc_t v3 = acc_t(p[y.hi * v.s2 + x.lo * v.s3]);
    const acc_t v4 = acc_t(p[y.hi * v.s2 + x.hi * v.s3]);
    sy += g[c] * (x.w_lo * (v3 - v1) + x.w_hi * (v4 - v2));
    sx += g[c] * (y.w_lo * (v2 - v1) + y.w_hi * (v4 - v3));
  }
  sy *= y.moves;
  sx *= x.moves;
  const double fy = sample_fraction(int(ph), iy, r.g.grid_h, int(a.pooled_h));
  const double fx = sample_fraction(int(pw), ix, r.g.grid_w, int(a.pooled_w));
  if (r.rotated) {
    add_rotated_sample_grad(d, r.turned, sample_coord(r.g.y0, r.g.bin_h, int(ph), iy, r.g.grid_h),
                            sample_coord(r.g.x0, r.g.bin_w, int(pw), ix, r.g.grid_w), fy, fx, sy, sx);
    return;
  }
  d[0] += r.g.h_clamped ? double(sy) : sy * (1.0 - fy);
  d[1] += r.g.h_clamped ? 0.0 : sy * fy;
  d[2] += r.g.w_clamped ? double(sx) : sx * (1.0 - fx);
  d[3] += r.g.w_clamped ? 0.0 : sx * fx;
}

// d(loss)/d(y1, y2, x1, x2) of RoI k's scaled box (d(loss)/d(cx', cy', w', h', angle) of
// a rotated one) into d, accumulated in a fixed order:
// output channel blocks, bins, then samples (avg) or channels (max, each through its
// own argmax sample only). Each bin reads its input channels through a.channels (the
// map's C input channels; ps_roi_align's bins read their own).
template <Mode M, typename scalar_t, typename acc_t>
void roi_box_grad(double* d, const RoiSamples<acc_t>& r, int64_t k, const View4<const scalar_t>& map,
                  int64_t C, const View4<const scalar_t>& go, const View4<const int32_t>& am,
                  const SampledArgs& a) {
  const int count = r.count();
  const ChannelMap& cm = a.channels;
  // s1: from one output channel's input to the next one's.
  const View4<const scalar_t> v(map.data, map.s0, cm.group * map.s1, map.s2, map.s3);
  const int64_t outputs = cm.output_channels(C);
  acc_t gout[kChannelBlock];
  int32_t arg[kChannelBlock];
  for (int64_t c0 = 0; count > 0 && c0 < outputs; c0 += kChannelBlock) {
    const int64_t n = std::min(kChannelBlock, outputs - c0);
    for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
      for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
        const scalar_t* src = map.data + r.image * map.s0 + cm.input_channel(c0, ph * a.pooled_w + pw) * map.s1;
        load_channels(gout, go.data + k * go.s0 + c0 * go.s1 + ph * go.s2 + pw * go.s3, go.s1, n);
        if constexpr (M == Mode::Avg) {
          for (int64_t c = 0; c < n; ++c) gout[c] /= acc_t(count);
          for (int s = 0; s < count; ++s) add_sample_box_grad(d, r, ph, pw, s, v, src, gout, n, a);
        } else {
          load_channels(arg, am.data + k * am.s0 + c0 * am.s1 + ph * am.s2 + pw * am.s3, am.s1, n);
          for (int64_t c = 0; c < n; ++c)
            if (arg[c] >= 0 && arg[c] < count)
              add_sample_box_grad(d, r, ph, pw, arg[c], v, src + c * v.s1, gout + c, 1, a);
        }
      }
    }
  }
}

// Box gradient d(loss)/d(x1, y1, x2, y2) (or d(loss)/d(cx, cy, w, h, angle)) of the
// bilinear sampled ops, through the sample positions (roi_geometry.h: sample_fraction,
// add_rotated_sample_grad), into the float64 [K, 5] (or [K, 6]) `grad_rois`. Column 0
// (batch index) stays 0.
template <typename scalar_t, Mode M>
void sampled_backward_rois(const at::Tensor& grad, const at::Tensor& argmax,
                           const Maps<const scalar_t>& in, const at::Tensor& rois,
                           at::Tensor& grad_rois, const SampledArgs& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t K = rois.size(0);
  const View4<const scalar_t> go = view4<const scalar_t>(grad);
  const RoiRows rows(rois);
  double* gr = grad_rois.data_ptr<double>();
  const View4<const int32_t> am = argmax_view<const int32_t>(argmax);

  parallel_dynamic(K, kRoiChunk, [&](auto& claim) {
    RoiSamples<acc_t> r;
    int64_t k0, k1;
    while (claim(k0, k1)) for (int64_t k = k0; k < k1; ++k) {
      r.template build<Sampling::Bilinear>(rows, k, in, a);
      double d[5] = {0, 0, 0, 0, 0};
      roi_box_grad<M>(d, r, k, in.views[r.level], in.channels, go, am, a);
      if (a.rotated)
        store_rotated_box_grad(gr + k * rows.fields, d, in.scales[r.level]);
      else
        store_box_grad(gr + k * rows.fields, d, in.scales[r.level]);
    }
  });
}

// Op-level entry points shared by roi_align and roi_warp, single-map and multilevel
// (argument checks done by the caller). `levels` is undefined for a single map;
// `argmax` is the forward's (empty in avg mode).
std::tuple<at::Tensor, at::Tensor> sampled_forward_op(at::TensorList inputs, const at::Tensor& rois,
                                                      const at::Tensor& levels,
                                                      at::ArrayRef<double> scales,
                                                      const SampledArgs& a, bool keep_argmax);
std::vector<at::Tensor> sampled_backward_input_op(const at::Tensor& grad, at::TensorList inputs,
                                                  const at::Tensor& argmax, const at::Tensor& rois,
                                                  const at::Tensor& levels,
                                                  at::ArrayRef<double> scales, const SampledArgs& a);
at::Tensor sampled_backward_rois_op(const at::Tensor& grad, at::TensorList inputs,
                                    const at::Tensor& argmax, const at::Tensor& rois,
                                    const at::Tensor& levels, at::ArrayRef<double> scales,
                                    const SampledArgs& a);
at::Tensor sampled_jvp_op(at::TensorList tangents, const at::Tensor& argmax, const at::Tensor& rois,
                          const at::Tensor& levels, at::ArrayRef<double> scales,
                          const SampledArgs& a);

}  // namespace roiops::cpu
