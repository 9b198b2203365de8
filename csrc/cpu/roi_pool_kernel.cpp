// roi_pool on the CPU (Fast R-CNN): integer bins over a rounded box, max or mean over
// exactly the bin's pixels; on one map or fused over a pyramid. Same parallel /
// deterministic structure as the sampled ops (sampled_roi_cpu.h).
#include <torch/library.h>

#include "cpu_common.h"

namespace roiops::cpu {
namespace {

using Str = c10::string_view;

struct PoolArgs {
  int64_t pooled_h, pooled_w;
  Mode mode;
};

// One RoI's bins: rows [h0[ph], h1[ph]) and columns [w0[pw], w1[pw]).
struct RoiBins {
  int64_t image = 0, level = 0;
  std::vector<int> h0, h1, w0, w1;

  // RoI k of `rois`, on its level of `maps`.
  template <typename scalar_t, typename T>
  void build(const scalar_t* rois, int64_t k, const Maps<T>& maps, const PoolArgs& a) {
    const scalar_t* roi = rois + k * 5;
    image = static_cast<int64_t>(roi[0]);
    level = maps.level_of(k);
    const int64_t H = maps.heights[level], W = maps.widths[level];
    const double scale = maps.scales[level];
    const PoolAxis y = pool_axis(double(roi[2]), double(roi[4]), scale);
    const PoolAxis x = pool_axis(double(roi[1]), double(roi[3]), scale);
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
void pool_forward(const Maps<const scalar_t>& sel, const Maps<const scalar_t>& val,
                  const at::Tensor& rois, at::Tensor& out, const PoolArgs& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t K = rois.size(0), C = out.size(1);
  const View4<scalar_t> o = view4<scalar_t>(out);
  const scalar_t* rp = rois.data_ptr<scalar_t>();
  const bool same = &sel == &val;

  parallel_dynamic(K, 4, [&](auto& claim) {
    RoiBins r;
    acc_t acc[kChannelBlock], scratch[kChannelBlock];
    int32_t arg[kChannelBlock];
    int64_t k0, k1;
    while (claim(k0, k1)) for (int64_t k = k0; k < k1; ++k) {
      r.build(rp, k, sel, a);
      const View4<const scalar_t>& sv = sel.views[r.level];
      const View4<const scalar_t>& vv = val.views[r.level];
      for (int64_t c0 = 0; c0 < C; c0 += kChannelBlock) {
        const int64_t n = std::min(kChannelBlock, C - c0);
        const scalar_t* vsrc = vv.data + r.image * vv.s0 + c0 * vv.s1;
        const scalar_t* ssrc = sv.data + r.image * sv.s0 + c0 * sv.s1;
        for (int64_t ph = 0; ph < a.pooled_h; ++ph) {
          for (int64_t pw = 0; pw < a.pooled_w; ++pw) {
            const int count = r.count(ph, pw);
            if (count == 0) {
              std::fill(acc, acc + n, acc_t(0));
            } else if constexpr (M == Mode::Avg) {
              bin_sum(acc, r, ph, pw, vv, vsrc, n);
              for (int64_t c = 0; c < n; ++c) acc[c] /= acc_t(count);
            } else {
              bin_argmax(acc, arg, scratch, r, ph, pw, sv, ssrc, n);
              if (!same)
                for (int64_t c = 0; c < n; ++c)
                  acc[c] = acc_t(vsrc[c * vv.s1 + r.pixel(ph, pw, arg[c], vv.s2, vv.s3)]);
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
void pool_backward(const at::Tensor& grad, const Maps<const scalar_t>& in,
                   const at::Tensor& rois, const Maps<acc_type<scalar_t>>& gi,
                   const PoolArgs& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t N = in.batch, C = in.channels;
  const View4<const scalar_t> go = view4<const scalar_t>(grad);
  const scalar_t* rp = rois.data_ptr<scalar_t>();
  const RoiBuckets buckets = bucket_rois(rp, rois.size(0), N, in);
  const int64_t block = gi.channels_contiguous() ? kChannelBlock : 8;
  const int64_t blocks = (C + block - 1) / block;
  const int64_t groups = int64_t(buckets.start.size()) - 1;

  at::parallel_for(0, groups * blocks, 1, [&](int64_t t0, int64_t t1) {
    RoiBins r;
    acc_t gout[kChannelBlock], best[kChannelBlock], scratch[kChannelBlock];
    int32_t arg[kChannelBlock];
    Taps<acc_t, 1> t{{0}, {acc_t(1)}};
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t group = task / blocks, c0 = (task % blocks) * block;
      const int64_t level = group / N, image = group % N;
      const int64_t n = std::min(block, C - c0);
      const View4<acc_t>& g = gi.views[level];
      const View4<const scalar_t>& v = in.views[level];
      acc_t* dst = g.data + image * g.s0 + c0 * g.s1;
      const scalar_t* src = v.data + image * v.s0 + c0 * v.s1;
      for (int64_t i = buckets.start[group]; i < buckets.start[group + 1]; ++i) {
        const int64_t k = buckets.order[i];
        r.build(rp, k, in, a);
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
              bin_argmax(best, arg, scratch, r, ph, pw, v, src, n);
              for (int64_t c = 0; c < n; ++c)
                dst[c * g.s1 + r.pixel(ph, pw, arg[c], g.s2, g.s3)] += gout[c];
            }
          }
        }
      }
    }
  });
}

at::Tensor forward_op(at::TensorList select, at::TensorList values, const at::Tensor& rois_in,
                      const at::Tensor& levels_in, at::ArrayRef<double> scales,
                      const PoolArgs& a) {
  const at::Tensor rois = rois_in.contiguous();
  const RoiLevels levels(levels_in);
  at::Tensor out = empty_output(select, rois.size(0), a.pooled_h, a.pooled_w);
  if (out.numel() == 0) return out;
  const bool same = select.data() == values.data();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(),
                                  "roiops_roi_pool", [&] {
    const Maps<const scalar_t> sel(select, scales, levels.data);
    const Maps<const scalar_t> val(values, scales, levels.data);
    if (a.mode == Mode::Avg)
      pool_forward<scalar_t, Mode::Avg>(sel, same ? sel : val, rois, out, a);
    else
      pool_forward<scalar_t, Mode::Max>(sel, same ? sel : val, rois, out, a);
  });
  return out;
}

std::vector<at::Tensor> backward_op(const at::Tensor& grad, at::TensorList inputs,
                                    const at::Tensor& rois_in, const at::Tensor& levels_in,
                                    at::ArrayRef<double> scales, const PoolArgs& a) {
  const at::Tensor rois = rois_in.contiguous();
  const RoiLevels levels(levels_in);
  std::vector<at::Tensor> gi = zero_grad_accumulators(inputs);
  const at::ScalarType dtype = inputs[0].scalar_type();
  if (rois.size(0) == 0 || inputs[0].size(1) == 0) return finish_grads(gi, dtype);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype,
                                  "roiops_roi_pool_backward", [&] {
    const Maps<const scalar_t> in(inputs, scales, levels.data);
    const Maps<acc_type<scalar_t>> g(gi, scales, levels.data);
    if (a.mode == Mode::Avg)
      pool_backward<scalar_t, Mode::Avg>(grad, in, rois, g, a);
    else
      pool_backward<scalar_t, Mode::Max>(grad, in, rois, g, a);
  });
  return finish_grads(gi, dtype);
}

PoolArgs pool_args(int64_t ph, int64_t pw, Str mode) { return PoolArgs{ph, pw, parse_mode(mode)}; }

at::Tensor roi_pool(const at::Tensor& input, const at::Tensor& rois, double scale,
                    int64_t ph, int64_t pw, Str mode) {
  check_roi_args("roi_pool", input, rois, scale, ph, pw);
  const at::TensorList maps(input);
  return forward_op(maps, maps, rois, {}, scale, pool_args(ph, pw, mode));
}

at::Tensor roi_pool_jvp(const at::Tensor& input, const at::Tensor& tangent,
                        const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                        Str mode) {
  check_roi_args("_roi_pool_jvp", input, rois, scale, ph, pw);
  check_tangent("_roi_pool_jvp", tangent, input);
  return forward_op(input, tangent, rois, {}, scale, pool_args(ph, pw, mode));
}

at::Tensor roi_pool_backward(const at::Tensor& grad, const at::Tensor& input,
                             const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                             Str mode) {
  check_roi_args("_roi_pool_backward", input, rois, scale, ph, pw);
  check_grad("_roi_pool_backward", grad, input, rois, ph, pw);
  return backward_op(grad, input, rois, {}, scale, pool_args(ph, pw, mode))[0];
}

at::Tensor multilevel(at::TensorList inputs, const at::Tensor& rois, const at::Tensor& levels,
                      at::ArrayRef<double> scales, int64_t ph, int64_t pw, Str mode) {
  check_multilevel_args("roi_pool_multilevel", inputs, rois, levels, scales, ph, pw);
  return forward_op(inputs, inputs, rois, levels, scales, pool_args(ph, pw, mode));
}

std::vector<at::Tensor> multilevel_backward(const at::Tensor& grad, at::TensorList inputs,
                                            const at::Tensor& rois, const at::Tensor& levels,
                                            at::ArrayRef<double> scales, int64_t ph,
                                            int64_t pw, Str mode) {
  check_multilevel_args("_roi_pool_multilevel_backward", inputs, rois, levels, scales, ph, pw);
  check_grad("_roi_pool_multilevel_backward", grad, inputs[0], rois, ph, pw);
  return backward_op(grad, inputs, rois, levels, scales, pool_args(ph, pw, mode));
}

at::Tensor multilevel_jvp(at::TensorList inputs, at::TensorList tangents,
                          const at::Tensor& rois, const at::Tensor& levels,
                          at::ArrayRef<double> scales, int64_t ph, int64_t pw, Str mode) {
  check_multilevel_args("_roi_pool_multilevel_jvp", inputs, rois, levels, scales, ph, pw);
  check_tangents("_roi_pool_multilevel_jvp", tangents, inputs);
  return forward_op(inputs, tangents, rois, levels, scales, pool_args(ph, pw, mode));
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_pool", &roi_pool);
  m.impl("_roi_pool_backward", &roi_pool_backward);
  m.impl("_roi_pool_jvp", &roi_pool_jvp);
  m.impl("roi_pool_multilevel", &multilevel);
  m.impl("_roi_pool_multilevel_backward", &multilevel_backward);
  m.impl("_roi_pool_multilevel_jvp", &multilevel_jvp);
}

}  // namespace roiops::cpu
