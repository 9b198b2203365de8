// Operator schemas of the roiops library. Kernels attach per device elsewhere
// (csrc/cpu/*_kernel.cpp, later csrc/cuda/*.cu) with TORCH_LIBRARY_IMPL; fake
// kernels and autograd formulas are registered from Python (roiops/_registration.py).
#include <Python.h>
#include <torch/library.h>

// `import roiops._C` loads this shared library, which runs the registrations below.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1,
                                          nullptr};
  return PyModule_Create(&module_def);
}

#define ROIOPS_SAMPLED_ARGS \
  "float spatial_scale, int pooled_height, int pooled_width, int sampling_ratio"
#define ROIOPS_POOL_ARGS "float spatial_scale, int pooled_height, int pooled_width"
// The fused multi-level (FPN) forms: inputs are the pyramid's levels (same N and C),
// levels[k] the level RoI k is pooled from, spatial_scales one per level.
#define ROIOPS_ML_SAMPLED_ARGS \
  "Tensor rois, Tensor levels, float[] spatial_scales, int pooled_height, " \
  "int pooled_width, int sampling_ratio"
#define ROIOPS_ML_POOL_ARGS \
  "Tensor rois, Tensor levels, float[] spatial_scales, int pooled_height, int pooled_width"

TORCH_LIBRARY(roiops, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  // Public ops: output [K, C, PH, PW] in the input's dtype and memory format.
  m.def("roi_align(Tensor input, Tensor rois, " ROIOPS_SAMPLED_ARGS
        ", bool aligned, str mode, str sampling) -> Tensor", tags);
  m.def("roi_warp(Tensor input, Tensor rois, " ROIOPS_SAMPLED_ARGS
        ", str mode, str sampling) -> Tensor", tags);
  m.def("roi_pool(Tensor input, Tensor rois, " ROIOPS_POOL_ARGS ", str mode) -> Tensor",
        tags);

  // Input gradient (the adjoint of the forward at `input`), the Jacobian-vector
  // product of the forward (the adjoint of the input gradient, used by double
  // backward) and, for roi_align, the box gradient. Registered ops rather than
  // Python code so that double backward, torch.compile and export see through them.
  m.def("_roi_align_backward(Tensor grad, Tensor input, Tensor rois, " ROIOPS_SAMPLED_ARGS
        ", bool aligned, str mode, str sampling) -> Tensor", tags);
  m.def("_roi_align_backward_rois(Tensor grad, Tensor input, Tensor rois, "
        ROIOPS_SAMPLED_ARGS ", bool aligned, str mode, str sampling) -> Tensor", tags);
  m.def("_roi_align_jvp(Tensor input, Tensor tangent, Tensor rois, " ROIOPS_SAMPLED_ARGS
        ", bool aligned, str mode, str sampling) -> Tensor", tags);
  m.def("_roi_warp_backward(Tensor grad, Tensor input, Tensor rois, " ROIOPS_SAMPLED_ARGS
        ", str mode, str sampling) -> Tensor", tags);
  m.def("_roi_warp_jvp(Tensor input, Tensor tangent, Tensor rois, " ROIOPS_SAMPLED_ARGS
        ", str mode, str sampling) -> Tensor", tags);
  m.def("_roi_pool_backward(Tensor grad, Tensor input, Tensor rois, " ROIOPS_POOL_ARGS
        ", str mode) -> Tensor", tags);
  m.def("_roi_pool_jvp(Tensor input, Tensor tangent, Tensor rois, " ROIOPS_POOL_ARGS
        ", str mode) -> Tensor", tags);

  m.def("roi_align_multilevel(Tensor[] inputs, " ROIOPS_ML_SAMPLED_ARGS
        ", bool aligned, str mode, str sampling) -> Tensor", tags);
  m.def("roi_warp_multilevel(Tensor[] inputs, " ROIOPS_ML_SAMPLED_ARGS
        ", str mode, str sampling) -> Tensor", tags);
  m.def("roi_pool_multilevel(Tensor[] inputs, " ROIOPS_ML_POOL_ARGS ", str mode) -> Tensor",
        tags);
  m.def("_roi_align_multilevel_backward(Tensor grad, Tensor[] inputs, " ROIOPS_ML_SAMPLED_ARGS
        ", bool aligned, str mode, str sampling) -> Tensor[]", tags);
  m.def("_roi_align_multilevel_backward_rois(Tensor grad, Tensor[] inputs, "
        ROIOPS_ML_SAMPLED_ARGS ", bool aligned, str mode, str sampling) -> Tensor", tags);
  m.def("_roi_align_multilevel_jvp(Tensor[] inputs, Tensor[] tangents, " ROIOPS_ML_SAMPLED_ARGS
        ", bool aligned, str mode, str sampling) -> Tensor", tags);
  m.def("_roi_warp_multilevel_backward(Tensor grad, Tensor[] inputs, " ROIOPS_ML_SAMPLED_ARGS
        ", str mode, str sampling) -> Tensor[]", tags);
  m.def("_roi_warp_multilevel_jvp(Tensor[] inputs, Tensor[] tangents, " ROIOPS_ML_SAMPLED_ARGS
        ", str mode, str sampling) -> Tensor", tags);
  m.def("_roi_pool_multilevel_backward(Tensor grad, Tensor[] inputs, " ROIOPS_ML_POOL_ARGS
        ", str mode) -> Tensor[]", tags);
  m.def("_roi_pool_multilevel_jvp(Tensor[] inputs, Tensor[] tangents, " ROIOPS_ML_POOL_ARGS
        ", str mode) -> Tensor", tags);
}
