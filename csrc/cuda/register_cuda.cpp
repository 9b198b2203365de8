// Registers every op's CUDA implementation. Only the declarations in gpu_backend.h
// are seen here: the bodies are compiled, one group of kernels per file, in
// csrc/cuda/*_cuda.cu.
#include "../roi_ops.h"
#include "gpu_backend.h"

namespace roiops::gpu {

struct CudaLauncher;  // launch_cuda.cuh

TORCH_LIBRARY_IMPL(roiops, CUDA, m) {
  OpEntryPoints<GpuBackend<CudaLauncher>>::register_sampled(m);
  OpEntryPoints<GpuBackend<CudaLauncher>>::register_pool(m);
}

}  // namespace roiops::gpu
