// The backend registry (lookup by device, replacement by a decorator), the default generator, and
// Storage release.
#include "cpp/backend/backend.h"
#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/core/tensor_impl.h"
#include "ember/debug.h"

#include <atomic>

namespace ember {

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

namespace {
// The installed backends by DeviceType; null means the built-in one.
std::atomic<Backend*> g_installed[2] = {nullptr, nullptr};
}  // namespace

Backend& backend_for(Device device) {
  if (Backend* b = g_installed[device.is_cpu() ? 0 : 1].load(std::memory_order_acquire)) return *b;
  return device.is_cpu() ? cpu_backend() : cuda_backend();
}

Backend* set_backend(DeviceType type, Backend* backend) {
  return g_installed[type == DeviceType::CPU ? 0 : 1].exchange(backend, std::memory_order_acq_rel);
}

Storage::~Storage() {
  if (owner && data) owner->deallocate(data, nbytes, device);
}

Generator& default_generator() {
  static Generator gen;
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

namespace debug {
static std::atomic<bool> g_poison{false};
void set_poison_allocations(bool enabled) { g_poison = enabled; }
bool poison_allocations() { return g_poison; }
}  // namespace debug

}  // namespace ember
