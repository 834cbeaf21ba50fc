// ember::cuda answers for a build without the CUDA backend (EMBER_CUDA=OFF or no toolkit), and the
// device hooks of backend.h that cuda/ defines otherwise. CMakeLists.txt builds this file only then.
#include <atomic>

#include "cpp/backend/backend.h"
#include "cpp/core/device_timeline.h"
#include "ember/cuda.h"

namespace ember {

Backend& cuda_backend() {
  throw Error("this libember was built without the CUDA backend; rebuild with the CUDA toolkit and -DEMBER_CUDA=ON, "
              "or use Device::cpu()");
}

// No device profiler to tell.
void device_range_push(const char*) {}
void device_range_pop() {}

// ember::profiler's device side: no device to time, count or capture.
std::unique_ptr<DeviceTimeline> make_device_timeline() { return nullptr; }
size_t device_allocated_bytes(int) { return 0; }
int current_device_index() { return 0; }
void device_capture_start() {}
void device_capture_stop() {}

namespace cuda {
namespace {
std::atomic<SyncDebugMode> g_sync_debug{SyncDebugMode::Off};
std::atomic<bool> g_deterministic{false};
}  // namespace
TransferStats transfer_stats() { return {}; }  // no device: nothing ever crosses
void set_sync_debug_mode(SyncDebugMode mode) { g_sync_debug.store(mode); }
SyncDebugMode sync_debug_mode() { return g_sync_debug.load(); }
bool is_available() { return false; }
int device_count() { return 0; }
bool is_compiled() { return false; }
MemoryStats memory_stats(int) { return {}; }
void reset_peak_memory_stats(int) {}
void empty_cache(int) {}
void synchronize(int) {}
void set_allow_tf32(bool) {}
bool allow_tf32() { return false; }
// The CPU backend is deterministic anyway; the setting is kept so code reading it back behaves alike.
void set_deterministic_algorithms(bool deterministic) { g_deterministic.store(deterministic); }
bool deterministic_algorithms() { return g_deterministic.load(); }

// No device to capture on: a Graph cannot be made (is_available() is false).
struct Graph::Impl {};
Graph::Graph(int device) {
  throw Error(detail::str_cat("cuda::Graph(", device, "): this libember was built without the CUDA backend; rebuild "
                              "with -DEMBER_CUDA=ON, or run the step eagerly"));
}
Graph::~Graph() = default;
void Graph::capture(const std::function<void()>&) {}
void Graph::replay() {}
bool Graph::captured() const { return false; }
int Graph::device() const { return 0; }
size_t Graph::pool_bytes() const { return 0; }
bool is_capturing(int) { return false; }
}  // namespace cuda
}  // namespace ember
