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
//
// Kernels state their memory traffic with ROIOPS_COST (global loads and stores, RoIs
// visited): a no-op in CUDA builds, counted by the emulator while a cost measurement
// runs (csrc/emulator/cost_counters.h, benchmarks/gpu_costs.py).
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "../roi_geometry.h"

#if defined(__CUDACC__)
#define ROIOPS_COST(field, amount) ((void)0)
#define ROIOPS_COST_MAX(field, amount) ((void)0)
#define ROIOPS_UNROLL _Pragma("unroll")
#else
#include "../emulator/cost_counters.h"
#define ROIOPS_COST(field, amount) ::roiops::gpu::count_cost(&CostCounters::field, (amount))
#define ROIOPS_COST_MAX(field, amount) ::roiops::gpu::count_cost_max(&CostCounters::field, (amount))
#define ROIOPS_UNROLL
#endif

namespace roiops::gpu {

// Levels a fused multilevel launch can address (the maps travel in the kernel's
// arguments); FPN uses 4 or 5.
constexpr int kMaxLevels = 8;
constexpr int kThreadsPerBlock = 256;

// Channels per thread of the forward, input-gradient and box-gradient kernels where
// the channel count allows (gpu_launch.h: dispatch_channels): a thread's walk over
// its bin's taps or its pixel's RoIs is shared by this many channels instead of being
// repeated per channel or per 16-byte pack.
constexpr int kChannelGroup = 16;

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
// scalar access. A thread's V channels may span several such packs (load_channels).
template <typename T>
constexpr int kPackWidth = 16 / int(sizeof(T));  // elements in one 16-byte access
template <typename T, int V>
struct alignas(sizeof(T) * V < 16 ? sizeof(T) * V : 16) Packed {
  T v[V];
};
template <int V, typename T>
C10_HOST_DEVICE inline Packed<T, V> load_packed(const T* p) {
  ROIOPS_COST(data_loads, 1);
  ROIOPS_COST(data_bytes, sizeof(T) * V);
  return *reinterpret_cast<const Packed<T, V>*>(p);
}
template <int V, typename T>
C10_HOST_DEVICE inline void store_packed(T* p, const Packed<T, V>& v) {
  ROIOPS_COST(stores, 1);
  ROIOPS_COST(store_bytes, sizeof(T) * V);
  *reinterpret_cast<Packed<T, V>*>(p) = v;
}

// V channels of one pixel or bin whose channels lie `stride` elements apart: packed
// 16-byte accesses when they are adjacent (the launch checked the packs' alignment),
// else V scalar ones (NCHW tensors, whose channels lie in separate planes).
template <int V, typename T, typename I>
C10_HOST_DEVICE inline Packed<T, V> load_channels(const T* p, I stride) {
  constexpr int P = V < kPackWidth<T> ? V : kPackWidth<T>;
  Packed<T, V> v;
  if (V == 1 || stride == 1) {
    ROIOPS_UNROLL
    for (int j = 0; j < V; j += P) {
      const Packed<T, P> q = load_packed<P>(p + j);
      for (int c = 0; c < P; ++c) v.v[j + c] = q.v[c];
    }
  } else {
    for (int c = 0; c < V; ++c) v.v[c] = load_packed<1>(p + c * stride).v[0];
  }
  return v;
}
// The accesses load_channels<V> makes: what the cost counters count as a thread's
// sample reads per sample (one per 16-byte pack, or per NCHW channel).
template <int V, typename T, typename I>
C10_HOST_DEVICE inline int channel_accesses(I stride) {
  return V == 1 || stride == 1 ? (V + kPackWidth<T> - 1) / kPackWidth<T> : V;
}
template <int V, typename T, typename I>
C10_HOST_DEVICE inline void store_channels(T* p, I stride, const Packed<T, V>& v) {
  constexpr int P = V < kPackWidth<T> ? V : kPackWidth<T>;
  if (V == 1 || stride == 1) {
    ROIOPS_UNROLL
    for (int j = 0; j < V; j += P) {
      Packed<T, P> q;
      for (int c = 0; c < P; ++c) q.v[c] = v.v[j + c];
      store_packed<P>(p + j, q);
    }
  } else {
    for (int c = 0; c < V; ++c) store_packed<1>(p + c * stride, Packed<T, 1>{{v.v[c]}});
  }
}

// A read of a table entry (RoI facts, taps, bins, RoI lists): counted as the 16-byte
// (or narrower, by alignment) loads a GPU issues for it.
template <typename T>
C10_HOST_DEVICE inline T load_table(const T* p) {
  constexpr int64_t width = alignof(T) < 16 ? int64_t(alignof(T)) : 16;
  ROIOPS_COST(table_loads, (int64_t(sizeof(T)) + width - 1) / width);
  ROIOPS_COST(table_bytes, sizeof(T));
  return *p;
}
template <typename T>
C10_HOST_DEVICE inline void store_table(T* p, const T& v) {
  ROIOPS_COST(stores, 1);
  ROIOPS_COST(store_bytes, sizeof(T));
  *p = v;
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

// Per-RoI facts computed once per launch (one thread per RoI) and read by every
// thread of the op's kernels: 16 bytes, one load per forward thread.
struct alignas(16) RoiInfo {
  enum : uint16_t { kHClamped = 1, kWClamped = 2, kNoGrid = 4 };
  int image;       // batch index; -1: the RoI reads nothing (its output is 0)
  int16_t level;   // < kMaxLevels
  uint16_t flags;  // kHClamped / kWClamped: the min-size-1 clamp is active (sampled
                   // ops); kNoGrid: its SampleGrid does not fit float (every sample of
                   // the RoI is then a candidate in the input gradient)
  int grid_h, grid_w;  // samples per bin (sampled ops)
  C10_HOST_DEVICE bool has(uint16_t flag) const { return (flags & flag) != 0; }
};

// Rows [row0, row1] and columns [col0, col1] a RoI reads (row0 > row1 or col0 > col1:
// none): a pixel outside never receives gradient from it. What the input gradient
// and its lists read first, one load.
struct alignas(16) Footprint {
  int row0, row1, col0, col1;
  C10_HOST_DEVICE bool empty() const { return row0 > row1 || col0 > col1; }
  // Whether it holds a pixel of row h, columns w0 .. w1.
  C10_HOST_DEVICE bool holds(int h, int w0, int w1) const {
    return h >= row0 && h <= row1 && w1 >= col0 && w0 <= col1;
  }
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

// Input-gradient binning. Each level's map is cut into kTile x kTile pixel tiles, and
// each (level, image, tile) gets the list of its group's RoIs whose footprint touches
// the tile, in increasing RoI order; a RoI whose footprint covers more than
// kMaxTilesPerRoi tiles is listed once per group instead (its "wide" list), which
// every pixel of the group walks. A pixel then visits its tile's list merged with its
// group's wide list, in increasing RoI order: the RoIs that can read it, few others,
// and always in the same order (deterministic sums). The lists take at most
// K * (min(kMaxTilesPerRoi, tiles of the largest map) + 1) entries, a bound known
// without reading the boxes, so they are built without a device-to-host
// synchronisation. kMaxTilesPerRoi keeps RoIs up to 256 pixels square on their map
// off the wide lists (a wide RoI is visited by every pixel of its map) at 4 KB of
// workspace per RoI at most.
constexpr int kTile = 8;
constexpr int64_t kMaxTilesPerRoi = 1024;

// Pixels of one row that an input-gradient thread takes (Pixel): its walk over the
// tile's list, the row's bins and the bins' gradient (and argmax) loads serve them
// all; only the column weights are per pixel. Two, so that a thread's accumulators
// (pixels x kChannelGroup) fit in registers beside the rest.
constexpr int kStripPixels = 2;

// The tiles of every (level, image) and the wide lists, numbered as cells: tiles of
// level 0 image 0, ..., of the last level's last image, then one wide cell per group.
struct TileGrid {
  int tiles_w[kMaxLevels];             // tiles per row of level l
  int64_t tiles_per_image[kMaxLevels];  // tiles of one image of level l
  int64_t level_start[kMaxLevels + 1];  // first cell of level l; [count]: the tile total
  int count;
  int64_t N;
  C10_HOST_DEVICE int64_t tile_of(int level, int64_t n, int h, int w) const {
    return level_start[level] + n * tiles_per_image[level] + int64_t(h / kTile) * tiles_w[level] +
           w / kTile;
  }
  C10_HOST_DEVICE int64_t wide_cell(int64_t group) const { return level_start[count] + group; }
  C10_HOST_DEVICE int64_t cells() const { return level_start[count] + int64_t(count) * N; }
  // The most entries the lists of K RoIs can take.
  int64_t capacity(int64_t K) const {
    int64_t most = 0;
    for (int l = 0; l < count; ++l) most = tiles_per_image[l] > most ? tiles_per_image[l] : most;
    return K * ((most < kMaxTilesPerRoi ? most : kMaxTilesPerRoi) + 1);
  }
};

// Whether a (non-empty) footprint covers more than kMaxTilesPerRoi tiles.
C10_HOST_DEVICE inline bool is_wide(const Footprint& r) {
  return int64_t(r.row1 / kTile - r.row0 / kTile + 1) * int64_t(r.col1 / kTile - r.col0 / kTile + 1) >
         kMaxTilesPerRoi;
}

// Bits 0..kTile-1 for the indices [lo, hi] holds among first .. first + kTile - 1.
C10_HOST_DEVICE inline uint32_t span_bits(int lo, int hi, int first) {
  const int a = lo > first ? lo - first : 0, b = hi < first + kTile - 1 ? hi - first : kTile - 1;
  return a > b ? 0u : ((2u << b) - 1u) & ~((1u << a) - 1u);
}

// A listed RoI: its index and which of its tile's rows (bits 0..kTile-1) and columns
// (bits 16..16+kTile-1) it can read, from its taps: a pixel whose row or column bit
// is clear gets nothing from it, so a thread skips it after one 8-byte load. Entries
// of a wide list carry every bit (kWideMask) and are checked against the footprint.
struct alignas(8) ListEntry {
  int32_t roi;
  uint32_t mask;
  // Whether it can read a pixel of row h, columns w .. w + width - 1 (in the tile).
  C10_HOST_DEVICE bool reads(int h, int w, int width) const {
    return ((mask >> (h % kTile)) & 1u) != 0 && ((mask >> (16 + w % kTile)) & ((1u << width) - 1u)) != 0;
  }
};
constexpr uint32_t kWideMask = 0xFFFFFFFFu;
static_assert(sizeof(ListEntry) == sizeof(int64_t), "ListEntry lists are int64 tensors");
C10_HOST_DEVICE inline uint32_t tile_mask(uint32_t rows, uint32_t cols) {
  return rows == 0 || cols == 0 ? 0u : rows | (cols << 16);
}

// RoIs of a group one list-building thread walks: a cell's list is built by up to
// ceil(K / kListChunk) threads, each over its chunk of the group's RoIs, so that a
// thread's chain of loads stays short however many RoIs share an image (TileLists
// takes fewer, longer chunks only where their counts would outgrow the entries).
constexpr int kListChunk = 32;

// The cells' RoI lists: cell c holds entries[end(c - 1) .. end(c)), written chunk by
// chunk (ends holds the inclusive prefix sums of the chunks' lengths).
struct RoiLists {
  const int64_t* ends;  // [cells, chunks]
  const ListEntry* entries;
  int64_t chunks;
  C10_HOST_DEVICE int64_t begin(int64_t cell) const {
    return cell == 0 ? 0 : load_table(ends + cell * chunks - 1);
  }
  C10_HOST_DEVICE int64_t end(int64_t cell) const { return load_table(ends + (cell + 1) * chunks - 1); }
};

// Calls f(entry) for every entry of the tile's list and the group's wide list, in
// increasing RoI index (a merge of the two sorted lists).
template <typename F>
C10_HOST_DEVICE inline void for_each_listed_roi(const RoiLists& lists, int64_t tile, int64_t wide,
                                                F&& f) {
  int64_t i = lists.begin(tile), j = lists.begin(wide);
  const int64_t i_end = lists.end(tile), j_end = lists.end(wide);
  ListEntry ei = i < i_end ? load_table(lists.entries + i) : ListEntry{0, 0};
  ListEntry ej = j < j_end ? load_table(lists.entries + j) : ListEntry{0, 0};
  while (i < i_end || j < j_end) {
    if (j >= j_end || (i < i_end && ei.roi < ej.roi)) {
      f(ei);
      if (++i < i_end) ei = load_table(lists.entries + i);
    } else {
      f(ej);
      if (++j < j_end) ej = load_table(lists.entries + j);
    }
  }
}

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
  ChannelMap cm;               // which input channels a bin's output channels read
  bool channels_fast;
  int64_t n;  // output elements / V
  C10_HOST_DEVICE int64_t out_channels() const { return cm.output_channels(in.C); }
};

// Where a thread's V channels of bin b (ph * PW + pw) lie in its map: the first
// one's plane, and the distance between them (1 plane, or PH * PW planes for the
// position-sensitive ops, whose channels are then never loaded packed).
template <typename T, typename I>
C10_HOST_DEVICE inline T* bin_plane(const MapView<T, I>& m, const ChannelMap& cm, int64_t n, int64_t c0,
                                    int64_t b) {
  return m.plane(I(n), I(cm.input_channel(c0, b)));
}
template <typename T, typename I>
C10_HOST_DEVICE inline I channel_stride(const MapView<T, I>& m, const ChannelMap& cm) {
  return m.s1 * I(cm.group);
}

// (level, n, c, h, w) of input-gradient thread i, numbered level after level
// (level_start[l] is the first thread of level l), each level in its own layout. A
// thread takes `width` pixels w .. w + width - 1 of row h (a strip of P, fewer at the
// row's end), which lie in one tile (P divides kTile).
struct Pixel {
  int level;
  int64_t n, c;
  int h, w, width;
};
// With V channels per thread, C counts channel groups.
template <int P, typename T, typename I>
C10_HOST_DEVICE inline Pixel pixel_of(int64_t i, const Pyramid<T, I>& g, int64_t C,
                                      const int64_t* level_start, const bool* channels_fast) {
  static_assert(kTile % P == 0, "a strip lies in one tile");
  Pixel p;
  p.level = 0;
  while (p.level + 1 < g.count && i >= level_start[p.level + 1]) ++p.level;
  i -= level_start[p.level];
  const int64_t H = g.level[p.level].H, W = g.level[p.level].W, strips = (W + P - 1) / P;
  if (channels_fast[p.level]) {
    p.c = i % C;
    i /= C;
    p.w = int(i % strips);
    i /= strips;
    p.h = int(i % H);
    p.n = i / H;
  } else {
    p.w = int(i % strips);
    i /= strips;
    p.h = int(i % H);
    i /= H;
    p.c = i % C;
    p.n = i / C;
  }
  p.w *= P;
  p.width = W - p.w < P ? int(W - p.w) : P;
  return p;
}

// The channels of an input-gradient thread: output channels c0 .. c0 + V - 1 of
// bin `bin` (any bin for the plain ops: per_bin = 0), which are input channels
// cm.input_channel(c0 + j, bin). Neighbouring threads take neighbouring bins, so a
// position-sensitive launch still stores neighbouring channels together.
struct PixelChannels {
  int64_t c0, bin;
};
template <int V>
C10_HOST_DEVICE inline PixelChannels pixel_channels(const Pixel& p, const ChannelMap& cm) {
  return PixelChannels{p.c / cm.group * V, p.c % cm.group};
}

// Writes acc[q][0 .. V) into the thread's channels of pixel q of p's strip.
template <int P, int V, typename scalar_t, typename I, typename acc_t>
C10_HOST_DEVICE inline void store_strip(const MapView<scalar_t, I>& m, const ChannelMap& cm, const Pixel& p,
                                        const PixelChannels& pc, const acc_t (*acc)[V]) {
  scalar_t* dst = bin_plane(m, cm, p.n, pc.c0, pc.bin) + I(p.h) * m.s2 + I(p.w) * m.s3;
  ROIOPS_UNROLL
  for (int q = 0; q < P; ++q) {
    if (q >= p.width) break;
    Packed<scalar_t, V> out;
    for (int c = 0; c < V; ++c) out.v[c] = scalar_t(acc[q][c]);
    store_channels<V>(dst + I(q) * m.s3, channel_stride(m, cm), out);
  }
}

// The arguments of an input-gradient kernel, V channels of a strip of input pixels
// per thread.
template <typename scalar_t, typename I, typename Table>
struct PixelArgs {
  Pyramid<scalar_t, I> grad_in;
  int64_t level_start[kMaxLevels + 1];  // each level's first thread (pixel_of)
  bool channels_fast[kMaxLevels];
  BinView<const scalar_t, I> grad;
  BinView<const int32_t, I> argmax;
  Table t;
  TileGrid tiles;
  RoiLists lists;
  ChannelMap cm;
  int64_t n;
};

// Calls f(k, r) for every listed RoI that can read a pixel of p's strip (its entry's
// row and column bits, and for a wide entry its footprint, hold one; r: its RoiInfo),
// in increasing k; counts the entries visited, those whose footprint held a pixel of
// the strip and those that were of use.
template <typename scalar_t, typename I, typename Table, typename F>
C10_HOST_DEVICE inline void for_each_roi_reading(const PixelArgs<scalar_t, I, Table>& a, const Pixel& p,
                                                 F&& f) {
  const int64_t group = int64_t(p.level) * a.grad_in.N + p.n;
  const int w1 = p.w + p.width - 1;
  [[maybe_unused]] int64_t walked = 0;
  for_each_listed_roi(a.lists, a.tiles.tile_of(p.level, p.n, p.h, p.w), a.tiles.wide_cell(group),
                      [&](const ListEntry& e) {
                        ROIOPS_COST(roi_visits, 1);
                        ROIOPS_COST_MAX(longest_walk, ++walked);
                        // Counted without a load (the kernel itself does not read it).
                        ROIOPS_COST(roi_footprint, a.t.extent[e.roi].holds(p.h, p.w, w1) ? 1 : 0);
                        if (!e.reads(p.h, p.w, p.width)) return;
                        if (e.mask == kWideMask && !load_table(a.t.extent + e.roi).holds(p.h, p.w, w1)) return;
                        ROIOPS_COST(roi_useful, 1);
                        f(int64_t(e.roi), load_table(a.t.info + e.roi));
                      });
}

// The cells' RoI lists, in two passes of one thread per (cell, chunk of kListChunk
// RoIs of the cell's group): kFill = false counts the chunk's entries into
// ends[cell, chunk]; after a prefix sum of those, kFill = true writes them. A tile lists the RoIs whose footprint touches
// it and that can read one of its pixels (Table::tile_mask: a row and a column of the
// tile), with their masks.
template <typename Table>
struct ListRoisArgs {
  Table t;
  RoiGroups groups;
  TileGrid tiles;
  int64_t* ends;  // [cells, chunks]; count pass: the lengths; fill pass: their inclusive prefix sums
  ListEntry* entries;
  int64_t chunks, chunk_rois;  // chunks per cell, RoIs per chunk
  int64_t n;                   // cells * chunks
};
template <typename Table, bool kFill>
struct ListRois {
  using Args = ListRoisArgs<Table>;
  static constexpr const char* kName = kFill ? "list_rois_fill" : "list_rois_count";

  static C10_HOST_DEVICE void run(const Args& a, ThreadPos pos) {
    const int64_t i = pos.index();
    if (i >= a.n) return;
    const int64_t cell = i / a.chunks, chunk = i % a.chunks;
    const TileGrid& g = a.tiles;
    const int64_t tiles = g.level_start[g.count];
    const bool wide = cell >= tiles;
    int64_t group;
    int row0 = 0, col0 = 0;  // the tile's first row and column
    if (wide) {
      group = cell - tiles;
    } else {
      int l = 0;
      while (l + 1 < g.count && cell >= g.level_start[l + 1]) ++l;
      const int64_t t = cell - g.level_start[l];
      const int64_t n = t / g.tiles_per_image[l], in_image = t % g.tiles_per_image[l];
      row0 = int(in_image / g.tiles_w[l]) * kTile;
      col0 = int(in_image % g.tiles_w[l]) * kTile;
      group = int64_t(l) * g.N + n;
    }
    int64_t out = kFill ? (i == 0 ? 0 : a.ends[i - 1]) : 0;
    const int64_t first = load_table(a.groups.start + group) + chunk * a.chunk_rois;
    const int64_t group_end = load_table(a.groups.start + group + 1);
    const int64_t q_end = first + a.chunk_rois < group_end ? first + a.chunk_rois : group_end;
    ROIOPS_COST_MAX(longest_walk, q_end - first);
    for (int64_t q = first; q < q_end; ++q) {
      const int64_t k = load_table(a.groups.order + q);
      const Footprint r = load_table(a.t.extent + k);
      if (r.empty() || is_wide(r) != wide) continue;
      uint32_t mask = kWideMask;
      if (!wide) {
        if (r.row0 >= row0 + kTile || r.row1 < row0 || r.col0 >= col0 + kTile || r.col1 < col0) continue;
        mask = a.t.tile_mask(k, r, row0, col0);
        if (mask == 0) continue;
      }
      if (kFill) store_table(a.entries + out, ListEntry{int32_t(k), mask});
      ++out;
    }
    if (!kFill) store_table(a.ends + i, out);
  }
};

}  // namespace roiops::gpu
