#include "allocation.h"

#include <ATen/OpMathType.h>

#include <algorithm>
#include <fstream>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../op_common.h"
#include "tuning.h"

namespace roiops::cpu {

int64_t streamed_output_bytes() {
  static const int64_t bytes = [] {
    // Linux names the size "32768K"; a stream that cannot parse it leaves b at 0.
    int64_t b = 0;
    char unit = 0;
    std::ifstream("/sys/devices/system/cpu/cpu0/cache/index3/size") >> b >> unit;
    b *= unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1;
    return b > 0 ? std::min(b, kMaxCachedOutputBytes) : kMaxCachedOutputBytes;
  }();
  return bytes;
}

namespace {

// The size of Linux's transparent huge pages, or 0 where there are none.
int64_t huge_page_bytes() {
  static const int64_t bytes = [] {
    int64_t b = 0;
    std::ifstream("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") >> b;
    return b;
  }();
  return bytes;
}

// Asks Linux to back the whole huge pages inside a fresh CPU tensor with transparent
// huge pages, before anything writes it (a hint; nothing changes where it is refused
// or THP is off): with glibc's default malloc every large output is freshly mapped,
// and its first write otherwise takes a page fault per 4 KB (docs/performance-notes.md).
// Only pages wholly inside the tensor are advised, so its neighbours are untouched.
at::Tensor advise_huge_pages(at::Tensor t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t huge = huge_page_bytes();
  if (huge <= 0) return t;
  const auto begin = reinterpret_cast<uintptr_t>(t.storage().data());
  const uintptr_t first = (begin + huge - 1) / huge * huge;
  const uintptr_t last = (begin + t.storage().nbytes()) / huge * huge;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
  return t;
}

}  // namespace

at::Tensor empty_cpu_output(at::TensorList maps, int64_t K, int64_t pooled_h, int64_t pooled_w,
                            int64_t group) {
  return advise_huge_pages(empty_output(maps, K, pooled_h, pooled_w, group));
}

at::Tensor empty_cpu_argmax(const at::Tensor& output, Mode mode, bool keep) {
  return advise_huge_pages(empty_argmax(output, mode, keep));
}

std::vector<at::Tensor> grad_accumulators(at::TensorList maps) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& m : maps)
    out.push_back(advise_huge_pages(empty_like_format(m, m.sizes(), at::toOpMathType(m.scalar_type()))));
  return out;
}

std::vector<at::Tensor> finish_grads(std::vector<at::Tensor> acc, at::ScalarType dtype) {
  for (at::Tensor& g : acc) g = g.to(dtype);
  return acc;
}

}  // namespace roiops::cpu
