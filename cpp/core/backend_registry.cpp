// Backend lookup by device, the default generator, and Storage release.
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

Backend& backend_for(Device device) { return device.is_cpu() ? cpu_backend() : cuda_backend(); }

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
