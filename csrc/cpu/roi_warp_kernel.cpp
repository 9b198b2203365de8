// roi_warp on the CPU: roi_align's sampling on a box rounded to the feature grid
// (the RoIWarp of the Mask R-CNN ablation). The rounding makes the box gradient zero,
// so there is no box-gradient kernel.
#include <torch/library.h>

#include "sampled_roi_cpu.h"

namespace roiops::cpu {
namespace {

SampledArgs warp_args(double scale, int64_t ph, int64_t pw, int64_t sr,
                      c10::string_view mode, c10::string_view sampling) {
  return SampledArgs{scale, ph, pw, sr, /*aligned=*/false, /*quantize=*/true,
                     parse_mode(mode), parse_sampling(sampling)};
}

at::Tensor roi_warp(const at::Tensor& input, const at::Tensor& rois, double scale,
                    int64_t ph, int64_t pw, int64_t sr, c10::string_view mode,
                    c10::string_view sampling) {
  check_roi_args("roi_warp", input, rois, scale, ph, pw);
  return sampled_forward_op(input, input, rois, warp_args(scale, ph, pw, sr, mode, sampling));
}

at::Tensor roi_warp_backward(const at::Tensor& grad, const at::Tensor& input,
                             const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                             int64_t sr, c10::string_view mode, c10::string_view sampling) {
  check_roi_args("_roi_warp_backward", input, rois, scale, ph, pw);
  check_grad("_roi_warp_backward", grad, input, rois, ph, pw);
  return sampled_backward_input_op(grad, input, rois,
                                   warp_args(scale, ph, pw, sr, mode, sampling));
}

at::Tensor roi_warp_jvp(const at::Tensor& input, const at::Tensor& tangent,
                        const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                        int64_t sr, c10::string_view mode, c10::string_view sampling) {
  check_roi_args("_roi_warp_jvp", input, rois, scale, ph, pw);
  check_tangent("_roi_warp_jvp", tangent, input);
  return sampled_forward_op(input, tangent, rois, warp_args(scale, ph, pw, sr, mode, sampling));
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_warp", &roi_warp);
  m.impl("_roi_warp_backward", &roi_warp_backward);
  m.impl("_roi_warp_jvp", &roi_warp_jvp);
}

}  // namespace roiops::cpu
