// How a backward task reads the output-shaped tensors it is given (output gradient,
// argmax): one RoI's channel block at a time, bin-major.
#pragma once

#include <cstdint>
#include <optional>
#include <type_traits>

#include "channel_loops.h"
#include "maps.h"
#include "stage_buffer.h"
#include "tier_counts.h"
#include "transpose.h"

namespace roiops::cpu {

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
// asked for), others loaded bin by bin. The buffer is this thread's StageBuffer<T>:
// one staged cursor of each T at a time.
template <typename acc_t, typename T>
class BinCursor {
 public:
  BinCursor(const BinReader<T>& r, int64_t k, int64_t c0, int64_t n) : r_(r), k_(k), c0_(c0), n_(n) {
    if constexpr (std::is_same_v<acc_t, T>) {
      if (r.planar) {
        const int64_t bins = r.pooled_h * r.pooled_w;
        T* buf = buffer_.emplace().data();
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
  std::optional<StageBuffer<T>> buffer_;
  const acc_t* staged_ = nullptr;  // the block in buffer_, when staged
  acc_t run_[kChannelBlock];
};

}  // namespace roiops::cpu
