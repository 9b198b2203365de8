// Operator schemas of the roiops library. Kernels attach per device elsewhere
// (csrc/cpu/register_cpu.cpp, csrc/cuda/*.cu, csrc/emulator/*.cpp) with TORCH_LIBRARY_IMPL; fake
// kernels and autograd formulas are registered from Python (roiops/_registration.py).
#include <Python.h>
#include <torch/library.h>

#include "cuda/kernel_common.h"

namespace {

// _C.emulator_costs(counting): the cost counters of the emulated kernels since the
// last call, {kernel: {counter: value}}, then counting on or off as asked
// (csrc/emulator/cost_counters.h; benchmarks/gpu_costs.py).
PyObject* emulator_costs(PyObject*, PyObject* counting) {
  using roiops::gpu::CostCounters;
  const int on = PyObject_IsTrue(counting);
  if (on < 0) return nullptr;
  static const std::pair<const char*, int64_t CostCounters::*> fields[] = {
      {"launches", &CostCounters::launches},       {"threads", &CostCounters::threads},
      {"data_loads", &CostCounters::data_loads},   {"data_bytes", &CostCounters::data_bytes},
      {"table_loads", &CostCounters::table_loads}, {"table_bytes", &CostCounters::table_bytes},
      {"stores", &CostCounters::stores},           {"store_bytes", &CostCounters::store_bytes},
      {"samples", &CostCounters::samples},         {"roi_visits", &CostCounters::roi_visits},
      {"roi_footprint", &CostCounters::roi_footprint}, {"roi_useful", &CostCounters::roi_useful},
      {"longest_walk", &CostCounters::longest_walk}};
  PyObject* result = PyDict_New();
  for (const auto& [name, c] : roiops::gpu::cost_registry()) {
    PyObject* counters = PyDict_New();
    for (const auto& [field, member] : fields) {
      PyObject* value = PyLong_FromLongLong(c.*member);
      PyDict_SetItemString(counters, field, value);
      Py_DECREF(value);
    }
    PyDict_SetItemString(result, name.c_str(), counters);
    Py_DECREF(counters);
  }
  roiops::gpu::cost_registry().clear();
  roiops::gpu::cost_counting() = on != 0;
  return result;
}

PyMethodDef methods[] = {{"emulator_costs", emulator_costs, METH_O,
                          "Cost counters of the emulated CUDA kernels since the last call; then "
                          "count (True) or stop counting (False)."},
                         {nullptr, nullptr, 0, nullptr}};

}  // namespace

// `import roiops._C` loads this shared library, which runs the registrations below.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  PyObject* module = PyModule_Create(&module_def);
  // The GPU kernels' binning, channel-group and strip constants, for the tests that reach each path.
  if (module && (PyModule_AddIntConstant(module, "EMULATOR_TILE", roiops::gpu::kTile) < 0 ||
                 PyModule_AddIntConstant(module, "EMULATOR_MAX_TILES_PER_ROI", roiops::gpu::kMaxTilesPerRoi) < 0 ||
                 PyModule_AddIntConstant(module, "EMULATOR_CHANNEL_GROUP", roiops::gpu::kChannelGroup) < 0 ||
                 PyModule_AddIntConstant(module, "EMULATOR_STRIP_PIXELS", roiops::gpu::kStripPixels) < 0 ||
                 PyModule_AddIntConstant(module, "EMULATOR_LIST_CHUNK", roiops::gpu::kListChunk) < 0)) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}

namespace {

const std::vector<at::Tag> kTags{at::Tag::pt2_compliant_tag};

// Declares one op family in its single-map and fused multilevel (FPN) forms:
//   F(maps, index, params) -> (output [K, C, PH, PW], argmax)
//   _F_backward(grad, maps, argmax, index, params) -> input gradient(s)
//   _F_jvp(tangent(s), argmax, index, params) -> the forward's Jacobian applied
//   _F_backward_rois(grad, maps, argmax, index, params) -> box gradient [K, 5]
// The single-map form reads `Tensor input` at `float spatial_scale`; the multilevel
// form reads `Tensor[] inputs` (same N and C) with one scale per level and
// levels[k], the level RoI k is pooled from. argmax (int32, like the output) holds
// each bin's winning sample in max mode and is empty in avg mode (or when
// keep_argmax is false: no gradient will be asked for); the backward and the double
// backward reuse it instead of searching again. The backward ops are
// registered ops rather than Python code so that double backward, torch.compile and
// torch.export see through them. The position-sensitive ops, prroi_pool and
// roi_align_rotated have the single-map form only (no pyramid pooler uses them: R-FCN
// pools one score map) and no max mode, so their argmax is always empty;
// roi_align_rotated's boxes are [K, 6] (batch_index, cx, cy, w, h, angle).
void def_family(torch::Library& m, const std::string& name, const std::string& params,
                bool box_gradient, bool with_multilevel = true) {
  for (const bool multilevel : {false, true}) {
    if (multilevel && !with_multilevel) continue;
    const std::string op = multilevel ? name + "_multilevel" : name;
    const std::string maps = multilevel ? "Tensor[] inputs" : "Tensor input";
    const std::string tangents = multilevel ? "Tensor[] tangents" : "Tensor tangent";
    const std::string index = multilevel
                                  ? "Tensor rois, Tensor levels, float[] spatial_scales, "
                                  : "Tensor rois, float spatial_scale, ";
    const std::string grads = multilevel ? "Tensor[]" : "Tensor";
    m.def((op + "(" + maps + ", " + index + params +
           ", bool keep_argmax=True) -> (Tensor output, Tensor argmax)").c_str(),
          kTags);
    m.def(("_" + op + "_backward(Tensor grad, " + maps + ", Tensor argmax, " + index + params +
           ") -> " + grads).c_str(),
          kTags);
    m.def(("_" + op + "_jvp(" + tangents + ", Tensor argmax, " + index + params + ") -> Tensor")
              .c_str(),
          kTags);
    if (box_gradient)
      m.def(("_" + op + "_backward_rois(Tensor grad, " + maps + ", Tensor argmax, " + index +
             params + ") -> Tensor").c_str(),
            kTags);
  }
}

// cpu_only: declare prroi_pool and roi_align_rotated too (the CPU registers them; the
// GPU backend and its emulator do not implement them yet, docs/cuda.md).
void define_ops(torch::Library& m, bool cpu_only) {
  def_family(m, "roi_align",
             "int pooled_height, int pooled_width, int sampling_ratio, bool aligned, str mode, "
             "str sampling",
             /*box_gradient=*/true);
  def_family(m, "roi_warp",
             "int pooled_height, int pooled_width, int sampling_ratio, str mode, str sampling",
             /*box_gradient=*/false);
  def_family(m, "roi_pool", "int pooled_height, int pooled_width, str mode",
             /*box_gradient=*/false);
  def_family(m, "ps_roi_align", "int pooled_height, int pooled_width, int sampling_ratio",
             /*box_gradient=*/true, /*with_multilevel=*/false);
  def_family(m, "ps_roi_pool", "int pooled_height, int pooled_width",
             /*box_gradient=*/false, /*with_multilevel=*/false);
  if (!cpu_only) return;
  def_family(m, "prroi_pool", "int pooled_height, int pooled_width",
             /*box_gradient=*/true, /*with_multilevel=*/false);
  def_family(m, "roi_align_rotated",
             "int pooled_height, int pooled_width, int sampling_ratio, bool aligned, bool clockwise",
             /*box_gradient=*/true, /*with_multilevel=*/false);
}

}  // namespace

TORCH_LIBRARY(roiops, m) { define_ops(m, /*cpu_only=*/true); }

// The same ops run by the CPU emulation of the CUDA kernels (csrc/emulator): the
// tests compare them with the CPU kernels and the reference on CPU tensors.
TORCH_LIBRARY(roiops_emulated, m) { define_ops(m, /*cpu_only=*/false); }
