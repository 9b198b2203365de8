// The op entry points of roi_align, roi_warp and roi_pool (single-map and fused
// multilevel), of the position-sensitive ps_roi_align and ps_roi_pool, of prroi_pool and
// of roi_align_rotated (single map):
// argument checks, then the device's kernels. Every device registers the
// same entry points with its own Backend, so what an op accepts, refuses and returns
// is one code path for the CPU, CUDA and the CPU emulation of the CUDA grid.
//
// A Backend provides, as static functions taking (maps, rois, levels, scales, args):
//   sampled_forward, sampled_backward_input, sampled_backward_rois, sampled_jvp  (align, warp)
//   pool_forward, pool_backward, pool_jvp                                      (roi_pool)
//   pool_backward_rois                  (prroi_pool's box gradient: register_precise)
// `levels` is undefined for a single map. The PS ops reach the same functions with
// args.channels a position-sensitive ChannelMap (roi_geometry.h), which every Backend
// honours.
#pragma once

#include <torch/library.h>

#include "op_common.h"

namespace roiops {

template <class B>
struct OpEntryPoints {
  using Tensor = at::Tensor;
  using TensorList = at::TensorList;
  using Str = c10::string_view;
  using Scales = at::ArrayRef<double>;

  // roi_align (quantize = false) and roi_warp (quantize = true) share every step;
  // `Op` supplies the name and how the schema's arguments become SampledArgs.
  template <class Op>
  struct Sampled {
    template <class... A>
    static std::tuple<Tensor, Tensor> forward(const Tensor& input, const Tensor& rois,
                                              double scale, A... a_, bool keep_argmax) {
      const SampledArgs a = Op::args(a_...);
      check_roi_args(Op::name, input, rois, scale, a.pooled_h, a.pooled_w, a.box_fields());
      check_channel_map(Op::name, input, a.channels, a.pooled_h, a.pooled_w);
      return B::sampled_forward(input, rois, {}, scale, a, keep_argmax);
    }
    template <class... A>
    static Tensor backward(const Tensor& grad, const Tensor& input, const Tensor& argmax,
                           const Tensor& rois, double scale, A... a_) {
      const SampledArgs a = Op::args(a_...);
      check_backward_args(Op::backward_name, grad, input, argmax, rois, {}, scale, a.pooled_h,
                          a.pooled_w, a.mode, a.channels, a.box_fields());
      return B::sampled_backward_input(grad, input, argmax, rois, {}, scale, a)[0];
    }
    template <class... A>
    static Tensor backward_rois(const Tensor& grad, const Tensor& input, const Tensor& argmax,
                                const Tensor& rois, double scale, A... a_) {
      const SampledArgs a = Op::args(a_...);
      check_backward_args(Op::backward_rois_name, grad, input, argmax, rois, {}, scale,
                          a.pooled_h, a.pooled_w, a.mode, a.channels, a.box_fields());
      return B::sampled_backward_rois(grad, input, argmax, rois, {}, scale, a);
    }
    template <class... A>
    static Tensor jvp(const Tensor& tangent, const Tensor& argmax, const Tensor& rois,
                      double scale, A... a_) {
      const SampledArgs a = Op::args(a_...);
      check_roi_args(Op::jvp_name, tangent, rois, scale, a.pooled_h, a.pooled_w, a.box_fields());
      check_channel_map(Op::jvp_name, tangent, a.channels, a.pooled_h, a.pooled_w);
      check_argmax(Op::jvp_name, argmax, tangent, rois, a.pooled_h, a.pooled_w, a.mode);
      return B::sampled_jvp(tangent, argmax, rois, {}, scale, a);
    }
    template <class... A>
    static std::tuple<Tensor, Tensor> ml_forward(TensorList inputs, const Tensor& rois,
                                                 const Tensor& levels, Scales scales, A... a_,
                                                 bool keep_argmax) {
      const SampledArgs a = Op::args(a_...);
      check_multilevel_args(Op::ml_name, inputs, rois, levels, scales, a.pooled_h, a.pooled_w);
      return B::sampled_forward(inputs, rois, levels, scales, a, keep_argmax);
    }
    template <class... A>
    static std::vector<Tensor> ml_backward(const Tensor& grad, TensorList inputs,
                                           const Tensor& argmax, const Tensor& rois,
                                           const Tensor& levels, Scales scales, A... a_) {
      const SampledArgs a = Op::args(a_...);
      check_backward_args(Op::ml_backward_name, grad, inputs, argmax, rois, levels, scales,
                          a.pooled_h, a.pooled_w, a.mode);
      return B::sampled_backward_input(grad, inputs, argmax, rois, levels, scales, a);
    }
    template <class... A>
    static Tensor ml_backward_rois(const Tensor& grad, TensorList inputs, const Tensor& argmax,
                                   const Tensor& rois, const Tensor& levels, Scales scales,
                                   A... a_) {
      const SampledArgs a = Op::args(a_...);
      check_backward_args(Op::ml_backward_rois_name, grad, inputs, argmax, rois, levels, scales,
                          a.pooled_h, a.pooled_w, a.mode);
      return B::sampled_backward_rois(grad, inputs, argmax, rois, levels, scales, a);
    }
    template <class... A>
    static Tensor ml_jvp(TensorList tangents, const Tensor& argmax, const Tensor& rois,
                         const Tensor& levels, Scales scales, A... a_) {
      const SampledArgs a = Op::args(a_...);
      check_multilevel_args(Op::ml_jvp_name, tangents, rois, levels, scales, a.pooled_h,
                            a.pooled_w);
      check_argmax(Op::ml_jvp_name, argmax, tangents[0], rois, a.pooled_h, a.pooled_w, a.mode);
      return B::sampled_jvp(tangents, argmax, rois, levels, scales, a);
    }
  };

  struct Align {
    static constexpr const char* name = "roi_align";
    static constexpr const char* backward_name = "_roi_align_backward";
    static constexpr const char* backward_rois_name = "_roi_align_backward_rois";
    static constexpr const char* jvp_name = "_roi_align_jvp";
    static constexpr const char* ml_name = "roi_align_multilevel";
    static constexpr const char* ml_backward_name = "_roi_align_multilevel_backward";
    static constexpr const char* ml_backward_rois_name = "_roi_align_multilevel_backward_rois";
    static constexpr const char* ml_jvp_name = "_roi_align_multilevel_jvp";
    static SampledArgs args(int64_t ph, int64_t pw, int64_t sr, bool aligned, Str mode,
                            Str sampling) {
      return sampled_args(name, ph, pw, sr, aligned, /*quantize=*/false, mode, sampling);
    }
  };

  struct Warp {
    static constexpr const char* name = "roi_warp";
    static constexpr const char* backward_name = "_roi_warp_backward";
    static constexpr const char* jvp_name = "_roi_warp_jvp";
    static constexpr const char* ml_name = "roi_warp_multilevel";
    static constexpr const char* ml_backward_name = "_roi_warp_multilevel_backward";
    static constexpr const char* ml_jvp_name = "_roi_warp_multilevel_jvp";
    static SampledArgs args(int64_t ph, int64_t pw, int64_t sr, Str mode, Str sampling) {
      return sampled_args(name, ph, pw, sr, /*aligned=*/false, /*quantize=*/true, mode, sampling);
    }
  };

  // ps_roi_align: roi_align's aligned geometry, avg of bilinear samples, one input
  // channel per (output channel, bin).
  struct PsAlign {
    static constexpr const char* name = "ps_roi_align";
    static constexpr const char* backward_name = "_ps_roi_align_backward";
    static constexpr const char* backward_rois_name = "_ps_roi_align_backward_rois";
    static constexpr const char* jvp_name = "_ps_roi_align_jvp";
    static SampledArgs args(int64_t ph, int64_t pw, int64_t sr) {
      SampledArgs a = sampled_args(name, ph, pw, sr, /*aligned=*/true, /*quantize=*/false, "avg",
                                   "bilinear");
      a.channels = position_sensitive(ph, pw);
      return a;
    }
  };

  // roi_align_rotated: roi_align's samples on a box turned about its centre (avg,
  // bilinear), boxes (batch_index, cx, cy, w, h, angle).
  struct Rotated {
    static constexpr const char* name = "roi_align_rotated";
    static constexpr const char* backward_name = "_roi_align_rotated_backward";
    static constexpr const char* backward_rois_name = "_roi_align_rotated_backward_rois";
    static constexpr const char* jvp_name = "_roi_align_rotated_jvp";
    static SampledArgs args(int64_t ph, int64_t pw, int64_t sr, bool aligned, bool clockwise) {
      SampledArgs a = sampled_args(name, ph, pw, sr, aligned, /*quantize=*/false, "avg", "bilinear");
      a.rotated = true;
      a.clockwise = clockwise;
      return a;
    }
  };

  // roi_pool max records pixel indices as int32.
  static PoolArgs pool_args(at::TensorList maps, int64_t ph, int64_t pw, Str mode) {
    const PoolArgs a{ph, pw, parse_mode(mode)};
    for (const at::Tensor& m : maps)
      TORCH_CHECK_VALUE(a.mode == Mode::Avg || m.dim() != 4 || m.size(2) * m.size(3) <= INT32_MAX,
                        "roi_pool: max mode records pixel indices as int32; a ", m.size(2),
                        " x ", m.size(3), " map has more pixels than that");
    return a;
  }

  struct Pool {
    static std::tuple<Tensor, Tensor> forward(const Tensor& input, const Tensor& rois,
                                              double scale, int64_t ph, int64_t pw, Str mode,
                                              bool keep_argmax) {
      check_roi_args("roi_pool", input, rois, scale, ph, pw);
      return B::pool_forward(input, rois, {}, scale, pool_args(input, ph, pw, mode), keep_argmax);
    }
    static Tensor backward(const Tensor& grad, const Tensor& input, const Tensor& argmax,
                           const Tensor& rois, double scale, int64_t ph, int64_t pw, Str mode) {
      const PoolArgs a = pool_args(input, ph, pw, mode);
      check_backward_args("_roi_pool_backward", grad, input, argmax, rois, {}, scale, ph, pw,
                          a.mode);
      return B::pool_backward(grad, input, argmax, rois, {}, scale, a)[0];
    }
    static Tensor jvp(const Tensor& tangent, const Tensor& argmax, const Tensor& rois,
                      double scale, int64_t ph, int64_t pw, Str mode) {
      const PoolArgs a = pool_args(tangent, ph, pw, mode);
      check_roi_args("_roi_pool_jvp", tangent, rois, scale, ph, pw);
      check_argmax("_roi_pool_jvp", argmax, tangent, rois, ph, pw, a.mode);
      return B::pool_jvp(tangent, argmax, rois, {}, scale, a);
    }
    static std::tuple<Tensor, Tensor> ml_forward(TensorList inputs, const Tensor& rois,
                                                 const Tensor& levels, Scales scales, int64_t ph,
                                                 int64_t pw, Str mode, bool keep_argmax) {
      check_multilevel_args("roi_pool_multilevel", inputs, rois, levels, scales, ph, pw);
      return B::pool_forward(inputs, rois, levels, scales, pool_args(inputs, ph, pw, mode),
                             keep_argmax);
    }
    static std::vector<Tensor> ml_backward(const Tensor& grad, TensorList inputs,
                                           const Tensor& argmax, const Tensor& rois,
                                           const Tensor& levels, Scales scales, int64_t ph,
                                           int64_t pw, Str mode) {
      const PoolArgs a = pool_args(inputs, ph, pw, mode);
      check_backward_args("_roi_pool_multilevel_backward", grad, inputs, argmax, rois, levels,
                          scales, ph, pw, a.mode);
      return B::pool_backward(grad, inputs, argmax, rois, levels, scales, a);
    }
    static Tensor ml_jvp(TensorList tangents, const Tensor& argmax, const Tensor& rois,
                         const Tensor& levels, Scales scales, int64_t ph, int64_t pw, Str mode) {
      const PoolArgs a = pool_args(tangents, ph, pw, mode);
      check_multilevel_args("_roi_pool_multilevel_jvp", tangents, rois, levels, scales, ph, pw);
      check_argmax("_roi_pool_multilevel_jvp", argmax, tangents[0], rois, ph, pw, a.mode);
      return B::pool_jvp(tangents, argmax, rois, levels, scales, a);
    }
  };

  // The single-map, avg-only pool ops (ps_roi_pool, prroi_pool) share every step; `Op`
  // supplies the names and the PoolArgs (bin rule and channel map).
  template <class Op>
  struct AvgPool {
    static std::tuple<Tensor, Tensor> forward(const Tensor& input, const Tensor& rois,
                                              double scale, int64_t ph, int64_t pw,
                                              bool keep_argmax) {
      check_roi_args(Op::name, input, rois, scale, ph, pw);
      const PoolArgs a = Op::args(ph, pw);
      check_channel_map(Op::name, input, a.channels, ph, pw);
      return B::pool_forward(input, rois, {}, scale, a, keep_argmax);
    }
    static Tensor backward(const Tensor& grad, const Tensor& input, const Tensor& argmax,
                           const Tensor& rois, double scale, int64_t ph, int64_t pw) {
      const PoolArgs a = Op::args(ph, pw);
      check_backward_args(Op::backward_name, grad, input, argmax, rois, {}, scale, ph, pw,
                          a.mode, a.channels);
      return B::pool_backward(grad, input, argmax, rois, {}, scale, a)[0];
    }
    static Tensor backward_rois(const Tensor& grad, const Tensor& input, const Tensor& argmax,
                                const Tensor& rois, double scale, int64_t ph, int64_t pw) {
      const PoolArgs a = Op::args(ph, pw);
      check_backward_args(Op::backward_rois_name, grad, input, argmax, rois, {}, scale, ph, pw,
                          a.mode, a.channels);
      return B::pool_backward_rois(grad, input, argmax, rois, {}, scale, a);
    }
    static Tensor jvp(const Tensor& tangent, const Tensor& argmax, const Tensor& rois,
                      double scale, int64_t ph, int64_t pw) {
      const PoolArgs a = Op::args(ph, pw);
      check_roi_args(Op::jvp_name, tangent, rois, scale, ph, pw);
      check_channel_map(Op::jvp_name, tangent, a.channels, ph, pw);
      check_argmax(Op::jvp_name, argmax, tangent, rois, ph, pw, a.mode);
      return B::pool_jvp(tangent, argmax, rois, {}, scale, a);
    }
  };

  // ps_roi_pool: torchvision's position-sensitive RoIPool (PoolRule::PositionSensitive
  // bins, avg), one input channel per (output channel, bin).
  struct PsPool {
    static constexpr const char* name = "ps_roi_pool";
    static constexpr const char* backward_name = "_ps_roi_pool_backward";
    static constexpr const char* jvp_name = "_ps_roi_pool_jvp";
    static PoolArgs args(int64_t ph, int64_t pw) {
      return PoolArgs{ph, pw, Mode::Avg, PoolRule::PositionSensitive, position_sensitive(ph, pw)};
    }
  };

  // prroi_pool: the exact mean of the bilinear surface over each bin (PoolRule::Precise
  // weighted bins); the box gradient is analytic (pool_backward_rois).
  struct PrPool {
    static constexpr const char* name = "prroi_pool";
    static constexpr const char* backward_name = "_prroi_pool_backward";
    static constexpr const char* backward_rois_name = "_prroi_pool_backward_rois";
    static constexpr const char* jvp_name = "_prroi_pool_jvp";
    static PoolArgs args(int64_t ph, int64_t pw) {
      return PoolArgs{ph, pw, Mode::Avg, PoolRule::Precise};
    }
  };

  // The ops of the sampled family (roi_align, roi_warp, ps_roi_align) and of roi_pool
  // (with ps_roi_pool), registered separately so that each device's files register
  // what they implement.
  static void register_sampled(torch::Library& m) {
    using A = Sampled<Align>;
    using W = Sampled<Warp>;
    using I = int64_t;
    m.impl("roi_align", &A::template forward<I, I, I, bool, Str, Str>);
    m.impl("_roi_align_backward", &A::template backward<I, I, I, bool, Str, Str>);
    m.impl("_roi_align_backward_rois", &A::template backward_rois<I, I, I, bool, Str, Str>);
    m.impl("_roi_align_jvp", &A::template jvp<I, I, I, bool, Str, Str>);
    m.impl("roi_align_multilevel", &A::template ml_forward<I, I, I, bool, Str, Str>);
    m.impl("_roi_align_multilevel_backward", &A::template ml_backward<I, I, I, bool, Str, Str>);
    m.impl("_roi_align_multilevel_backward_rois",
           &A::template ml_backward_rois<I, I, I, bool, Str, Str>);
    m.impl("_roi_align_multilevel_jvp", &A::template ml_jvp<I, I, I, bool, Str, Str>);
    m.impl("roi_warp", &W::template forward<I, I, I, Str, Str>);
    m.impl("_roi_warp_backward", &W::template backward<I, I, I, Str, Str>);
    m.impl("_roi_warp_jvp", &W::template jvp<I, I, I, Str, Str>);
    m.impl("roi_warp_multilevel", &W::template ml_forward<I, I, I, Str, Str>);
    m.impl("_roi_warp_multilevel_backward", &W::template ml_backward<I, I, I, Str, Str>);
    m.impl("_roi_warp_multilevel_jvp", &W::template ml_jvp<I, I, I, Str, Str>);
    // ps_roi_align: the same functions with a position-sensitive ChannelMap in its args.
    using P = Sampled<PsAlign>;
    m.impl("ps_roi_align", &P::template forward<I, I, I>);
    m.impl("_ps_roi_align_backward", &P::template backward<I, I, I>);
    m.impl("_ps_roi_align_backward_rois", &P::template backward_rois<I, I, I>);
    m.impl("_ps_roi_align_jvp", &P::template jvp<I, I, I>);
  }

  static void register_pool(torch::Library& m) {
    m.impl("roi_pool", &Pool::forward);
    m.impl("_roi_pool_backward", &Pool::backward);
    m.impl("_roi_pool_jvp", &Pool::jvp);
    m.impl("roi_pool_multilevel", &Pool::ml_forward);
    m.impl("_roi_pool_multilevel_backward", &Pool::ml_backward);
    m.impl("_roi_pool_multilevel_jvp", &Pool::ml_jvp);
    using Q = AvgPool<PsPool>;
    m.impl("ps_roi_pool", &Q::forward);
    m.impl("_ps_roi_pool_backward", &Q::backward);
    m.impl("_ps_roi_pool_jvp", &Q::jvp);
  }

  // roi_align_rotated: the sampled Backend functions with rotated boxes (SampledArgs::
  // rotated), which only a Backend registering this honours: the CPU's so far.
  static void register_rotated(torch::Library& m) {
    using R = Sampled<Rotated>;
    using I = int64_t;
    m.impl("roi_align_rotated", &R::template forward<I, I, I, bool, bool>);
    m.impl("_roi_align_rotated_backward", &R::template backward<I, I, I, bool, bool>);
    m.impl("_roi_align_rotated_backward_rois", &R::template backward_rois<I, I, I, bool, bool>);
    m.impl("_roi_align_rotated_jvp", &R::template jvp<I, I, I, bool, bool>);
  }

  // prroi_pool: the pool Backend functions with PoolRule::Precise bins, and the box
  // gradient, pool_backward_rois (which only a Backend registering this provides: the
  // CPU's so far).
  static void register_precise(torch::Library& m) {
    using R = AvgPool<PrPool>;
    m.impl("prroi_pool", &R::forward);
    m.impl("_prroi_pool_backward", &R::backward);
    m.impl("_prroi_pool_backward_rois", &R::backward_rois);
    m.impl("_prroi_pool_jvp", &R::jvp);
  }
};

}  // namespace roiops
