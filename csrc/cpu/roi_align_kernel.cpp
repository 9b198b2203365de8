// roi_align on the CPU: unquantized boxes, optional half-pixel alignment, box gradients.
#include <torch/library.h>

#include "sampled_roi_cpu.h"

namespace roiops::cpu {
namespace {

SampledArgs align_args(double scale, int64_t ph, int64_t pw, int64_t sr, bool aligned,
                       c10::string_view mode, c10::string_view sampling) {
  return SampledArgs{scale, ph, pw, sr, aligned, /*quantize=*/false, parse_mode(mode),
                     parse_sampling(sampling)};
}

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double scale,
                     int64_t ph, int64_t pw, int64_t sr, bool aligned,
                     c10::string_view mode, c10::string_view sampling) {
  check_roi_args("roi_align", input, rois, scale, ph, pw);
  return sampled_forward_op(input, input, rois,
                            align_args(scale, ph, pw, sr, aligned, mode, sampling));
}

at::Tensor roi_align_backward(const at::Tensor& grad, const at::Tensor& input,
                              const at::Tensor& rois, double scale, int64_t ph,
                              int64_t pw, int64_t sr, bool aligned,
                              c10::string_view mode, c10::string_view sampling) {
  check_roi_args("_roi_align_backward", input, rois, scale, ph, pw);
  check_grad("_roi_align_backward", grad, input, rois, ph, pw);
  return sampled_backward_input_op(grad, input, rois,
                                   align_args(scale, ph, pw, sr, aligned, mode, sampling));
}

at::Tensor roi_align_backward_rois(const at::Tensor& grad, const at::Tensor& input,
                                   const at::Tensor& rois, double scale, int64_t ph,
                                   int64_t pw, int64_t sr, bool aligned,
                                   c10::string_view mode, c10::string_view sampling) {
  check_roi_args("_roi_align_backward_rois", input, rois, scale, ph, pw);
  check_grad("_roi_align_backward_rois", grad, input, rois, ph, pw);
  return sampled_backward_rois_op(grad, input, rois,
                                  align_args(scale, ph, pw, sr, aligned, mode, sampling));
}

at::Tensor roi_align_jvp(const at::Tensor& input, const at::Tensor& tangent,
                         const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                         int64_t sr, bool aligned, c10::string_view mode,
                         c10::string_view sampling) {
  check_roi_args("_roi_align_jvp", input, rois, scale, ph, pw);
  check_tangent("_roi_align_jvp", tangent, input);
  return sampled_forward_op(input, tangent, rois,
                            align_args(scale, ph, pw, sr, aligned, mode, sampling));
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_align", &roi_align);
  m.impl("_roi_align_backward", &roi_align_backward);
  m.impl("_roi_align_backward_rois", &roi_align_backward_rois);
  m.impl("_roi_align_jvp", &roi_align_jvp);
}

}  // namespace roiops::cpu
