// What the CPU backend's oneDNN callers (convolutions, f32 and low-precision matrix products) share:
// the one CPU engine, and host buffers for a single call taken from the backend's allocator.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

#include <cstddef>

#include "cpp/backend/backend.h"

namespace ember::cpu {

inline dnnl::engine& dnnl_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// A host buffer for one call (a reorder's copy, a scratchpad): the allocator's cache of freed blocks
// hands the same block back on the next step (no page faults), and a shape seen once (evaluation's
// batch) leaves nothing behind but what the cache may keep under its limit.
struct DnnlCallBuffer {
  explicit DnnlCallBuffer(size_t n) : bytes(n), ptr(n ? cpu_backend().allocate(n, Device::cpu()) : nullptr) {}
  ~DnnlCallBuffer() {
    if (ptr) cpu_backend().deallocate(ptr, bytes, Device::cpu());
  }
  DnnlCallBuffer(const DnnlCallBuffer&) = delete;
  DnnlCallBuffer& operator=(const DnnlCallBuffer&) = delete;
  size_t bytes;
  void* ptr;
};

}  // namespace ember::cpu
