// The CUDA runtime layer of the backend: device discovery, the compute stream of each device,
// stream-ordered allocation with ember's statistics, host<->device copies, deferred device checks.
// The per-device state behind these lives in one cuda::DeviceContext (cuda/context.h).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "ember/device.h"

namespace ember {
class Generator;
}

namespace ember::cuda {

// A failed device-side check (Backend::check_index), in mapped pinned memory: written by the one
// thread that claims it on the device, `failed` last; read by the host once it has waited for the
// device anyway. The strings are the IndexCheck's literals.
struct CheckFailure {
  int64_t value = 0;
  int64_t position = 0;
  int64_t bound = 0;
  const char* op = nullptr;
  const char* what = nullptr;
  const char* bound_name = nullptr;
  const char* hint = nullptr;
  int failed = 0;
};

// The device's check state, made on its first check.
struct DeviceChecks {
  unsigned long long* claim = nullptr;  // device memory: 0, or 1 once a thread has claimed `failure`
  CheckFailure* host = nullptr;         // the record, as the host sees it
  CheckFailure* device = nullptr;       // the same record, as kernels see it
};

// The compute stream of `d` (its DeviceContext's, cuda/context.h), made on first use. Throws
// ember::Error when `d` names no device.
cudaStream_t stream_for(const Device& d);
// The number of SMs of the current device (cached), for sizing grid-stride launches.
int current_sm_count();

// Makes `index` the current device for its scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// What an allocation is for: memory_stats().allocated counts the bytes of live tensors only.
enum class Usage : int8_t { Tensor, Scratch };

// Stream-ordered allocation on the device's compute stream. Zero bytes give nullptr (which
// device_free accepts). Throws ember::OutOfMemory after trimming the pool and retrying once.
void* device_allocate(size_t nbytes, int index, Usage usage = Usage::Tensor);
// Never throws (it runs in Storage's destructor); a failure from earlier asynchronous work is
// reported on stderr once, and ignored while the CUDA runtime is shutting down. `usage` is the
// allocation's.
void device_free(void* ptr, size_t nbytes, int index, Usage usage = Usage::Tensor) noexcept;

// A temporary device buffer for one launch sequence: allocated on the compute stream and freed
// on it when the scope ends, which is safe because the kernels using it were queued before.
class Scratch {
 public:
  Scratch(size_t nbytes, int index)
      : ptr_(device_allocate(nbytes, index, Usage::Scratch)), nbytes_(nbytes), index_(index) {}
  ~Scratch() { device_free(ptr_, nbytes_, index_, Usage::Scratch); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_;
  size_t nbytes_;
  int index_;
};

// The device's check state (allocated on first use), for the check kernels.
const DeviceChecks& device_checks(int index);
// Throws the Error of a failed device-side check on `index`, if one was recorded; `reported_at`
// names the host wait it is raised at. Called only where the host has just waited for the device.
void raise_check_failure(int index, const char* reported_at);

// Whether the work before `event` has completed, without waiting; throws for a real error. Every
// cudaEventQuery in ember goes through here: "not yet" comes back as cudaErrorNotReady, which the
// runtime also keeps as its last error, so left alone the next EMBER_CUDA_LAUNCH_CHECK (which reads
// cudaGetLastError) would report "launch of ... failed with cudaErrorNotReady". This clears it.
bool event_completed(cudaEvent_t event);

// Called before the host waits for `index` (sync debug mode: may warn or throw); `what` names the call.
void before_host_wait(const char* what, int index);
// Counts a synchronization in transfer_stats() (blocking reads count as device_to_host_copies instead).
void count_synchronization();

// Host<->device copies of `nbytes` contiguous bytes on the device's compute stream.
// Host to device returns once the bytes are staged (the caller may reuse `src`); device to host
// returns once the bytes have arrived.
// A random fill queued while a Graph captures on `device` (cuda/graph.cpp): its kernel reads the
// seed from state[0] and its counter base from state[1] + offset when it runs (state is the
// generator's Philox state on the device, which each replay's last node advances; offset is the
// fill's counter less the first counter the capture took from that generator). Throws ember::Error
// for a fill from no generator, or from one reseeded during the capture.
struct CapturedRandom {
  const uint64_t* state = nullptr;
  uint64_t offset = 0;
};
CapturedRandom capture_random(int device, Generator* generator, uint64_t seed, uint64_t offset);

void copy_host_to_device(void* dst, const void* src, size_t nbytes, int index);
void copy_device_to_host(void* dst, const void* src, size_t nbytes, int index);
// Device to device, within one device or across two (ordered after both devices' queued work).
void copy_device_to_device(void* dst, int dst_index, const void* src, int src_index, size_t nbytes);

// The alignment (a power of two, at most 256 bytes) cuBLASLt may assume for a pointer: its heuristic
// defaults to 256 bytes, which a view with an offset need not have. For plan-cache keys and
// CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES (cuda/blas.cpp, cuda/int8_gemm.cpp).
inline int64_t pointer_alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  int64_t a = 1;
  while (a < 256 && v % static_cast<uintptr_t>(a * 2) == 0) a *= 2;
  return a;
}

}  // namespace ember::cuda
