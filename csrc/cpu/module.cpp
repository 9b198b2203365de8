// The Python module of one CPU kernel variant, roiops._cpu_<ROIOPS_CPU_VARIANT>
// (setup.py compiles csrc/cpu once per instruction set; roiops/_cpu.py imports the one
// the running CPU supports). Importing it runs register_cpu.cpp's registrations.
#include <Python.h>

#include <iterator>
#include <utility>
#include <vector>

#include "allocation.h"
#include "tier_counts.h"
#include "tuning.h"

#ifndef ROIOPS_CPU_VARIANT
#error "setup.py defines ROIOPS_CPU_VARIANT (default, avx2, avx512 or native)"
#endif

#define ROIOPS_CONCAT2(a, b) a##b
#define ROIOPS_CONCAT(a, b) ROIOPS_CONCAT2(a, b)
#define ROIOPS_STRING2(x) #x
#define ROIOPS_STRING(x) ROIOPS_STRING2(x)

namespace {

using Entries = std::vector<std::pair<const char*, int64_t>>;

// {name: value}, or null with a Python error set.
PyObject* int_dict(const Entries& entries) {
  PyObject* dict = PyDict_New();
  for (const auto& [name, v] : entries) {
    if (!dict) break;
    PyObject* value = PyLong_FromLongLong(v);
    if (!value || PyDict_SetItemString(dict, name, value) < 0) Py_CLEAR(dict);
    Py_XDECREF(value);
  }
  return dict;
}

// tier_counts(counting): the scheduling-tier counts since the last call, {tier: count},
// then counting on or off as asked (tier_counts.h; tests/test_cpu_tiers.py).
PyObject* tier_counts(PyObject*, PyObject* counting) {
  const int on = PyObject_IsTrue(counting);
  if (on < 0) return nullptr;
  Entries counts;
  for (const auto& [name, field] : roiops::cpu::kTierFields)
    counts.emplace_back(name, (roiops::cpu::tier_counts().*field).exchange(0));
  roiops::cpu::tier_counting() = on != 0;
  return int_dict(counts);
}

PyMethodDef methods[] = {{"tier_counts", tier_counts, METH_O,
                          "Scheduling-tier counts of the CPU kernels since the last call; then "
                          "count (True) or stop counting (False)."},
                         {nullptr, nullptr, 0, nullptr}};

}  // namespace

PyMODINIT_FUNC ROIOPS_CONCAT(PyInit__cpu_, ROIOPS_CPU_VARIANT)(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_cpu_" ROIOPS_STRING(ROIOPS_CPU_VARIANT), nullptr, -1, methods};
  PyObject* module = PyModule_Create(&module_def);
  if (!module) return nullptr;
  // The tests size their cases from the tuning constants and from the output size that
  // this machine's caches set (streamed_output_bytes).
  Entries constants(std::begin(roiops::cpu::kTuning), std::end(roiops::cpu::kTuning));
  constants.emplace_back("streamed_output_bytes", roiops::cpu::streamed_output_bytes());
  PyObject* tuning = int_dict(constants);
  if (!tuning || PyModule_AddObject(module, "tuning", tuning) < 0) {
    Py_XDECREF(tuning);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
