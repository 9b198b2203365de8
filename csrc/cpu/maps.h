// What the CPU kernels read and where: strided views of one map or the levels of a
// pyramid, the per-RoI level indices, the (level, image) buckets of RoIs, and a RoI's
// footprint on its map.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <type_traits>
#include <vector>

namespace roiops::cpu {

// A 4-D tensor seen through its strides, so NCHW, channels_last, sliced and expanded
// tensors are all read in place.
template <typename T>
struct View4 {
  T* data;
  int64_t s0, s1, s2, s3;
  View4(T* d, at::IntArrayRef st) : data(d), s0(st[0]), s1(st[1]), s2(st[2]), s3(st[3]) {}
  View4(T* d, int64_t a, int64_t b, int64_t c, int64_t e) : data(d), s0(a), s1(b), s2(c), s3(e) {}
};
template <typename T>
View4<T> view4(const at::Tensor& t) {
  return View4<T>(t.data_ptr<std::remove_const_t<T>>(), t.strides());
}

// The forward's argmax ([K, C, PH, PW] int32 in max mode, empty in avg mode, where
// no kernel reads it).
template <typename T>
View4<T> argmax_view(const at::Tensor& argmax) {
  if (argmax.dim() != 4) return View4<T>(nullptr, 0, 0, 0, 0);
  return view4<T>(argmax);
}

// The feature maps an op reads: one map (the plain ops) or the levels of a pyramid,
// which share N, C and dtype (the *_multilevel ops). RoI k reads level levels[k].
template <typename T>
struct Maps {
  std::vector<View4<T>> views;
  std::vector<int64_t> heights, widths;
  std::vector<double> scales;
  const int64_t* levels = nullptr;  // null: a single map
  int64_t batch = 0, channels = 0;

  Maps(at::TensorList maps, at::ArrayRef<double> s, const int64_t* roi_levels)
      : scales(s.begin(), s.end()), levels(roi_levels) {
    batch = maps.at(0).size(0);
    channels = maps[0].size(1);
    for (const at::Tensor& m : maps) {
      views.push_back(view4<T>(m));
      heights.push_back(m.size(2));
      widths.push_back(m.size(3));
    }
  }
  int64_t level_of(int64_t k) const { return levels ? levels[k] : 0; }
  int64_t count() const { return int64_t(views.size()); }
  // Channels are contiguous in every level (channels_last): no tiling needed.
  bool channels_contiguous() const {
    for (const View4<T>& v : views)
      if (v.s1 != 1) return false;
    return true;
  }
};

// The per-RoI level indices of a multilevel op, kept contiguous while a kernel reads
// them; null for the single-map ops (undefined tensor).
struct RoiLevels {
  at::Tensor tensor;
  const int64_t* data = nullptr;
  explicit RoiLevels(const at::Tensor& levels) {
    if (!levels.defined()) return;
    tensor = levels.contiguous();
    data = tensor.data_ptr<int64_t>();
  }
};

// The boxes, a contiguous float64 [K, F] tensor (rois_as_double): rows of F = 5
// (batch_index, x1, y1, x2, y2) or 6 (batch_index, cx, cy, w, h, angle: roi_align_rotated).
struct RoiRows {
  const double* data;
  int64_t count, fields;
  explicit RoiRows(const at::Tensor& rois)
      : data(rois.data_ptr<double>()), count(rois.size(0)), fields(rois.size(1)) {}
  const double* operator[](int64_t k) const { return data + k * fields; }
  int64_t image(int64_t k) const { return static_cast<int64_t>(data[k * fields]); }
  // Twice the box's vertical centre: y1 + y2, or 2 * cy.
  double twice_centre_y(int64_t k) const {
    const double* r = (*this)[k];
    return fields == 6 ? 2.0 * r[2] : r[2] + r[4];
  }
};

// RoI indices grouped by (level, image), each group in increasing RoI order: the
// fixed accumulation order that makes the input-gradient kernels bitwise
// deterministic for any thread count. Group of RoI k: level * N + image.
struct RoiBuckets {
  std::vector<int64_t> start;  // groups + 1 offsets into order
  std::vector<int64_t> order;
};
template <typename T>
RoiBuckets bucket_rois(const RoiRows& rois, int64_t N, const Maps<T>& maps) {
  const int64_t groups = N * maps.count(), K = rois.count;
  auto group = [&](int64_t k) { return maps.level_of(k) * N + rois.image(k); };
  RoiBuckets b;
  b.start.assign(groups + 1, 0);
  b.order.resize(K);
  for (int64_t k = 0; k < K; ++k) ++b.start[group(k) + 1];
  for (int64_t g = 0; g < groups; ++g) b.start[g + 1] += b.start[g];
  std::vector<int64_t> fill(b.start.begin(), b.start.end() - 1);
  for (int64_t k = 0; k < K; ++k) b.order[fill[group(k)]++] = k;
  return b;
}

// The pixels a RoI reads (and its backward writes): rows [y0, y1), columns [x0, x1);
// empty when it reads none.
struct Footprint {
  int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;
};

}  // namespace roiops::cpu
