// roi_align on CUDA tensors: the box gradient's kernels, compiled here (bodies:
// sampled_ops.h; registered by register_cuda.cpp).
#include "launch_cuda.cuh"
#include "sampled_ops.h"

namespace roiops::gpu {

template struct SampledBoxGradOps<CudaLauncher>;

}  // namespace roiops::gpu
