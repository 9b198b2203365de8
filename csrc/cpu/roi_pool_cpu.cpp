// roi_pool on the CPU (Fast R-CNN): integer bins over a rounded box, max or mean over
// exactly the bin's pixels; on one map or fused over a pyramid. Same parallel /
// deterministic structure as the sampled ops (sampled_roi_cpu.h). ps_roi_pool is the
// avg mode with torchvision's PS bins (PoolArgs::rule) and per-bin input channels
// (PoolArgs::channels), which the schedulers address. prroi_pool is the avg mode's
// walk over weighted bins (PoolRule::Precise: the pixels whose bilinear hat meets the
// bin, each weighted by the exact integral of its hat over the bin), with an analytic
// box gradient of its own.
#include "roi_pool_cpu.h"

#include "allocation.h"
#include "backward_schedule.h"
#include "bin_reader.h"
#include "channel_loops.h"
#include "forward_schedule.h"
#include "output_block.h"

namespace roiops::cpu {
namespace {


// prroi_pool's bins along one axis (roi_geometry.h: precise_axis): bin p covers pixels
// [begin[p], end[p]) with weights weights[at[p] + i - begin[p]] (each with its
// derivatives in the box coordinates). Computed in double; the forward and the input
// gradient round the weights to acc_t, the box gradient uses them as they are.
struct PreciseBins {
  std::vector<int> begin, end, at;
  std::vector<PreciseWeight> weights;

  void build(double lo, double hi, double scale, int pooled, int64_t size) {
    const PreciseAxis axis = precise_axis(lo, hi, scale, pooled);
    begin.resize(pooled), end.resize(pooled), at.resize(pooled);
    weights.clear();
    for (int p = 0; p < pooled; ++p) {
      precise_bin(axis, p, int(size), &begin[p], &end[p]);
      at[p] = int(weights.size());
      for (int i = begin[p]; i < end[p]; ++i) weights.push_back(precise_weight(axis, p, pooled, i));
    }
  }
  const PreciseWeight* of(int64_t p) const { return weights.data() + at[p]; }
};

// One RoI's bins: rows [h0[ph], h1[ph]) and columns [w0[pw], w1[pw]), and for
// prroi_pool (PoolRule::Precise) a weight per row and per column of each bin.
template <typename acc_t>
struct RoiBins {
  int64_t image = 0, level = 0;
  std::vector<int> h0, h1, w0, w1;
  Footprint footprint;  // the bins' bounding box (empty: y1 <= y0 or x1 <= x0)
  // Precise bins: row h of bin ph weighs ys[y_at[ph] + h - h0[ph]], column w of bin pw
  // xs[x_at[pw] + w - w0[pw]]; all empty for roi_pool's and ps_roi_pool's bins.
  std::vector<acc_t> ys, xs;
  std::vector<int> y_at, x_at;

  // RoI k of `rois`, on its level of `maps`.
  template <typename T>
  void build(const double* rois, int64_t k, const Maps<T>& maps, const PoolArgs& a) {
    const double* roi = rois + k * 5;
    image = static_cast<int64_t>(roi[0]);
    level = maps.level_of(k);
    const int64_t H = maps.heights[level], W = maps.widths[level];
    const double scale = maps.scales[level];
    h0.resize(a.pooled_h), h1.resize(a.pooled_h), w0.resize(a.pooled_w), w1.resize(a.pooled_w);
    if (a.rule == PoolRule::Precise) {
      thread_local PreciseBins y, x;
      y.build(roi[2], roi[4], scale, int(a.pooled_h), H);
      x.build(roi[1], roi[3], scale, int(a.pooled_w), W);
      h0 = y.begin, h1 = y.end, y_at = y.at, w0 = x.begin, w1 = x.end, x_at = x.at;
      ys.resize(y.weights.size()), xs.resize(x.weights.size());
      for (size_t i = 0; i < ys.size(); ++i) ys[i] = acc_t(y.weights[i].w);
      for (size_t i = 0; i < xs.size(); ++i) xs[i] = acc_t(x.weights[i].w);
    } else {
      ys.clear(), xs.clear(), y_at.clear(), x_at.clear();
      const PoolAxis y = pool_axis(roi[2], roi[4], scale, a.rule);
      const PoolAxis x = pool_axis(roi[1], roi[3], scale, a.rule);
      for (int p = 0; p < a.pooled_h; ++p) pool_bin(y, p, int(a.pooled_h), int(H), &h0[p], &h1[p]);
      for (int p = 0; p < a.pooled_w; ++p) pool_bin(x, p, int(a.pooled_w), int(W), &w0[p], &w1[p]);
    }
    footprint = {*std::min_element(h0.begin(), h0.end()), *std::max_element(h1.begin(), h1.end()),
                 *std::min_element(w0.begin(), w0.end()), *std::max_element(w1.begin(), w1.end())};
  }
  bool weighted() const { return !y_at.empty(); }
  // The weights of bin ph's rows and of bin pw's columns, from the bin's first.
  const acc_t* row_weights(int64_t ph) const { return ys.data() + y_at[ph]; }
  const acc_t* col_weights(int64_t pw) const { return xs.data() + x_at[pw]; }
  int64_t bytes() const {
    return int64_t((2 * (h0.size() + w0.size()) + y_at.size() + x_at.size()) * sizeof(int) +
                   (ys.size() + xs.size()) * sizeof(acc_t));
  }
  // Pixels in bin (ph, pw): up to (2^31)^2, so int64.
  int64_t count(int64_t ph, int64_t pw) const {
    return int64_t(std::max(h1[ph] - h0[ph], 0)) * std::max(w1[pw] - w0[pw], 0);
  }
  // Whether pixel index p = h * W + w lies in bin (ph, pw). An empty bin (every bin
  // of a map with W == 0) contains nothing, which also keeps W out of the division.
  bool contains(int64_t ph, int64_t pw, int32_t p, int64_t W) const {
    if (p < 0 || count(ph, pw) == 0) return false;
    const int64_t h = p / W, w = p % W;
    return h >= h0[ph] && h < h1[ph] && w >= w0[pw] && w < w1[pw];
  }
  // This RoI with its bins moved into the tile `t` (cleared first) that holds the
  // rows and columns the bins cover; false when that footprint is empty or too
  // large to tile. Bin-relative pixel order is unchanged.
  bool to_tile(RoiBins& tiled, TileIndex& t) const {
    t.clear();
    const int y0 = int(footprint.y0), y1 = int(footprint.y1);
    const int x0 = int(footprint.x0), x1 = int(footprint.x1);
    if (y1 <= y0 || x1 <= x0 || int64_t(y1 - y0) * (x1 - x0) > kMaxTilePixels) return false;
    for (int y = y0; y < y1; ++y) t.rows.push_back(y);  // sorted and distinct already
    for (int x = x0; x < x1; ++x) t.cols.push_back(x);
    tiled = *this;
    tiled.image = tiled.level = 0;
    for (int& v : tiled.h0) v -= y0;
    for (int& v : tiled.h1) v -= y0;
    for (int& v : tiled.w0) v -= x0;
    for (int& v : tiled.w1) v -= x0;
    return true;
  }
};

// Mean over the bin's `count` pixels (roi_pool, ps_roi_pool), or for weighted bins
// (prroi_pool) the sum of each pixel times its row weight times its column weight,
// summed in row-major order. Bins of more than kSumRun pixels are summed in acc_t runs
// of kSumRun pixels added in double: in float32 the mean of an 8192 x 8192 bin of ones
// would be 0.25.
template <bool Weighted, typename scalar_t, typename acc_t>
void bin_sum(acc_t* out, const RoiBins<acc_t>& r, int64_t ph, int64_t pw, int64_t count,
             const View4<const scalar_t>& v, const scalar_t* src, int64_t n) {
  const int64_t h0 = r.h0[ph], h1 = r.h1[ph], w0 = r.w0[pw], w1 = r.w1[pw];
  const acc_t* wy = Weighted ? r.row_weights(ph) : nullptr;
  const acc_t* wx = Weighted ? r.col_weights(pw) : nullptr;
  // One tap per pixel; of weight 1 unweighted: w * x == x, so these sums round as plain ones.
  Taps<acc_t, 1> t{{0}, {acc_t(1)}};
  auto tap = [&](int64_t h, int64_t w) {
    t.off[0] = h * v.s2 + w * v.s3;
    if constexpr (Weighted) t.w[0] = wy[h - h0] * wx[w - w0];
  };
  auto finish = [&](auto sum) {
    if constexpr (Weighted) return sum;
    else return sum / decltype(sum)(acc_t(count));
  };
  if (count <= kSumRun) {
    sum_taps(
        out, src, v.s1, n,
        [&](auto&& add) {
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) tap(h, w), add(t);
        },
        finish);
    return;
  }
  fill_channels(out, acc_t(0), n);
  double total[kChannelBlock] = {};
  int64_t in_run = 0;
  for (int64_t h = h0; h < h1; ++h)
    for (int64_t w = w0; w < w1; ++w) {
      tap(h, w);
      accumulate_taps(out, src, v.s1, n, t);
      if (++in_run == kSumRun) {
        for (int64_t c = 0; c < n; ++c) total[c] += double(out[c]);
        fill_channels(out, acc_t(0), n);
        in_run = 0;
      }
    }
  for (int64_t c = 0; c < n; ++c)
    out[c] = acc_t(Weighted ? total[c] + double(out[c]) : (total[c] + double(out[c])) / double(count));
}

template <typename scalar_t, typename acc_t>
void bin_mean(acc_t* out, const RoiBins<acc_t>& r, int64_t ph, int64_t pw, int64_t count,
              const View4<const scalar_t>& v, const scalar_t* src, int64_t n) {
  if (r.weighted())
    bin_sum<true>(out, r, ph, pw, count, v, src, n);
  else
    bin_sum<false>(out, r, ph, pw, count, v, src, n);
}

// First maximum over the bin's pixels in row-major order (a NaN wins and the first
// NaN is kept, as update_max): best[c] and pixel[c], its index h * W + w in the RoI's
// map (< 2^31: max mode refuses larger maps). `bins` addresses `src` (possibly a
// tile), `at` holds the same bins in map coordinates.
template <typename scalar_t, typename acc_t>
void bin_argmax(acc_t* best, int32_t* pixel, const RoiBins<acc_t>& bins, const RoiBins<acc_t>& at,
                int64_t ph, int64_t pw, const View4<const scalar_t>& v, const scalar_t* src,
                int64_t n, int64_t W) {
  using Vec = at::vec::Vectorized<acc_t>;
  using Idx = index_of<acc_t>;  // as wide as acc_t, so one mask blends value and index
  using IVec = at::vec::Vectorized<Idx>;
  constexpr int64_t V = Vec::size();
  const int64_t h0 = bins.h0[ph], h1 = bins.h1[ph], w0 = bins.w0[pw], w1 = bins.w1[pw];
  // Map pixel of (h, w) in `src`'s coordinates.
  const int64_t shift = (at.h0[ph] - h0) * W + at.w0[pw] - w0;
  by_channel_runs<acc_t>(
      n, v.s1,
      [&](int64_t c, auto unroll) {
        constexpr int U = decltype(unroll)::value;
        Vec b[U];
        IVec arg[U];
        // The first pixel starts the maximum; comparing it with itself changes nothing.
        for (int u = 0; u < U; ++u) {
          b[u] = load_acc(src + h0 * v.s2 + w0 * v.s3 + c + u * V);
          arg[u] = IVec(Idx(shift + h0 * W + w0));
        }
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const scalar_t* p = src + h * v.s2 + w * v.s3 + c;
            const IVec index(Idx(shift + h * W + w));
            for (int u = 0; u < U; ++u) {
              const Vec x = load_acc(p + u * V);
              const Vec take = takes_max(x, b[u]);
              b[u] = Vec::blendv(b[u], x, take);
              arg[u] = IVec::blendv(arg[u], index, at::vec::cast<Idx>(take));
            }
          }
        for (int u = 0; u < U; ++u) {
          alignas(64) Idx i[V];
          b[u].store(best + c + u * V);
          arg[u].store(i);
          for (int64_t j = 0; j < V; ++j) pixel[c + u * V + j] = int32_t(i[j]);
        }
      },
      [&](int64_t c0) {
        for (int64_t c = c0; c < n; ++c) {
          best[c] = acc_t(src[c * v.s1 + h0 * v.s2 + w0 * v.s3]);
          pixel[c] = int32_t(shift + h0 * W + w0);
        }
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const scalar_t* p = src + h * v.s2 + w * v.s3;
            const int32_t index = int32_t(shift + h * W + w);
            for (int64_t c = c0; c < n; ++c) {
              // Selects, not a branch: a mispredicted compare would also discard the
              // other channels' loads in flight.
              const acc_t x = acc_t(p[c * v.s1]), b = best[c];
              const bool take = takes_max(x, b);
              best[c] = take ? x : b;
              pixel[c] = take ? index : pixel[c];
            }
          }
      });
}

// Forward: output and, in max mode, the argmax as a pixel index h * W + w into the
// RoI's map (-1 for an empty bin). Also the avg-mode JVP (linear), run on a tangent.
// Scheduling and planar tiles: for_each_forward_task (forward_schedule.h).
template <typename scalar_t, Mode M>
void pool_forward(const Maps<const scalar_t>& in, const at::Tensor& rois, at::Tensor& out,
                  at::Tensor& argmax, const PoolArgs& a) {
  using acc_t = acc_type<scalar_t>;
  const View4<scalar_t> o = view4<scalar_t>(out);
  const View4<int32_t> am = argmax_view<int32_t>(argmax);
  const bool around_caches = writes_around_caches(out, argmax);
  const double* rp = rois.data_ptr<double>();

  using Roi = RoiBins<acc_t>;
  for_each_forward_task<scalar_t, Roi>(
      in, RoiRows(rois), out.size(1), a.channels,
      [&](Roi& r, int64_t k) { r.build(rp, k, in, a); },
      [&](const ForwardTask<scalar_t, Roi>& t) {
        const Roi& r = t.geometry;
        const int64_t n = t.n;
        acc_t acc[kChannelBlock];
        int32_t pixel[kChannelBlock];
        const int64_t W = in.widths[t.at.level];
        OutputBlock<scalar_t> block(o, am, t.k, t.c0, n, a.pooled_h, a.pooled_w, around_caches);
        for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
          for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
            const int64_t count = r.count(ph, pw);
            const scalar_t* src = t.bin_src(ph * a.pooled_w + pw);
            if (count == 0) {
              fill_channels(acc, acc_t(0), n);
              fill_channels(pixel, int32_t(-1), n);
            } else if constexpr (M == Mode::Avg) {
              bin_mean(acc, r, ph, pw, count, t.view, src, n);
            } else {
              bin_argmax(acc, pixel, r, t.at, ph, pw, t.view, src, n, W);
            }
            block.put(ph, pw, acc, M == Mode::Max ? pixel : nullptr);
          }
        }
        block.finish();
      });
}

// Max-mode JVP: the tangent at each bin's argmax pixel.
template <typename scalar_t>
void pool_gather(const Maps<const scalar_t>& tangent, const at::Tensor& argmax,
                 const at::Tensor& rois, at::Tensor& out, const PoolArgs& a) {
  const int64_t K = rois.size(0), C = out.size(1);
  const View4<scalar_t> o = view4<scalar_t>(out);
  const View4<const int32_t> am = argmax_view<const int32_t>(argmax);
  const double* rp = rois.data_ptr<double>();

  parallel_dynamic(K, kRoiChunk, [&](auto& claim) {
    RoiBins<acc_type<scalar_t>> r;
    int64_t k0, k1;
    while (claim(k0, k1)) for (int64_t k = k0; k < k1; ++k) {
      r.build(rp, k, tangent, a);
      const View4<const scalar_t>& v = tangent.views[r.level];
      const int64_t W = tangent.widths[r.level];
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ph = 0; ph < a.pooled_h; ++ph)
          for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
            const int32_t p = am.data[k * am.s0 + c * am.s1 + ph * am.s2 + pw * am.s3];
            o.data[k * o.s0 + c * o.s1 + ph * o.s2 + pw * o.s3] =
                r.contains(ph, pw, p, W)
                    ? v.data[r.image * v.s0 + c * v.s1 + (p / W) * v.s2 + (p % W) * v.s3]
                    : scalar_t(0);
          }
    }
  });
}

// Input gradient, the adjoint of pool_forward. Scheduling, windows and determinism:
// for_each_backward_task (backward_schedule.h).
template <typename scalar_t, Mode M>
void pool_backward(const at::Tensor& grad, const at::Tensor& argmax,
                   const Maps<const scalar_t>& shape, const at::Tensor& rois,
                   const Maps<acc_type<scalar_t>>& gi, const PoolArgs& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t K = rois.size(0);
  const BinReader<scalar_t> go{view4<const scalar_t>(grad), K, a.pooled_h, a.pooled_w};
  const BinReader<int32_t> am{argmax_view<const int32_t>(argmax), K, a.pooled_h, a.pooled_w};
  const double* rp = rois.data_ptr<double>();

  for_each_backward_task<RoiBins<acc_t>>(
      gi, bucket_rois(RoiRows(rois), shape.batch, shape), a.channels,
      [&](RoiBins<acc_t>& r, int64_t k) { r.build(rp, k, shape, a); },
      [&](int64_t k, int64_t c0, int64_t n, const RoiBins<acc_t>& r, const GradWindow<acc_t>& whole) {
        BinCursor<acc_t, scalar_t> grads(go, k, c0, n);
        BinCursor<int32_t, int32_t> args(am, k, c0, n);
        GradWindow<acc_t> bin_window = whole;
        for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
          for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
            const int64_t count = r.count(ph, pw);
            if (count == 0) continue;
            const acc_t* g = grads(ph, pw);
            const GradWindow<acc_t>& w =
                a.channels.per_bin ? (bin_window = whole.for_bin(ph * a.pooled_w + pw)) : whole;
            if constexpr (M == Mode::Avg) {
              const int64_t y1 = std::min<int64_t>(r.h1[ph], w.y1);
              const int64_t x1 = std::min<int64_t>(r.w1[pw], w.x1);
              const int64_t y0 = std::max<int64_t>(r.h0[ph], w.y0), x0 = std::max<int64_t>(r.w0[pw], w.x0);
              if (r.weighted()) {
                // The adjoint of bin_sum's weighted taps: each pixel's weight, rounded as there.
                const acc_t* wy = r.row_weights(ph);
                const acc_t* wx = r.col_weights(pw);
                for (int64_t y = y0; y < y1; ++y)
                  for (int64_t x = x0; x < x1; ++x) w.add(y, x, wy[y - r.h0[ph]] * wx[x - r.w0[pw]], g, n);
                continue;
              }
              acc_t gout[kChannelBlock];
              for (int64_t c = 0; c < n; ++c) gout[c] = g[c] / acc_t(count);
              for (int64_t y = y0; y < y1; ++y)
                for (int64_t x = x0; x < x1; ++x) w.add(y, x, acc_t(1), gout, n);
            } else {
              // Argmax entries come from the forward; ones outside the window (which
              // lies in the map), as in a corrupted tensor passed to this op
              // directly, are skipped rather than followed.
              w.add_at(args(ph, pw), g, n);
            }
          }
        }
      });
}

// prroi_pool's box gradient d(loss)/d(x1, y1, x2, y2) into the float64 [K, 5]
// `grad_rois` (column 0, the batch index, stays 0): per bin and channel, the output is
// sum_ij v[i, j] * wy[i] * wx[j], so moving a box coordinate changes it through one
// axis' weights only (their derivatives: roi_geometry.h, precise_weight). Sums in
// double, in a fixed order per RoI; parallel over RoIs.
template <typename scalar_t>
void precise_backward_rois(const at::Tensor& grad, const Maps<const scalar_t>& in,
                           const at::Tensor& rois, at::Tensor& grad_rois, const PoolArgs& a) {
  const int64_t K = rois.size(0), C = in.channels;
  const View4<const scalar_t> go = view4<const scalar_t>(grad);
  const double* rp = rois.data_ptr<double>();
  double* gr = grad_rois.data_ptr<double>();

  parallel_dynamic(K, kRoiChunk, [&](auto& claim) {
    PreciseBins y, x;
    int64_t k0, k1;
    while (claim(k0, k1)) for (int64_t k = k0; k < k1; ++k) {
      const double* roi = rp + k * 5;
      const int64_t image = static_cast<int64_t>(roi[0]), level = in.level_of(k);
      const double scale = in.scales[level];
      y.build(roi[2], roi[4], scale, int(a.pooled_h), in.heights[level]);
      x.build(roi[1], roi[3], scale, int(a.pooled_w), in.widths[level]);
      const View4<const scalar_t>& v = in.views[level];
      double d[4] = {0, 0, 0, 0};  // y1, y2, x1, x2 of the scaled box
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* map = v.data + image * v.s0 + c * v.s1;
        for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
          const PreciseWeight* wy = y.of(ph);
          for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
            const double g = double(go.data[k * go.s0 + c * go.s1 + ph * go.s2 + pw * go.s3]);
            const PreciseWeight* wx = x.of(pw);
            for (int64_t i = y.begin[ph]; i < y.end[ph]; ++i) {
              // The row's sums against the column weights and their derivatives.
              double row = 0, row_x1 = 0, row_x2 = 0;
              for (int64_t j = x.begin[pw]; j < x.end[pw]; ++j) {
                const double value = double(map[i * v.s2 + j * v.s3]);
                const PreciseWeight& wj = wx[j - x.begin[pw]];
                row += value * wj.w;
                row_x1 += value * wj.d_start;
                row_x2 += value * wj.d_end;
              }
              const PreciseWeight& wi = wy[i - y.begin[ph]];
              d[0] += g * row * wi.d_start;
              d[1] += g * row * wi.d_end;
              d[2] += g * row_x1 * wi.w;
              d[3] += g * row_x2 * wi.w;
            }
          }
        }
      }
      store_box_grad(gr + k * 5, d, scale);
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> pool_forward_op(at::TensorList inputs, const at::Tensor& rois_in,
                                              const at::Tensor& levels_in, at::ArrayRef<double> scales,
                                              const PoolArgs& a, bool keep_argmax) {
  const at::Tensor rois = rois_as_double(rois_in);
  const RoiLevels levels(levels_in);
  at::Tensor out = empty_cpu_output(inputs, rois.size(0), a.pooled_h, a.pooled_w, a.channels.group);
  at::Tensor argmax = empty_cpu_argmax(out, a.mode, keep_argmax);
  if (out.numel() == 0) return {out, argmax};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "roiops_roi_pool", [&] {
    const Maps<const scalar_t> in(inputs, scales, levels.data);
    if (a.mode == Mode::Avg)
      pool_forward<scalar_t, Mode::Avg>(in, rois, out, argmax, a);
    else
      pool_forward<scalar_t, Mode::Max>(in, rois, out, argmax, a);
  });
  return {out, argmax};
}

at::Tensor pool_jvp_op(at::TensorList tangents, const at::Tensor& argmax, const at::Tensor& rois_in,
                  const at::Tensor& levels_in, at::ArrayRef<double> scales, const PoolArgs& a) {
  if (a.mode == Mode::Avg) return std::get<0>(pool_forward_op(tangents, rois_in, levels_in, scales, a, false));
  const at::Tensor rois = rois_as_double(rois_in);
  const RoiLevels levels(levels_in);
  at::Tensor out = empty_cpu_output(tangents, rois.size(0), a.pooled_h, a.pooled_w, a.channels.group);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "roiops_roi_pool_jvp", [&] {
    pool_gather<scalar_t>(Maps<const scalar_t>(tangents, scales, levels.data), argmax, rois, out, a);
  });
  return out;
}

std::vector<at::Tensor> pool_backward_op(const at::Tensor& grad, at::TensorList inputs,
                                    const at::Tensor& argmax, const at::Tensor& rois_in,
                                    const at::Tensor& levels_in, at::ArrayRef<double> scales,
                                    const PoolArgs& a) {
  const at::Tensor rois = rois_as_double(rois_in);
  const RoiLevels levels(levels_in);
  std::vector<at::Tensor> gi = grad_accumulators(inputs);
  const at::ScalarType dtype = inputs[0].scalar_type();
  if (rois.size(0) == 0 || inputs[0].size(1) == 0) {
    for (at::Tensor& g : gi) g.zero_();
    return finish_grads(gi, dtype);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "roiops_roi_pool_backward", [&] {
    const Maps<const scalar_t> shape(inputs, scales, levels.data);
    const Maps<acc_type<scalar_t>> g(gi, scales, levels.data);
    if (a.mode == Mode::Avg)
      pool_backward<scalar_t, Mode::Avg>(grad, argmax, shape, rois, g, a);
    else
      pool_backward<scalar_t, Mode::Max>(grad, argmax, shape, rois, g, a);
  });
  return finish_grads(gi, dtype);
}

at::Tensor pool_backward_rois_op(const at::Tensor& grad, at::TensorList inputs,
                                 const at::Tensor& argmax, const at::Tensor& rois_in,
                                 const at::Tensor& levels_in, at::ArrayRef<double> scales,
                                 const PoolArgs& a) {
  const at::Tensor rois = rois_as_double(rois_in);
  const RoiLevels levels(levels_in);
  at::Tensor gr = at::zeros_like(rois);
  // Rounded boxes (roi_pool, ps_roi_pool) have no box gradient; precise bins do.
  if (a.rule == PoolRule::Precise && inputs[0].size(1) > 0 && rois.size(0) > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, inputs[0].scalar_type(),
                                    "roiops_prroi_pool_backward_rois", [&] {
      precise_backward_rois<scalar_t>(grad, Maps<const scalar_t>(inputs, scales, levels.data), rois, gr, a);
    });
  }
  // In the boxes' own dtype and the contiguous layout the fake kernel states.
  return gr.to(rois_in.scalar_type());
}

}  // namespace roiops::cpu
