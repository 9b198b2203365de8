// roi_align and roi_warp on CUDA tensors (kernels: sampled_kernels.h).
#include "../roi_ops.h"
#include "gpu_backend.h"
#include "launch_cuda.cuh"

namespace roiops::gpu {

TORCH_LIBRARY_IMPL(roiops, CUDA, m) { OpEntryPoints<GpuBackend<CudaLauncher>>::register_sampled(m); }

}  // namespace roiops::gpu
