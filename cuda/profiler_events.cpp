// ember::profiler's device side on CUDA (cpp/core/device_timeline.h): timing events on the compute
// stream, read back once at the end, live tensor bytes, and cudaProfilerStart/Stop.
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include <utility>
#include <vector>

#include "cpp/core/device_timeline.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/runtime.h"
#include "ember/cuda.h"

namespace ember {
namespace {

// Events are created as they are needed and kept: a profiled step records a few hundred, and a
// created event costs a driver call, recording one only a queue entry.
class CudaTimeline final : public DeviceTimeline {
 public:
  ~CudaTimeline() override {
    for (const Mark& m : marks_) (void)cudaEventDestroy(m.event);  // after use: no error worth reporting
  }
  uint32_t record(int* device) override {
    int dev = 0;
    EMBER_CUDA_CHECK(cudaGetDevice(&dev));
    cudaEvent_t e = nullptr;
    EMBER_CUDA_CHECK(cudaEventCreate(&e));  // timing on: this is what it is for
    marks_.push_back({e, dev});
    EMBER_CUDA_CHECK(cudaEventRecord(e, cuda::device_context(dev).stream));
    *device = dev;
    return static_cast<uint32_t>(marks_.size() - 1);
  }
  std::vector<double> elapsed_ms() override {
    std::vector<double> out(marks_.size(), 0.0);
    std::vector<int> first_of_device;  // index of each device's first event, by device
    for (size_t i = 0; i < marks_.size(); ++i) {
      const int dev = marks_[i].device;
      if (static_cast<int>(first_of_device.size()) <= dev) first_of_device.resize(dev + 1, -1);
      if (first_of_device[dev] < 0) first_of_device[dev] = static_cast<int>(i);
    }
    // The one wait of a profiling session: every event is in the past once the last has completed.
    for (size_t i = 0; i < marks_.size(); ++i) EMBER_CUDA_CHECK(cudaEventSynchronize(marks_[i].event));
    for (size_t i = 0; i < marks_.size(); ++i) {
      float ms = 0;
      EMBER_CUDA_CHECK(cudaEventElapsedTime(&ms, marks_[first_of_device[marks_[i].device]].event, marks_[i].event));
      out[i] = ms;
    }
    return out;
  }

 private:
  struct Mark {
    cudaEvent_t event;
    int device;
  };
  std::vector<Mark> marks_;
};

}  // namespace

std::unique_ptr<DeviceTimeline> make_device_timeline() {
  if (!cuda::is_available()) return nullptr;
  return std::make_unique<CudaTimeline>();
}

size_t device_allocated_bytes(int index) {
  cuda::DeviceContext* s = cuda::find_device_context(index);
  return s ? s->allocated.load(std::memory_order_relaxed) : 0;
}

int current_device_index() {
  int dev = 0;
  if (!cuda::is_available() || cudaGetDevice(&dev) != cudaSuccess) return 0;
  return dev;
}

void device_capture_start() {
  if (cuda::is_available()) EMBER_CUDA_CHECK(cudaProfilerStart());
}

void device_capture_stop() {
  if (cuda::is_available()) EMBER_CUDA_CHECK(cudaProfilerStop());
}

}  // namespace ember
