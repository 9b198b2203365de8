// The bodies of roi_pool on the GPU (declared in gpu_backend.h; the kernels are in
// pool_kernels.h). Included by the translation units that compile them.
#pragma once

#include <ATen/OpMathType.h>

#include "gpu_backend.h"
#include "gpu_launch.h"

namespace roiops::gpu {

// roi_pool's kernels for one dtype and mode, as the launches take them.
template <typename scalar_t, Mode M>
struct PoolKernels {
  using acc_t = at::opmath_type<scalar_t>;
  template <typename I, int V>
  using Forward = PoolForward<scalar_t, acc_t, I, M, V>;
  template <typename I, int V>
  using Gather = PoolGather<scalar_t, I>;  // one channel per thread
  template <typename I, int V>
  using BackwardInput = PoolBackwardInput<scalar_t, acc_t, I, M, V>;
};

template <class L>
std::tuple<at::Tensor, at::Tensor> PoolOps<L>::pool_forward(at::TensorList inputs, const at::Tensor& rois,
                                                            const at::Tensor& levels, Scales scales,
                                                            const PoolArgs& a, bool keep_argmax) {
  [[maybe_unused]] auto guard = L::guard(inputs[0]);
  const RoiSource src(rois, levels, inputs, scales);
  at::Tensor out = empty_output(inputs, src.K(), a.pooled_h, a.pooled_w, a.channels.group);
  at::Tensor argmax = empty_argmax(out, a.mode, keep_argmax);
  if (out.numel() == 0) return {out, argmax};
  const PoolTables<L> tables(src, out, a);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "roiops_gpu_pool_forward", [&] {
    dispatch_mode(a.mode, [&](auto m) {
      launch_bins<L, PoolKernels<scalar_t, decltype(m)::value>::template Forward, scalar_t>(
          inputs, scales, tables.t, a.channels, out, argmax);
    });
  });
  return {out, argmax};
}

template <class L>
at::Tensor PoolOps<L>::pool_jvp(at::TensorList tangents, const at::Tensor& argmax, const at::Tensor& rois,
                                const at::Tensor& levels, Scales scales, const PoolArgs& a) {
  if (a.mode == Mode::Avg) return std::get<0>(pool_forward(tangents, rois, levels, scales, a, false));
  [[maybe_unused]] auto guard = L::guard(tangents[0]);
  const RoiSource src(rois, levels, tangents, scales);
  at::Tensor out = empty_output(tangents, src.K(), a.pooled_h, a.pooled_w, a.channels.group);
  if (out.numel() == 0) return out;
  const PoolTables<L> tables(src, out, a);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "roiops_gpu_pool_jvp", [&] {
    launch_bins<L, PoolKernels<scalar_t, Mode::Max>::template Gather, scalar_t, false>(
        tangents, scales, tables.t, a.channels, out, argmax);
  });
  return out;
}

template <class L>
std::vector<at::Tensor> PoolOps<L>::pool_backward(const at::Tensor& grad, at::TensorList inputs,
                                                  const at::Tensor& argmax, const at::Tensor& rois,
                                                  const at::Tensor& levels, Scales scales, const PoolArgs& a) {
  [[maybe_unused]] auto guard = L::guard(inputs[0]);
  const RoiSource src(rois, levels, inputs, scales);
  const PoolTables<L> tables(src, grad, a);
  std::vector<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, inputs[0].scalar_type(), "roiops_gpu_pool_backward", [&] {
    dispatch_mode(a.mode, [&](auto m) {
      result = launch_pixels<L, PoolKernels<scalar_t, decltype(m)::value>::template BackwardInput, scalar_t>(
          inputs, scales, tables.t, a.channels, tables.keys, src, grad, argmax);
    });
  });
  return result;
}

}  // namespace roiops::gpu
