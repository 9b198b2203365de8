// Compiled by tests/test_geometry_header.py: the shared geometry header must stay
// usable from CUDA device code (no CPU-only calls), since the CUDA kernels include it.
#include "csrc/roi_geometry.h"
__global__ void k(const double* boxes, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  roiops::SampledRoi r = roiops::sampled_roi(boxes + 4 * i, 0.25, 7, 7, 0, true, false);
  double y = roiops::sample_coord(r.y0, r.bin_h, 1, 0, r.grid_h > 0 ? r.grid_h : 1);
  roiops::AxisTaps<float> t = roiops::axis_taps<roiops::Sampling::Bilinear, float>(y, 50);
  roiops::PoolAxis a = roiops::pool_axis(boxes[0], boxes[2], 0.25);
  int b, e; roiops::pool_bin(a, 0, 7, 50, &b, &e);
  roiops::PreciseAxis pa = roiops::precise_axis(boxes[0], boxes[2], 0.25, 7);
  int pb, pe; roiops::precise_bin(pa, 0, 50, &pb, &pe);
  roiops::PreciseWeight pw = roiops::precise_weight(pa, 0, 7, pb);
  out[i] = t.w_lo + float(r.bin_w) + b + e + float(roiops::sample_fraction(0, 0, 2, 7)) +
           float(pw.w + pw.d_start + pw.d_end) + pe;
}
