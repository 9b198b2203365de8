// The CPU kernels behind every roiops op (entry points and checks: roi_ops.h).
#include "../roi_ops.h"
#include "roi_pool_cpu.h"
#include "sampled_roi_cpu.h"

namespace roiops::cpu {
namespace {

struct CpuBackend {
  static constexpr auto sampled_forward = &sampled_forward_op;
  static constexpr auto sampled_backward_input = &sampled_backward_input_op;
  static constexpr auto sampled_backward_rois = &sampled_backward_rois_op;
  static constexpr auto sampled_jvp = &sampled_jvp_op;
  static constexpr auto pool_forward = &pool_forward_op;
  static constexpr auto pool_backward = &pool_backward_op;
  static constexpr auto pool_jvp = &pool_jvp_op;
  static constexpr auto pool_backward_rois = &pool_backward_rois_op;
};

}  // namespace

TORCH_LIBRARY_IMPL(roiops, CPU, m) {
  OpEntryPoints<CpuBackend>::register_sampled(m);
  OpEntryPoints<CpuBackend>::register_pool(m);
  OpEntryPoints<CpuBackend>::register_precise(m);
  OpEntryPoints<CpuBackend>::register_rotated(m);
}

}  // namespace roiops::cpu
