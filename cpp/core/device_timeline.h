// The device side of ember::profiler: timing events on a device's compute stream, the device's live
// tensor bytes, and the capture range of an external profiler (cudaProfilerStart/Stop). Defined by
// cuda/profiler_events.cpp in CUDA builds and by cpp/core/no_cuda.cpp otherwise, so cpp/ includes no
// CUDA header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace ember {

// Events recorded on the compute stream of the device current when they are recorded. Not
// thread-safe (the profiler records under its own lock).
class DeviceTimeline {
 public:
  virtual ~DeviceTimeline() = default;
  // Records an event behind the work queued so far and returns its index (0, 1, ...) and device.
  // Never makes the host wait.
  virtual uint32_t record(int* device) = 0;
  // Waits for every recorded event and returns, for each, the ms since the first event recorded on
  // its device (the first is 0). Call once, after the last record().
  virtual std::vector<double> elapsed_ms() = 0;
};

// A timeline for the CUDA devices, or nullptr when there is no usable device (or no CUDA build).
std::unique_ptr<DeviceTimeline> make_device_timeline();
// Bytes in live tensors on CUDA device `index` (cuda::memory_stats().allocated, without the pool
// query that costs a driver call); 0 without a device.
size_t device_allocated_bytes(int index);
// The device current on this thread (0 without CUDA).
int current_device_index();
// cudaProfilerStart() / cudaProfilerStop(); nothing without a device.
void device_capture_start();
void device_capture_stop();

}  // namespace ember
