#include "sampled_roi_cpu.h"

namespace roiops::cpu {

at::Tensor sampled_forward_op(const at::Tensor& select, const at::Tensor& values,
                              const at::Tensor& rois_in, const SampledArgs& a) {
  const at::Tensor rois = rois_in.contiguous();
  at::Tensor out = empty_like_format(
      select, {rois.size(0), select.size(1), a.pooled_h, a.pooled_w},
      select.scalar_type());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, select.scalar_type(),
                                  "roiops_sampled_forward", [&] {
    dispatch_mode_sampling(a.mode, a.sampling, [&](auto m, auto s) {
      sampled_forward<scalar_t, decltype(m)::value, decltype(s)::value>(
          select, values, rois, out, a);
    });
  });
  return out;
}

at::Tensor sampled_backward_input_op(const at::Tensor& grad, const at::Tensor& input,
                                     const at::Tensor& rois_in, const SampledArgs& a) {
  const at::Tensor rois = rois_in.contiguous();
  const at::ScalarType acc = at::toOpMathType(input.scalar_type());
  at::Tensor gi = empty_like_format(input, input.sizes(), acc).zero_();
  if (gi.numel() == 0 || rois.size(0) == 0) return gi.to(input.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "roiops_sampled_backward_input", [&] {
    dispatch_mode_sampling(a.mode, a.sampling, [&](auto m, auto s) {
      sampled_backward_input<scalar_t, decltype(m)::value, decltype(s)::value>(
          grad, input, rois, gi, a);
    });
  });
  return gi.to(input.scalar_type());
}

at::Tensor sampled_backward_rois_op(const at::Tensor& grad, const at::Tensor& input,
                                    const at::Tensor& rois_in, const SampledArgs& a) {
  const at::Tensor rois = rois_in.contiguous();
  at::Tensor gr = at::zeros_like(rois, at::MemoryFormat::Contiguous);
  // Box gradients exist only through bilinear sample positions of an unquantized box.
  if (a.quantize || a.sampling != Sampling::Bilinear || input.numel() == 0) return gr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "roiops_sampled_backward_rois", [&] {
    if (a.mode == Mode::Avg)
      sampled_backward_rois<scalar_t, Mode::Avg>(grad, input, rois, gr, a);
    else
      sampled_backward_rois<scalar_t, Mode::Max>(grad, input, rois, gr, a);
  });
  return gr;
}

}  // namespace roiops::cpu
