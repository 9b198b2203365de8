// The channel loops every CPU kernel runs on one channel block: copies, fills, loads
// and stores with dtype conversion, weighted tap sums and first-maximum scans,
// vectorized with at::vec when channels are contiguous (channels_last or a
// channels-last copy) and rounded the same way in the vector and the scalar loops.
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

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>

#include "tuning.h"

namespace roiops::cpu {

template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

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

}  // namespace roiops::cpu
