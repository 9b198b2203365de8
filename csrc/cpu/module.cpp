// The Python module of one CPU kernel variant, roiops._cpu_<ROIOPS_CPU_VARIANT>
// (setup.py compiles csrc/cpu once per instruction set; roiops/_cpu.py imports the one
// the running CPU supports). Importing it runs register_cpu.cpp's registrations.
#include <Python.h>

#include "../op_common.h"

#ifndef ROIOPS_CPU_VARIANT
#error "setup.py defines ROIOPS_CPU_VARIANT (default, avx2, avx512 or native)"
#endif

#define ROIOPS_CONCAT2(a, b) a##b
#define ROIOPS_CONCAT(a, b) ROIOPS_CONCAT2(a, b)
#define ROIOPS_STRING2(x) #x
#define ROIOPS_STRING(x) ROIOPS_STRING2(x)

PyMODINIT_FUNC ROIOPS_CONCAT(PyInit__cpu_, ROIOPS_CPU_VARIANT)(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_cpu_" ROIOPS_STRING(ROIOPS_CPU_VARIANT), nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  // Read by the tests, which size a call above it.
  if (module && PyModule_AddIntConstant(module, "streamed_output_bytes",
                                        long(roiops::streamed_output_bytes())) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
