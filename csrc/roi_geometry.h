// The RoI contract (docs/SEMANTICS.md) in one place: box transforms, bin
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

// Bounds on the arguments, checked before any kernel runs (roiops/_validation.py
// states them too). An explicit sampling_ratio is at most kMaxSamplingRatio, so a
// bin holds at most 2^20 samples: sample counts and max-mode sample indices fit an
// int, and the work per bin stays finite. output_size is at most kMaxOutputSize per
// axis, so a RoI's per-axis sample tables (pooled * grid entries) fit an int index.
// Feature maps have H, W < 2^31 (tap indices are int).
constexpr int64_t kMaxSamplingRatio = 1024;
constexpr int64_t kMaxOutputSize = 65536;
constexpr int64_t kMaxMapSide = 2147483647;  // INT32_MAX
static_assert(kMaxSamplingRatio * kMaxSamplingRatio <= kMaxMapSide,
              "sample indices within a bin must fit an int");
static_assert(kMaxOutputSize * kMaxSamplingRatio <= kMaxMapSide,
              "per-axis sample tables must have int indices");

// A float32 running sum loses accuracy over many terms (it stops growing at 2^24
// equal terms), so avg-mode sums over more than this many samples or pixels add
// partial sums of at most this many terms into double totals.
constexpr int64_t kSumRun = 256;

enum class Mode : int { Avg = 0, Max = 1 };
enum class Sampling : int { Bilinear = 0, Nearest = 1 };

C10_HOST_DEVICE inline bool is_finite(double v) {
  // v - v is 0 for finite v and NaN for inf/NaN; avoids std::isfinite, which is not
  // available everywhere in device code.
  return v - v == 0.0;
}

// ceil(extent) clamped to [0, kMaxAdaptiveGrid]; NaN gives 0 (an empty bin).
C10_HOST_DEVICE inline int adaptive_grid(double extent) {
  const double g = ::ceil(extent);
  if (!(g > 0.0)) return 0;
  if (g > double(kMaxAdaptiveGrid)) return kMaxAdaptiveGrid;
  return static_cast<int>(g);
}

// All geometry below is computed in double from the box values, whatever the
// feature dtype: float16, bfloat16, float32 and float64 maps (and CPU and CUDA) then
// read the same pixels, even where a sample lands exactly on a pixel centre, a
// rounding tie or the map border. Only tap weights are rounded, to the accumulation
// type W, at the end.

// Geometry of one RoI for the sampled ops (roi_align and roi_warp), in feature-map
// coordinates. grid_h/grid_w == 0 means every bin of the RoI is empty (output 0),
// which is also how a RoI with non-finite coordinates is represented.
struct SampledRoi {
  double y0, x0;       // top-left corner of bin (0, 0)
  double bin_h, bin_w; // bin size
  int grid_h, grid_w;  // samples per bin along each axis
  bool h_clamped, w_clamped;  // the min-size-1 clamp is active: extent has no gradient
};

// roi_align: box = (x1, y1, x2, y2) in image coordinates. roi_warp is the same with
// quantize = true (coordinates rounded half away from zero after scaling, aligned
// off). sampling_ratio is within [.., kMaxSamplingRatio] (checked by the caller).
C10_HOST_DEVICE inline SampledRoi sampled_roi(
    const double box[4], double scale, int pooled_h, int pooled_w, int sampling_ratio,
    bool aligned, bool quantize) {
  SampledRoi r{};
  double c[4];
  bool finite = true;
  for (int i = 0; i < 4; ++i) {
    c[i] = box[i] * scale;
    if (quantize) c[i] = ::round(c[i]);
    finite = finite && is_finite(c[i]);
  }
  const double off = aligned ? 0.5 : 0.0;
  r.x0 = c[0] - off;
  r.y0 = c[1] - off;
  double rw = (c[2] - off) - r.x0;
  double rh = (c[3] - off) - r.y0;
  if (!aligned) {
    r.w_clamped = rw < 1.0;
    r.h_clamped = rh < 1.0;
    if (r.w_clamped) rw = 1.0;
    if (r.h_clamped) rh = 1.0;
  }
  r.bin_w = rw / double(pooled_w);
  r.bin_h = rh / double(pooled_h);
  if (!finite || !is_finite(r.bin_w) || !is_finite(r.bin_h)) {
    r.grid_h = r.grid_w = 0;
    return r;
  }
  r.grid_h = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(rh / double(pooled_h));
  r.grid_w = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(rw / double(pooled_w));
  return r;
}

// Position of sample `i` of bin `p` along one axis (cell centres of the sub-grid).
C10_HOST_DEVICE inline double sample_coord(double start, double bin, int p, int i, int grid) {
  return start + double(p) * bin + (double(i) + 0.5) * bin / double(grid);
}

// d(sample_coord)/d(start) and d/d(end) of the unclamped extent: the sample sits at
// fraction `a` of the RoI, so it moves by (1 - a) with the start and by a with the end.
C10_HOST_DEVICE inline double sample_fraction(int p, int i, int grid, int pooled) {
  return (double(p) + (double(i) + 0.5) / double(grid)) / double(pooled);
}

// roi_align_rotated: box = (cx, cy, w, h, angle in degrees, counter-clockwise with rows
// going down; `clockwise` negates it). `box` holds the bins in the box's own frame: bin
// (0, 0) starts at (-h'/2, -w'/2) relative to the centre, so sample_coord gives a
// sample's frame coordinates (yy, xx), which rotated_sample turns and moves onto the
// map. The angle is reduced with fmod (exact) before the conversion to radians, so any
// multiple of 360 degrees changes nothing and huge angles stay well defined.
constexpr double kPi = 3.14159265358979323846;

struct RotatedRoi {
  SampledRoi box;
  double cy, cx;        // centre in map coordinates (aligned: shifted by -0.5)
  double cos_t, sin_t;  // of the (signed) angle
  double turn;          // d(t in radians)/d(angle): pi / 180, negated when clockwise
};

C10_HOST_DEVICE inline RotatedRoi rotated_roi(const double box[5], double scale, int pooled_h,
                                              int pooled_w, int sampling_ratio, bool aligned,
                                              bool clockwise) {
  RotatedRoi r{};
  const double off = aligned ? 0.5 : 0.0;
  bool finite = true;
  for (int i = 0; i < 5; ++i) finite = finite && is_finite(box[i]);
  r.cx = box[0] * scale - off;
  r.cy = box[1] * scale - off;
  double rw = box[2] * scale, rh = box[3] * scale;
  if (!aligned) {
    r.box.w_clamped = rw < 1.0;
    r.box.h_clamped = rh < 1.0;
    if (r.box.w_clamped) rw = 1.0;
    if (r.box.h_clamped) rh = 1.0;
  }
  r.turn = (clockwise ? -1.0 : 1.0) * (kPi / 180.0);
  const double t = ::fmod(finite ? box[4] : 0.0, 360.0) * r.turn;
  r.cos_t = ::cos(t);
  r.sin_t = ::sin(t);
  r.box.y0 = -rh / 2.0;
  r.box.x0 = -rw / 2.0;
  r.box.bin_h = rh / double(pooled_h);
  r.box.bin_w = rw / double(pooled_w);
  if (!finite || !is_finite(r.box.bin_w) || !is_finite(r.box.bin_h)) {
    r.box.grid_h = r.box.grid_w = 0;
    return r;
  }
  r.box.grid_h = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(r.box.bin_h);
  r.box.grid_w = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(r.box.bin_w);
  return r;
}

// Map position (y, x) of the sample at frame coordinates (yy, xx).
C10_HOST_DEVICE inline void rotated_sample(const RotatedRoi& r, double yy, double xx, double* y,
                                           double* x) {
  *y = yy * r.cos_t - xx * r.sin_t + r.cy;
  *x = yy * r.sin_t + xx * r.cos_t + r.cx;
}

// Adds to d = d(loss)/d(cx', cy', w', h', angle) (the scaled centre and size, the
// angle in degrees) the gradient through one sample at frame coordinates (yy, xx),
// fractions (fy, fx) of the box (sample_fraction), given gy, gx = d(loss)/d(sample y,
// x): yy = h' * (fy - 1/2) moves with the height, xx = w' * (fx - 1/2) with the width,
// the centre moves the sample one for one and the angle turns it about the centre.
C10_HOST_DEVICE inline void add_rotated_sample_grad(double d[5], const RotatedRoi& r, double yy,
                                                    double xx, double fy, double fx, double gy,
                                                    double gx) {
  const double c = r.cos_t, s = r.sin_t;
  d[0] += gx;
  d[1] += gy;
  if (!r.box.w_clamped) d[2] += (fx - 0.5) * (gx * c - gy * s);
  if (!r.box.h_clamped) d[3] += (fy - 0.5) * (gy * c + gx * s);
  d[4] += (gx * (yy * c - xx * s) - gy * (yy * s + xx * c)) * r.turn;
}

// One axis of a sample: two taps (lo, hi) with weights in the accumulation type W.
// The 2-D sample is the outer product of the y and x axes. `valid == false` means
// the sample reads as 0; `moves` is d(weight_hi)/d(coord): 0 where the coordinate
// was clamped.
template <typename W>
struct AxisTaps {
  int lo, hi;
  W w_lo, w_hi;
  W moves;
  bool valid;
};

template <typename W>
C10_HOST_DEVICE inline AxisTaps<W> invalid_taps() {
  return AxisTaps<W>{0, 0, W(0), W(0), W(0), false};
}

// size < 2^31 (kMaxMapSide), so every index below fits an int.
template <typename W>
C10_HOST_DEVICE inline AxisTaps<W> bilinear_taps(double v, int64_t size) {
  if (size <= 0 || !(v >= -1.0 && v <= double(size))) return invalid_taps<W>();
  W moves = W(1);
  if (v < 0.0) {
    v = 0.0;
    moves = W(0);
  }
  const int64_t last = size - 1;
  int64_t lo = static_cast<int64_t>(v);  // v >= 0, so truncation is floor
  int64_t hi;
  if (lo >= last) {
    lo = hi = last;
    v = double(lo);
    moves = W(0);
  } else {
    hi = lo + 1;
  }
  const double l = v - double(lo);
  return AxisTaps<W>{int(lo), int(hi), W(1.0 - l), W(l), moves, true};
}

template <typename W>
C10_HOST_DEVICE inline AxisTaps<W> nearest_taps(double v, int64_t size) {
  if (size <= 0 || !(v >= -1.0 && v <= double(size))) return invalid_taps<W>();
  if (v < 0.0) v = 0.0;
  int64_t idx = static_cast<int64_t>(::floor(v + 0.5));
  if (idx > size - 1) idx = size - 1;
  return AxisTaps<W>{int(idx), int(idx), W(1), W(0), W(0), true};
}

template <Sampling S, typename W>
C10_HOST_DEVICE inline AxisTaps<W> axis_taps(double v, int64_t size) {
  return S == Sampling::Bilinear ? bilinear_taps<W>(v, size) : nearest_taps<W>(v, size);
}

// roi_pool (Fast R-CNN) and ps_roi_pool (torchvision's position-sensitive RoIPool):
// integer bins over the box rounded half away from zero after scaling. Row range of bin
// p is [floor(p*extent/pooled) + start, ceil((p+1)*extent/pooled) + start), where
// roi_pool's extent is max(end - start + 1, 1) and its bins are clipped to [0, size],
// and ps_roi_pool's extent is max(end - start, 1) and its bins are clipped to
// [0, size - 1] (torchvision's clip, which never reads the last row or column).
// Computed in double so that huge or non-finite boxes never reach an integer
// conversion unclipped; p*extent is an integer there, so the edges are exact.
// PoolRule::Precise is prroi_pool's weighted bins (precise_axis below), which the CPU
// kernels walk as these integer bins with a weight per row and per column.
enum class PoolRule : int { FastRcnn = 0, PositionSensitive = 1, Precise = 2 };

struct PoolAxis {
  double start;   // rounded scaled start coordinate
  double extent;  // bins split [start, start + extent)
  bool valid;     // both coordinates finite
  bool last_excluded;  // ps_roi_pool: bins end at size - 1
};

C10_HOST_DEVICE inline PoolAxis pool_axis(double lo, double hi, double scale,
                                          PoolRule rule = PoolRule::FastRcnn) {
  const double s = ::round(lo * scale);
  const double e = ::round(hi * scale);
  const bool ps = rule == PoolRule::PositionSensitive;
  PoolAxis a{s, e - s + (ps ? 0.0 : 1.0), is_finite(s) && is_finite(e), ps};
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
  const double limit = a.last_excluded ? (size > 0 ? double(size - 1) : 0.0) : double(size);
  const double b = ::floor(double(p) * a.extent / double(pooled)) + a.start;
  const double e = ::ceil(double(p + 1) * a.extent / double(pooled)) + a.start;
  *begin = static_cast<int>(b < 0.0 ? 0.0 : (b > limit ? limit : b));
  *end = static_cast<int>(e < 0.0 ? 0.0 : (e > limit ? limit : e));
}

// Which input channel output channel c of bin b = ph * PW + pw reads:
// c * group + b * per_bin. The plain ops read channel c in every bin (group 1,
// per_bin 0); the position-sensitive ops (ps_roi_align, ps_roi_pool) read channel
// c * PH * PW + b (group PH * PW, per_bin 1), so their output has C / (PH * PW)
// channels. Kernels address channels through this map, which makes the PS ops the
// plain ones with another channel addressing rather than kernels of their own.
struct ChannelMap {
  int64_t group = 1, per_bin = 0;
  C10_HOST_DEVICE int64_t input_channel(int64_t c, int64_t bin) const { return c * group + bin * per_bin; }
  C10_HOST_DEVICE int64_t output_channels(int64_t input_channels) const { return input_channels / group; }
};

// prroi_pool (Precise RoI Pooling): the exact mean over each bin of the bilinear surface
// f(y, x) = sum_ij v[i, j] * hat(y - i) * hat(x - j), hat(t) = max(0, 1 - |t|). The
// integral factorises into a row weight times a column weight per pixel, so one axis
// is all the geometry there is: a bin's pixels are a row range x a column range with
// per-row and per-column weights (the integer-bin walk of roi_pool with weights).
// The weight of pixel i is (1/bin) * integral of hat(t - i) over [lo, hi]: on each
// linear piece of the hat that is the covered fraction of the bin times the hat at the
// covered part's midpoint. Fractions, not differences of antiderivatives, keep a bin
// much narrower than a pixel exact (its mean is then f at the bin, not 0).
struct PreciseAxis {
  double start;  // scaled box start, x1 * s
  double bin;    // max(x2 * s - x1 * s, 0) / pooled; bins of zero size pool to 0
  bool valid;    // finite coordinates and a bin of positive size
};

C10_HOST_DEVICE inline PreciseAxis precise_axis(double lo, double hi, double scale, int pooled) {
  const double s = lo * scale, e = hi * scale;
  const double extent = e - s > 0.0 ? e - s : 0.0;
  PreciseAxis a{s, extent / double(pooled), false};
  a.valid = is_finite(s) && is_finite(e) && is_finite(a.bin) && a.bin > 0.0;
  return a;
}

// [begin, end) of the pixels with a nonzero weight in bin p: [floor(lo), ceil(hi)] of
// the bin [lo, hi], clipped to [0, size). Empty (begin == end) for an invalid axis.
C10_HOST_DEVICE inline void precise_bin(const PreciseAxis& a, int p, int size, int* begin,
                                        int* end) {
  *begin = *end = 0;
  if (!a.valid || size <= 0) return;
  const double b = ::floor(a.start + double(p) * a.bin);
  const double e = ::ceil(a.start + double(p + 1) * a.bin) + 1.0;
  const double limit = double(size);
  *begin = static_cast<int>(b < 0.0 ? 0.0 : (b > limit ? limit : b));
  *end = static_cast<int>(e < 0.0 ? 0.0 : (e > limit ? limit : e));
  if (*end < *begin) *end = *begin;
}

// Pixel i's weight in bin p, and its derivatives with respect to the scaled box start
// and end (the bin's edges lo = start + p * bin and hi = lo + bin both move with them):
// d(weight)/d(hi) = (hat(hi - i) - weight) / bin, d/d(lo) = (weight - hat(lo - i)) / bin.
struct PreciseWeight {
  double w, d_start, d_end;
};

C10_HOST_DEVICE inline double hat_weight(double t) {
  const double v = 1.0 - (t < 0.0 ? -t : t);
  return v > 0.0 ? v : 0.0;
}

// The fraction of a bin [u, u + bin] (bin > 0) that lies before t, in [0, 1].
C10_HOST_DEVICE inline double fraction_before(double t, double u, double bin) {
  const double f = (t - u) / bin;
  return f < 0.0 ? 0.0 : (f > 1.0 ? 1.0 : f);
}

C10_HOST_DEVICE inline PreciseWeight precise_weight(const PreciseAxis& a, int p, int pooled,
                                                    int64_t i) {
  // The bin [lo, hi] relative to pixel i is [u, v]; the hat rises on [-1, 0] and falls on [0, 1].
  const double u = a.start + double(p) * a.bin - double(i);
  const double v = a.start + double(p + 1) * a.bin - double(i);
  const double f0 = fraction_before(-1.0, u, a.bin), f1 = fraction_before(0.0, u, a.bin);
  const double f2 = fraction_before(1.0, u, a.bin);
  const double rising = (f1 - f0) * (1.0 + (u + a.bin * 0.5 * (f0 + f1)));
  const double falling = (f2 - f1) * (1.0 - (u + a.bin * 0.5 * (f1 + f2)));
  PreciseWeight r{rising + falling, 0.0, 0.0};
  const double d_lo = (r.w - hat_weight(u)) / a.bin;
  const double d_hi = (hat_weight(v) - r.w) / a.bin;
  const double q0 = double(p) / double(pooled), q1 = double(p + 1) / double(pooled);
  r.d_start = (1.0 - q0) * d_lo + (1.0 - q1) * d_hi;
  r.d_end = q0 * d_lo + q1 * d_hi;
  return r;
}

}  // namespace roiops
