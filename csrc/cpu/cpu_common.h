// CPU-side helpers shared by every RoI kernel (argument checks and output allocation
// live in ../op_common): strided feature views and pyramids, per-(level, image) RoI
// buckets for the deterministic backward, dynamic scheduling, transposes and footprint
// tiles, the forward and backward task schedules, output staging, and the channel loops
// that are vectorized with at::vec when channels are contiguous (channels_last).
// Why the tuning constants have their values: docs/performance-notes.md.
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
#include <cmath>
#include <memory>
#include <numeric>
#include <string_view>
#include <type_traits>
#include <vector>

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../op_common.h"
#include "../roi_geometry.h"
#include "tier_counts.h"
#include "tuning.h"

namespace roiops::cpu {

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
// once per channel instead of once per tap. Footprints above kMaxTilePixels stay on the
// direct path.

// The pixels a RoI reads (and its backward writes): rows [y0, y1), columns [x0, x1);
// empty when it reads none.
struct Footprint {
  int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;
};

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

// dst[j * ld_dst + i] = src[i * ld_src + j] for i < rows, j < cols: moving channel runs
// to and from planes. 8 x 8 blocks are transposed in registers where T allows
// (kTransposable: 4-byte elements in the AVX variants, whose shuffles only move bits,
// so int32 argmax indices too; floats in the default variant), the edges one element at
// a time: element-wise tile gathers, at one load and one store each, dominated planar
// forwards (docs/performance-notes.md).

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
template <typename T>
constexpr bool kTransposable = sizeof(T) == 4;

// One 8 x 8 block. Our own rather than at::vec::transpose_mxn: in the AVX-512 variant
// that runs a 16 x 16 transposition with masked loads and stores behind two calls for
// every 8 x 8 block, which cost more than the pooling (docs/performance-notes.md).
inline void transpose_block8(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld_src);
  // Rows a..h: pairs interleaved (a0 b0 a1 b1 | a4 b4 a5 b5, ...), then quads
  // (a0 b0 c0 d0 | a4 b4 c4 d4, ...), then the 128-bit halves give whole columns.
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * ld_dst, _mm256_permute2f128_ps(r[j], r[j + 4], 0x20));
    _mm256_storeu_ps(dst + (j + 4) * ld_dst, _mm256_permute2f128_ps(r[j], r[j + 4], 0x31));
  }
}
#else
// at::vec's default transposition reads its elements as floats, so only floats use it.
template <typename T>
constexpr bool kTransposable = std::is_same_v<T, float>;

inline void transpose_block8(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  at::vec::transpose_mxn<float, kTransposeRun, kTransposeRun>(src, ld_src, dst, ld_dst);
}
#endif

template <typename T>
void transpose(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t rows, int64_t cols) {
  constexpr int B = kTransposeRun;
  int64_t i = 0;
  if constexpr (kTransposable<T>) {
    for (; i + B <= rows; i += B) {
      int64_t j = 0;
      for (; j + B <= cols; j += B)
        transpose_block8(reinterpret_cast<const float*>(src + i * ld_src + j), ld_src,
                         reinterpret_cast<float*>(dst + j * ld_dst + i), ld_dst);
      for (; j < cols; ++j)
        for (int64_t q = i; q < i + B; ++q) dst[j * ld_dst + q] = src[q * ld_src + j];
    }
  }
  for (; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
}

// tile[(i * cols + j) * n + c] = src[c * cs + rows[i] * sh + cols[j] * sw]; returns the
// tile's view (image and channel offsets already applied). Written in order. Runs of at
// least kTransposeRun consecutive columns (all of them in a whole plane), up to
// kGatherRun at a time, are transposed as blocks of n channels x run pixels, walking 8
// planes at a time along 256 bytes of each rather than all n planes along 32 bytes: a
// 64-channel plane block of an FPN P3 level (4.3 MB) reads from memory or L3, where few
// streams help the prefetchers (docs/performance-notes.md). Shorter runs are copied a
// column at a time.

template <typename scalar_t>
View4<const scalar_t> gather_tile(scalar_t* tile, const scalar_t* src, int64_t cs,
                                  int64_t sh, int64_t sw, const TileIndex& t, int64_t n) {
  constexpr int B = kTransposeRun;
  const int64_t nr = t.rows.size(), nc = t.cols.size();
  for (int64_t i = 0; i < nr; ++i) {
    const scalar_t* row = src + t.rows[i] * sh;
    scalar_t* dst = tile + i * nc * n;
    for (int64_t j = 0; j < nc;) {
      const scalar_t* pixel = row + t.cols[j] * sw;
      int64_t run = 1;
      while (sw == 1 && run < kGatherRun && j + run < nc && t.cols[j + run] == t.cols[j] + run) ++run;
      if (run >= B) {
        transpose(pixel, cs, dst + j * n, n, n, run);
        j += run;
        continue;
      }
      for (int64_t c = 0; c < n; ++c) dst[j * n + c] = pixel[c * cs];
      ++j;
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

// v[u] += value(c + u * V) for the U vectors v of V lanes: accumulate_taps held in
// registers, rounded the same way.
template <int U, typename scalar_t, typename acc_t, int kTaps>
inline void add_taps(at::vec::Vectorized<acc_t>* v, const scalar_t* src, int64_t c,
                     const Taps<acc_t, kTaps>& t) {
  using Vec = at::vec::Vectorized<acc_t>;
  for (int j = 0; j < kTaps; ++j) {
    const Vec w(t.w[j]);
    const scalar_t* p = src + t.off[j] + c;
    for (int u = 0; u < U; ++u) v[u] = v[u] + w * load_acc(p + u * Vec::size());
  }
}

// Whether GradWindow::add_at adds a vector of channels at pixels of their own with one
// gather and one scatter (AVX-512 floats) rather than one channel at a time.
template <typename acc_t>
constexpr bool kScatterAdds =
#if defined(CPU_CAPABILITY_AVX512)
    std::is_same_v<acc_t, float>;
#else
    false;
#endif

// Where a backward task accumulates the input gradient: channels [0, n) of the
// pixels in rows [y0, y1) and columns [x0, x1) of one image, with contiguous
// channels. That is the gradient itself when the map is channels-last, and a
// channels-last scratch copied out to the planes at the end of the task when it is
// planar (for_each_backward_task), so both layouts scatter whole channel vectors.
template <typename acc_t>
struct GradWindow {
  acc_t* data;      // channel 0 of pixel (y0, x0)
  int64_t rs, ps;   // row and pixel strides
  int64_t y0, y1, x0, x1;
  int64_t width;    // of the map
  // Map offset y * rs + x * ps of pixel (y0, x0), and whether the window is whole
  // rows laid out densely (rs == width * ps), so that pixel y * width + x is at
  // (that - y0 * width) * ps: the max-mode loops then index without a division.
  int64_t origin = y0 * rs + x0 * ps;
  bool whole_rows = x0 == 0 && x1 == width && rs == width * ps;
  // Whether pixel offsets within the window fit int32 lanes (add_at).
  bool int32_offsets = whole_rows && y0 * width <= INT32_MAX && (y1 - y0) * rs <= INT32_MAX;

  bool has_row(int64_t y) const { return y >= y0 && y < y1; }
  bool has_col(int64_t x) const { return x >= x0 && x < x1; }
  bool overlaps(const Footprint& f) const {
    return f.y0 < y1 && f.y1 > y0 && f.x0 < x1 && f.x1 > x0;
  }
  bool covers(const Footprint& f) const {
    return f.y0 >= y0 && f.y1 <= y1 && f.x0 >= x0 && f.x1 <= x1;
  }
  acc_t* at(int64_t y, int64_t x) const { return data + (y - y0) * rs + (x - x0) * ps; }
  // (y, x)[c] += w * g[c] for c in [0, n); nothing when (y, x) is outside.
  void add(int64_t y, int64_t x, acc_t w, const acc_t* g, int64_t n) const {
    if (has_row(y) && has_col(x)) axpy(at(y, x), w, g, n);
  }
  // d[c] += w * g[c] for c in [0, n): the adjoint of one tap of accumulate_taps,
  // rounded the same way (product, then sum).
  static void axpy(acc_t* d, acc_t w, const acc_t* g, int64_t n) {
    using Vec = at::vec::Vectorized<acc_t>;
    int64_t c = 0;
    for (; c + Vec::size() <= n; c += Vec::size())
      (Vec::loadu(d + c) + Vec(w) * Vec::loadu(g + c)).store(d + c);
    for (; c < n; ++c) d[c] += w * g[c];
  }
  // Pixel p = y * width + x, or null when it lies outside the window.
  acc_t* pixel(int64_t p) const {
    if (whole_rows) {
      const uint64_t q = uint64_t(p - y0 * width);
      return q < uint64_t((y1 - y0) * width) ? data + int64_t(q) * ps : nullptr;
    }
    const int64_t y = p / width, x = p % width;
    return has_row(y) && has_col(x) ? at(y, x) : nullptr;
  }
  // d[c] += g[c] for c in [0, n), d the channel run of pixel p[c]; pixels outside the
  // window are skipped: max mode's scatter. Offsets are computed a vector at a time, so
  // the scalar loop is one load, add and store per channel instead of pixel()'s
  // bounds, multiply and null checks.
  void add_at(const int32_t* p, const acc_t* g, int64_t n) const {
    using IVec = at::vec::Vectorized<int32_t>;
    int64_t c = 0;
    if (int32_offsets) {
      int32_t off[kChannelBlock];
      const IVec zero(0), none(-1), base(int32_t(y0 * width)), span(int32_t((y1 - y0) * width));
      const IVec stride(static_cast<int32_t>(ps)), lanes = IVec::arange(0, 1);
      for (; c + IVec::size() <= n; c += IVec::size()) {
        const IVec pixel = IVec::loadu(p + c), q = pixel - base;
        const IVec inside = (pixel >= zero) & (q >= zero) & (q < span);
        const IVec o = IVec::blendv(none, q * stride + lanes + IVec(int32_t(c)), inside);
#if defined(CPU_CAPABILITY_AVX512)
        // The lanes' addresses differ (channels c..c+15 of pixels ps >= n >= 16
        // apart), so no lane's store hides another's, and each lane adds what the
        // scalar loop would: the same bits.
        if constexpr (kScatterAdds<acc_t>) {
          const __m512i oi = o;
          const __mmask16 m = _mm512_cmpge_epi32_mask(oi, _mm512_setzero_si512());
          const __m512 d = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, oi, data, 4);
          _mm512_mask_i32scatter_ps(data, m, oi, _mm512_add_ps(d, _mm512_loadu_ps(g + c)), 4);
          continue;
        }
#endif
        o.store(off + c);
      }
      if constexpr (!kScatterAdds<acc_t>)
        for (int64_t i = 0; i < c; ++i)
          if (off[i] >= 0) data[off[i]] += g[i];
    }
    for (; c < n; ++c)
      if (acc_t* d = pixel(p[c])) d[c] += g[c];
  }
};

// Planar input gradients are accumulated kChannelBlock channels at a time, as
// channels-last ones are, in a channels-last scratch of at most kScratchBytes (a 50 x 84
// map of 64 floats), split into windows of rows (and of columns for very wide maps)
// when a plane is larger. 64 channels rather than an L2-sized block of 16: each RoI
// visit pays the per-bin work (argmax decode, bounds, loads, prefetches) once for all 64
// channels (docs/performance-notes.md).

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

// out[c * cs + j * ps] = in[j * n + c] for pixels (or bins) j < np and channels c < n:
// np channel runs written out to n planes, or (cs == 1) to np channel runs ps apart.
template <typename T>
void store_planes(T* out, int64_t cs, int64_t ps, const T* in, int64_t np, int64_t n) {
  if (cs == 1) {
    for (int64_t j = 0; j < np; ++j) copy_channels(out + j * ps, in + j * n, n);
  } else if (ps == 1) {
    transpose(in, n, out, cs, np, n);
  } else {
    for (int64_t j = 0; j < np; ++j)
      for (int64_t c = 0; c < n; ++c) out[c * cs + j * ps] = in[j * n + c];
  }
}

// dst[i] = src[i] for i < n, stored around the caches where the CPU can (x86's
// non-temporal stores, 16 aligned bytes at a time; plain copies elsewhere). The stores
// are weakly ordered: store_fence() before another thread reads dst.
template <typename T>
inline void stream_copy(T* dst, const T* src, int64_t n) {
#if defined(__SSE2__)
  char* d = reinterpret_cast<char*>(dst);
  const char* s = reinterpret_cast<const char*>(src);
  const int64_t bytes = n * int64_t(sizeof(T));
  int64_t i = std::min<int64_t>(bytes, -reinterpret_cast<intptr_t>(d) & 15);
  std::copy(s, s + i, d);
  for (; i + 16 <= bytes; i += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  std::copy(s + i, s + bytes, d + i);
#else
  std::copy(src, src + n, dst);
#endif
}
inline void store_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// The backward kernels' schedule: tasks are (level, image, channel block, window),
// each running `body(k, c0, n, geometry, window)` for every RoI k of its (level,
// image) group whose footprint overlaps the window, in increasing k: every pixel
// sums its contributions in the same order for any thread count, and no two tasks
// write the same pixel, so the result is bitwise deterministic without atomics. Tasks
// cover every element of `gi`, which they zero (channels-last accumulators) or store
// whole from a zeroed scratch (planar ones), so `gi` need not be initialized: zeroing
// it first would write a planar gradient twice.
// `build(geometry, k)` fills RoI k's geometry (with its Footprint); each thread keeps
// the geometries of its current group (up to kGeometryCacheBytes) for all its tasks.
// `gi` holds one accumulator per level in that level's memory format.

template <typename Geometry, typename acc_t, typename Build, typename Body>
void for_each_backward_task(const Maps<acc_t>& gi, const RoiBuckets& buckets, const Build& build,
                            const Body& body) {
  const int64_t N = gi.batch, C = gi.channels, L = gi.count();
  const bool planar = !gi.channels_contiguous();
  const int64_t block = kChannelBlock;
  const int64_t blocks = (C + block - 1) / block;
  const int64_t scratch_pixels = kScratchBytes / int64_t(block * sizeof(acc_t));
  // Window size and count per level: the whole map for channels-last accumulators.
  struct Split { int64_t rows, cols, down, across; };
  std::vector<Split> split(L);
  for (int64_t l = 0; l < L; ++l) {
    const int64_t H = gi.heights[l], W = gi.widths[l];
    Split& s = split[l];
    s = {H, W, H > 0 && W > 0, H > 0 && W > 0};
    if (!planar || s.down == 0) continue;
    const int64_t cols = std::min(W, scratch_pixels);
    const int64_t rows = std::min(H, scratch_pixels / cols);
    s.down = (H + rows - 1) / rows;
    s.across = (W + cols - 1) / cols;
    s.rows = (H + s.down - 1) / s.down;  // equal windows rather than a thin last one
    s.cols = (W + s.across - 1) / s.across;
  }
  const int64_t groups = N * L;
  std::vector<int64_t> first(groups + 1, 0);  // first task of each group
  for (int64_t g = 0; g < groups; ++g) {
    const Split& s = split[g / N];
    first[g + 1] = first[g] + blocks * s.down * s.across;
  }

  // Handed out one task at a time: tasks cost as much as their group's RoIs, and a
  // static split of a fused pyramid's tasks gives one thread the P2 and P3 levels and
  // the other the rest.
  parallel_dynamic(first[groups], 1, [&](auto& claim) {
    std::vector<acc_t> scratch(planar ? scratch_pixels * block : 0);
    std::vector<Geometry> cache;
    Geometry spare;
    int64_t cached_group = -1, cached = 0, t0, t1;
    while (claim(t0, t1)) for (int64_t task = t0; task < t1; ++task) {
      const int64_t group = std::upper_bound(first.begin(), first.end(), task) - first.begin() - 1;
      const int64_t level = group / N, image = group % N;
      const Split& s = split[level];
      const int64_t local = task - first[group], windows = s.down * s.across;
      const int64_t c0 = (local / windows) * block, n = std::min(block, C - c0);
      const int64_t y0 = (local % windows) / s.across * s.rows, x0 = (local % windows) % s.across * s.cols;
      const int64_t y1 = std::min(y0 + s.rows, gi.heights[level]);
      const int64_t x1 = std::min(x0 + s.cols, gi.widths[level]);
      const View4<acc_t>& g = gi.views[level];
      acc_t* plane = g.data + image * g.s0 + c0 * g.s1;
      const int64_t W = gi.widths[level];
      count_tier(!planar        ? &TierCounts::channels_last_windows
                 : s.across > 1 ? &TierCounts::column_windows
                 : s.down > 1   ? &TierCounts::row_windows
                                : &TierCounts::plane_windows);
      GradWindow<acc_t> w{plane + y0 * g.s2 + x0 * g.s3, g.s2, g.s3, y0, y1, x0, x1, W};
      if (planar) {
        w = {scratch.data(), (x1 - x0) * n, n, y0, y1, x0, x1, W};
        std::fill_n(scratch.data(), (y1 - y0) * (x1 - x0) * n, acc_t(0));
      } else {
        for (int64_t y = y0; y < y1; ++y)
          for (int64_t x = x0; x < x1; ++x) fill_channels(w.at(y, x), acc_t(0), n);
      }
      const int64_t begin = buckets.start[group], end = buckets.start[group + 1];
      if (group != cached_group) {
        cached_group = group;
        cache.resize(end - begin);
        int64_t bytes = 0;
        for (cached = 0; cached < end - begin && bytes < kGeometryCacheBytes; ++cached) {
          build(cache[cached], buckets.order[begin + cached]);
          bytes += cache[cached].bytes();
        }
      }
      for (int64_t i = begin; i < end; ++i) {
        const int64_t k = buckets.order[i];
        const bool hit = i - begin < cached;
        if (!hit) {
          build(spare, k);
          count_tier(&TierCounts::rebuilt_geometries);
        }
        const Geometry& r = hit ? cache[i - begin] : spare;
        if (w.overlaps(r.footprint)) body(k, c0, n, r, w);
      }
      if (!planar) continue;
      for (int64_t y = y0; y < y1; ++y)
        store_planes(plane + y * g.s2 + x0 * g.s3, g.s1, g.s3, w.at(y, x0), x1 - x0, n);
    }
  });
}

// Planar maps whose plane, for one channel block, fits kPlaneBytes are instead
// transposed whole, once per (level, image, block), into a channels-last scratch that
// all of that image's RoIs read: cheaper than per-RoI tiles once the RoIs would gather
// more pixels than the plane has (kPlaneRoiPixels per RoI is taken as a typical tile:
// 7 x 7 bins of 2 x 2 samples touch up to 28 x 28), at the cost of a buffer of up to
// kPlaneBytes per thread. Blocks are kChannelBlock channels where that fits, so each
// sample's tap arithmetic serves 64 channels (a 100 x 168 FPN P3 plane of 64 floats,
// 4.3 MB, lives in L3 either way), else kPlanarBlock channels (an FPN P2 level,
// 200 x 336 x 16 floats: 4.3 MB). roi_pool, which reads every pixel of its footprint,
// gains most. Measurements: docs/performance-notes.md.

// The forward kernels' schedule. Channels-last maps: every (RoI, channel block) task,
// RoI-major (each RoI's geometry is built once; every tap reads a whole channel run
// anyway), RoIs in (level, image) order so that consecutive tasks read one map (a fused
// pyramid's RoIs interleave levels). Planar maps: the (level, image, block) tasks of
// transposed planes (see kPlaneBytes), then the remaining RoIs' (RoI, block) tasks
// block-major (a pyramid of planes is far larger than the caches; this keeps one block
// of planes hot across all RoIs), each reading a channels-last tile of the RoI's
// footprint when it fits (Geometry::to_tile). `build(geometry, k)` fills RoI k's
// geometry; `body(k, c0, n, at, geometry, view, src)` pools channels [c0, c0 + n) of
// RoI k reading `src` through `view` and `geometry` (so the vectorized loops apply to
// planar maps too); `at` is always the geometry in map coordinates. Every way computes
// the same bits.
template <typename scalar_t, typename Geometry, typename Build, typename Body>
void for_each_forward_task(const Maps<const scalar_t>& in, const double* rois, int64_t K,
                           int64_t C, const Build& build, const Body& body) {
  const bool planar = !in.channels_contiguous();
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  struct PlaneTask { int64_t group, c0, n, begin, end; };  // RoIs order[begin, end)
  std::vector<PlaneTask> planes, plane_tasks;
  int64_t plane_elems = 0;  // the largest plane block
  std::vector<char> in_plane(planar ? K : 0, 0);  // RoIs that a plane task pools
  RoiBuckets buckets = bucket_rois(rois, K, in.batch, in);
  // Each group's RoIs are pooled top to bottom (by their boxes' vertical centres), so
  // that consecutive RoIs read nearby rows, which are still in L2 when the map (or
  // plane block) is larger (docs/performance-notes.md). Only the forward reorders: each RoI writes its own outputs, while the backward's fixed
  // increasing-RoI order is what makes its sums reproducible. NaN centres (boxes with
  // NaN or opposite infinite edges, which pool nothing) sort as 0: a comparison with a
  // NaN would not be an ordering, which std::stable_sort requires.
  std::vector<double> centre(K);
  for (int64_t k = 0; k < K; ++k) {
    const double y = rois[k * 5 + 2] + rois[k * 5 + 4];
    centre[k] = std::isnan(y) ? 0.0 : y;
  }
  const std::vector<int64_t> given = counting_tiers() ? buckets.order : std::vector<int64_t>();
  for (size_t g = 0; g + 1 < buckets.start.size(); ++g)
    std::stable_sort(buckets.order.begin() + buckets.start[g], buckets.order.begin() + buckets.start[g + 1],
                     [&](int64_t a, int64_t b) { return centre[a] < centre[b]; });
  for (size_t i = 0; i < given.size(); ++i) count_tier(&TierCounts::reordered_rois, given[i] != buckets.order[i]);
  for (int64_t g = 0; planar && g + 1 < int64_t(buckets.start.size()); ++g) {
    const int64_t level = g / in.batch, begin = buckets.start[g], end = buckets.start[g + 1];
    const int64_t pixels = in.heights[level] * in.widths[level];
    const int64_t bytes = pixels * int64_t(sizeof(scalar_t));
    const int64_t width = bytes * kChannelBlock <= kPlaneBytes ? kChannelBlock : kPlanarBlock;
    if (pixels == 0 || bytes * width > kPlaneBytes || (end - begin) * kPlaneRoiPixels < pixels)
      continue;
    for (int64_t c0 = 0; c0 < C; c0 += width) planes.push_back({g, c0, std::min(width, C - c0), begin, end});
    count_tier(width == kChannelBlock ? &TierCounts::plane_blocks : &TierCounts::narrow_plane_blocks,
               (C + width - 1) / width);
    plane_elems = std::max(plane_elems, pixels * width);
    for (int64_t i = begin; i < end; ++i) in_plane[buckets.order[i]] = 1;
  }
  // With few plane blocks (a 64-channel map is one) each block's RoIs are split into
  // parts, so that every thread has work and the threads end together; a thread that
  // takes consecutive parts of one block transposes it once. (Not one block at a time
  // shared by all threads in two parallel steps: on a loaded machine every step waits
  // for a descheduled thread; docs/performance-notes.md.)
  const int64_t want = kPlanePartsPerThread * at::get_num_threads();
  for (const PlaneTask& p : planes) {
    const int64_t count = p.end - p.begin;
    const int64_t parts = std::clamp<int64_t>((want + int64_t(planes.size()) - 1) / int64_t(planes.size()),
                                              1, std::max<int64_t>(1, count / kMinPlanePart));
    for (int64_t i = 0; i < parts; ++i)
      plane_tasks.push_back({p.group, p.c0, p.n, p.begin + count * i / parts, p.begin + count * (i + 1) / parts});
    if (parts > 1) count_tier(&TierCounts::plane_block_parts, parts);
  }

  parallel_dynamic(int64_t(plane_tasks.size()), 1, [&](auto& claim) {
    Geometry r;
    TileIndex whole;
    std::unique_ptr<scalar_t[]> plane(new scalar_t[plane_elems]);
    View4<const scalar_t> v(nullptr, 0, 0, 0, 0);
    int64_t have = -1;  // the plane task whose block is in `plane`
    int64_t t0, t1;
    while (claim(t0, t1)) {
      const auto [g, c0, n, begin, end] = plane_tasks[t0];
      if (have < 0 || plane_tasks[have].group != g || plane_tasks[have].c0 != c0) {
        const int64_t level = g / in.batch;
        const View4<const scalar_t>& lev = in.views[level];
        whole.rows.resize(in.heights[level]);
        whole.cols.resize(in.widths[level]);
        std::iota(whole.rows.begin(), whole.rows.end(), 0);
        std::iota(whole.cols.begin(), whole.cols.end(), 0);
        v = gather_tile(plane.get(), lev.data + (g % in.batch) * lev.s0 + c0 * lev.s1, lev.s1,
                        lev.s2, lev.s3, whole, n);
      }
      have = t0;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t k = buckets.order[i];
        build(r, k);
        body(k, c0, n, r, r, v, v.data);
      }
    }
  });

  parallel_dynamic(blocks * K, kRoiChunk, [&](auto& claim) {
    Geometry r, tiled;
    TileIndex index;
    std::unique_ptr<scalar_t[]> tile(planar ? new scalar_t[kMaxTilePixels * kChannelBlock] : nullptr);
    int64_t i0, i1, built = -1;
    while (claim(i0, i1)) for (int64_t i = i0; i < i1; ++i) {
      const int64_t k = planar ? i % K : buckets.order[i / blocks];
      const int64_t c0 = (planar ? i / K : i % blocks) * kChannelBlock;
      const int64_t n = std::min(kChannelBlock, C - c0);
      if (planar && in_plane[k]) continue;
      if (k != built) build(r, k), built = k;
      const View4<const scalar_t>& lev = in.views[r.level];
      const scalar_t* src = lev.data + r.image * lev.s0 + c0 * lev.s1;
      if (planar && r.to_tile(tiled, index)) {
        count_tier(&TierCounts::roi_tiles);
        const View4<const scalar_t> v = gather_tile(tile.get(), src, lev.s1, lev.s2, lev.s3, index, n);
        body(k, c0, n, r, tiled, v, v.data);
      } else {
        count_tier(planar ? &TierCounts::planar_in_place : &TierCounts::channels_last_tasks);
        body(k, c0, n, r, r, lev, src);
      }
    }
  });
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

// Whether value x replaces the running maximum b of a first-maximum scan (SEMANTICS:
// ties go to the first sample in row-major order; a NaN wins over any number and the
// first NaN is kept, so NaN propagates as in torch.amax). Per lane for vectors.
template <typename acc_t>
inline bool takes_max(acc_t x, acc_t b) {
  return x > b || (x != x && b == b);
}
template <typename acc_t>
inline at::vec::Vectorized<acc_t> takes_max(const at::vec::Vectorized<acc_t>& x,
                                            const at::vec::Vectorized<acc_t>& b) {
  return (x > b) | ((x != x) & (b == b));
}

// Running first-maximum over samples: keeps the value and the index of the first
// sample that attains it (takes_max). Values v[c * cs] are read in place (vectorized
// when cs == 1).
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
      const Vec take = takes_max(x, b);
      Vec::blendv(b, x, take).store(best + c);
      IVec::blendv(IVec::loadu(arg + c), index, at::vec::cast<Idx>(take)).store(arg + c);
    }
  }
  for (; c < n; ++c) {
    const acc_t x = static_cast<acc_t>(v[c * cs]), b = best[c];
    const bool take = takes_max(x, b);
    best[c] = take ? x : b;
    arg[c] = take ? static_cast<Idx>(sample) : arg[c];
  }
}

// Calls chunk(c, U) for the channel runs [c, c + U * V) of U vectors of V lanes (U = 4,
// then 1) while channels are contiguous (cs == 1), then rest(c) once for the channels
// [c, n) left. The bin loops hold a run's accumulators in registers across all of a
// bin's pixels or samples: loading and storing 64 accumulators around every read costs
// more than the read. rest(c) must loop pixel-major: one channel's compares or sums
// form a dependency chain through its running result, so a per-channel sweep of a
// large planar bin runs at that chain's latency, while interleaved channels overlap
// (docs/performance-notes.md).
template <typename acc_t, int kWide = 4, typename Chunk, typename Rest>
inline void by_channel_runs(int64_t n, int64_t cs, const Chunk& chunk, const Rest& rest) {
  constexpr int64_t V = at::vec::Vectorized<acc_t>::size();
  int64_t c = 0;
  if (cs == 1) {
    if constexpr (kWide > 4)
      for (; c + kWide * V <= n; c += kWide * V) chunk(c, std::integral_constant<int, kWide>{});
    for (; c + 4 * V <= n; c += 4 * V) chunk(c, std::integral_constant<int, 4>{});
    for (; c + V <= n; c += V) chunk(c, std::integral_constant<int, 1>{});
  }
  if (c < n) rest(c);
}

// Sums take a whole 64-channel block in one run where that is 8 vectors (AVX2 floats;
// 8 accumulators, 4 tap weights and a product fit the 16 registers): each tap's
// offset and weight then serve every channel, and 8 independent add chains hide the
// add latency.
template <typename acc_t>
constexpr int kSumUnroll = sum_unroll(at::vec::Vectorized<acc_t>::size());

// out[c] = finish(sum of value(c) over the taps sets that for_each(add) passes to add,
// in order) for c in [0, n), each set a Taps over src: the sums of a bin, with channel
// runs held in registers (by_channel_runs). finish takes and returns a Vectorized or
// an acc_t.
template <typename acc_t, typename scalar_t, typename ForEach, typename Finish>
inline void sum_taps(acc_t* out, const scalar_t* src, int64_t cs, int64_t n,
                     const ForEach& for_each, const Finish& finish) {
  using Vec = at::vec::Vectorized<acc_t>;
  by_channel_runs<acc_t, kSumUnroll<acc_t>>(
      n, cs,
      [&](int64_t c, auto unroll) {
        constexpr int U = decltype(unroll)::value;
        Vec sum[U];
        for (int u = 0; u < U; ++u) sum[u] = Vec(acc_t(0));
        for_each([&](const auto& t) { add_taps<U>(sum, src, c, t); });
        for (int u = 0; u < U; ++u) finish(sum[u]).store(out + c + u * Vec::size());
      },
      [&](int64_t c0) {
        fill_channels(out + c0, acc_t(0), n - c0);
        for_each([&](const auto& t) { accumulate_taps(out + c0, src + c0 * cs, cs, n - c0, t); });
        for (int64_t c = c0; c < n; ++c) out[c] = finish(out[c]);
      });
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

// Where a forward task writes its results: channels [c0, c0 + n) of every bin of RoI
// k, in the output and (when kept, in max mode) the argmax, which share strides. When
// the bins form one run (as in any output of these ops) the block is staged bin-major,
// each bin's channel run stored whole, in a per-thread buffer of up to kStageElems, and
// written out once per task by store_planes. The bin loops then never wait on a store
// that misses, as they do storing each bin's channel run straight into the output (a
// write miss at first); staging channel-major instead (n strided stores per bin, then
// copies of PW bins) is slower too (docs/performance-notes.md).

// This thread's buffer number `slot` of kStageElems T for a staged block.
template <typename T, int slot = 0>
T* stage_buffer() {
  static thread_local std::vector<T> b(kStageElems);
  return b.data();
}

// Whether a forward's output (and argmax) are written around the caches: when together
// they are larger than the cache they could stay in (streamed_output_bytes), which
// they would only pass through.
inline bool writes_around_caches(const at::Tensor& out, const at::Tensor& argmax) {
  return out.nbytes() + argmax.nbytes() > size_t(streamed_output_bytes());
}

// A staged block is written around the caches (stream_copy) when the op's outputs are
// larger than the last-level cache (`around_caches`, see writes_around_caches) and
// its bins' channel runs (channels_last) or its planes (NCHW) are contiguous: an
// ordinary store first reads its line from memory, so such a forward would move every
// output byte twice (docs/performance-notes.md).
template <typename scalar_t>
class OutputBlock {
 public:
  OutputBlock(const View4<scalar_t>& out, const View4<int32_t>& argmax, int64_t k, int64_t c0,
              int64_t n, int64_t pooled_h, int64_t pooled_w, bool around_caches)
      : out_(out), argmax_(argmax), k_(k), c0_(c0), n_(n), ph_(pooled_h), pw_(pooled_w),
        staged_(out.s2 == pooled_w * out.s3 && n * pooled_h * pooled_w <= kStageElems),
        stream_(staged_ && around_caches &&
                (out.s1 == 1 || (out.s3 == 1 && out.s1 == pooled_h * pooled_w))) {
    count_tier(stream_    ? &TierCounts::streamed_outputs
               : staged_ ? &TierCounts::staged_outputs
                         : &TierCounts::in_place_outputs);
    if (!staged_) return;
    values_ = stage_buffer<scalar_t>();
    if (argmax_.data) indices_ = stage_buffer<int32_t>();
  }

  // Bin (ph, pw): value[c] for channel c0 + c, and its argmax index[c] (nullptr in avg mode).
  template <typename acc_t, typename idx_t>
  void put(int64_t ph, int64_t pw, const acc_t* value, const idx_t* index) {
    const bool keep = index && argmax_.data;
    if (staged_) {
      const int64_t b = ph * pw_ + pw;
      store_channels(values_ + b * n_, 1, value, n_);
      if (keep) store_channels(indices_ + b * n_, 1, index, n_);
      return;
    }
    store_channels(at(out_, ph, pw), out_.s1, value, n_);
    if (keep) store_channels(at(argmax_, ph, pw), argmax_.s1, index, n_);
  }

  // Writes the staged block out; call once after the last put.
  void finish() {
    if (!staged_) return;
    write(out_, values_);
    if (argmax_.data) write(argmax_, indices_);
    if (stream_) store_fence();
  }

 private:
  template <typename T>
  T* at(const View4<T>& v, int64_t ph, int64_t pw) const {
    return v.data + k_ * v.s0 + c0_ * v.s1 + ph * v.s2 + pw * v.s3;
  }
  template <typename T>
  void write(const View4<T>& v, const T* staged) const {
    const int64_t bins = ph_ * pw_;
    T* dst = at(v, 0, 0);
    if (!stream_) {
      store_planes(dst, v.s1, v.s3, staged, bins, n_);
    } else if (v.s1 == 1) {
      for (int64_t b = 0; b < bins; ++b) stream_copy(dst + b * v.s3, staged + b * n_, n_);
    } else {
      T* planes = stage_buffer<T, 1>();
      transpose(staged, n_, planes, bins, bins, n_);
      stream_copy(dst, planes, n_ * bins);
    }
  }

  View4<scalar_t> out_;
  View4<int32_t> argmax_;
  int64_t k_, c0_, n_, ph_, pw_;
  bool staged_, stream_;
  scalar_t* values_ = nullptr;
  int32_t* indices_ = nullptr;
};

// Asks the caches for channels [0, n) at stride cs from p, ahead of their use: a line
// every 64 bytes when they are contiguous. (One loop: GCC 12 dropped the prefetches of
// a two-branch form.)
template <typename T>
inline void prefetch_channels(const T* p, int64_t cs, int64_t n) {
  const char* b = reinterpret_cast<const char*>(p);
  const int64_t step = cs == 1 ? 64 : cs * int64_t(sizeof(T));
  const int64_t bytes = n * (cs == 1 ? 1 : cs) * int64_t(sizeof(T));
  for (int64_t o = 0; o < bytes; o += step) __builtin_prefetch(b + o);
}

// An output-shaped [K, C, PH, PW] tensor (output gradient, argmax) that a backward
// task reads one RoI's channel block at a time, bin by bin (BinCursor). In a
// channels-last tensor each bin's channel run is contiguous, the runs C elements apart
// with the task's other channels in between: a stride the hardware prefetcher does not
// follow, so every load first asks for the bin kPrefetchBins ahead in (k, ph, pw)
// order, which is next in a group's increasing-k walk (further ahead gains nothing;
// the next RoI's whole block at once is slower). In an NCHW tensor the block is n
// planes of PH * PW bins, one run of memory: it is transposed once into a bin-major
// buffer, 8 x 8 blocks in registers, and the next RoI's block asked for, in place of
// n strided loads and n prefetches per bin (docs/performance-notes.md).

template <typename T>
struct BinReader {
  View4<const T> v;
  int64_t rois, pooled_h, pooled_w;
  // Whether each RoI's channel block is one run of planes (NCHW), which BinCursor
  // stages bin-major.
  bool planar = kTransposable<T> && v.s3 == 1 && v.s2 == pooled_w && v.s1 == pooled_h * pooled_w &&
                pooled_h * pooled_w * kChannelBlock <= kStageElems;

  const T* at(int64_t k, int64_t c0, int64_t ph, int64_t pw) const {
    return v.data + k * v.s0 + c0 * v.s1 + ph * v.s2 + pw * v.s3;
  }
  // dst[c] = channel c0 + c of bin (ph, pw) of RoI k, for c in [0, n).
  template <typename acc_t>
  void load(acc_t* dst, int64_t k, int64_t c0, int64_t n, int64_t ph, int64_t pw) const {
    const int64_t bins = pooled_h * pooled_w, ahead = k * bins + ph * pooled_w + pw + kPrefetchBins;
    if (ahead < rois * bins) {
      const int64_t b = ahead % bins;
      prefetch_channels(at(ahead / bins, c0, b / pooled_w, b % pooled_w), v.s1, n);
    }
    load_channels(dst, at(k, c0, ph, pw), v.s1, n);
  }
};

// Channels [c0, c0 + n) of RoI k's bins in a BinReader's tensor, as acc_t runs:
// planar blocks are transposed into a bin-major buffer once (and the next RoI's block
// asked for), others loaded bin by bin. The buffer is this thread's stage_buffer<T>:
// one cursor of each T at a time.
template <typename acc_t, typename T>
class BinCursor {
 public:
  BinCursor(const BinReader<T>& r, int64_t k, int64_t c0, int64_t n) : r_(r), k_(k), c0_(c0), n_(n) {
    if constexpr (std::is_same_v<acc_t, T>) {
      if (r.planar) {
        const int64_t bins = r.pooled_h * r.pooled_w;
        T* buf = stage_buffer<T>();
        transpose(r.at(k, c0, 0, 0), bins, buf, n, n, bins);
        if (k + 1 < r.rois) prefetch_channels(r.at(k + 1, c0, 0, 0), 1, n * bins);
        staged_ = buf;
      }
    }
    // Avg mode's argmax reader has no tensor and is never read.
    if (r.v.data) count_tier(staged_ ? &TierCounts::staged_bin_reads : &TierCounts::bin_by_bin_reads);
  }
  // The run of bin (ph, pw); valid until the next call.
  const acc_t* operator()(int64_t ph, int64_t pw) {
    if (staged_) return staged_ + (ph * r_.pooled_w + pw) * n_;
    r_.load(run_, k_, c0_, n_, ph, pw);
    return run_;
  }

 private:
  const BinReader<T>& r_;
  int64_t k_, c0_, n_;
  const acc_t* staged_ = nullptr;
  acc_t run_[kChannelBlock];
};
}  // namespace roiops::cpu
