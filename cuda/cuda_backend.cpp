// CudaBackend: each primitive makes its tensors' device current and queues the launcher of its
// kernel family (cuda/kernels) on that device's compute stream. GEMM is in blas.cpp.
#include "cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>

#include "cuda/check.h"
#include "cuda/kernels/kernels.h"
#include "cuda/nvtx.h"
#include "cuda/runtime.h"
#include "ember/cuda.h"

namespace ember {
namespace {

// The compute stream of `t`'s device, which stays current for the object's lifetime. Checks the
// one invariant whose violation would otherwise be a device fault: a host pointer in a kernel.
class OnDevice {
 public:
  OnDevice(const Tensor& t, const char* op) : stream(stream_checked(t, op)), guard_(t.device().index) {}
  const cudaStream_t stream;

 private:
  static cudaStream_t stream_checked(const Tensor& t, const char* op) {
    EMBER_CHECK(t.device().is_cuda(), "cuda backend: ", op, " got a tensor on ", t.device().str(),
                "; every tensor of an op must be on the same CUDA device");
    return cuda::stream_for(t.device());
  }
  cuda::DeviceGuard guard_;
};

}  // namespace

Backend& cuda_backend() {
  static CudaBackend backend;
  return backend;
}

void* CudaBackend::allocate(size_t nbytes, Device device) {
  EMBER_CHECK(device.is_cuda(), "cuda backend: asked to allocate on ", device.str());
  return cuda::device_allocate(nbytes, device.index);
}

void CudaBackend::deallocate(void* ptr, size_t nbytes, Device device) { cuda::device_free(ptr, nbytes, device.index); }

void CudaBackend::synchronize(Device device) { cuda::synchronize(device.index); }

namespace {

// Copies into pinned memory with cudaMemcpyAsync on the device's compute stream, behind the work
// queued there; an event marks the arrival. The buffer grows as needed and is reused.
class CudaHostReader final : public HostReader {
 public:
  explicit CudaHostReader(int index) : index_(index) {}
  CudaHostReader(const CudaHostReader&) = delete;
  CudaHostReader& operator=(const CudaHostReader&) = delete;

  ~CudaHostReader() override {
    // A copy still in flight writes into `pinned_`: wait for its event before freeing the buffer
    // (the event is recorded after every copy). Errors at exit (runtime unloading) are ignored.
    if (arrived_) (void)cudaEventSynchronize(arrived_);
    if (pinned_) (void)cudaFreeHost(pinned_);
    if (arrived_) (void)cudaEventDestroy(arrived_);
  }

  void start(const Tensor& src) override {
    EMBER_CHECK(src.device() == Device::cuda(index_) && src.is_contiguous(), "AsyncRead: a cuda:", index_,
                " reader got a tensor on ", src.device().str(), src.is_contiguous() ? "" : " (not contiguous)");
    EMBER_CHECK(!cuda::is_capturing(index_), "AsyncRead::start on cuda:", index_,
                " while a CUDA graph captures there: a replay would copy into the reader's buffer behind its back; "
                "start the read after capture() (or after replay())");
    const size_t bytes = static_cast<size_t>(src.numel()) * dtype_size(src.dtype());
    cuda::DeviceGuard guard(index_);
    if (bytes > capacity_) {
      wait_for_copy_in_flight();
      if (pinned_) EMBER_CUDA_CHECK(cudaFreeHost(pinned_));
      pinned_ = nullptr;
      capacity_ = 0;
      EMBER_CUDA_CHECK(cudaHostAlloc(&pinned_, bytes, cudaHostAllocDefault));
      capacity_ = bytes;
    }
    if (!arrived_) EMBER_CUDA_CHECK(cudaEventCreateWithFlags(&arrived_, cudaEventDisableTiming));
    const cudaStream_t stream = cuda::stream_for(src.device());
    // Behind the work queued so far on the stream (including an earlier copy into the same buffer).
    if (bytes) EMBER_CUDA_CHECK(cudaMemcpyAsync(pinned_, src.impl()->data(), bytes, cudaMemcpyDeviceToHost, stream));
    EMBER_CUDA_CHECK(cudaEventRecord(arrived_, stream));
    shape_ = src.shape();
    dtype_ = src.dtype();
  }

  bool ready() override {
    if (!arrived_) return false;
    cuda::DeviceGuard guard(index_);
    return cuda::event_completed(arrived_);
  }

  Tensor get(const char* wait_reason) override {
    if (!ready()) {
      cuda::before_host_wait(wait_reason, index_);
      cuda::count_synchronization();
      cuda::DeviceGuard guard(index_);
      EMBER_CUDA_CHECK(cudaEventSynchronize(arrived_));
    }
    // The work queued before start() has completed: a device-side check that failed there is raised here.
    cuda::raise_check_failure(index_, "AsyncRead::get()");
    Tensor out = make_empty(shape_, dtype_, Device::cpu());
    const size_t bytes = static_cast<size_t>(out.numel()) * dtype_size(dtype_);
    if (bytes) std::memcpy(out.impl()->data(), pinned_, bytes);
    return out;
  }

 private:
  // Before `pinned_` is freed or reallocated: the copy queued into it must have arrived.
  void wait_for_copy_in_flight() {
    if (!arrived_ || cuda::event_completed(arrived_)) return;
    cuda::before_host_wait("AsyncRead::start() reusing its buffer while a copy into it is in flight", index_);
    cuda::count_synchronization();
    EMBER_CUDA_CHECK(cudaEventSynchronize(arrived_));
  }

  const int index_;
  void* pinned_ = nullptr;
  size_t capacity_ = 0;
  cudaEvent_t arrived_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::F32;
};

}  // namespace

std::unique_ptr<HostReader> CudaBackend::make_host_reader(Device device) {
  EMBER_CHECK(device.is_cuda(), "cuda backend: asked for a host reader of ", device.str());
  (void)cuda::stream_for(device);  // says clearly when the device does not exist
  return std::make_unique<CudaHostReader>(device.index);
}

void CudaBackend::fill(const Tensor& out, double value) {
  OnDevice on(out, "fill");
  cuda::kernels::fill(out, value, on.stream);
}

void CudaBackend::copy(const Tensor& dst, const Tensor& src) {
  OnDevice on(dst, "copy");
  if (dst.numel() == 0 || (dst.data_ptr() == src.data_ptr() && dst.dtype() == src.dtype() &&
                           dst.shape() == src.shape() && dst.strides() == src.strides()))
    return;
  if (overlapping_views(dst, src)) {
    // Threads would read elements others have already overwritten: go through a temporary.
    Tensor tmp = make_empty(src.shape(), src.dtype(), src.device());
    cuda::kernels::copy(tmp, src, on.stream);
    cuda::kernels::copy(dst, tmp, on.stream);
    return;
  }
  cuda::kernels::copy(dst, src, on.stream);
}

void CudaBackend::transfer(const Tensor& dst, const Tensor& src) {
  const size_t nbytes = static_cast<size_t>(dst.numel()) * dtype_size(dst.dtype());
  EMBER_CHECK(dst.numel() == src.numel() && dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous(),
              "transfer: needs contiguous tensors of one size and dtype (dst ", shape_str(dst.shape()), " ",
              dtype_name(dst.dtype()), ", src ", shape_str(src.shape()), " ", dtype_name(src.dtype()), ")");
  if (nbytes == 0) return;
  const Device dd = dst.device(), sd = src.device();
  if (dd.is_cpu() && sd.is_cuda()) cuda::copy_device_to_host(dst.data_ptr(), src.data_ptr(), nbytes, sd.index);
  else if (dd.is_cuda() && sd.is_cpu()) cuda::copy_host_to_device(dst.data_ptr(), src.data_ptr(), nbytes, dd.index);
  else if (dd.is_cuda() && sd.is_cuda())
    cuda::copy_device_to_device(dst.data_ptr(), dd.index, src.data_ptr(), sd.index, nbytes);
  else std::memcpy(dst.data_ptr(), src.data_ptr(), nbytes);
}

void CudaBackend::random(const Tensor& out, const RandomParams& p) {
  OnDevice on(out, "random");
  // Captured (dropout in a graphed step): the kernel takes its seed and counter base from the
  // generator's device state, which each replay advances, so every replay draws new numbers.
  if (cuda::is_capturing(out.device().index)) {
    const cuda::CapturedRandom c = cuda::capture_random(out.device().index, p.generator, p.seed, p.offset);
    RandomParams q = p;
    q.offset = c.offset;
    cuda::kernels::random(out, q, on.stream, c.state);
    return;
  }
  cuda::kernels::random(out, p, on.stream);
}

void CudaBackend::unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p) {
  OnDevice on(out, "unary");
  cuda::kernels::unary(op, out, in, p, on.stream);
}

void CudaBackend::binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b,
                         const ElementwiseParams& p) {
  OnDevice on(out, "binary");
  cuda::kernels::binary(op, out, a, b, p, on.stream);
}

void CudaBackend::where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  OnDevice on(out, "where");
  cuda::kernels::where(out, cond, a, b, on.stream);
}

void CudaBackend::reduce(ReduceOp op, const Tensor& out, const Tensor& in, int64_t outer, int64_t n, int64_t inner) {
  OnDevice on(out, "reduce");
  cuda::kernels::reduce(op, out, in, outer, n, inner, on.stream);
}

void CudaBackend::softmax(const Tensor& out, const Tensor& in, bool log) {
  OnDevice on(out, "softmax");
  cuda::kernels::softmax(out, in, log, on.stream);
}

void CudaBackend::softmax_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& out, bool log) {
  OnDevice on(grad_in, "softmax_backward");
  cuda::kernels::softmax_backward(grad_in, grad_out, out, log, on.stream);
}

void CudaBackend::cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& logits,
                                        const Tensor& labels, const CrossEntropyOptions& o) {
  OnDevice on(logits, "cross_entropy");
  cuda::kernels::cross_entropy_forward(loss, lse, logits, labels, o, on.stream);
}

void CudaBackend::cross_entropy_backward(const Tensor& grad_logits, const Tensor& grad_loss, const Tensor& logits,
                                         const Tensor& lse, const Tensor& labels, const CrossEntropyOptions& o) {
  OnDevice on(logits, "cross_entropy_backward");
  cuda::kernels::cross_entropy_backward(grad_logits, grad_loss, logits, lse, labels, o, on.stream);
}

void CudaBackend::check_index(const Tensor& index, const IndexCheck& c) {
  OnDevice on(index, "check_index");
  cuda::kernels::check_index(index, c, cuda::device_checks(index.device().index), on.stream);
}

void CudaBackend::index_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t n,
                               int64_t inner) {
  OnDevice on(out, "index_select");
  cuda::kernels::index_select(out, in, index, outer, n, inner, on.stream);
}

void CudaBackend::index_add(const Tensor& out, const Tensor& src, const Tensor& index, int64_t outer, int64_t n,
                            int64_t inner) {
  OnDevice on(out, "index_add");
  cuda::kernels::index_add(out, src, index, outer, n, inner, on.stream);
}

void device_range_push(const char* name) { cuda::nvtx_push(name); }
void device_range_pop() { cuda::nvtx_pop(); }

// ---- pooling and normalisation (begin poolnorm block) ----
void CudaBackend::pool2d_forward(const Tensor& out, const Tensor& indices, const Tensor& in, const PoolParams& p) {
  OnDevice on(out, "pool2d_forward");
  cuda::kernels::pool2d_forward(out, indices, in, p, on.stream);
}

void CudaBackend::pool2d_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& indices,
                                  const PoolParams& p) {
  OnDevice on(grad_in, "pool2d_backward");
  cuda::kernels::pool2d_backward(grad_in, grad_out, indices, p, on.stream);
}

void CudaBackend::norm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                               const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                               const Tensor& running_var, const NormParams& p) {
  OnDevice on(out, "norm_forward");
  cuda::kernels::norm_forward(out, mean, rstd, x, weight, bias, running_mean, running_var, p, on.stream);
}

void CudaBackend::norm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias,
                                const Tensor& grad_out, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                const Tensor& weight, const NormParams& p) {
  OnDevice on(x, "norm_backward");
  cuda::kernels::norm_backward(grad_x, grad_weight, grad_bias, grad_out, x, mean, rstd, weight, p, on.stream);
}
// ---- end poolnorm block ----

}  // namespace ember
