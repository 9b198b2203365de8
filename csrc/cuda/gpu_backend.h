// The GPU implementation of every roiops op, written once over a Launcher: compiled
// by nvcc with CudaLauncher (launch_cuda.cuh) for CUDA tensors, and by the host
// compiler with EmuLauncher (csrc/emulator/grid_emulator.h) for the CPU emulation
// that the tests run without a GPU.
//
// Per op: a table kernel (one thread per RoI: float64 geometry, once per launch),
// then the op's kernel over output elements (forward, JVP), input elements (input
// gradient: a gather over the RoIs listed for the elements' tile, a strip of a row's
// pixels per thread, each element written once, after two list-building launches),
// or (RoI, channel) pairs followed by a per-RoI reduction (box gradient). All
// deterministic; none uses atomics.
//
// The ops' bodies are declared here and defined in sampled_ops.h and pool_ops.h, so
// that the CUDA build compiles each group of kernels in a translation unit of its
// own (csrc/cuda/*_cuda.cu, in parallel) and registers them in register_cuda.cpp,
// which sees only these declarations.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "../op_common.h"

namespace roiops::gpu {

using Scales = at::ArrayRef<double>;

// roi_align / roi_warp: forward and JVP.
template <class L>
struct SampledForwardOps {
  static std::tuple<at::Tensor, at::Tensor> sampled_forward(at::TensorList inputs, const at::Tensor& rois,
                                                            const at::Tensor& levels, Scales scales,
                                                            const SampledArgs& a, bool keep_argmax);
  static at::Tensor sampled_jvp(at::TensorList tangents, const at::Tensor& argmax, const at::Tensor& rois,
                                const at::Tensor& levels, Scales scales, const SampledArgs& a);
};

// roi_align / roi_warp: the input gradient of one mode and sampling (the largest
// kernels).
template <class L, Mode M, Sampling S>
struct SampledBackwardInputOps {
  static std::vector<at::Tensor> run(const at::Tensor& grad, at::TensorList inputs, const at::Tensor& argmax,
                                     const at::Tensor& rois, const at::Tensor& levels, Scales scales,
                                     const SampledArgs& a);
};

// roi_align: the box gradient.
template <class L>
struct SampledBoxGradOps {
  static at::Tensor sampled_backward_rois(const at::Tensor& grad, at::TensorList inputs, const at::Tensor& argmax,
                                          const at::Tensor& rois, const at::Tensor& levels, Scales scales,
                                          const SampledArgs& a);
};

// roi_pool: forward, JVP and input gradient.
template <class L>
struct PoolOps {
  static std::tuple<at::Tensor, at::Tensor> pool_forward(at::TensorList inputs, const at::Tensor& rois,
                                                         const at::Tensor& levels, Scales scales,
                                                         const PoolArgs& a, bool keep_argmax);
  static at::Tensor pool_jvp(at::TensorList tangents, const at::Tensor& argmax, const at::Tensor& rois,
                             const at::Tensor& levels, Scales scales, const PoolArgs& a);
  static std::vector<at::Tensor> pool_backward(const at::Tensor& grad, at::TensorList inputs,
                                               const at::Tensor& argmax, const at::Tensor& rois,
                                               const at::Tensor& levels, Scales scales, const PoolArgs& a);
};

// The Backend of OpEntryPoints (roi_ops.h).
template <class L>
struct GpuBackend : SampledForwardOps<L>, SampledBoxGradOps<L>, PoolOps<L> {
  static std::vector<at::Tensor> sampled_backward_input(const at::Tensor& grad, at::TensorList inputs,
                                                        const at::Tensor& argmax, const at::Tensor& rois,
                                                        const at::Tensor& levels, Scales scales,
                                                        const SampledArgs& a) {
    std::vector<at::Tensor> result;
    dispatch_mode_sampling(a.mode, a.sampling, [&](auto m, auto s) {
      using Ops = SampledBackwardInputOps<L, decltype(m)::value, decltype(s)::value>;
      result = Ops::run(grad, inputs, argmax, rois, levels, scales, a);
    });
    return result;
  }
};

}  // namespace roiops::gpu
