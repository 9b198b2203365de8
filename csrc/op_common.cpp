#include "op_common.h"

#include <cmath>

namespace roiops {

Mode parse_mode(c10::string_view mode) {
  if (mode == "avg") return Mode::Avg;
  if (mode == "max") return Mode::Max;
  TORCH_CHECK_VALUE(false, "roiops: mode must be 'avg' or 'max', got '", mode, "'");
}

Sampling parse_sampling(c10::string_view sampling) {
  if (sampling == "bilinear") return Sampling::Bilinear;
  if (sampling == "nearest") return Sampling::Nearest;
  TORCH_CHECK_VALUE(false, "roiops: sampling must be 'bilinear' or 'nearest', got '",
                    sampling, "'");
}

void check_roi_args(const char* op, const at::Tensor& input, const at::Tensor& rois,
                    double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                    int64_t box_fields) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be [N, C, H, W], got ",
                    input.dim(), " dimensions");
  TORCH_CHECK_TYPE(at::isFloatingType(input.scalar_type()), op,
                   ": input must be float16, bfloat16, float32 or float64, got ",
                   input.scalar_type());
  TORCH_CHECK_VALUE(input.size(2) <= kMaxMapSide && input.size(3) <= kMaxMapSide, op,
                    ": feature map height and width must be below 2^31, got ", input.sizes());
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == box_fields, op, ": boxes must be [K, ",
                    box_fields, "] ",
                    box_fields == kBoxFields ? "(batch_index, x1, y1, x2, y2)"
                                             : "(batch_index, cx, cy, w, h, angle)",
                    ", got ", rois.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(rois.scalar_type()), op,
                   ": boxes must be a floating-point tensor, got ", rois.scalar_type());
  TORCH_CHECK_VALUE(rois.device() == input.device(), op, ": boxes are on ",
                    rois.device(), " but input is on ", input.device());
  TORCH_CHECK_VALUE(pooled_h > 0 && pooled_w > 0, op,
                    ": output_size must be positive, got (", pooled_h, ", ", pooled_w,
                    ")");
  TORCH_CHECK_VALUE(pooled_h <= kMaxOutputSize && pooled_w <= kMaxOutputSize, op,
                    ": output_size must be at most ", kMaxOutputSize, " per side, got (",
                    pooled_h, ", ", pooled_w, ")");
  TORCH_CHECK_VALUE(std::isfinite(spatial_scale) && spatial_scale > 0, op,
                    ": spatial_scale must be positive and finite, got ", spatial_scale);
  if (rois.device().is_cpu()) {
    const at::Tensor r = rois_as_double(rois);
    const double* p = r.data_ptr<double>();
    const int64_t N = input.size(0);
    for (int64_t k = 0; k < r.size(0); ++k) {
      const double b = p[k * box_fields];
      TORCH_CHECK_VALUE(std::floor(b) == b && b >= 0 && b < static_cast<double>(N), op,
                        ": boxes[", k, ", 0] (batch index) must be an integer in [0, ", N,
                        "), got ", b);
    }
  }
}

void check_sampling_ratio(const char* op, int64_t sampling_ratio) {
  TORCH_CHECK_VALUE(sampling_ratio <= kMaxSamplingRatio, op,
                    ": sampling_ratio must be at most ", kMaxSamplingRatio,
                    " (<= 0 for adaptive), got ", sampling_ratio);
}

at::Tensor rois_as_double(const at::Tensor& rois) {
  return rois.to(at::kDouble).contiguous();
}

void check_multilevel_args(const char* op, at::TensorList inputs, const at::Tensor& rois,
                           const at::Tensor& levels, at::ArrayRef<double> scales,
                           int64_t pooled_h, int64_t pooled_w) {
  TORCH_CHECK_VALUE(!inputs.empty(), op, ": inputs must hold at least one feature map");
  TORCH_CHECK_VALUE(scales.size() == inputs.size(), op, ": got ", scales.size(),
                    " spatial scales for ", inputs.size(), " feature maps");
  for (size_t i = 0; i < inputs.size(); ++i) {
    check_roi_args(op, inputs[i], i == 0 ? rois : rois.narrow(0, 0, 0), scales[i],
                   pooled_h, pooled_w);
    TORCH_CHECK_VALUE(inputs[i].size(0) == inputs[0].size(0) &&
                          inputs[i].size(1) == inputs[0].size(1),
                      op, ": every level must have the same N and C; level ", i, " is ",
                      inputs[i].sizes(), ", level 0 is ", inputs[0].sizes());
    TORCH_CHECK_TYPE(inputs[i].scalar_type() == inputs[0].scalar_type(), op,
                     ": every level must have the same dtype; level ", i, " is ",
                     inputs[i].scalar_type(), ", level 0 is ", inputs[0].scalar_type());
  }
  TORCH_CHECK_VALUE(levels.dim() == 1 && levels.size(0) == rois.size(0), op,
                    ": levels must be [K] with K = ", rois.size(0), ", got ", levels.sizes());
  TORCH_CHECK_TYPE(levels.scalar_type() == at::kLong, op, ": levels must be int64, got ",
                   levels.scalar_type());
  TORCH_CHECK_VALUE(levels.device() == rois.device(), op, ": levels are on ", levels.device(),
                    " but boxes are on ", rois.device());
  if (levels.device().is_cpu()) {
    const at::Tensor l = levels.contiguous();
    const int64_t* p = l.data_ptr<int64_t>();
    const int64_t L = static_cast<int64_t>(inputs.size());
    for (int64_t k = 0; k < l.numel(); ++k)
      TORCH_CHECK_VALUE(p[k] >= 0 && p[k] < L, op, ": levels[", k, "] must be in [0, ", L,
                        "), got ", p[k]);
  }
}

void check_channel_map(const char* op, const at::Tensor& input, const ChannelMap& map,
                       int64_t pooled_h, int64_t pooled_w) {
  TORCH_CHECK_VALUE(input.size(1) % map.group == 0, op, ": input channels (", input.size(1),
                    ") must be a multiple of output_size[0] * output_size[1] = ", pooled_h,
                    " * ", pooled_w, " = ", map.group,
                    " (position-sensitive pooling reads one channel per output channel and bin)");
}

void check_grad(const char* op, const at::Tensor& grad, const at::Tensor& input,
                const at::Tensor& rois, int64_t pooled_h, int64_t pooled_w, int64_t group) {
  const int64_t channels = input.size(1) / group;
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == rois.size(0) &&
                        grad.size(1) == channels && grad.size(2) == pooled_h &&
                        grad.size(3) == pooled_w,
                    op, ": grad must be [", rois.size(0), ", ", channels, ", ",
                    pooled_h, ", ", pooled_w, "], got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == input.scalar_type(), op, ": grad dtype ",
                   grad.scalar_type(), " differs from input dtype ", input.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == input.device(), op, ": grad is on ", grad.device(),
                    " but input is on ", input.device());
}

at::MemoryFormat output_format(const at::Tensor& input) {
  return input.suggest_memory_format();
}

at::Tensor empty_like_format(const at::Tensor& like, at::IntArrayRef sizes,
                             at::ScalarType dtype) {
  return at::empty(sizes, like.options().dtype(dtype).memory_format(output_format(like)));
}

}  // namespace roiops

namespace roiops {

at::Tensor empty_output(at::TensorList maps, int64_t K, int64_t pooled_h, int64_t pooled_w,
                        int64_t group) {
  const at::Tensor* finest = &maps[0];
  for (const at::Tensor& m : maps)
    if (m.size(2) * m.size(3) > finest->size(2) * finest->size(3)) finest = &m;
  return empty_like_format(*finest, {K, maps[0].size(1) / group, pooled_h, pooled_w},
                           maps[0].scalar_type());
}

at::Tensor empty_argmax(const at::Tensor& output, Mode mode, bool keep) {
  if (mode == Mode::Avg || !keep) return at::empty({0}, output.options().dtype(at::kInt));
  return at::empty_like(output, output.options().dtype(at::kInt));
}

void check_argmax(const char* op, const at::Tensor& argmax, const at::Tensor& maps0,
                  const at::Tensor& rois, int64_t pooled_h, int64_t pooled_w, Mode mode) {
  TORCH_CHECK_TYPE(argmax.scalar_type() == at::kInt, op, ": argmax must be int32, got ",
                   argmax.scalar_type());
  TORCH_CHECK_VALUE(argmax.device() == maps0.device(), op, ": argmax is on ",
                    argmax.device(), " but input is on ", maps0.device());
  if (mode == Mode::Max) {
    const std::vector<int64_t> shape{rois.size(0), maps0.size(1), pooled_h, pooled_w};
    TORCH_CHECK_VALUE(argmax.sizes() == at::IntArrayRef(shape), op,
                      ": argmax must have the output's shape ", shape, ", got ",
                      argmax.sizes());
  }
}

void check_backward_args(const char* op, const at::Tensor& grad, at::TensorList maps,
                         const at::Tensor& argmax, const at::Tensor& rois,
                         const at::Tensor& levels, at::ArrayRef<double> scales,
                         int64_t pooled_h, int64_t pooled_w, Mode mode,
                         const ChannelMap& channels, int64_t box_fields) {
  if (levels.defined())
    check_multilevel_args(op, maps, rois, levels, scales, pooled_h, pooled_w);
  else
    check_roi_args(op, maps[0], rois, scales[0], pooled_h, pooled_w, box_fields);
  check_channel_map(op, maps[0], channels, pooled_h, pooled_w);
  check_grad(op, grad, maps[0], rois, pooled_h, pooled_w, channels.group);
  check_argmax(op, argmax, maps[0], rois, pooled_h, pooled_w, mode);
}

}  // namespace roiops
