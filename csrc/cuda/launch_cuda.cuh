// Runs a kernel's per-thread function (kernel_common.h) as a CUDA kernel on the
// current stream of the input's device.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernel_common.h"

namespace roiops::gpu {

template <class Kernel>
__global__ void __launch_bounds__(kThreadsPerBlock) run_kernel(const typename Kernel::Args a) {
  Kernel::run(a, ThreadPos{int64_t(blockIdx.x), int(threadIdx.x), int(blockDim.x)});
}

struct CudaLauncher {
  static c10::cuda::CUDAGuard guard(const at::Tensor& t) { return c10::cuda::CUDAGuard(t.device()); }

  template <class Kernel>
  static void launch(const typename Kernel::Args& a) {
    static_assert(sizeof(typename Kernel::Args) <= kMaxKernelArgs, "kernel arguments too large");
    if (a.n <= 0) return;  // no launch for empty work
    const int64_t blocks = (a.n + kThreadsPerBlock - 1) / kThreadsPerBlock;
    TORCH_CHECK(blocks <= INT32_MAX, "roiops: ", a.n, " threads exceed one CUDA grid");
    run_kernel<Kernel><<<unsigned(blocks), kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace roiops::gpu
