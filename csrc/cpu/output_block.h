// How a forward task writes its output block: staged bin-major and stored once per
// task, or in place; written around the caches when the op's outputs are large.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "allocation.h"
#include "channel_loops.h"
#include "maps.h"
#include "stage_buffer.h"
#include "tier_counts.h"
#include "transpose.h"

namespace roiops::cpu {

// A RoI's box gradient: d = d(loss)/d(y1, y2, x1, x2) of its scaled box, stored as its row
// (batch index 0, x1, y1, x2, y2) of the float64 [K, 5] gradient, back in image
// coordinates (times the map's scale). Shared by every op with a box gradient.
inline void store_box_grad(double* row, const double d[4], double scale) {
  row[0] = 0;
  row[1] = d[2] * scale;  // x1
  row[2] = d[0] * scale;  // y1
  row[3] = d[3] * scale;  // x2
  row[4] = d[1] * scale;  // y2
}

// d(loss)/d(cx, cy, w, h, angle) of a rotated box into its [6] gradient row, from d
// with respect to the scaled centre and size and the angle (add_rotated_sample_grad).
inline void store_rotated_box_grad(double* row, const double d[5], double scale) {
  row[0] = 0;
  for (int i = 0; i < 4; ++i) row[i + 1] = d[i] * scale;
  row[5] = d[4];
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

// Whether a forward's output (and argmax) are written around the caches: when together
// they are larger than the cache they could stay in (streamed_output_bytes), which
// they would only pass through.
inline bool writes_around_caches(const at::Tensor& out, const at::Tensor& argmax) {
  return out.nbytes() + argmax.nbytes() > size_t(streamed_output_bytes());
}

// Where a forward task writes its results: channels [c0, c0 + n) of every bin of RoI
// k, in the output and (when kept, in max mode) the argmax, which share strides. When
// the bins form one run (as in any output of these ops) the block is staged bin-major,
// each bin's channel run stored whole, in a per-thread buffer of up to kStageElems, and
// written out once per task by store_planes. The bin loops then never wait on a store
// that misses, as they do storing each bin's channel run straight into the output (a
// write miss at first); staging channel-major instead (n strided stores per bin, then
// copies of PW bins) is slower too (docs/performance-notes.md).
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
    values_ = staged_values_.emplace().data();
    if (argmax_.data) indices_ = staged_indices_.emplace().data();
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
      const StageBuffer<T, 1> planes;
      transpose(staged, n_, planes.data(), bins, bins, n_);
      stream_copy(dst, planes.data(), n_ * bins);
    }
  }

  View4<scalar_t> out_;
  View4<int32_t> argmax_;
  int64_t k_, c0_, n_, ph_, pw_;
  bool staged_, stream_;
  std::optional<StageBuffer<scalar_t>> staged_values_;
  std::optional<StageBuffer<int32_t>> staged_indices_;
  scalar_t* values_ = nullptr;  // the staged blocks, when staged
  int32_t* indices_ = nullptr;
};

}  // namespace roiops::cpu
