#include "sampled_roi_cpu.h"

#include "allocation.h"

namespace roiops::cpu {

std::tuple<at::Tensor, at::Tensor> sampled_forward_op(at::TensorList inputs, const at::Tensor& rois_in,
                                                      const at::Tensor& levels_in,
                                                      at::ArrayRef<double> scales,
                                                      const SampledArgs& a, bool keep_argmax) {
  const at::Tensor rois = rois_as_double(rois_in);
  const RoiLevels levels(levels_in);
  at::Tensor out = empty_cpu_output(inputs, rois.size(0), a.pooled_h, a.pooled_w, a.channels.group);
  at::Tensor argmax = empty_cpu_argmax(out, a.mode, keep_argmax);
  if (out.numel() == 0) return {out, argmax};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(),
                                  "roiops_sampled_forward", [&] {
    const Maps<const scalar_t> in(inputs, scales, levels.data);
    dispatch_mode_sampling(a.mode, a.sampling, [&](auto m, auto s) {
      sampled_forward<scalar_t, decltype(m)::value, decltype(s)::value>(in, rois, out, argmax, a);
    });
  });
  return {out, argmax};
}

at::Tensor sampled_jvp_op(at::TensorList tangents, const at::Tensor& argmax, const at::Tensor& rois_in,
                          const at::Tensor& levels_in, at::ArrayRef<double> scales,
                          const SampledArgs& a) {
  if (a.mode == Mode::Avg)  // the avg forward is linear: its JVP is the forward itself
    return std::get<0>(sampled_forward_op(tangents, rois_in, levels_in, scales, a, false));
  const at::Tensor rois = rois_as_double(rois_in);
  const RoiLevels levels(levels_in);
  at::Tensor out = empty_cpu_output(tangents, rois.size(0), a.pooled_h, a.pooled_w, a.channels.group);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(),
                                  "roiops_sampled_jvp", [&] {
    const Maps<const scalar_t> t(tangents, scales, levels.data);
    if (a.sampling == Sampling::Bilinear)
      sampled_gather<scalar_t, Sampling::Bilinear>(t, argmax, rois, out, a);
    else
      sampled_gather<scalar_t, Sampling::Nearest>(t, argmax, rois, out, a);
  });
  return out;
}

std::vector<at::Tensor> sampled_backward_input_op(const at::Tensor& grad, at::TensorList inputs,
                                                  const at::Tensor& argmax, const at::Tensor& rois_in,
                                                  const at::Tensor& levels_in,
                                                  at::ArrayRef<double> scales, const SampledArgs& a) {
  const at::Tensor rois = rois_as_double(rois_in);
  const RoiLevels levels(levels_in);
  std::vector<at::Tensor> gi = grad_accumulators(inputs);
  const at::ScalarType dtype = inputs[0].scalar_type();
  if (rois.size(0) == 0 || inputs[0].size(1) == 0) {
    for (at::Tensor& g : gi) g.zero_();
    return finish_grads(gi, dtype);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype,
                                  "roiops_sampled_backward_input", [&] {
    const Maps<const scalar_t> shape(inputs, scales, levels.data);
    const Maps<acc_type<scalar_t>> g(gi, scales, levels.data);
    dispatch_mode_sampling(a.mode, a.sampling, [&](auto m, auto s) {
      sampled_backward_input<scalar_t, decltype(m)::value, decltype(s)::value>(
          grad, argmax, shape, rois, g, a);
    });
  });
  return finish_grads(gi, dtype);
}

at::Tensor sampled_backward_rois_op(const at::Tensor& grad, at::TensorList inputs,
                                    const at::Tensor& argmax, const at::Tensor& rois_in,
                                    const at::Tensor& levels_in, at::ArrayRef<double> scales,
                                    const SampledArgs& a) {
  const at::Tensor rois = rois_as_double(rois_in);
  const RoiLevels levels(levels_in);
  at::Tensor gr = at::zeros_like(rois);
  // Box gradients exist only through bilinear sample positions of an unquantized box.
  if (!a.quantize && a.sampling == Sampling::Bilinear && inputs[0].size(1) > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, inputs[0].scalar_type(),
                                    "roiops_sampled_backward_rois", [&] {
      const Maps<const scalar_t> in(inputs, scales, levels.data);
      if (a.mode == Mode::Avg)
        sampled_backward_rois<scalar_t, Mode::Avg>(grad, argmax, in, rois, gr, a);
      else
        sampled_backward_rois<scalar_t, Mode::Max>(grad, argmax, in, rois, gr, a);
    });
  }
  // In the boxes' own dtype and the contiguous layout the fake kernel states.
  return gr.to(rois_in.scalar_type());
}

}  // namespace roiops::cpu
