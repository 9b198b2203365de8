// roi_pool on CUDA tensors: every kernel of the op, compiled here (bodies:
// pool_ops.h; registered by register_cuda.cpp).
#include "launch_cuda.cuh"
#include "pool_ops.h"

namespace roiops::gpu {

template struct PoolOps<CudaLauncher>;

}  // namespace roiops::gpu
