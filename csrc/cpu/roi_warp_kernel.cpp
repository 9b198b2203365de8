// roi_warp on the CPU: roi_align's sampling on a box rounded to the feature grid
// (the RoIWarp of the Mask R-CNN ablation), on one map or fused over a pyramid. The
// rounding makes the box gradient zero, so there is no box-gradient kernel.
#include <torch/library.h>

#include "sampled_roi_cpu.h"

namespace roiops::cpu {
namespace {

using at::Tensor;
using at::TensorList;
using Str = c10::string_view;
using Scales = at::ArrayRef<double>;

SampledArgs args(int64_t ph, int64_t pw, int64_t sr, Str mode, Str sampling) {
  return sampled_args("roi_warp", ph, pw, sr, /*aligned=*/false, /*quantize=*/true, mode,
                      sampling);
}

std::tuple<Tensor, Tensor> forward(const Tensor& input, const Tensor& rois, double scale,
                                   int64_t ph, int64_t pw, int64_t sr, Str mode, Str sampling,
                                   bool keep_argmax) {
  check_roi_args("roi_warp", input, rois, scale, ph, pw);
  return sampled_forward_op(input, rois, {}, scale, args(ph, pw, sr, mode, sampling), keep_argmax);
}

Tensor backward(const Tensor& grad, const Tensor& input, const Tensor& argmax, const Tensor& rois,
                double scale, int64_t ph, int64_t pw, int64_t sr, Str mode, Str sampling) {
  const char* op = "_roi_warp_backward";
  const SampledArgs a = args(ph, pw, sr, mode, sampling);
  check_backward_args(op, grad, input, argmax, rois, {}, scale, ph, pw, a.mode);
  return sampled_backward_input_op(grad, input, argmax, rois, {}, scale, a)[0];
}

Tensor jvp(const Tensor& tangent, const Tensor& argmax, const Tensor& rois, double scale,
           int64_t ph, int64_t pw, int64_t sr, Str mode, Str sampling) {
  const char* op = "_roi_warp_jvp";
  const SampledArgs a = args(ph, pw, sr, mode, sampling);
  check_roi_args(op, tangent, rois, scale, ph, pw);
  check_argmax(op, argmax, tangent, rois, ph, pw, a.mode);
  return sampled_jvp_op(tangent, argmax, rois, {}, scale, a);
}

std::tuple<Tensor, Tensor> ml_forward(TensorList inputs, const Tensor& rois, const Tensor& levels,
                                      Scales scales, int64_t ph, int64_t pw, int64_t sr, Str mode,
                                      Str sampling, bool keep_argmax) {
  check_multilevel_args("roi_warp_multilevel", inputs, rois, levels, scales, ph, pw);
  return sampled_forward_op(inputs, rois, levels, scales, args(ph, pw, sr, mode, sampling),
                            keep_argmax);
}

std::vector<Tensor> ml_backward(const Tensor& grad, TensorList inputs, const Tensor& argmax,
                                const Tensor& rois, const Tensor& levels, Scales scales,
                                int64_t ph, int64_t pw, int64_t sr, Str mode, Str sampling) {
  const char* op = "_roi_warp_multilevel_backward";
  const SampledArgs a = args(ph, pw, sr, mode, sampling);
  check_backward_args(op, grad, inputs, argmax, rois, levels, scales, ph, pw, a.mode);
  return sampled_backward_input_op(grad, inputs, argmax, rois, levels, scales, a);
}

Tensor ml_jvp(TensorList tangents, const Tensor& argmax, const Tensor& rois, const Tensor& levels,
              Scales scales, int64_t ph, int64_t pw, int64_t sr, Str mode, Str sampling) {
  const char* op = "_roi_warp_multilevel_jvp";
  const SampledArgs a = args(ph, pw, sr, mode, sampling);
  check_multilevel_args(op, tangents, rois, levels, scales, ph, pw);
  check_argmax(op, argmax, tangents[0], rois, ph, pw, a.mode);
  return sampled_jvp_op(tangents, argmax, rois, levels, scales, a);
}

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  m.impl("roi_warp", &forward);
  m.impl("_roi_warp_backward", &backward);
  m.impl("_roi_warp_jvp", &jvp);
  m.impl("roi_warp_multilevel", &ml_forward);
  m.impl("_roi_warp_multilevel_backward", &ml_backward);
  m.impl("_roi_warp_multilevel_jvp", &ml_jvp);
}

}  // namespace roiops::cpu
