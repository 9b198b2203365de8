// Transposes between channel runs and planes, 8 x 8 blocks in registers where the
// element type allows.
#pragma once

#include "channel_loops.h"

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

namespace roiops::cpu {

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

// out[c * cs + j * ps] = in[j * in_ps + c] for pixels (or bins) j < np and channels
// c < n (in_ps = n when 0): np channel runs written out to n planes, or (cs == 1) to np
// channel runs ps apart.
template <typename T>
void store_planes(T* out, int64_t cs, int64_t ps, const T* in, int64_t np, int64_t n,
                  int64_t in_ps = 0) {
  if (in_ps <= 0) in_ps = n;
  if (cs == 1) {
    for (int64_t j = 0; j < np; ++j) copy_channels(out + j * ps, in + j * in_ps, n);
  } else if (ps == 1) {
    transpose(in, in_ps, out, cs, np, n);
  } else {
    for (int64_t j = 0; j < np; ++j)
      for (int64_t c = 0; c < n; ++c) out[c * cs + j * ps] = in[j * in_ps + c];
  }
}

}  // namespace roiops::cpu
