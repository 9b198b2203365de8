// roi_pool on the CPU (Fast R-CNN): integer bins over a rounded box, max or mean over
// exactly the bin's pixels. Same parallel / deterministic structure as the sampled ops.
#include <torch/library.h>

#include "cpu_common.h"

namespace roiops::cpu {
namespace {

struct PoolArgs {
  double spatial_scale;
  int64_t pooled_h, pooled_w;
  Mode mode;
};

// One RoI's bins: rows [h0[ph], h1[ph]) and columns [w0[pw], w1[pw]).
struct RoiBins {
  int64_t image = 0;
  std::vector<int> h0, h1, w0, w1;

  template <typename scalar_t>
  void build(const scalar_t* roi, const PoolArgs& a, int64_t H, int64_t W) {
    image = static_cast<int64_t>(roi[0]);
    const PoolAxis y = pool_axis(double(roi[2]), double(roi[4]), a.spatial_scale);
    const PoolAxis x = pool_axis(double(roi[1]), double(roi[3]), a.spatial_scale);
    h0.resize(a.pooled_h), h1.resize(a.pooled_h), w0.resize(a.pooled_w), w1.resize(a.pooled_w);
    for (int p = 0; p < a.pooled_h; ++p) pool_bin(y, p, int(a.pooled_h), int(H), &h0[p], &h1[p]);
    for (int p = 0; p < a.pooled_w; ++p) pool_bin(x, p, int(a.pooled_w), int(W), &w0[p], &w1[p]);
  }
  int count(int64_t ph, int64_t pw) const {
    return std::max(h1[ph] - h0[ph], 0) * std::max(w1[pw] - w0[pw], 0);
  }
  // Offset of the i-th pixel of bin (ph, pw) in row-major order.
  int64_t pixel(int64_t ph, int64_t pw, int i, int64_t sh, int64_t sw) const {
    const int bw = w1[pw] - w0[pw];
    return (h0[ph] + i / bw) * sh + (w0[pw] + i % bw) * sw;
  }
};

template <typename scalar_t, typename acc_t>
void bin_sum(acc_t* out, const RoiBins& r, int64_t ph, int64_t pw,
             const View4<const scalar_t>& v, const scalar_t* src, int64_t n) {
  std::fill(out, out + n, acc_t(0));
  Taps<acc_t, 1> t{{0}, {acc_t(1)}};
  const int count = r.count(ph, pw);
  for (int i = 0; i < count; ++i) {
    t.off[0] = r.pixel(ph, pw, i, v.s2, v.s3);
    accumulate_taps(out, src, v.s1, n, t);
  }
}

template <typename scalar_t, typename acc_t>
void bin_argmax(acc_t* best, int32_t* arg, acc_t* scratch, const RoiBins& r, int64_t ph,
                int64_t pw, const View4<const scalar_t>& v, const scalar_t* src,
                int64_t n) {
  const int count = r.count(ph, pw);
  for (int i = 0; i < count; ++i) {
    load_channels(scratch, src + r.pixel(ph, pw, i, v.s2, v.s3), v.s1, n);
    update_max(best, arg, scratch, n, i);
  }
}

// Forward and its Jacobian-vector product (see sampled_forward).
template <typename scalar_t, Mode M>
void pool_forward(const at::Tensor& select, const at::Tensor& values,
                  const at::Tensor& rois, at::Tensor& out, const PoolArgs& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t K = rois.size(0), C = select.size(1);
  const int64_t H = select.size(2), W = select.size(3);
  const View4<const scalar_t> sel = view4<const scalar_t>(select);
  const View4<const scalar_t> val = view4<const scalar_t>(values);
  const View4<scalar_t> o = view4<scalar_t>(out);
  const scalar_t* rp = rois.data_ptr<scalar_t>();
  const bool same = select.data_ptr() == values.data_ptr() &&
                    select.strides() == values.strides();

  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    RoiBins r;
    acc_t acc[kChannelBlock], scratch[kChannelBlock];
    int32_t arg[kChannelBlock];
    for (int64_t k = k0; k < k1; ++k) {
      r.build(rp + k * 5, a, H, W);
      for (int64_t c0 = 0; c0 < C; c0 += kChannelBlock) {
        const int64_t n = std::min(kChannelBlock, C - c0);
        const scalar_t* vsrc = val.data + r.image * val.s0 + c0 * val.s1;
        const scalar_t* ssrc = sel.data + r.image * sel.s0 + c0 * sel.s1;
        for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
          for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
            const int count = r.count(ph, pw);
            if (count == 0) {
              std::fill(acc, acc + n, acc_t(0));
            } else if constexpr (M == Mode::Avg) {
              bin_sum(acc, r, ph, pw, val, vsrc, n);
              for (int64_t c = 0; c < n; ++c) acc[c] /= acc_t(count);
            } else {
              bin_argmax(acc, arg, scratch, r, ph, pw, sel, ssrc, n);
              if (!same)
                for (int64_t c = 0; c < n; ++c)
                  acc[c] = acc_t(vsrc[c * val.s1 + r.pixel(ph, pw, arg[c], val.s2, val.s3)]);
            }
            store_channels(o.data + k * o.s0 + c0 * o.s1 + ph * o.s2 + pw * o.s3, o.s1,
                           acc, n);
          }
        }
      }
    }
  });
}

template <typename scalar_t, Mode M>
void pool_backward(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                   at::Tensor& gi, const PoolArgs& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t N = input.size(0), C = input.size(1);
  const int64_t H = input.size(2), W = input.size(3);
  const View4<const scalar_t> go = view4<const scalar_t>(grad);
  const View4<const scalar_t> in = view4<const scalar_t>(input);
  const View4<acc_t> g = view4<acc_t>(gi);
  const scalar_t* rp = rois.data_ptr<scalar_t>();
  const RoiBuckets buckets = bucket_rois(rp, rois.size(0), N);
  const int64_t block = g.s1 == 1 ? kChannelBlock : 8;
  const int64_t blocks = (C + block - 1) / block;

  at::parallel_for(0, N * blocks, 1, [&](int64_t t0, int64_t t1) {
    RoiBins r;
    acc_t gout[kChannelBlock], best[kChannelBlock], scratch[kChannelBlock];
    int32_t arg[kChannelBlock];
    Taps<acc_t, 1> t{{0}, {acc_t(1)}};
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t n_img = task / blocks, c0 = (task % blocks) * block;
      const int64_t n = std::min(block, C - c0);
      acc_t* dst = g.data + n_img * g.s0 + c0 * g.s1;
      const scalar_t* src = in.data + n_img * in.s0 + c0 * in.s1;
      for (int64_t i = buckets.start[n_img]; i < buckets.start[n_img + 1]; ++i) {
        const int64_t k = buckets.order[i];
        r.build(rp + k * 5, a, H, W);
        for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
          for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
            const int count = r.count(ph, pw);
            if (count == 0) continue;
            load_channels(gout, go.data + k * go.s0 + c0 * go.s1 + ph * go.s2 + pw * go.s3,
                          go.s1, n);
            if constexpr (M == Mode::Avg) {
              for (int64_t c = 0; c < n; ++c) gout[c] /= acc_t(count);
              for (int p = 0; p < count; ++p) {
                t.off[0] = r.pixel(ph, pw, p, g.s2, g.s3);
                scatter_taps(dst, g.s1, gout, n, t);
              }
            } else {
              bin_argmax(best, arg, scratch, r, ph, pw, in, src, n);
              for (int64_t c = 0; c < n; ++c)
                dst[c * g.s1 + r.pixel(ph, pw, arg[c], g.s2, g.s3)] += gout[c];
            }
          }
        }
      }
    }
  });
}

PoolArgs pool_args(double scale, int64_t ph, int64_t pw, c10::string_view mode) {
  return PoolArgs{scale, ph, pw, parse_mode(mode)};
}

at::Tensor forward_op(const at::Tensor& select, const at::Tensor& values,
                      const at::Tensor& rois_in, const PoolArgs& a) {
  const at::Tensor rois = rois_in.contiguous();
  at::Tensor out = empty_like_format(
      select, {rois.size(0), select.size(1), a.pooled_h, a.pooled_w},
      select.scalar_type());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, select.scalar_type(),
                                  "roiops_roi_pool", [&] {
    if (a.mode == Mode::Avg)
      pool_forward<scalar_t, Mode::Avg>(select, values, rois, out, a);
    else
      pool_forward<scalar_t, Mode::Max>(select, values, rois, out, a);
  });
  return out;
}

at::Tensor roi_pool(const at::Tensor& input, const at::Tensor& rois, double scale,
                    int64_t ph, int64_t pw, c10::string_view mode) {
  check_roi_args("roi_pool", input, rois, scale, ph, pw);
  return forward_op(input, input, rois, pool_args(scale, ph, pw, mode));
}

at::Tensor roi_pool_jvp(const at::Tensor& input, const at::Tensor& tangent,
                        const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                        c10::string_view mode) {
  check_roi_args("_roi_pool_jvp", input, rois, scale, ph, pw);
  check_tangent("_roi_pool_jvp", tangent, input);
  return forward_op(input, tangent, rois, pool_args(scale, ph, pw, mode));
}

at::Tensor roi_pool_backward(const at::Tensor& grad, const at::Tensor& input,
                             const at::Tensor& rois_in, double scale, int64_t ph,
                             int64_t pw, c10::string_view mode) {
  check_roi_args("_roi_pool_backward", input, rois_in, scale, ph, pw);
  check_grad("_roi_pool_backward", grad, input, rois_in, ph, pw);
  const PoolArgs a = pool_args(scale, ph, pw, mode);
  const at::Tensor rois = rois_in.contiguous();
  const at::ScalarType acc = at::toOpMathType(input.scalar_type());
  at::Tensor gi = empty_like_format(input, input.sizes(), acc).zero_();
  if (gi.numel() == 0 || rois.size(0) == 0) return gi.to(input.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "roiops_roi_pool_backward", [&] {
    if (a.mode == Mode::Avg)
      pool_backward<scalar_t, Mode::Avg>(grad, input, rois, gi, a);
    else
      pool_backward<scalar_t, Mode::Max>(grad, input, rois, gi, a);
  });
  return gi.to(input.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_pool", &roi_pool);
  m.impl("_roi_pool_backward", &roi_pool_backward);
  m.impl("_roi_pool_jvp", &roi_pool_jvp);
}

}  // namespace roiops::cpu
