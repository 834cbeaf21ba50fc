// ember::profile::Range: a device profiler range (NVTX in the "ember" domain in CUDA builds:
// device_range_push in backend.h) and the test listener.
#include "ember/profile.h"

#include <atomic>

#include "cpp/backend/backend.h"

namespace ember::profile {
namespace {
std::atomic<Listener> g_listener{nullptr};
}  // namespace

Range::Range(const char* name) {
  if (Listener l = g_listener.load(std::memory_order_relaxed)) l(name);
  device_range_push(name);
}

Range::~Range() {
  device_range_pop();
  if (Listener l = g_listener.load(std::memory_order_relaxed)) l(nullptr);
}

void set_listener(Listener listener) { g_listener.store(listener); }

}  // namespace ember::profile
