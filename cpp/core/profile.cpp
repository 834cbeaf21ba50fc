// ember::profile::Range: a device profiler range (NVTX in the "ember" domain in CUDA builds:
// device_range_push in backend.h), the test listener, and ember::profiler's hook (profile_hooks.h).
#include "ember/profile.h"

#include <atomic>

#include "cpp/backend/backend.h"
#include "cpp/core/profile_hooks.h"

namespace ember::profile {
namespace {
std::atomic<Listener> g_listener{nullptr};
std::atomic<detail::Hook> g_profiler{nullptr};
// A plain array and a count, kept whether or not a profiler runs. initial-exec: a fixed offset from
// the thread pointer instead of a __tls_get_addr call per access (a range with no session: 12 ns
// instead of 21, against 7.5 before this stack existed; tools/bench/profiler_overhead.sh); the 136
// bytes fit the static TLS space glibc keeps for libraries loaded later by dlopen.
__attribute__((tls_model("initial-exec"))) thread_local detail::OpenRanges t_open;
}  // namespace

Range::Range(const char* name) {
  detail::OpenRanges& open = t_open;
  if (open.depth < detail::kMaxOpen) open.names[open.depth] = name;
  ++open.depth;
  if (Listener l = g_listener.load(std::memory_order_relaxed)) l(name);
  if (detail::Hook h = g_profiler.load(std::memory_order_relaxed)) h(name);
  device_range_push(name);
}

Range::~Range() {
  device_range_pop();
  if (detail::Hook h = g_profiler.load(std::memory_order_relaxed)) h(nullptr);
  if (Listener l = g_listener.load(std::memory_order_relaxed)) l(nullptr);
  --t_open.depth;
}

void set_listener(Listener listener) { g_listener.store(listener); }

namespace detail {
void set_profiler_hook(Hook hook) { g_profiler.store(hook); }
const OpenRanges& open_ranges() { return t_open; }
}  // namespace detail

}  // namespace ember::profile
