// What every GPU op's host code shares, written once over a Launcher (CudaLauncher
// in launch_cuda.cuh, EmuLauncher in csrc/emulator/grid_emulator.h): the tensors'
// views, the vector-width choice, the per-RoI tables, the tile RoI lists, and the
// launches over output bins and input-gradient pixels. Host code here only
// allocates, dispatches and launches (ATen's sort and searchsorted group the RoIs on
// the device): nothing reads device memory, so no call synchronises with the host.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <vector>

#include "../op_common.h"
#include "pool_kernels.h"
#include "sampled_kernels.h"

namespace roiops::gpu {

// Whether every element offset and element count of these tensors fits int32, so the
// kernels can index in 32 bits.
inline bool fits_int32(at::TensorList tensors) {
  for (const at::Tensor& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    if (t.numel() >= INT32_MAX) return false;
    int64_t last = 0;
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * std::abs(t.stride(d));
    if (last >= INT32_MAX) return false;
  }
  return true;
}

template <typename F>
void dispatch_index(bool small, F&& f) {
  if (small) f(int32_t{}); else f(int64_t{});
}

template <typename T, typename I>
Pyramid<T, I> pyramid(at::TensorList maps, at::ArrayRef<double> scales) {
  Pyramid<T, I> p{};  // maps.size() <= kMaxLevels: checked by RoiSource
  p.count = int(maps.size());
  p.N = maps[0].size(0);
  p.C = maps[0].size(1);
  for (int l = 0; l < p.count; ++l) {
    const at::Tensor& m = maps[l];
    p.level[l] = MapView<T, I>{static_cast<T*>(m.data_ptr()), I(m.stride(0)), I(m.stride(1)),
                               I(m.stride(2)), I(m.stride(3)), int(m.size(2)), int(m.size(3)),
                               scales[l]};
  }
  return p;
}

template <typename T, typename I>
BinView<T, I> bin_view(const at::Tensor& t) {
  if (!t.defined() || t.dim() != 4) return BinView<T, I>{nullptr, 0, 0, 0, 0};
  return BinView<T, I>{static_cast<T*>(t.data_ptr()), I(t.stride(0)), I(t.stride(1)),
                       I(t.stride(2)), I(t.stride(3))};
}

// Whether every tensor of the launch has contiguous channels (stride 1), other
// strides that are multiples of V and a 16-byte aligned (or V-element aligned, for
// narrower packs) address, with C a multiple of V: then a thread's V channels move as
// packed accesses (kernel_common.h: load_channels).
inline bool packable(at::TensorList tensors, int64_t C, int64_t V) {
  if (V <= 1 || C % V != 0) return false;
  for (const at::Tensor& t : tensors) {
    if (!t.defined() || t.dim() != 4 || t.numel() == 0) continue;  // e.g. avg mode's empty argmax
    if (t.stride(1) != 1 || t.stride(0) % V || t.stride(2) % V || t.stride(3) % V) return false;
    if (reinterpret_cast<uintptr_t>(t.data_ptr()) % std::min<int64_t>(16, V * t.element_size())) return false;
  }
  return true;
}

// Calls f(std::integral_constant<int, V>) with the launch's channels per thread:
// kChannelGroup (kernel_common.h) when C is a multiple of it and every tensor is either
// NCHW-like (channels in separate planes) or packable, else one 16-byte pack
// (kPackWidth, channels_last), else 1.
template <typename scalar_t, typename F>
void dispatch_channels(at::TensorList tensors, int64_t C, F&& f) {
  bool planar = C % kChannelGroup == 0;
  for (const at::Tensor& x : tensors)
    if (x.defined() && x.dim() == 4 && x.numel() > 0 && x.stride(1) == 1) planar = false;
  if (planar || packable(tensors, C, kChannelGroup))
    f(std::integral_constant<int, kChannelGroup>{});
  else if (packable(tensors, C, kPackWidth<scalar_t>))
    f(std::integral_constant<int, kPackWidth<scalar_t>>{});
  else
    f(std::integral_constant<int, 1>{});
}

inline bool channels_fast(const at::Tensor& t) {
  return output_format(t) == at::MemoryFormat::ChannelsLast;
}

// A typed device array backed by a byte tensor (the tables hold structs).
template <typename T>
T* device_array(std::vector<at::Tensor>& keep, const at::Tensor& like, int64_t count) {
  keep.push_back(at::empty({std::max<int64_t>(count, 1) * int64_t(sizeof(T))},
                           like.options().dtype(at::kByte)));
  return reinterpret_cast<T*>(keep.back().data_ptr());
}

// What the table kernels read about the maps and RoIs.
struct RoiSource {
  at::Tensor rois;    // [K, 5] float64, contiguous
  at::Tensor levels;  // [K] int64 contiguous, or undefined
  int H[kMaxLevels] = {}, W[kMaxLevels] = {};
  double scale[kMaxLevels] = {};
  int count = 0;
  int64_t N = 0;

  RoiSource(const at::Tensor& rois_in, const at::Tensor& levels_in, at::TensorList maps,
            at::ArrayRef<double> scales)
      : rois(rois_as_double(rois_in)) {
    TORCH_CHECK_VALUE(int64_t(maps.size()) <= kMaxLevels, "roiops on CUDA: at most ", kMaxLevels,
                      " feature maps per multilevel call, got ", maps.size());
    if (levels_in.defined()) levels = levels_in.contiguous();
    count = int(maps.size());
    N = maps[0].size(0);
    for (int l = 0; l < count; ++l) {
      H[l] = int(maps[l].size(2));
      W[l] = int(maps[l].size(3));
      scale[l] = scales[l];
    }
  }
  int64_t K() const { return rois.size(0); }
  const double* rois_ptr() const { return rois.data_ptr<double>(); }
  const int64_t* levels_ptr() const { return levels.defined() ? levels.data_ptr<int64_t>() : nullptr; }
  template <typename Table>
  TableArgs<Table> args(const Table& t) const {
    TableArgs<Table> a{};
    a.rois = rois_ptr();
    a.levels = levels_ptr();
    for (int l = 0; l < kMaxLevels; ++l) a.H[l] = H[l], a.W[l] = W[l], a.scale[l] = scale[l];
    a.count = count;
    a.N = N;
    a.t = t;
    a.n = K();
    return a;
  }
};

// RoIs grouped by (level, image) on the device (RoiGroups).
struct Groups {
  at::Tensor order, start;
  RoiGroups view;
  Groups(const at::Tensor& keys, int64_t groups) {
    auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    order = std::get<1>(sorted);
    start = at::searchsorted(std::get<0>(sorted), at::arange(groups + 1, keys.options()));
    view = RoiGroups{order.data_ptr<int64_t>(), start.data_ptr<int64_t>()};
  }
};

// The input-gradient tensors (one per map, in the map's layout and dtype).
struct GradInputs {
  std::vector<at::Tensor> tensors;
  explicit GradInputs(at::TensorList maps) {
    for (const at::Tensor& m : maps) tensors.push_back(empty_like_format(m, m.sizes(), m.scalar_type()));
  }
  bool empty() const {
    for (const at::Tensor& t : tensors)
      if (t.numel() > 0) return false;
    return true;
  }
  // An input-gradient kernel's arguments, its threads (pixel_of) numbered level after
  // level: V channels of P pixels of a row each.
  template <typename scalar_t, typename I, typename Table>
  PixelArgs<scalar_t, I, Table> args(at::ArrayRef<double> scales, const at::Tensor& grad,
                                     const at::Tensor& argmax, const Table& t, const TileGrid& tiles,
                                     const RoiLists& lists, const ChannelMap& cm, int V, int P) const {
    PixelArgs<scalar_t, I, Table> a{};
    a.grad_in = pyramid<scalar_t, I>(tensors, scales);
    const int count = int(tensors.size());
    for (int l = 0; l < kMaxLevels; ++l) {
      int64_t threads = 0;
      if (l < count) {
        const at::Tensor& m = tensors[l];
        threads = m.size(0) * (m.size(1) / V) * m.size(2) * ((m.size(3) + P - 1) / P);
        a.channels_fast[l] = channels_fast(m);
      }
      a.level_start[l + 1] = a.level_start[l] + threads;
    }
    a.grad = bin_view<const scalar_t, I>(grad);
    a.argmax = bin_view<const int32_t, I>(argmax);
    a.t = t;
    a.tiles = tiles;
    a.lists = lists;
    a.cm = cm;
    a.n = a.level_start[count];
    return a;
  }
};

inline TileGrid tile_grid(at::TensorList maps) {
  TileGrid g{};
  g.count = int(maps.size());
  g.N = maps[0].size(0);
  for (int l = 0; l < g.count; ++l) {
    const int64_t rows = (maps[l].size(2) + kTile - 1) / kTile, cols = (maps[l].size(3) + kTile - 1) / kTile;
    g.tiles_w[l] = int(cols);
    g.tiles_per_image[l] = rows * cols;
    g.level_start[l + 1] = g.level_start[l] + g.N * rows * cols;
  }
  return g;
}

// The RoI lists of every tile and group (kernel_common.h: ListRois), on the device:
// one launch counts, a prefix sum places, one launch writes.
template <class L>
struct TileLists {
  at::Tensor ends, entries;
  RoiLists view;
  template <typename Table>
  TileLists(const Table& t, const RoiGroups& groups, const TileGrid& tiles, int64_t K, const at::Tensor& like) {
    TORCH_CHECK_VALUE(K < INT32_MAX, "roiops on CUDA: at most ", INT32_MAX - 1, " RoIs per call, got ", K);
    const auto opts = like.options().dtype(at::kLong);
    // Chunks of kListChunk RoIs, fewer where their counts would outgrow the entries'
    // bound (then a thread walks more).
    const int64_t chunks = std::max<int64_t>(
        std::min<int64_t>((K + kListChunk - 1) / kListChunk, tiles.capacity(K) / tiles.cells()), 1);
    at::Tensor counts = at::empty({tiles.cells() * chunks}, opts);
    entries = at::empty({std::max<int64_t>(tiles.capacity(K), 1)}, opts);  // one ListEntry (8 bytes) each
    // Together the chunks cover K RoIs, the most a group can hold.
    const int64_t chunk_rois = std::max<int64_t>(kListChunk, (K + chunks - 1) / chunks);
    ListRoisArgs<Table> a{t, groups, tiles, counts.data_ptr<int64_t>(), nullptr, chunks, chunk_rois,
                          tiles.cells() * chunks};
    L::template launch<ListRois<Table, false>>(a);
    ends = at::cumsum(counts, 0);
    a.ends = ends.data_ptr<int64_t>();
    a.entries = reinterpret_cast<ListEntry*>(entries.data_ptr<int64_t>());
    L::template launch<ListRois<Table, true>>(a);
    view = RoiLists{ends.data_ptr<int64_t>(), a.entries, chunks};
  }
};

// The per-RoI tables of the sampled ops (one table launch).
template <class L, typename acc_t, Sampling S>
struct SampledTables {
  std::vector<at::Tensor> keep;
  SampledTable<acc_t> t{};
  at::Tensor keys;
  SampledTables(const RoiSource& src, const at::Tensor& like, const SampledArgs& a) {
    const int64_t K = src.K();
    const int stride = a.sampling_ratio > 0 ? a.sampling_ratio : kMaxAdaptiveGrid;
    keys = at::empty({K}, like.options().dtype(at::kLong));
    t = SampledTable<acc_t>{device_array<RoiInfo>(keep, like, K), device_array<Footprint>(keep, like, K),
                            device_array<SampleGrid>(keep, like, K),
                            device_array<Tap<acc_t>>(keep, like, K * a.pooled_h * stride),
                            device_array<Tap<acc_t>>(keep, like, K * a.pooled_w * stride),
                            keys.data_ptr<int64_t>(), stride, int(a.pooled_h), int(a.pooled_w),
                            SampledGeometry{a.sampling_ratio, a.aligned, a.quantize}};
    L::template launch<BuildSampledTable<acc_t, S>>(src.args(t));
  }
};

// The per-RoI tables of roi_pool (one table launch).
template <class L>
struct PoolTables {
  std::vector<at::Tensor> keep;
  PoolTable t{};
  at::Tensor keys;
  PoolTables(const RoiSource& src, const at::Tensor& like, const PoolArgs& a) {
    const int64_t K = src.K();
    keys = at::empty({K}, like.options().dtype(at::kLong));
    t = PoolTable{device_array<RoiInfo>(keep, like, K), device_array<Footprint>(keep, like, K),
                  device_array<Span>(keep, like, K * a.pooled_h), device_array<Span>(keep, like, K * a.pooled_w),
                  keys.data_ptr<int64_t>(), int(a.pooled_h), int(a.pooled_w), a.rule};
    L::template launch<BuildPoolTable>(src.args(t));
  }
};

// Runs Kernel<I, V> over the output bins of `out` (forward, JVP) with the index type
// and (when `packs`) the channels per thread the tensors allow. `Kernel` binds the
// rest.
template <class L, template <typename, int> class Kernel, typename scalar_t, bool packs = true, typename Table>
void launch_bins(at::TensorList maps, at::ArrayRef<double> scales, const Table& t, const ChannelMap& cm,
                 const at::Tensor& out, const at::Tensor& argmax) {
  std::vector<at::Tensor> all(maps.begin(), maps.end());
  all.push_back(out);
  all.push_back(argmax);
  dispatch_index(fits_int32(all), [&](auto index) {
    auto run = [&](auto pack) {
      using I = decltype(index);
      constexpr int V = decltype(pack)::value;
      L::template launch<Kernel<I, V>>(BinArgs<scalar_t, I, Table>{
          pyramid<const scalar_t, I>(maps, scales), t, bin_view<scalar_t, I>(out), bin_view<int32_t, I>(argmax), cm,
          channels_fast(out), out.numel() / V});
    };
    if constexpr (packs)
      dispatch_channels<scalar_t>(all, out.size(1), run);
    else
      run(std::integral_constant<int, 1>{});
  });
}

// The input gradients: Kernel<I, V> over every element of every level's gradient,
// Kernel::kPixels pixels of a row per thread.
template <class L, template <typename, int> class Kernel, typename scalar_t, typename Table>
std::vector<at::Tensor> launch_pixels(at::TensorList maps, at::ArrayRef<double> scales, const Table& t,
                                      const ChannelMap& cm, const at::Tensor& keys, const RoiSource& src,
                                      const at::Tensor& grad, const at::Tensor& argmax) {
  GradInputs gi(maps);
  if (gi.empty()) return gi.tensors;
  const Groups groups(keys, int64_t(src.count) * src.N);
  const TileGrid tiles = tile_grid(maps);
  const TileLists<L> lists(t, groups.view, tiles, src.K(), keys);
  std::vector<at::Tensor> all(gi.tensors);
  all.push_back(grad);
  all.push_back(argmax);
  dispatch_index(fits_int32(all), [&](auto index) {
    auto run = [&](auto pack) {
      using I = decltype(index);
      constexpr int V = decltype(pack)::value;
      using K = Kernel<I, V>;
      L::template launch<K>(
          gi.template args<scalar_t, I>(scales, grad, argmax, t, tiles, lists.view, cm, V, K::kPixels));
    };
    dispatch_channels<scalar_t>(all, grad.size(1), run);
  });
  return gi.tensors;
}

}  // namespace roiops::gpu
