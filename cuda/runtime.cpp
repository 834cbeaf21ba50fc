// Device discovery and the making of each device's DeviceContext, stream-ordered allocation with
// ember's statistics and the out-of-memory path, host<->device copies, and ember/cuda.h. The
// context's parts made on first use (checks, GEMM and cuDNN handles) are in context.cpp.
#include "cuda/runtime.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "cpp/backend/index_check.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "ember/cuda.h"
#include "ember/error.h"

namespace ember::cuda {
namespace {

// Host->device copies larger than this go through the two staging slots in chunks, so the
// memcpy into one slot overlaps the DMA out of the other.
constexpr size_t kStagingChunk = size_t(32) << 20;
constexpr size_t kStagingMin = size_t(64) << 10;

struct Discovery {
  int count = 0;
  std::string reason;  // why there is no device, for error messages
};

// Asked once: cudaGetDeviceCount fails quietly without a driver or a GPU (it prints nothing and
// its error is not sticky), which is how is_available() stays silent on such machines.
const Discovery& discovery() {
  static const Discovery d = [] {
    Discovery r;
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      r.reason = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
      n = 0;
    } else if (n == 0) {
      r.reason = "the driver reports no CUDA device";
    }
    r.count = std::min(n, kMaxDevices);
    return r;
  }();
  return d;
}

std::atomic<DeviceContext*> g_contexts[kMaxDevices];
std::mutex g_contexts_mutex;
std::atomic<bool> g_allow_tf32{false};
std::atomic<uint64_t> g_host_to_device{0}, g_device_to_host{0}, g_synchronizations{0};
std::atomic<SyncDebugMode> g_sync_debug{SyncDebugMode::Off};

}  // namespace

// Every place ember makes the host wait for a device goes through here (sync debug mode).
void before_host_wait(const char* what, int index) {
  const SyncDebugMode mode = g_sync_debug.load();
  if (mode == SyncDebugMode::Off) return;
  const std::string msg = detail::str_cat(what, " on cuda:", index, " makes the host wait for the device");
  if (mode == SyncDebugMode::Warn) {
    std::fprintf(stderr, "ember: warning: %s (cuda::set_sync_debug_mode is Warn)\n", msg.c_str());
    return;
  }
  throw Error(detail::str_cat(msg, ", which cuda::set_sync_debug_mode(SyncDebugMode::Error) forbids; keep the value "
                                   "on the device, or read it outside the code being checked"));
}

void count_synchronization() { ++g_synchronizations; }

const DeviceChecks& device_checks(int index) { return device_context(index).checks(); }

void raise_check_failure(int index, const char* reported_at) {
  DeviceContext* s = find_device_context(index);
  DeviceChecks* c = s ? s->checks_if_made() : nullptr;
  if (!c || !static_cast<volatile const CheckFailure*>(c->host)->failed) return;
  std::atomic_thread_fence(std::memory_order_acquire);  // the fields were written before `failed`
  const CheckFailure f = *c->host;
  IndexCheck check;
  check.op = f.op;
  check.what = f.what;
  check.bound_name = f.bound_name;
  check.hint = f.hint;
  // Re-arm: the next failure is recorded again (the claim is cleared behind the queued work).
  static_cast<volatile CheckFailure*>(c->host)->failed = 0;
  {
    DeviceGuard guard(index);
    EMBER_CUDA_CHECK(cudaMemsetAsync(c->claim, 0, sizeof(unsigned long long), s->stream));
  }
  throw Error(index_value_error(check, f.value, f.position, f.bound, detail::str_cat("cuda:", index), reported_at));
}

bool event_completed(cudaEvent_t event) {
  const cudaError_t e = cudaEventQuery(event);
  if (e == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  EMBER_CUDA_CHECK(e);
  return true;
}

namespace {

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 6) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

size_t pool_reserved(const DeviceContext& s) {
  uint64_t reserved = 0;
  EMBER_CUDA_CHECK(cudaMemPoolGetAttribute(s.pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  return static_cast<size_t>(reserved);
}

[[noreturn]] void throw_out_of_memory(DeviceContext& s, size_t nbytes, cudaError_t status) {
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) (void)cudaGetLastError();
  uint64_t reserved = 0;
  if (cudaMemPoolGetAttribute(s.pool, cudaMemPoolAttrReservedMemCurrent, &reserved) != cudaSuccess)
    (void)cudaGetLastError();
  throw OutOfMemory(detail::str_cat(
      "cuda:", s.index, " out of memory: tried to allocate ", format_bytes(static_cast<double>(nbytes)), " (", nbytes,
      " bytes). The device has ", format_bytes(static_cast<double>(total_bytes)), " in total (", total_bytes,
      " bytes), of which ", format_bytes(static_cast<double>(free_bytes)), " (", free_bytes,
      " bytes) is free; ember has ", format_bytes(static_cast<double>(s.allocated.load())), " (", s.allocated.load(),
      " bytes) allocated in live tensors and ", format_bytes(static_cast<double>(reserved)), " (", reserved,
      " bytes) reserved by its memory pool. Reduce the batch size (or the model), free tensors you no longer need, "
      "or call ember::cuda::empty_cache() to return cached blocks to the driver",
      nbytes > s.total_memory ? " (this request exceeds the device's total memory)"
                              : detail::str_cat(" (", cudaGetErrorName(status),
                                                " from cudaMallocFromPoolAsync, after releasing the cache and "
                                                "retrying once)")));
}

void note_allocated(DeviceContext& s, size_t nbytes) {
  const size_t now = s.allocated.fetch_add(nbytes) + nbytes;
  size_t peak = s.peak_allocated.load();
  while (now > peak && !s.peak_allocated.compare_exchange_weak(peak, now)) {
  }
}

// The device guard for noexcept paths: errors are ignored (there is nothing to report them to).
struct QuietDeviceGuard {
  int previous = -1;
  explicit QuietDeviceGuard(int index) {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != index && cudaSetDevice(index) == cudaSuccess) previous = cur;
  }
  ~QuietDeviceGuard() {
    if (previous >= 0) (void)cudaSetDevice(previous);
  }
};

}  // namespace

DeviceContext::DeviceContext(int device) : index(device) {
  DeviceGuard guard(index);
  // Non-blocking: the compute stream never waits for (or makes wait) the legacy default stream.
  EMBER_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  EMBER_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, index));
  // Keep freed blocks cached in the pool instead of returning them at every synchronization.
  uint64_t threshold = UINT64_MAX;
  EMBER_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  EMBER_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, index));
  size_t free_bytes = 0;
  EMBER_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_memory));
}

DeviceContext* find_device_context(int index) noexcept {
  return index >= 0 && index < kMaxDevices ? g_contexts[index].load(std::memory_order_acquire) : nullptr;
}

DeviceContext& device_context(int index) {
  if (DeviceContext* s = find_device_context(index)) return *s;
  const Discovery& d = discovery();
  if (d.count == 0)
    throw Error(detail::str_cat("cuda:", index, " is not available: no usable CUDA device or driver (", d.reason,
                                "). ember::cuda::is_available() is false on this machine; use Device::cpu()"));
  if (index < 0 || index >= d.count)
    throw Error(detail::str_cat("cuda:", index, " does not exist: this machine has ", d.count,
                                " CUDA device(s), cuda:0 to cuda:", d.count - 1));
  std::lock_guard<std::mutex> lock(g_contexts_mutex);
  if (DeviceContext* s = g_contexts[index].load(std::memory_order_acquire)) return *s;
  auto s = std::make_unique<DeviceContext>(index);
  DeviceContext* raw = s.release();  // never destroyed: see DeviceContext
  g_contexts[index].store(raw, std::memory_order_release);
  return *raw;
}

cudaStream_t stream_for(const Device& d) { return device_context(d.index).stream; }

int current_sm_count() {
  int dev = 0;
  EMBER_CUDA_CHECK(cudaGetDevice(&dev));
  return device_context(dev).sm_count;
}

DeviceGuard::DeviceGuard(int index) {
  int cur = -1;
  EMBER_CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != index) {
    EMBER_CUDA_CHECK(cudaSetDevice(index));
    previous_ = cur;
  }
}

DeviceGuard::~DeviceGuard() {
  // Switching back to a device that was current a moment ago cannot fail in a way worth
  // terminating for (a destructor must not throw).
  if (previous_ >= 0) (void)cudaSetDevice(previous_);
}

void* device_allocate(size_t nbytes, int index, Usage usage) {
  if (nbytes == 0) return nullptr;
  DeviceContext& s = device_context(index);
  DeviceGuard guard(index);
  // More than the device has can never succeed: say so without flushing the pool's cache for it
  // (and without a failing CUDA call, which compute-sanitizer would report).
  if (nbytes > s.total_memory) throw_out_of_memory(s, nbytes, cudaErrorMemoryAllocation);
  if (s.capturing.load(std::memory_order_acquire)) {
    void* g = capture_allocate(s, nbytes);
    if (usage == Usage::Tensor) note_allocated(s, nbytes);
    return g;
  }
  void* p = nullptr;
  cudaError_t e = cudaMallocFromPoolAsync(&p, nbytes, s.pool, s.stream);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // allocation failures are not sticky; keep them out of later checks
    // Release everything the pool caches (after the queued frees have completed) and retry once.
    before_host_wait("an allocation retrying after releasing the memory pool's cache", index);
    ++g_synchronizations;
    EMBER_CUDA_CHECK(cudaDeviceSynchronize());
    EMBER_CUDA_CHECK(cudaMemPoolTrimTo(s.pool, 0));
    s.num_cache_flushes.fetch_add(1);
    p = nullptr;
    e = cudaMallocFromPoolAsync(&p, nbytes, s.pool, s.stream);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      if (e == cudaErrorMemoryAllocation) throw_out_of_memory(s, nbytes, e);
      throw_cuda_error(e, "cudaMallocFromPoolAsync(&p, nbytes, s.pool, s.stream)", __FILE__, __LINE__);
    }
    s.num_alloc_retries.fetch_add(1);
  }
  if (usage == Usage::Tensor) {
    note_allocated(s, nbytes);
    s.num_allocs.fetch_add(1, std::memory_order_relaxed);
  }
  return p;
}

void device_free(void* ptr, size_t nbytes, int index, Usage usage) noexcept {
  if (!ptr) return;
  DeviceContext* s = find_device_context(index);
  if (!s) return;  // cannot happen for a pointer device_allocate returned
  if (usage == Usage::Tensor) s->allocated.fetch_sub(nbytes);
  if (s->num_graph_pools.load(std::memory_order_acquire) > 0 && capture_free(*s, ptr, nbytes)) return;
  QuietDeviceGuard guard(index);
  const cudaError_t e = cudaFreeAsync(ptr, s->stream);
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  // At process exit the runtime may be gone before the last tensors are freed: nothing to do.
  if (e == cudaErrorCudartUnloading || e == cudaErrorContextIsDestroyed) return;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::fprintf(stderr, "ember: warning: cudaFreeAsync on cuda:%d failed with %s (%s); device memory may leak\n",
                 index, cudaGetErrorName(e), cudaGetErrorString(e));
}

void copy_host_to_device(void* dst, const void* src, size_t nbytes, int index) {
  if (nbytes == 0) return;
  DeviceContext& s = device_context(index);
  check_not_capturing(s, "a host-to-device copy (a tensor made from host values, or .to(cuda))");
  ++g_host_to_device;
  DeviceGuard guard(index);
  std::lock_guard<std::mutex> lock(s.staging_mutex);
  auto* d = static_cast<char*>(dst);
  const auto* h = static_cast<const char*>(src);
  for (size_t done = 0; done < nbytes;) {
    const size_t chunk = std::min(nbytes - done, kStagingChunk);
    StagingSlot& slot = s.staging[s.next_slot];
    s.next_slot ^= 1;
    // The slot's previous copy must have left it before it is overwritten (it usually has).
    if (slot.done) {
      if (!event_completed(slot.done)) {
        before_host_wait("waiting for a staging buffer (host-to-device copies back to back)", index);
        ++g_synchronizations;
        EMBER_CUDA_CHECK(cudaEventSynchronize(slot.done));
      }
    } else {
      EMBER_CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
    }
    if (slot.capacity < chunk) {
      if (slot.host) EMBER_CUDA_CHECK(cudaFreeHost(slot.host));
      slot.host = nullptr;
      slot.capacity = 0;
      size_t cap = kStagingMin;
      while (cap < chunk) cap *= 2;
      if (cudaHostAlloc(&slot.host, cap, cudaHostAllocDefault) != cudaSuccess) {
        // No pinned memory to be had: let the driver stage from pageable memory. It returns once
        // the source has been copied out, so the caller may still reuse `src` at once.
        (void)cudaGetLastError();
        slot.host = nullptr;
        EMBER_CUDA_CHECK(cudaMemcpyAsync(d + done, h + done, nbytes - done, cudaMemcpyHostToDevice, s.stream));
        return;
      }
      slot.capacity = cap;
    }
    std::memcpy(slot.host, h + done, chunk);
    EMBER_CUDA_CHECK(cudaMemcpyAsync(d + done, slot.host, chunk, cudaMemcpyHostToDevice, s.stream));
    EMBER_CUDA_CHECK(cudaEventRecord(slot.done, s.stream));
    done += chunk;
  }
}

void copy_device_to_host(void* dst, const void* src, size_t nbytes, int index) {
  if (nbytes == 0) return;
  // The message is formatted only when the debug mode will use it (this is every item() call).
  if (g_sync_debug.load() != SyncDebugMode::Off)
    before_host_wait(detail::str_cat("reading ", nbytes, " bytes back to the host").c_str(), index);
  DeviceContext& s = device_context(index);
  check_not_capturing(s, "a read of a device tensor's values on the host (item(), to_vector(), .cpu())");
  ++g_device_to_host;
  DeviceGuard guard(index);
  EMBER_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s.stream));
  // The caller reads `dst` next: this is one of the two places ember waits for the device.
  EMBER_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  raise_check_failure(index, "a read of a device tensor's values");
}

void copy_device_to_device(void* dst, int dst_index, const void* src, int src_index, size_t nbytes) {
  if (nbytes == 0) return;
  DeviceContext& sd = device_context(dst_index);
  if (dst_index == src_index) {
    DeviceGuard guard(dst_index);
    EMBER_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, sd.stream));
    return;
  }
  DeviceContext& ss = device_context(src_index);
  // The copy runs on the destination's stream after the source's queued writes, and the source's
  // stream then waits for the copy, so the source's memory is not freed and reused under it.
  cudaEvent_t src_ready = nullptr, copied = nullptr;
  {
    DeviceGuard guard(src_index);
    EMBER_CUDA_CHECK(cudaEventCreateWithFlags(&src_ready, cudaEventDisableTiming));
    EMBER_CUDA_CHECK(cudaEventRecord(src_ready, ss.stream));
  }
  {
    DeviceGuard guard(dst_index);
    EMBER_CUDA_CHECK(cudaStreamWaitEvent(sd.stream, src_ready, 0));
    EMBER_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_index, src, src_index, nbytes, sd.stream));
    EMBER_CUDA_CHECK(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
    EMBER_CUDA_CHECK(cudaEventRecord(copied, sd.stream));
  }
  {
    DeviceGuard guard(src_index);
    EMBER_CUDA_CHECK(cudaStreamWaitEvent(ss.stream, copied, 0));
  }
  // Destroying a recorded event is safe: its resources go once the work it marks has completed.
  EMBER_CUDA_CHECK(cudaEventDestroy(src_ready));
  EMBER_CUDA_CHECK(cudaEventDestroy(copied));
}

// ---- ember/cuda.h ----

bool is_available() { return discovery().count > 0; }
int device_count() { return discovery().count; }
bool is_compiled() { return true; }

MemoryStats memory_stats(int device) {
  if (!is_available()) return {};
  DeviceContext& s = device_context(device);
  MemoryStats m;
  m.allocated = s.allocated.load();
  m.peak_allocated = s.peak_allocated.load();
  m.num_alloc_retries = s.num_alloc_retries.load();
  m.num_allocs = s.num_allocs.load();
  m.num_cache_flushes = s.num_cache_flushes.load();
  m.reserved = pool_reserved(s);
  return m;
}

void reset_peak_memory_stats(int device) {
  if (!is_available()) return;
  DeviceContext& s = device_context(device);
  s.peak_allocated.store(s.allocated.load());
}

void empty_cache(int device) {
  if (!is_available()) return;
  DeviceContext& s = device_context(device);
  check_not_capturing(s, "empty_cache()");
  DeviceGuard guard(device);
  before_host_wait("empty_cache()", device);
  ++g_synchronizations;
  // Blocks freed on the stream return to the pool only once the stream reaches the free.
  EMBER_CUDA_CHECK(cudaDeviceSynchronize());
  EMBER_CUDA_CHECK(cudaMemPoolTrimTo(s.pool, 0));
  s.num_cache_flushes.fetch_add(1);
  raise_check_failure(device, "empty_cache()");
}

void synchronize(int device) {
  if (!is_available()) return;
  DeviceContext& s = device_context(device);
  check_not_capturing(s, "synchronize()");
  DeviceGuard guard(device);
  before_host_wait("synchronize()", device);
  ++g_synchronizations;
  EMBER_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  raise_check_failure(device, "synchronize()");
}

TransferStats transfer_stats() {
  TransferStats t;
  t.host_to_device_copies = g_host_to_device.load();
  t.device_to_host_copies = g_device_to_host.load();
  t.synchronizations = g_synchronizations.load();
  return t;
}

void set_sync_debug_mode(SyncDebugMode mode) { g_sync_debug.store(mode); }
SyncDebugMode sync_debug_mode() { return g_sync_debug.load(); }

void set_allow_tf32(bool allow) { g_allow_tf32.store(allow); }
bool allow_tf32() { return g_allow_tf32.load(); }

}  // namespace ember::cuda
