// NVTX ranges for ember, so `nsys profile` shows ops, optimizer steps and training structure.
// Ranges live in an "ember" domain; with no profiler attached each costs one branch.
#pragma once
#include <nvtx3/nvToolsExt.h>

namespace ember::cuda {

// Pushes a range named `name` for the lifetime of the object (the profiler copies the name).
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) {
    nvtxEventAttributes_t attr{};
    attr.version = NVTX_VERSION;
    attr.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    attr.messageType = NVTX_MESSAGE_TYPE_ASCII;
    attr.message.ascii = name;
    nvtxDomainRangePushEx(domain(), &attr);
  }
  ~NvtxRange() { nvtxDomainRangePop(domain()); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;

 private:
  static nvtxDomainHandle_t domain() {
    static const nvtxDomainHandle_t d = nvtxDomainCreateA("ember");
    return d;
  }
};

}  // namespace ember::cuda
