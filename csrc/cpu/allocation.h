// CPU memory policy: the tensors the CPU kernels allocate (backed by transparent huge
// pages where large) and the output size above which a forward writes around the
// caches. Device-neutral allocation and its layout rule are in ../op_common.h.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "../roi_geometry.h"

namespace roiops::cpu {

// CPU forward outputs (with their argmax) larger than this many bytes are written
// around the caches (output_block.h: OutputBlock): this CPU's last-level cache (Linux
// sysfs), but at most kMaxCachedOutputBytes, which is also taken where sysfs does not
// say (docs/performance-notes.md).
int64_t streamed_output_bytes();

// The forward / jvp output and the forward's argmax (../op_common.h: empty_output,
// empty_argmax), large ones backed by huge pages.
at::Tensor empty_cpu_output(at::TensorList maps, int64_t K, int64_t pooled_h, int64_t pooled_w,
                            int64_t group = 1);
at::Tensor empty_cpu_argmax(const at::Tensor& output, Mode mode, bool keep);

// Input-gradient accumulators: one uninitialized tensor per map, in the map's memory
// format and the accumulation type (float32 for reduced types: many RoIs add into one
// pixel). The backward kernels write every element (for_each_backward_task).
std::vector<at::Tensor> grad_accumulators(at::TensorList maps);
// The accumulators converted to the maps' dtype (no copy when it is already that).
std::vector<at::Tensor> finish_grads(std::vector<at::Tensor> acc, at::ScalarType dtype);

}  // namespace roiops::cpu
