// The CUDA runtime layer of the backend: device discovery, one compute stream and memory pool per
// device, stream-ordered allocation with ember's statistics, and host<->device staging.
#pragma once
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "ember/device.h"

namespace ember::cuda {

// Pinned host memory that host->device copies go through, so the caller's (pageable) buffer is
// free again as soon as it has been copied here, and the DMA runs asynchronously.
struct StagingSlot {
  void* host = nullptr;
  size_t capacity = 0;
  cudaEvent_t done = nullptr;  // recorded after the copy out of this slot
};

// Everything ember keeps per device. Created on first use and never destroyed: at process exit
// the CUDA runtime may already be unloading, and releasing streams or pools then fails.
struct DeviceState {
  int index = 0;
  cudaStream_t stream = nullptr;  // the compute stream: every kernel, copy and GEMM goes here
  cudaMemPool_t pool = nullptr;   // the device's default pool, with an infinite release threshold
  int sm_count = 0;
  size_t total_memory = 0;  // the device's memory in bytes
  std::atomic<size_t> allocated{0};
  std::atomic<size_t> peak_allocated{0};
  std::atomic<uint64_t> num_alloc_retries{0};
  std::mutex staging_mutex;
  StagingSlot staging[2];
  int next_slot = 0;
};

// The device's state, created on first use. Throws ember::Error when `index` names no device.
DeviceState& device_state(int index);
inline cudaStream_t stream_for(const Device& d) { return device_state(d.index).stream; }
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

// Stream-ordered allocation on the device's compute stream. Zero bytes give nullptr (which
// device_free accepts). Throws ember::OutOfMemory after trimming the pool and retrying once.
void* device_allocate(size_t nbytes, int index);
// Never throws (it runs in Storage's destructor); a failure from earlier asynchronous work is
// reported on stderr once, and ignored while the CUDA runtime is shutting down.
void device_free(void* ptr, size_t nbytes, int index) noexcept;

// A temporary device buffer for one launch sequence: allocated on the compute stream and freed
// on it when the scope ends, which is safe because the kernels using it were queued before.
class Scratch {
 public:
  Scratch(size_t nbytes, int index) : ptr_(device_allocate(nbytes, index)), nbytes_(nbytes), index_(index) {}
  ~Scratch() { device_free(ptr_, nbytes_, index_); }
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

// Called before the host waits for `index` (sync debug mode: may warn or throw); `what` names the call.
void before_host_wait(const char* what, int index);
// Counts a synchronization in transfer_stats() (blocking reads count as device_to_host_copies instead).
void count_synchronization();

// Host<->device copies of `nbytes` contiguous bytes on the device's compute stream.
// Host to device returns once the bytes are staged (the caller may reuse `src`); device to host
// returns once the bytes have arrived.
void copy_host_to_device(void* dst, const void* src, size_t nbytes, int index);
void copy_device_to_host(void* dst, const void* src, size_t nbytes, int index);
// Device to device, within one device or across two (ordered after both devices' queued work).
void copy_device_to_device(void* dst, int dst_index, const void* src, int src_index, size_t nbytes);

}  // namespace ember::cuda
