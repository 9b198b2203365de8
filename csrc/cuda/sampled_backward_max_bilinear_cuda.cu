// roi_align and roi_warp on CUDA tensors: the input gradient's kernels for max mode
// and bilinear sampling, compiled here (bodies: sampled_ops.h; registered by
// register_cuda.cpp).
#include "launch_cuda.cuh"
#include "sampled_ops.h"

namespace roiops::gpu {

template struct SampledBackwardInputOps<CudaLauncher, Mode::Max, Sampling::Bilinear>;

}  // namespace roiops::gpu
