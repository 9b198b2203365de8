// roi_warp on the CPU: roi_align's sampling on a box rounded to the feature grid
// (the RoIWarp of the Mask R-CNN ablation), on one map or fused over a pyramid. The
// rounding makes the box gradient zero, so there is no box-gradient kernel.
#include <torch/library.h>

#include "sampled_roi_cpu.h"

namespace roiops::cpu {
namespace {

using Str = c10::string_view;

SampledArgs warp_args(int64_t ph, int64_t pw, int64_t sr, Str mode, Str sampling) {
  return SampledArgs{ph, pw, sr, /*aligned=*/false, /*quantize=*/true, parse_mode(mode),
                     parse_sampling(sampling)};
}

at::Tensor roi_warp(const at::Tensor& input, const at::Tensor& rois, double scale,
                    int64_t ph, int64_t pw, int64_t sr, Str mode, Str sampling) {
  check_roi_args("roi_warp", input, rois, scale, ph, pw);
  const at::TensorList maps(input);
  return sampled_forward_op(maps, maps, rois, {}, scale, warp_args(ph, pw, sr, mode, sampling));
}

at::Tensor roi_warp_backward(const at::Tensor& grad, const at::Tensor& input,
                             const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                             int64_t sr, Str mode, Str sampling) {
  check_roi_args("_roi_warp_backward", input, rois, scale, ph, pw);
  check_grad("_roi_warp_backward", grad, input, rois, ph, pw);
  return sampled_backward_input_op(grad, input, rois, {}, scale,
                                   warp_args(ph, pw, sr, mode, sampling))[0];
}

at::Tensor roi_warp_jvp(const at::Tensor& input, const at::Tensor& tangent,
                        const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                        int64_t sr, Str mode, Str sampling) {
  check_roi_args("_roi_warp_jvp", input, rois, scale, ph, pw);
  check_tangent("_roi_warp_jvp", tangent, input);
  return sampled_forward_op(input, tangent, rois, {}, scale,
                            warp_args(ph, pw, sr, mode, sampling));
}

at::Tensor multilevel(at::TensorList inputs, const at::Tensor& rois, const at::Tensor& levels,
                      at::ArrayRef<double> scales, int64_t ph, int64_t pw, int64_t sr, Str mode,
                      Str sampling) {
  check_multilevel_args("roi_warp_multilevel", inputs, rois, levels, scales, ph, pw);
  return sampled_forward_op(inputs, inputs, rois, levels, scales,
                            warp_args(ph, pw, sr, mode, sampling));
}

std::vector<at::Tensor> multilevel_backward(const at::Tensor& grad, at::TensorList inputs,
                                            const at::Tensor& rois, const at::Tensor& levels,
                                            at::ArrayRef<double> scales, int64_t ph,
                                            int64_t pw, int64_t sr, Str mode, Str sampling) {
  check_multilevel_args("_roi_warp_multilevel_backward", inputs, rois, levels, scales, ph, pw);
  check_grad("_roi_warp_multilevel_backward", grad, inputs[0], rois, ph, pw);
  return sampled_backward_input_op(grad, inputs, rois, levels, scales,
                                   warp_args(ph, pw, sr, mode, sampling));
}

at::Tensor multilevel_jvp(at::TensorList inputs, at::TensorList tangents,
                          const at::Tensor& rois, const at::Tensor& levels,
                          at::ArrayRef<double> scales, int64_t ph, int64_t pw, int64_t sr,
                          Str mode, Str sampling) {
  check_multilevel_args("_roi_warp_multilevel_jvp", inputs, rois, levels, scales, ph, pw);
  check_tangents("_roi_warp_multilevel_jvp", tangents, inputs);
  return sampled_forward_op(inputs, tangents, rois, levels, scales,
                            warp_args(ph, pw, sr, mode, sampling));
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_warp", &roi_warp);
  m.impl("_roi_warp_backward", &roi_warp_backward);
  m.impl("_roi_warp_jvp", &roi_warp_jvp);
  m.impl("roi_warp_multilevel", &multilevel);
  m.impl("_roi_warp_multilevel_backward", &multilevel_backward);
  m.impl("_roi_warp_multilevel_jvp", &multilevel_jvp);
}

}  // namespace roiops::cpu
