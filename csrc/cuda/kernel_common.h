// What every roiops CUDA kernel shares, in plain C++ that nvcc and the host compiler
// both accept: a thread's position in its launch, strided views of the feature maps,
// the per-RoI tables the kernels read instead of recomputing float64 geometry per
// channel, and the index helpers.
//
// Each kernel is a struct with an `Args` (everything the kernel reads, passed by value,
// including the thread count `n`) and `static C10_HOST_DEVICE void run(const Args&,
// ThreadPos)`: the work of one CUDA thread. A Launcher runs it over the grid:
// CudaLauncher (launch_cuda.cuh) as a __global__ kernel, EmuLauncher
// (csrc/emulator/grid_emulator.h) block by block and thread by thread on the CPU, so
// the tests check the kernels' indexing, bounds, layout and dtype logic without a
// GPU. No kernel uses shared memory, barriers, warp intrinsics or atomics: the
// emulation is the whole kernel, and every output element is written by one thread,
// which makes every kernel deterministic.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "../roi_geometry.h"

namespace roiops::gpu {

// Levels a fused multilevel launch can address (the maps travel in the kernel's
// arguments); FPN uses 4 or 5.
constexpr int kMaxLevels = 8;
constexpr int kThreadsPerBlock = 256;

// CUDA passes a kernel's arguments in a 4 KB parameter block; every launcher checks
// its kernel's Args against this, so the CPU build catches an Args that grew too big.
constexpr size_t kMaxKernelArgs = 4096;

// A thread's place in its launch: blockIdx.x, threadIdx.x and blockDim.x in CUDA.
struct ThreadPos {
  int64_t block;
  int thread;
  int block_dim;
  C10_HOST_DEVICE int64_t index() const { return block * block_dim + thread; }
};

// One feature map (or its gradient) through its strides, so NCHW, channels_last and
// other strided tensors are read in place. I is the index type of element offsets:
// int32 when every offset of the launch fits, int64 otherwise.
template <typename T, typename I>
struct MapView {
  T* data;
  I s0, s1, s2, s3;
  int H, W;  // H, W < 2^31 (kMaxMapSide)
  double scale;
  C10_HOST_DEVICE T* plane(I n, I c) const { return data + n * s0 + c * s1; }
};

// The maps a launch reads: one map, or the levels of a pyramid (same N, C, dtype).
template <typename T, typename I>
struct Pyramid {
  MapView<T, I> level[kMaxLevels];
  int count;
  int64_t N, C;
};

// The [K, C, PH, PW] output / gradient / argmax tensors, through their strides.
template <typename T, typename I>
struct BinView {
  T* data;
  I s0, s1, s2, s3;
  C10_HOST_DEVICE T& at(I k, I c, I ph, I pw) const {
    return data[k * s0 + c * s1 + ph * s2 + pw * s3];
  }
};

// V consecutive channels moved as one aligned 16-byte (or smaller) load or store:
// how threads of the channels_last kernels read a pixel's channels. V = 1 is a plain
// scalar access.
template <typename T, int V>
struct alignas(sizeof(T) * V) Packed {
  T v[V];
};
template <int V, typename T>
C10_HOST_DEVICE inline Packed<T, V> load_packed(const T* p) {
  return *reinterpret_cast<const Packed<T, V>*>(p);
}
template <int V, typename T>
C10_HOST_DEVICE inline void store_packed(T* p, const Packed<T, V>& v) {
  *reinterpret_cast<Packed<T, V>*>(p) = v;
}

// (k, c, ph, pw) of output element i. Threads next to each other take neighbouring
// pw (NCHW output) or neighbouring channels (channels_last output), so their writes
// and, for channels_last maps, their reads are coalesced.
struct Bin {
  int64_t k, c;
  int ph, pw;
};
C10_HOST_DEVICE inline Bin bin_of(int64_t i, int64_t C, int PH, int PW, bool channels_fast) {
  Bin b;
  if (channels_fast) {
    b.c = i % C;
    i /= C;
    b.pw = int(i % PW);
    i /= PW;
    b.ph = int(i % PH);
    b.k = i / PH;
  } else {
    b.pw = int(i % PW);
    i /= PW;
    b.ph = int(i % PH);
    i /= PH;
    b.c = i % C;
    b.k = i / C;
  }
  return b;
}

// (level, n, c, h, w) of input-gradient element i, numbered level after level
// (level_start[l] is the first element of level l), each level in its own layout.
struct Pixel {
  int level;
  int64_t n, c;
  int h, w;
};
// With V channels per thread, C and the level starts count channel groups.
template <typename T, typename I>
C10_HOST_DEVICE inline Pixel pixel_of(int64_t i, const Pyramid<T, I>& g, int64_t C,
                                      const int64_t* level_start, const bool* channels_fast) {
  Pixel p;
  p.level = 0;
  while (p.level + 1 < g.count && i >= level_start[p.level + 1]) ++p.level;
  i -= level_start[p.level];
  const int64_t H = g.level[p.level].H, W = g.level[p.level].W;
  if (channels_fast[p.level]) {
    p.c = i % C;
    i /= C;
    p.w = int(i % W);
    i /= W;
    p.h = int(i % H);
    p.n = i / H;
  } else {
    p.w = int(i % W);
    i /= W;
    p.h = int(i % H);
    i /= H;
    p.c = i % C;
    p.n = i / C;
  }
  return p;
}

// Per-RoI facts computed once per launch (one thread per RoI) and read by every
// thread of the op's kernels.
struct RoiInfo {
  int image;  // batch index; -1: the RoI reads nothing (its output is 0)
  int level;
  int grid_h, grid_w;        // samples per bin (sampled ops)
  bool h_clamped, w_clamped; // the min-size-1 clamp is active (sampled ops)
  // Rows [row0, row1] and columns [col0, col1] the RoI reads: a pixel outside never
  // receives gradient from it.
  int row0, row1, col0, col1;
};

// The batch index of a box as an int, or -1 unless it is an integer in [0, N). The
// CPU entry points refuse such boxes; on the GPU, checking them would cost a device
// to host synchronisation per call, so the kernels read nothing for them instead.
C10_HOST_DEVICE inline int batch_index(double b, int64_t N) {
  return (::floor(b) == b && b >= 0.0 && b < double(N)) ? int(b) : -1;
}

// The level of RoI k (0 for a single map), or -1 when outside [0, count).
C10_HOST_DEVICE inline int level_index(const int64_t* levels, int64_t k, int count) {
  const int64_t l = levels ? levels[k] : 0;
  return (l >= 0 && l < count) ? int(l) : -1;
}

// An empty [lo, hi] range that min/max updates turn into the right one.
constexpr int kEmptyLo = 2147483647;
constexpr int kEmptyHi = -1;

// The RoI order of the input-gradient kernels: RoIs sorted by group (level * N +
// image; RoIs that read nothing in a last group, count * N) and, within a group, by
// index; group g holds order[start[g] .. start[g + 1]). Threads walk their group in
// this fixed order, which makes the sums independent of scheduling.
struct RoiGroups {
  const int64_t* order;
  const int64_t* start;
};

// The arguments of a table kernel (one thread per RoI) that fills `t`.
template <typename Table>
struct TableArgs {
  const double* rois;     // [K, 5] float64
  const int64_t* levels;  // [K], null for a single map
  int H[kMaxLevels], W[kMaxLevels];
  double scale[kMaxLevels];
  int count;  // levels
  int64_t N;
  Table t;
  int64_t n;  // K
};

// The arguments of a kernel over output bins, V channels per thread (forward, JVP).
template <typename scalar_t, typename I, typename Table>
struct BinArgs {
  Pyramid<const scalar_t, I> in;  // the maps, or the JVP's tangents
  Table t;
  BinView<scalar_t, I> out;
  BinView<int32_t, I> argmax;  // forward: written in max mode (null when not kept); JVP: read
  bool channels_fast;
  int64_t n;  // output elements / V
};

// The arguments of an input-gradient kernel, V channels of an input pixel per thread.
template <typename scalar_t, typename I, typename Table>
struct PixelArgs {
  Pyramid<scalar_t, I> grad_in;
  int64_t level_start[kMaxLevels + 1];  // in units of V elements
  bool channels_fast[kMaxLevels];
  BinView<const scalar_t, I> grad;
  BinView<const int32_t, I> argmax;
  Table t;
  RoiGroups groups;
  int64_t n;
};

}  // namespace roiops::gpu
