// roi_pool's CUDA kernels run by the CPU grid emulator, registered as the
// roiops_emulated ops on CPU tensors (tests/test_cuda_emulated.py).
#include "../cuda/pool_ops.h"
#include "../roi_ops.h"
#include "grid_emulator.h"

namespace roiops::gpu {

TORCH_LIBRARY_IMPL(roiops_emulated, CPU, m) {
  OpEntryPoints<GpuBackend<EmuLauncher>>::register_pool(m);
}

}  // namespace roiops::gpu
