// ember::profile::Range: NVTX push/pop in the "ember" domain (CUDA builds) and the test listener.
#include "ember/profile.h"

#include <atomic>

#if defined(EMBER_WITH_CUDA)
#include "cuda/nvtx.h"
#endif

namespace ember::profile {
namespace {
std::atomic<Listener> g_listener{nullptr};
}  // namespace

Range::Range(const char* name) {
  if (Listener l = g_listener.load(std::memory_order_relaxed)) l(name);
#if defined(EMBER_WITH_CUDA)
  cuda::nvtx_push(name);
#endif
}

Range::~Range() {
#if defined(EMBER_WITH_CUDA)
  cuda::nvtx_pop();
#endif
  if (Listener l = g_listener.load(std::memory_order_relaxed)) l(nullptr);
}

void set_listener(Listener listener) { g_listener.store(listener); }

}  // namespace ember::profile
