// Channels-last tiles of the pixels a RoI reads from a planar (NCHW) map, for one
// channel block: each touched pixel is read once per channel instead of once per tap,
// and the vectorized loops apply to planar maps too.
#pragma once

#include <algorithm>
#include <vector>

#include "maps.h"
#include "transpose.h"

namespace roiops::cpu {

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

// tile[(i * cols + j) * P + c] = src[c * cs + rows[i] * sh + cols[j] * sw] for c < n,
// with pixel stride P = `stride` (n when 0): n channels of each pixel, P apart, so that
// several gathers can interleave their channels in one tile (the position-sensitive
// ops' per-bin runs, forward_schedule.h); returns the tile's view (image and channel
// offsets already applied). Written in order. Runs of
// at least kTransposeRun consecutive columns (all of them in a whole plane), up to
// kGatherRun at a time, are transposed as blocks of n channels x run pixels, walking 8
// planes at a time along 256 bytes of each rather than all n planes along 32 bytes: a
// 64-channel plane block of an FPN P3 level (4.3 MB) reads from memory or L3, where few
// streams help the prefetchers (docs/performance-notes.md). Shorter runs are copied a
// column at a time.

template <typename scalar_t>
View4<const scalar_t> gather_tile(scalar_t* tile, const scalar_t* src, int64_t cs,
                                  int64_t sh, int64_t sw, const TileIndex& t, int64_t n,
                                  int64_t stride = 0) {
  constexpr int B = kTransposeRun;
  const int64_t P = stride > 0 ? stride : n;
  const int64_t nr = t.rows.size(), nc = t.cols.size();
  for (int64_t i = 0; i < nr; ++i) {
    const scalar_t* row = src + t.rows[i] * sh;
    scalar_t* dst = tile + i * nc * P;
    for (int64_t j = 0; j < nc;) {
      const scalar_t* pixel = row + t.cols[j] * sw;
      int64_t run = 1;
      while (sw == 1 && run < kGatherRun && j + run < nc && t.cols[j + run] == t.cols[j] + run) ++run;
      if (run >= B) {
        transpose(pixel, cs, dst + j * P, P, n, run);
        j += run;
        continue;
      }
      for (int64_t c = 0; c < n; ++c) dst[j * P + c] = pixel[c * cs];
      ++j;
    }
  }
  return View4<const scalar_t>(tile, 0, 1, nc * P, P);
}

}  // namespace roiops::cpu
