// Argument checks and output allocation shared by every device's kernels (CPU, CUDA
// and the CPU emulation of the CUDA grid): what an op accepts and the tensors it
// returns do not depend on where it runs.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "roi_geometry.h"

namespace roiops {

// c10::string_view is what the op schemas' `str` arguments arrive as: an alias of
// std::string_view in newer torch, a class of its own without a conversion to
// std::string_view in older ones (torch 2.4).
Mode parse_mode(c10::string_view mode);
Sampling parse_sampling(c10::string_view sampling);

// Shape, dtype, device, bound and value checks shared by every op entry point.
// Python callers get the same checks earlier with friendlier messages
// (roiops/_validation.py); these protect direct torch.ops.roiops calls from ever
// reading out of bounds. Boxes may have any floating dtype, independent of the
// input's (float32 boxes with bfloat16 features is what autocast produces).
// Box rows: (batch_index, x1, y1, x2, y2), or (batch_index, cx, cy, w, h, angle) for
// roi_align_rotated.
constexpr int64_t kBoxFields = 5, kRotatedBoxFields = 6;
void check_roi_args(
    const char* op, const at::Tensor& input, const at::Tensor& rois,
    double spatial_scale, int64_t pooled_h, int64_t pooled_w, int64_t box_fields = kBoxFields);

// sampling_ratio <= kMaxSamplingRatio (roi_geometry.h); <= 0 means adaptive.
void check_sampling_ratio(const char* op, int64_t sampling_ratio);

// Checks for the multilevel ops: a non-empty list of maps with equal N, C, dtype and
// device, one positive scale per map, and levels an int64 [K] tensor of indices
// into the list.
void check_multilevel_args(const char* op, at::TensorList inputs, const at::Tensor& rois,
                           const at::Tensor& levels, at::ArrayRef<double> scales,
                           int64_t pooled_h, int64_t pooled_w);

// The boxes as a contiguous float64 [K, 5] tensor: every kernel reads box values in
// double (the geometry is computed in double whatever the dtypes), so one small
// conversion replaces a dispatch over box dtypes in every kernel.
at::Tensor rois_as_double(const at::Tensor& rois);

// The position-sensitive map of a PH x PW output.
inline ChannelMap position_sensitive(int64_t pooled_h, int64_t pooled_w) {
  return ChannelMap{pooled_h * pooled_w, 1};
}

// The input's C must be a multiple of the map's group (PH * PW for the PS ops).
void check_channel_map(const char* op, const at::Tensor& input, const ChannelMap& map,
                       int64_t pooled_h, int64_t pooled_w);

// Check for the internal backward ops: `grad` must have the forward's output shape
// [K, C / group, PH, PW].
void check_grad(const char* op, const at::Tensor& grad, const at::Tensor& input,
                const at::Tensor& rois, int64_t pooled_h, int64_t pooled_w, int64_t group = 1);

// The output / gradient layout: the one PyTorch's own ops would choose for `input`
// (suggest_memory_format). roiops/_registration.py states the same rule for the
// fake kernels.
at::MemoryFormat output_format(const at::Tensor& input);

// A fresh tensor in `like`'s output format.
at::Tensor empty_like_format(const at::Tensor& like, at::IntArrayRef sizes,
                             at::ScalarType dtype);

// The [K, C / group, PH, PW] output of the forward / jvp ops, in the format of the
// finest map (the one with the most pixels; the first of equals).
at::Tensor empty_output(at::TensorList maps, int64_t K, int64_t pooled_h, int64_t pooled_w,
                        int64_t group = 1);
// The forward's argmax: like the output in int32 for max mode when kept, else empty.
at::Tensor empty_argmax(const at::Tensor& output, Mode mode, bool keep);
// Checks the argmax given to a backward / jvp op: int32, and in max mode the shape
// [K, C, PH, PW] of the forward's output (max mode has no position-sensitive form).
void check_argmax(const char* op, const at::Tensor& argmax, const at::Tensor& maps0,
                  const at::Tensor& rois, int64_t pooled_h, int64_t pooled_w, Mode mode);
// Everything a backward op checks: the forward's arguments (single map when `levels`
// is undefined, else the multilevel form), grad's shape and the argmax.
void check_backward_args(const char* op, const at::Tensor& grad, at::TensorList maps,
                         const at::Tensor& argmax, const at::Tensor& rois,
                         const at::Tensor& levels, at::ArrayRef<double> scales,
                         int64_t pooled_h, int64_t pooled_w, Mode mode,
                         const ChannelMap& channels = {}, int64_t box_fields = kBoxFields);

// The arguments of the sampled ops, roi_align (quantize = false), roi_warp
// (quantize = true), ps_roi_align (aligned, avg, bilinear, position-sensitive
// channels) and roi_align_rotated (rotated boxes, avg, bilinear), shared by every
// device's kernels.
struct SampledArgs {
  int64_t pooled_h, pooled_w;
  int sampling_ratio;  // in [0, kMaxSamplingRatio]; 0 = adaptive
  bool aligned, quantize;
  Mode mode;
  Sampling sampling;
  ChannelMap channels = {};
  bool rotated = false, clockwise = false;
  int64_t box_fields() const { return rotated ? kRotatedBoxFields : kBoxFields; }
};

// The op arguments of roi_align (quantize = false) and roi_warp (quantize = true),
// with sampling_ratio checked against its bound and every value <= 0 made 0.
inline SampledArgs sampled_args(const char* op, int64_t pooled_h, int64_t pooled_w,
                                int64_t sampling_ratio, bool aligned, bool quantize,
                                c10::string_view mode, c10::string_view sampling) {
  check_sampling_ratio(op, sampling_ratio);
  return SampledArgs{pooled_h, pooled_w, int(std::max<int64_t>(sampling_ratio, 0)), aligned,
                     quantize, parse_mode(mode), parse_sampling(sampling)};
}

// The arguments of roi_pool, ps_roi_pool (avg, torchvision's PS bins and channels) and
// prroi_pool (avg, PoolRule::Precise: weighted bins).
struct PoolArgs {
  int64_t pooled_h, pooled_w;
  Mode mode;
  PoolRule rule = PoolRule::FastRcnn;
  ChannelMap channels = {};
};

template <typename F>
void dispatch_mode(Mode m, F&& f) {
  if (m == Mode::Avg)
    f(std::integral_constant<Mode, Mode::Avg>{});
  else
    f(std::integral_constant<Mode, Mode::Max>{});
}

template <typename F>
void dispatch_sampling(Sampling s, F&& f) {
  if (s == Sampling::Bilinear)
    f(std::integral_constant<Sampling, Sampling::Bilinear>{});
  else
    f(std::integral_constant<Sampling, Sampling::Nearest>{});
}

// Runtime (mode, sampling) to template dispatch: f(mode_constant, sampling_constant).
template <typename F>
void dispatch_mode_sampling(Mode m, Sampling s, F&& f) {
  dispatch_mode(m, [&](auto mode) { dispatch_sampling(s, [&](auto sampling) { f(mode, sampling); }); });
}

}  // namespace roiops
