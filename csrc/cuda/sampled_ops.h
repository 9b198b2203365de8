// The bodies of roi_align and roi_warp on the GPU (declared in gpu_backend.h; the
// kernels are in sampled_kernels.h). Included by the translation units that compile
// them: one per group of kernels for CUDA, the emulator's for the CPU.
#pragma once

#include <ATen/OpMathType.h>

#include "gpu_backend.h"
#include "gpu_launch.h"

namespace roiops::gpu {

// A sampled op's kernels for one dtype, mode and sampling, as the launches take them.
template <typename scalar_t, Mode M, Sampling S>
struct SampledKernels {
  using acc_t = at::opmath_type<scalar_t>;
  template <typename I, int V>
  using Forward = SampledForward<scalar_t, acc_t, I, M, S, V>;
  template <typename I, int V>
  using Gather = SampledGather<scalar_t, acc_t, I, S>;  // one channel per thread
  template <typename I, int V>
  using BackwardInput = SampledBackwardInput<scalar_t, acc_t, I, M, S, V>;
};

template <class L>
std::tuple<at::Tensor, at::Tensor> SampledForwardOps<L>::sampled_forward(at::TensorList inputs,
                                                                         const at::Tensor& rois,
                                                                         const at::Tensor& levels, Scales scales,
                                                                         const SampledArgs& a, bool keep_argmax) {
  [[maybe_unused]] auto guard = L::guard(inputs[0]);
  const RoiSource src(rois, levels, inputs, scales);
  at::Tensor out = empty_output(inputs, src.K(), a.pooled_h, a.pooled_w, a.channels.group);
  at::Tensor argmax = empty_argmax(out, a.mode, keep_argmax);
  if (out.numel() == 0) return {out, argmax};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "roiops_gpu_sampled_forward", [&] {
    dispatch_mode_sampling(a.mode, a.sampling, [&](auto m, auto s) {
      using Op = SampledKernels<scalar_t, decltype(m)::value, decltype(s)::value>;
      const SampledTables<L, typename Op::acc_t, decltype(s)::value> tables(src, out, a);
      launch_bins<L, Op::template Forward, scalar_t>(inputs, scales, tables.t, a.channels, out, argmax);
    });
  });
  return {out, argmax};
}

template <class L>
at::Tensor SampledForwardOps<L>::sampled_jvp(at::TensorList tangents, const at::Tensor& argmax,
                                             const at::Tensor& rois, const at::Tensor& levels, Scales scales,
                                             const SampledArgs& a) {
  if (a.mode == Mode::Avg)  // the avg forward is linear: its JVP is the forward itself
    return std::get<0>(sampled_forward(tangents, rois, levels, scales, a, false));
  [[maybe_unused]] auto guard = L::guard(tangents[0]);
  const RoiSource src(rois, levels, tangents, scales);
  at::Tensor out = empty_output(tangents, src.K(), a.pooled_h, a.pooled_w, a.channels.group);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "roiops_gpu_sampled_jvp", [&] {
    dispatch_sampling(a.sampling, [&](auto s) {
      using Op = SampledKernels<scalar_t, Mode::Max, decltype(s)::value>;
      const SampledTables<L, typename Op::acc_t, decltype(s)::value> tables(src, out, a);
      launch_bins<L, Op::template Gather, scalar_t, false>(tangents, scales, tables.t, a.channels, out, argmax);
    });
  });
  return out;
}

// The table with the avg input gradient's AxisReads of every RoI (one launch), for the
// plain ops; a position-sensitive thread reads one bin of a RoI and finds its samples
// itself. K x (largest H + largest W) records, 16 bytes each (32 for float64). Max
// mode finds its samples itself: records of its samples cost its 16-channel kernels
// more registers than they have (docs/gpu-cost-model.md).
template <class L, typename acc_t, Mode M, Sampling S>
struct AxisReadTables {
  std::vector<at::Tensor> keep;
  SampledTable<acc_t> t;
  AxisReadTables(const RoiSource& src, const SampledTable<acc_t>& base, const at::Tensor& like,
                 const SampledArgs& a)
      : t(base) {
    if constexpr (M == Mode::Avg) {
      if (a.channels.per_bin != 0) return;
      const int64_t K = src.K();
      for (int l = 0; l < src.count; ++l) {
        t.reads_h = std::max(t.reads_h, src.H[l]);
        t.reads_w = std::max(t.reads_w, src.W[l]);
      }
      t.row_reads = device_array<AxisReads<acc_t>>(keep, like, K * t.reads_h);
      t.col_reads = device_array<AxisReads<acc_t>>(keep, like, K * t.reads_w);
      typename BuildAxisReads<acc_t, S>::Args b{};
      b.t = t;
      for (int l = 0; l < src.count; ++l) b.H[l] = src.H[l], b.W[l] = src.W[l];
      b.rows = K * ((t.reads_h + kTile - 1) / kTile);
      b.n = b.rows + K * ((t.reads_w + kTile - 1) / kTile);
      L::template launch<BuildAxisReads<acc_t, S>>(b);
    }
  }
};

template <class L, Mode M, Sampling S>
std::vector<at::Tensor> SampledBackwardInputOps<L, M, S>::run(const at::Tensor& grad, at::TensorList inputs,
                                                              const at::Tensor& argmax, const at::Tensor& rois,
                                                              const at::Tensor& levels, Scales scales,
                                                              const SampledArgs& a) {
  [[maybe_unused]] auto guard = L::guard(inputs[0]);
  const RoiSource src(rois, levels, inputs, scales);
  std::vector<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, inputs[0].scalar_type(), "roiops_gpu_sampled_backward", [&] {
    using Op = SampledKernels<scalar_t, M, S>;
    const SampledTables<L, typename Op::acc_t, S> tables(src, grad, a);
    const AxisReadTables<L, typename Op::acc_t, M, S> reads(src, tables.t, grad, a);
    result = launch_pixels<L, Op::template BackwardInput, scalar_t>(inputs, scales, reads.t, a.channels,
                                                                    tables.keys, src, grad, argmax);
  });
  return result;
}

template <class L>
at::Tensor SampledBoxGradOps<L>::sampled_backward_rois(const at::Tensor& grad, at::TensorList inputs,
                                                       const at::Tensor& argmax, const at::Tensor& rois,
                                                       const at::Tensor& levels, Scales scales,
                                                       const SampledArgs& a) {
  [[maybe_unused]] auto guard = L::guard(inputs[0]);
  const RoiSource src(rois, levels, inputs, scales);
  at::Tensor gr = at::zeros_like(src.rois);
  const int64_t K = src.K(), C = a.channels.output_channels(inputs[0].size(1));
  // Box gradients exist only through bilinear sample positions of an unquantized box.
  if (!a.quantize && a.sampling == Sampling::Bilinear && K > 0 && C > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, inputs[0].scalar_type(), "roiops_gpu_sampled_backward_rois", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const SampledTables<L, acc_t, Sampling::Bilinear> tables(src, grad, a);
      std::vector<at::Tensor> all(inputs.begin(), inputs.end());
      all.push_back(grad);
      all.push_back(argmax);
      at::Tensor partial;
      dispatch_index(fits_int32(all), [&](auto index) {
        dispatch_channels<scalar_t>(all, C, [&](auto pack) {
          using I = decltype(index);
          constexpr int V = decltype(pack)::value;
          partial = at::empty({K, C / V, 4}, src.rois.options());
          dispatch_mode(a.mode, [&](auto mode) {
            using P = SampledBoxGradPartial<scalar_t, acc_t, I, decltype(mode)::value, V>;
            L::template launch<P>(typename P::Args{pyramid<const scalar_t, I>(inputs, scales),
                                                   bin_view<const scalar_t, I>(grad),
                                                   bin_view<const int32_t, I>(argmax), tables.t, a.channels,
                                                   partial.data_ptr<double>(), K * (C / V)});
          });
        });
      });
      SampledBoxGradReduce::Args r{};
      r.partial = partial.data_ptr<double>();
      r.info = tables.t.info;
      for (int l = 0; l < kMaxLevels; ++l) r.scale[l] = src.scale[l];
      r.groups = partial.size(1);
      r.grad_rois = gr.data_ptr<double>();
      r.n = K;
      L::template launch<SampledBoxGradReduce>(r);
    });
  }
  // In the boxes' own dtype and the contiguous layout the fake kernel states.
  return gr.to(rois.scalar_type());
}

}  // namespace roiops::gpu
