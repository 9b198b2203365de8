// Per-thread staging buffers: a forward task's output block (OutputBlock) and a
// backward task's gradient or argmax block read bin-major (BinCursor).
#pragma once

#include <c10/util/Exception.h>

#include <vector>

#include "tuning.h"

namespace roiops::cpu {

// This thread's buffer of kStageElems T number `Slot`, held by one StageBuffer at a
// time: a second holder on the same thread would overwrite the first one's block, so
// the constructor refuses it.
template <typename T, int Slot = 0>
class StageBuffer {
 public:
  StageBuffer() {
    TORCH_INTERNAL_ASSERT(!held(), "roiops: a thread's stage buffer has two holders");
    held() = true;
  }
  ~StageBuffer() { held() = false; }
  StageBuffer(const StageBuffer&) = delete;
  StageBuffer& operator=(const StageBuffer&) = delete;

  T* data() const { return storage().data(); }

 private:
  static std::vector<T>& storage() {
    static thread_local std::vector<T> buffer(kStageElems);
    return buffer;
  }
  static bool& held() {
    static thread_local bool h = false;
    return h;
  }
};

}  // namespace roiops::cpu
