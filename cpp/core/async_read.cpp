// ember::AsyncRead: CPU tensors are copied at once; CUDA tensors go to pinned memory with
// cudaMemcpyAsync on the device's compute stream and an event marks their arrival.
#include "ember/async_read.h"

#include <cstring>

#include "cpp/core/tensor_impl.h"
#include "ember/error.h"

#if defined(EMBER_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "cuda/check.h"
#include "cuda/runtime.h"
#endif

namespace ember {

struct AsyncRead::Impl {
  bool pending = false;
  Shape shape;
  DType dtype = DType::F32;
  Tensor host;  // a CPU source's copy
#if defined(EMBER_WITH_CUDA)
  int device = -1;           // the pending copy's device, -1 for a CPU source
  void* pinned = nullptr;    // reused; grows as needed
  size_t capacity = 0;
  int pinned_device = -1;
  cudaEvent_t arrived = nullptr;

  ~Impl() {
    // A copy still in flight writes into `pinned`: wait for its event before freeing the buffer
    // (the event is recorded after every copy). Errors at exit (runtime unloading) are ignored.
    if (arrived) (void)cudaEventSynchronize(arrived);
    if (pinned) (void)cudaFreeHost(pinned);
    if (arrived) (void)cudaEventDestroy(arrived);
  }

  // Before `pinned` is freed or reallocated: the copy queued into it must have arrived.
  void wait_for_copy_in_flight() {
    if (!arrived || cuda::event_completed(arrived)) return;
    cuda::before_host_wait("AsyncRead::start() reusing its buffer while a copy into it is in flight", pinned_device);
    cuda::count_synchronization();
    EMBER_CUDA_CHECK(cudaEventSynchronize(arrived));
  }
#endif
};

AsyncRead::AsyncRead() : impl_(std::make_unique<Impl>()) {}
AsyncRead::~AsyncRead() = default;

void AsyncRead::start(const Tensor& t) {
  EMBER_CHECK(t.defined(), "AsyncRead::start: the tensor is undefined");
  Impl& m = *impl_;
  m.shape = t.shape();
  m.dtype = t.dtype();
  if (t.device().is_cpu()) {
    m.host = t.contiguous().clone();
#if defined(EMBER_WITH_CUDA)
    m.device = -1;
#endif
    m.pending = true;
    return;
  }
#if defined(EMBER_WITH_CUDA)
  const Tensor src = t.contiguous();
  const int index = t.device().index;
  const size_t bytes = static_cast<size_t>(src.numel()) * dtype_size(src.dtype());
  cuda::DeviceGuard guard(index);
  if (bytes > m.capacity) {
    m.wait_for_copy_in_flight();
    if (m.pinned) EMBER_CUDA_CHECK(cudaFreeHost(m.pinned));
    m.pinned = nullptr;
    m.capacity = 0;
    EMBER_CUDA_CHECK(cudaHostAlloc(&m.pinned, bytes, cudaHostAllocDefault));
    m.capacity = bytes;
  }
  if (m.arrived && m.pinned_device != index) {
    // The new copy is queued on another device's stream, not behind the old one into the buffer.
    m.wait_for_copy_in_flight();
    EMBER_CUDA_CHECK(cudaEventDestroy(m.arrived));
    m.arrived = nullptr;
  }
  if (!m.arrived) EMBER_CUDA_CHECK(cudaEventCreateWithFlags(&m.arrived, cudaEventDisableTiming));
  m.pinned_device = index;
  const cudaStream_t stream = cuda::stream_for(t.device());
  // Behind the work queued so far on the stream (including an earlier copy into the same buffer).
  if (bytes) EMBER_CUDA_CHECK(cudaMemcpyAsync(m.pinned, src.impl()->data(), bytes, cudaMemcpyDeviceToHost, stream));
  EMBER_CUDA_CHECK(cudaEventRecord(m.arrived, stream));
  m.device = index;
  m.pending = true;
#else
  throw Error(detail::str_cat("AsyncRead::start: tensor on ", t.device().str(),
                              ", but this libember was built without the CUDA backend"));
#endif
}

bool AsyncRead::pending() const { return impl_->pending; }

bool AsyncRead::ready() const {
  const Impl& m = *impl_;
  if (!m.pending) return false;
#if defined(EMBER_WITH_CUDA)
  if (m.device >= 0) {
    cuda::DeviceGuard guard(m.device);
    if (!cuda::event_completed(m.arrived)) return false;
  }
#endif
  return true;
}

Tensor AsyncRead::get() {
  Impl& m = *impl_;
  EMBER_CHECK(m.pending, "AsyncRead::get: nothing to get; call start(tensor) first");
#if defined(EMBER_WITH_CUDA)
  if (m.device >= 0) {
    const bool arrived = ready();
    m.pending = false;
    if (!arrived) {
      cuda::before_host_wait("AsyncRead::get() before the copy arrived", m.device);
      cuda::count_synchronization();
      cuda::DeviceGuard guard(m.device);
      EMBER_CUDA_CHECK(cudaEventSynchronize(m.arrived));
    }
    // The work queued before start() has completed: a device-side check that failed there is raised here.
    cuda::raise_check_failure(m.device, "AsyncRead::get()");
    Tensor out = empty(m.shape, TensorOptions(m.dtype));
    const size_t bytes = static_cast<size_t>(out.numel()) * dtype_size(m.dtype);
    if (bytes) std::memcpy(out.impl()->data(), m.pinned, bytes);
    return out;
  }
#endif
  m.pending = false;
  Tensor out = std::move(m.host);
  m.host = Tensor();
  return out;
}

}  // namespace ember
