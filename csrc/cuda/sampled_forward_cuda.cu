// roi_align and roi_warp on CUDA tensors: the forward's and JVP's kernels, compiled
// here (bodies: sampled_ops.h; registered by register_cuda.cpp).
#include "launch_cuda.cuh"
#include "sampled_ops.h"

namespace roiops::gpu {

template struct SampledForwardOps<CudaLauncher>;

}  // namespace roiops::gpu
