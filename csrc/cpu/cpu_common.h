// CPU-side helpers shared by every RoI kernel: argument checks, strided feature views
// and pyramids, per-(level, image) RoI buckets for the deterministic backward, dynamic
// scheduling, footprint tiles, and the channel loops that are vectorized with at::vec
// when channels are contiguous (channels_last).
#pragma once

// at::vec picks its AVX2 / AVX512 implementation from CPU_CAPABILITY_AVX2 /
// CPU_CAPABILITY_AVX512, which ATen defines per kernel variant; an extension is not
// compiled through ATen's build, so map the compiler's own target flags (setup.py
// compiles these files once per variant, CPU_VARIANTS).
#if !defined(CPU_CAPABILITY_AVX2) && !defined(CPU_CAPABILITY_AVX512)
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__FMA__)
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY_AVX2
#endif
#endif

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../op_common.h"
#include "../roi_geometry.h"

namespace roiops::cpu {

// Channels are processed in blocks of this many so the per-bin accumulators live on the
// stack; 64 floats is a few cache lines and a multiple of every vector width.
constexpr int64_t kChannelBlock = 64;

// at::parallel_for splits a range into one static chunk per thread; RoIs differ in
// cost by orders of magnitude (adaptive grids, off-map boxes), so the RoI loops hand
// out small chunks on demand instead. `worker(claim)` runs once per thread (so it
// can keep per-thread buffers) and loops `while (claim(begin, end))`. Results do not
// depend on the schedule: every RoI writes only its own outputs.
template <typename Worker>
void parallel_dynamic(int64_t n, int64_t chunk, const Worker& worker) {
  std::atomic<int64_t> next{0};
  auto claim = [&](int64_t& begin, int64_t& end) {
    begin = next.fetch_add(chunk);
    end = std::min(n, begin + chunk);
    return begin < n;
  };
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), (n + chunk - 1) / chunk);
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { worker(claim); });
}

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

// RoI indices grouped by (level, image), each group in increasing RoI order: the
// fixed accumulation order that makes the input-gradient kernels bitwise
// deterministic for any thread count. Group of RoI k: level * N + image.
struct RoiBuckets {
  std::vector<int64_t> start;  // groups + 1 offsets into order
  std::vector<int64_t> order;
};
template <typename T>
RoiBuckets bucket_rois(const double* rois, int64_t K, int64_t N, const Maps<T>& maps) {
  const int64_t groups = N * maps.count();
  auto group = [&](int64_t k) { return maps.level_of(k) * N + static_cast<int64_t>(rois[k * 5]); };
  RoiBuckets b;
  b.start.assign(groups + 1, 0);
  b.order.resize(K);
  for (int64_t k = 0; k < K; ++k) ++b.start[group(k) + 1];
  for (int64_t g = 0; g < groups; ++g) b.start[g + 1] += b.start[g];
  std::vector<int64_t> fill(b.start.begin(), b.start.end() - 1);
  for (int64_t k = 0; k < K; ++k) b.order[fill[group(k)]++] = k;
  return b;
}

template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

// Planar (NCHW) maps cost one scalar load per channel per tap. Forward kernels
// instead transpose the pixels a RoI touches, for one channel block, into a small
// channels-last tile and run the vectorized path on it: each touched pixel is read
// once per channel instead of once per tap. Footprints above this many pixels
// (huge adaptive grids) stay on the direct path to bound the per-thread buffer.
constexpr int64_t kMaxTilePixels = 4096;

// Compact numbering of the rows and columns a RoI touches: the sorted distinct
// source rows / columns; a source index's tile index is its position. Built per RoI
// from its taps, so no buffer scales with the map (a map can be 2^31 pixels high
// through expand()).
struct TileIndex {
  std::vector<int> rows, cols;  // source row / column of each tile row / column

  void clear() {
    rows.clear();
    cols.clear();
  }
  // Call once every touched row and column has been pushed.
  void finish() {
    for (std::vector<int>* v : {&rows, &cols}) {
      std::sort(v->begin(), v->end());
      v->erase(std::unique(v->begin(), v->end()), v->end());
    }
  }
  int row(int y) const { return position(rows, y); }
  int col(int x) const { return position(cols, x); }
  int64_t pixels() const { return int64_t(rows.size()) * int64_t(cols.size()); }

 private:
  static int position(const std::vector<int>& sorted, int v) {
    return int(std::lower_bound(sorted.begin(), sorted.end(), v) - sorted.begin());
  }
};

// tile[(i * cols + j) * n + c] = src[c * cs + rows[i] * sh + cols[j] * sw]; returns the
// tile's view (image and channel offsets already applied).
template <typename scalar_t>
View4<const scalar_t> gather_tile(scalar_t* tile, const scalar_t* src, int64_t cs,
                                  int64_t sh, int64_t sw, const TileIndex& t, int64_t n) {
  const int64_t nr = t.rows.size(), nc = t.cols.size();
  // Written in order; the n planes read per pixel stay in L1 along a row.
  scalar_t* dst = tile;
  for (int64_t i = 0; i < nr; ++i) {
    const scalar_t* row = src + t.rows[i] * sh;
    for (int64_t j = 0; j < nc; ++j, dst += n) {
      const scalar_t* pixel = row + t.cols[j] * sw;
      for (int64_t c = 0; c < n; ++c) dst[c] = pixel[c * cs];
    }
  }
  return View4<const scalar_t>(tile, 0, 1, nc * n, n);
}

template <typename scalar_t>
inline at::vec::Vectorized<acc_type<scalar_t>> load_acc(const scalar_t* p) {
  using Vec = at::vec::Vectorized<acc_type<scalar_t>>;
  if constexpr (at::vec::is_reduced_floating_point_v<scalar_t>) {
    Vec v;
    at::vec::load_to_float(p, v);
    return v;
  } else {
    return Vec::loadu(p);
  }
}

// A weighted tap set over channels: value(c) = sum_j w[j] * src[c*cs + off[j]].
// Products and sums are rounded separately (never a fused multiply-add) in the vector
// and the scalar loops alike, so every channel, and every CPU variant, rounds the same.
template <typename acc_t, int kTaps>
struct Taps {
  int64_t off[kTaps];
  acc_t w[kTaps];
};

// acc[c] += value(c) for c in [0, n).
template <typename scalar_t, typename acc_t, int kTaps>
inline void accumulate_taps(acc_t* acc, const scalar_t* src, int64_t cs, int64_t n,
                            const Taps<acc_t, kTaps>& t) {
  using Vec = at::vec::Vectorized<acc_t>;
  int64_t c = 0;
  if (cs == 1) {
    constexpr int64_t V = Vec::size();
    for (; c + V <= n; c += V) {
      Vec a = Vec::loadu(acc + c);
      for (int j = 0; j < kTaps; ++j)
        a = a + Vec(t.w[j]) * load_acc(src + t.off[j] + c);
      a.store(acc + c);
    }
  }
  for (; c < n; ++c) {
    acc_t a = acc[c];
    for (int j = 0; j < kTaps; ++j) a += t.w[j] * acc_t(src[c * cs + t.off[j]]);
    acc[c] = a;
  }
}

// dst[c*cs + off[j]] += w[j] * g[c]: the adjoint of accumulate_taps.
template <typename acc_t, int kTaps>
inline void scatter_taps(acc_t* dst, int64_t cs, const acc_t* g, int64_t n,
                         const Taps<acc_t, kTaps>& t) {
  using Vec = at::vec::Vectorized<acc_t>;
  for (int j = 0; j < kTaps; ++j) {
    acc_t* d = dst + t.off[j];
    int64_t c = 0;
    if (cs == 1) {
      constexpr int64_t V = Vec::size();
      for (; c + V <= n; c += V)
        (Vec::loadu(d + c) + Vec(t.w[j]) * Vec::loadu(g + c)).store(d + c);
    }
    for (; c < n; ++c) d[c * cs] += t.w[j] * g[c];
  }
}

// The forward kernels' schedule: every (RoI, channel block) task, planar maps
// block-major (a pyramid of planes is far larger than the caches; this keeps one
// block of planes hot across all RoIs), channels-last maps RoI-major (each RoI's
// geometry is built once; every tap reads a whole channel run anyway).
// `build(geometry, k)` fills RoI k's geometry; `body(k, c0, n, at, geometry, view,
// src)` pools channels [c0, c0 + n) of RoI k reading `src` through `view` and
// `geometry`. For planar maps these address a channels-last tile of the RoI's
// footprint when it fits (Geometry::to_tile), so the vectorized loops apply; `at`
// is always the geometry in map coordinates.
template <typename scalar_t, typename Geometry, typename Build, typename Body>
void for_each_forward_task(const Maps<const scalar_t>& in, int64_t K, int64_t C,
                           const Build& build, const Body& body) {
  const bool planar = !in.channels_contiguous();
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  parallel_dynamic(blocks * K, 4, [&](auto& claim) {
    Geometry r, tiled;
    TileIndex index;
    std::unique_ptr<scalar_t[]> tile(planar ? new scalar_t[kMaxTilePixels * kChannelBlock] : nullptr);
    int64_t i0, i1, built = -1;
    while (claim(i0, i1)) for (int64_t i = i0; i < i1; ++i) {
      const int64_t k = planar ? i % K : i / blocks;
      const int64_t c0 = (planar ? i / K : i % blocks) * kChannelBlock;
      const int64_t n = std::min(kChannelBlock, C - c0);
      if (k != built) build(r, k), built = k;
      const View4<const scalar_t>& lev = in.views[r.level];
      const scalar_t* src = lev.data + r.image * lev.s0 + c0 * lev.s1;
      if (planar && r.to_tile(tiled, index)) {
        const View4<const scalar_t> v = gather_tile(tile.get(), src, lev.s1, lev.s2, lev.s3, index, n);
        body(k, c0, n, r, tiled, v, v.data);
      } else {
        body(k, c0, n, r, r, lev, src);
      }
    }
  });
}

// Short inline copies and fills of one channel block: std::copy / std::fill of a
// runtime length become libc calls, which cost more than these loops at n <= 64.
template <typename T>
inline void copy_channels(T* dst, const T* src, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  int64_t c = 0;
  for (; c + Vec::size() <= n; c += Vec::size()) Vec::loadu(src + c).store(dst + c);
  for (; c < n; ++c) dst[c] = src[c];
}
template <typename T>
inline void fill_channels(T* dst, T value, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  int64_t c = 0;
  for (; c + Vec::size() <= n; c += Vec::size()) Vec(value).store(dst + c);
  for (; c < n; ++c) dst[c] = value;
}

// v[c] = in[c * cs] for c in [0, n), converting to the accumulation type.
template <typename acc_t, typename in_t>
inline void load_channels(acc_t* v, const in_t* in, int64_t cs, int64_t n) {
  if (cs == 1) {
    if constexpr (std::is_same_v<acc_t, in_t>) {
      copy_channels(v, in, n);
      return;
    } else if constexpr (std::is_same_v<acc_t, acc_type<in_t>>) {
      using Vec = at::vec::Vectorized<acc_t>;
      int64_t c = 0;
      for (; c + Vec::size() <= n; c += Vec::size()) load_acc(in + c).store(v + c);
      for (; c < n; ++c) v[c] = static_cast<acc_t>(in[c]);
      return;
    }
  }
  for (int64_t c = 0; c < n; ++c) v[c] = static_cast<acc_t>(in[c * cs]);
}


// Integer type of a max-mode sample index kept beside an acc_t running maximum: the
// same width as acc_t, so value and index lanes update with one blend mask.
template <typename acc_t>
using index_of = std::conditional_t<sizeof(acc_t) == 8, int64_t, int32_t>;

// Running first-maximum over samples: keeps the value and the index of the first
// sample that attains it (SEMANTICS: ties go to the first sample in row-major order;
// a NaN wins over any number and the first NaN is kept, so NaN propagates as in
// torch.amax). Values v[c * cs] are read in place (vectorized when cs == 1).
template <typename acc_t, typename scalar_t>
inline void update_max(acc_t* best, index_of<acc_t>* arg, const scalar_t* v, int64_t cs,
                       int64_t n, int64_t sample) {
  using Vec = at::vec::Vectorized<acc_t>;
  using Idx = index_of<acc_t>;
  using IVec = at::vec::Vectorized<Idx>;
  static_assert(Vec::size() == IVec::size());
  if (sample == 0) {
    load_channels(best, v, cs, n);
    fill_channels(arg, Idx(0), n);
    return;
  }
  int64_t c = 0;
  if (cs == 1) {
    const IVec index(static_cast<Idx>(sample));
    for (; c + Vec::size() <= n; c += Vec::size()) {
      const Vec x = load_acc(v + c), b = Vec::loadu(best + c);
      const Vec take = (x > b) | ((x != x) & (b == b));
      Vec::blendv(b, x, take).store(best + c);
      IVec::blendv(IVec::loadu(arg + c), index, at::vec::cast<Idx>(take)).store(arg + c);
    }
  }
  for (; c < n; ++c) {
    const acc_t x = static_cast<acc_t>(v[c * cs]), b = best[c];
    const bool take = x > b || (x != x && b == b);
    best[c] = take ? x : b;
    arg[c] = take ? static_cast<Idx>(sample) : arg[c];
  }
}

// out[c * cs] = v[c] for c in [0, n), converting to the output type.
template <typename out_t, typename in_t>
inline void store_channels(out_t* out, int64_t cs, const in_t* v, int64_t n) {
  if constexpr (std::is_same_v<out_t, in_t>) {
    if (cs == 1) {
      copy_channels(out, v, n);
      return;
    }
  }
  for (int64_t c = 0; c < n; ++c) out[c * cs] = static_cast<out_t>(v[c]);
}

}  // namespace roiops::cpu
