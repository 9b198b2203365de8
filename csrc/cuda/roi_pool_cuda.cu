// roi_pool on CUDA tensors (kernels: pool_kernels.h).
#include "../roi_ops.h"
#include "gpu_backend.h"
#include "launch_cuda.cuh"

namespace roiops::gpu {

TORCH_LIBRARY_IMPL(roiops, CUDA, m) { OpEntryPoints<GpuBackend<CudaLauncher>>::register_pool(m); }

}  // namespace roiops::gpu
