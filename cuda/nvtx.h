// NVTX ranges for ember, so `nsys profile` shows ops, optimizer steps and training structure.
// Ranges live in an "ember" domain; with no profiler attached each costs one branch. The public face
// is ember::profile::Range (include/ember/profile.h); backend launchers use NvtxRange directly.
#pragma once
#include <nvtx3/nvToolsExt.h>

namespace ember::cuda {

// The "ember" domain, created once (an inline function's static is one object in libember.so).
inline nvtxDomainHandle_t nvtx_domain() {
  static const nvtxDomainHandle_t d = nvtxDomainCreateA("ember");
  return d;
}

// Opens a range named `name` on this thread (the profiler copies the name).
inline void nvtx_push(const char* name) {
  nvtxEventAttributes_t attr{};
  attr.version = NVTX_VERSION;
  attr.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  attr.messageType = NVTX_MESSAGE_TYPE_ASCII;
  attr.message.ascii = name;
  nvtxDomainRangePushEx(nvtx_domain(), &attr);
}
inline void nvtx_pop() { nvtxDomainRangePop(nvtx_domain()); }

// A range named `name` for the lifetime of the object.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtx_push(name); }
  ~NvtxRange() { nvtx_pop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace ember::cuda
