// roi_align on the CPU: unquantized boxes, optional half-pixel alignment, box gradients;
// on one feature map, or fused over the levels of a pyramid (roi_align_multilevel).
#include <torch/library.h>

#include "sampled_roi_cpu.h"

namespace roiops::cpu {
namespace {

using Str = c10::string_view;

SampledArgs align_args(int64_t ph, int64_t pw, int64_t sr, bool aligned, Str mode,
                       Str sampling) {
  return SampledArgs{ph, pw, sr, aligned, /*quantize=*/false, parse_mode(mode),
                     parse_sampling(sampling)};
}

at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double scale,
                     int64_t ph, int64_t pw, int64_t sr, bool aligned, Str mode, Str sampling) {
  check_roi_args("roi_align", input, rois, scale, ph, pw);
  const at::TensorList maps(input);
  return sampled_forward_op(maps, maps, rois, {}, scale,
                            align_args(ph, pw, sr, aligned, mode, sampling));
}

at::Tensor roi_align_backward(const at::Tensor& grad, const at::Tensor& input,
                              const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                              int64_t sr, bool aligned, Str mode, Str sampling) {
  check_roi_args("_roi_align_backward", input, rois, scale, ph, pw);
  check_grad("_roi_align_backward", grad, input, rois, ph, pw);
  return sampled_backward_input_op(grad, input, rois, {}, scale,
                                   align_args(ph, pw, sr, aligned, mode, sampling))[0];
}

at::Tensor roi_align_backward_rois(const at::Tensor& grad, const at::Tensor& input,
                                   const at::Tensor& rois, double scale, int64_t ph,
                                   int64_t pw, int64_t sr, bool aligned, Str mode,
                                   Str sampling) {
  check_roi_args("_roi_align_backward_rois", input, rois, scale, ph, pw);
  check_grad("_roi_align_backward_rois", grad, input, rois, ph, pw);
  return sampled_backward_rois_op(grad, input, rois, {}, scale,
                                  align_args(ph, pw, sr, aligned, mode, sampling));
}

at::Tensor roi_align_jvp(const at::Tensor& input, const at::Tensor& tangent,
                         const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                         int64_t sr, bool aligned, Str mode, Str sampling) {
  check_roi_args("_roi_align_jvp", input, rois, scale, ph, pw);
  check_tangent("_roi_align_jvp", tangent, input);
  return sampled_forward_op(input, tangent, rois, {}, scale,
                            align_args(ph, pw, sr, aligned, mode, sampling));
}

at::Tensor multilevel(at::TensorList inputs, const at::Tensor& rois, const at::Tensor& levels,
                      at::ArrayRef<double> scales, int64_t ph, int64_t pw, int64_t sr,
                      bool aligned, Str mode, Str sampling) {
  check_multilevel_args("roi_align_multilevel", inputs, rois, levels, scales, ph, pw);
  return sampled_forward_op(inputs, inputs, rois, levels, scales,
                            align_args(ph, pw, sr, aligned, mode, sampling));
}

std::vector<at::Tensor> multilevel_backward(const at::Tensor& grad, at::TensorList inputs,
                                            const at::Tensor& rois, const at::Tensor& levels,
                                            at::ArrayRef<double> scales, int64_t ph,
                                            int64_t pw, int64_t sr, bool aligned, Str mode,
                                            Str sampling) {
  check_multilevel_args("_roi_align_multilevel_backward", inputs, rois, levels, scales, ph, pw);
  check_grad("_roi_align_multilevel_backward", grad, inputs[0], rois, ph, pw);
  return sampled_backward_input_op(grad, inputs, rois, levels, scales,
                                   align_args(ph, pw, sr, aligned, mode, sampling));
}

at::Tensor multilevel_backward_rois(const at::Tensor& grad, at::TensorList inputs,
                                    const at::Tensor& rois, const at::Tensor& levels,
                                    at::ArrayRef<double> scales, int64_t ph, int64_t pw,
                                    int64_t sr, bool aligned, Str mode, Str sampling) {
  check_multilevel_args("_roi_align_multilevel_backward_rois", inputs, rois, levels, scales,
                        ph, pw);
  check_grad("_roi_align_multilevel_backward_rois", grad, inputs[0], rois, ph, pw);
  return sampled_backward_rois_op(grad, inputs, rois, levels, scales,
                                  align_args(ph, pw, sr, aligned, mode, sampling));
}

at::Tensor multilevel_jvp(at::TensorList inputs, at::TensorList tangents,
                          const at::Tensor& rois, const at::Tensor& levels,
                          at::ArrayRef<double> scales, int64_t ph, int64_t pw, int64_t sr,
                          bool aligned, Str mode, Str sampling) {
  check_multilevel_args("_roi_align_multilevel_jvp", inputs, rois, levels, scales, ph, pw);
  check_tangents("_roi_align_multilevel_jvp", tangents, inputs);
  return sampled_forward_op(inputs, tangents, rois, levels, scales,
                            align_args(ph, pw, sr, aligned, mode, sampling));
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_align", &roi_align);
  m.impl("_roi_align_backward", &roi_align_backward);
  m.impl("_roi_align_backward_rois", &roi_align_backward_rois);
  m.impl("_roi_align_jvp", &roi_align_jvp);
  m.impl("roi_align_multilevel", &multilevel);
  m.impl("_roi_align_multilevel_backward", &multilevel_backward);
  m.impl("_roi_align_multilevel_backward_rois", &multilevel_backward_rois);
  m.impl("_roi_align_multilevel_jvp", &multilevel_jvp);
}

}  // namespace roiops::cpu
