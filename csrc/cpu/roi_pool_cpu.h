// CPU kernels of roi_pool, ps_roi_pool and prroi_pool (roi_pool_cpu.cpp), called by the op entry points
// (roi_ops.h) with checked arguments. `levels` is undefined for a single map.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "../op_common.h"

namespace roiops::cpu {

std::tuple<at::Tensor, at::Tensor> pool_forward_op(at::TensorList inputs, const at::Tensor& rois,
                                                   const at::Tensor& levels,
                                                   at::ArrayRef<double> scales, const PoolArgs& a,
                                                   bool keep_argmax);
std::vector<at::Tensor> pool_backward_op(const at::Tensor& grad, at::TensorList inputs,
                                         const at::Tensor& argmax, const at::Tensor& rois,
                                         const at::Tensor& levels, at::ArrayRef<double> scales,
                                         const PoolArgs& a);
// prroi_pool's box gradient (PoolRule::Precise); zero for the rounded bins.
at::Tensor pool_backward_rois_op(const at::Tensor& grad, at::TensorList inputs,
                                 const at::Tensor& argmax, const at::Tensor& rois,
                                 const at::Tensor& levels, at::ArrayRef<double> scales,
                                 const PoolArgs& a);
at::Tensor pool_jvp_op(at::TensorList tangents, const at::Tensor& argmax, const at::Tensor& rois,
                       const at::Tensor& levels, at::ArrayRef<double> scales, const PoolArgs& a);

}  // namespace roiops::cpu
