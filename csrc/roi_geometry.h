// The RoI contract (shared/design/SEMANTICS.md) in one place: box transforms, bin
// grids and per-axis sampling. Every function is C10_HOST_DEVICE and free of CPU-only
// code so the CPU kernels, the CUDA kernels and the CPU emulation of the CUDA grid all
// compute bit-for-bit the same geometry.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace roiops {

// Adaptive sampling (sampling_ratio <= 0) takes ceil(bin extent) samples per axis. A
// 1e6-pixel box would ask for ~1e5 x 1e5 samples per bin and never finish, so the
// count is capped here; the cap only matters for bins wider than this many feature
// pixels. roiops/reference.py states the same constant.
constexpr int kMaxAdaptiveGrid = 64;

enum class Mode : int { Avg = 0, Max = 1 };
enum class Sampling : int { Bilinear = 0, Nearest = 1 };

template <typename T>
C10_HOST_DEVICE inline bool is_finite(T v) {
  // v - v is 0 for finite v and NaN for inf/NaN; avoids std::isfinite, which is not
  // available for every T in device code.
  return v - v == T(0);
}

// ceil(extent) clamped to [0, kMaxAdaptiveGrid]; NaN gives 0 (an empty bin).
template <typename T>
C10_HOST_DEVICE inline int adaptive_grid(T extent) {
  const T g = ::ceil(extent);
  if (!(g > T(0))) return 0;
  if (g > T(kMaxAdaptiveGrid)) return kMaxAdaptiveGrid;
  return static_cast<int>(g);
}

// Geometry of one RoI for the sampled ops (roi_align and roi_warp), in feature-map
// coordinates. grid_h/grid_w == 0 means every bin of the RoI is empty (output 0),
// which is also how a RoI with non-finite coordinates is represented.
template <typename T>
struct SampledRoi {
  T y0, x0;            // top-left corner of bin (0, 0)
  T bin_h, bin_w;      // bin size
  int grid_h, grid_w;  // samples per bin along each axis
  bool h_clamped, w_clamped;  // the min-size-1 clamp is active: extent has no gradient
};

// roi_align: box = (x1, y1, x2, y2) in image coordinates. roi_warp is the same with
// quantize = true (coordinates rounded half away from zero after scaling, aligned off).
template <typename T>
C10_HOST_DEVICE inline SampledRoi<T> sampled_roi(
    const T box[4], T scale, int pooled_h, int pooled_w, int sampling_ratio,
    bool aligned, bool quantize) {
  SampledRoi<T> r{};
  T c[4];
  bool finite = true;
  for (int i = 0; i < 4; ++i) {
    c[i] = box[i] * scale;
    if (quantize) c[i] = ::round(c[i]);
    finite = finite && is_finite(c[i]);
  }
  const T off = aligned ? T(0.5) : T(0);
  r.x0 = c[0] - off;
  r.y0 = c[1] - off;
  T rw = (c[2] - off) - r.x0;
  T rh = (c[3] - off) - r.y0;
  if (!aligned) {
    r.w_clamped = rw < T(1);
    r.h_clamped = rh < T(1);
    if (r.w_clamped) rw = T(1);
    if (r.h_clamped) rh = T(1);
  }
  r.bin_w = rw / T(pooled_w);
  r.bin_h = rh / T(pooled_h);
  if (!finite || !is_finite(r.bin_w) || !is_finite(r.bin_h)) {
    r.grid_h = r.grid_w = 0;
    return r;
  }
  r.grid_h = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(rh / T(pooled_h));
  r.grid_w = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(rw / T(pooled_w));
  return r;
}

// Position of sample `i` of bin `p` along one axis (cell centres of the sub-grid).
template <typename T>
C10_HOST_DEVICE inline T sample_coord(T start, T bin, int p, int i, int grid) {
  return start + T(p) * bin + (T(i) + T(0.5)) * bin / T(grid);
}

// d(sample_coord)/d(start) and d/d(end) of the unclamped extent: the sample sits at
// fraction `a` of the RoI, so it moves by (1 - a) with the start and by a with the end.
template <typename T>
C10_HOST_DEVICE inline T sample_fraction(int p, int i, int grid, int pooled) {
  return (T(p) + (T(i) + T(0.5)) / T(grid)) / T(pooled);
}

// One axis of a sample: two taps (lo, hi) with weights. The 2-D sample is the outer
// product of the y and x axes. `valid == false` means the sample reads as 0;
// `moves` is d(weight_hi)/d(coord): 0 where the coordinate was clamped.
template <typename T>
struct AxisTaps {
  int lo, hi;
  T w_lo, w_hi;
  T moves;
  bool valid;
};

template <typename T>
C10_HOST_DEVICE inline AxisTaps<T> invalid_taps() {
  return AxisTaps<T>{0, 0, T(0), T(0), T(0), false};
}

template <typename T>
C10_HOST_DEVICE inline AxisTaps<T> bilinear_taps(T v, int size) {
  if (size <= 0 || !(v >= T(-1) && v <= T(size))) return invalid_taps<T>();
  T moves = T(1);
  if (v < T(0)) {
    v = T(0);
    moves = T(0);
  }
  int lo = static_cast<int>(v);  // v >= 0, so truncation is floor
  int hi;
  if (lo >= size - 1) {
    lo = hi = size - 1;
    v = T(lo);
    moves = T(0);
  } else {
    hi = lo + 1;
  }
  const T l = v - T(lo);
  return AxisTaps<T>{lo, hi, T(1) - l, l, moves, true};
}

template <typename T>
C10_HOST_DEVICE inline AxisTaps<T> nearest_taps(T v, int size) {
  if (size <= 0 || !(v >= T(-1) && v <= T(size))) return invalid_taps<T>();
  if (v < T(0)) v = T(0);
  int idx = static_cast<int>(::floor(v + T(0.5)));
  if (idx > size - 1) idx = size - 1;
  return AxisTaps<T>{idx, idx, T(1), T(0), T(0), true};
}

template <Sampling S, typename T>
C10_HOST_DEVICE inline AxisTaps<T> axis_taps(T v, int size) {
  return S == Sampling::Bilinear ? bilinear_taps(v, size) : nearest_taps(v, size);
}

// roi_pool (Fast R-CNN): integer bins. Row range of bin p is
// [floor(p*extent/pooled) + start, ceil((p+1)*extent/pooled) + start) clipped to
// [0, size]. Computed in double so that huge or non-finite boxes never reach an
// integer conversion unclipped.
struct PoolAxis {
  double start;   // rounded scaled start coordinate
  double extent;  // max(end - start + 1, 1)
  bool valid;     // both coordinates finite
};

C10_HOST_DEVICE inline PoolAxis pool_axis(double lo, double hi, double scale) {
  const double s = ::round(lo * scale);
  const double e = ::round(hi * scale);
  PoolAxis a{s, e - s + 1.0, is_finite(s) && is_finite(e)};
  if (!(a.extent >= 1.0)) a.extent = 1.0;
  return a;
}

// [begin, end) of bin p along the axis; begin >= end means an empty bin.
C10_HOST_DEVICE inline void pool_bin(
    const PoolAxis& a, int p, int pooled, int size, int* begin, int* end) {
  if (!a.valid) {
    *begin = *end = 0;
    return;
  }
  const double b = ::floor(double(p) * a.extent / double(pooled)) + a.start;
  const double e = ::ceil(double(p + 1) * a.extent / double(pooled)) + a.start;
  *begin = static_cast<int>(b < 0.0 ? 0.0 : (b > double(size) ? double(size) : b));
  *end = static_cast<int>(e < 0.0 ? 0.0 : (e > double(size) ? double(size) : e));
}

}  // namespace roiops
