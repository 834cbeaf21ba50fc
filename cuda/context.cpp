// The parts of a DeviceContext made on first use: the device-check record, the GEMM handles and
// workspace, and the cuDNN handle. Each is made once, under the context's lock, and kept for the
// process (see DeviceContext).
#include "cuda/context.h"

#include <memory>
#include <new>

#include "cuda/check.h"
#include "ember/error.h"

namespace ember::cuda {

const DeviceChecks& DeviceContext::checks() {
  if (DeviceChecks* c = checks_.load(std::memory_order_acquire)) return *c;
  std::lock_guard<std::mutex> lock(lazy_mutex_);
  if (DeviceChecks* c = checks_.load(std::memory_order_acquire)) return *c;
  DeviceGuard guard(index);
  auto c = std::make_unique<DeviceChecks>();
  void* host = nullptr;
  EMBER_CUDA_CHECK(cudaHostAlloc(&host, sizeof(CheckFailure), cudaHostAllocMapped));
  c->host = new (host) CheckFailure();
  void* device = nullptr;
  EMBER_CUDA_CHECK(cudaHostGetDevicePointer(&device, host, 0));
  c->device = static_cast<CheckFailure*>(device);
  void* claim = nullptr;
  EMBER_CUDA_CHECK(cudaMalloc(&claim, sizeof(unsigned long long)));
  c->claim = static_cast<unsigned long long*>(claim);
  // On the compute stream, so it is done before the first check kernel runs.
  EMBER_CUDA_CHECK(cudaMemsetAsync(c->claim, 0, sizeof(unsigned long long), stream));
  DeviceChecks* raw = c.release();
  checks_.store(raw, std::memory_order_release);
  return *raw;
}

GemmContext& DeviceContext::gemm() {
  if (GemmContext* g = gemm_.load(std::memory_order_acquire)) return *g;
  std::lock_guard<std::mutex> lock(lazy_mutex_);
  if (GemmContext* g = gemm_.load(std::memory_order_acquire)) return *g;
  DeviceGuard guard(index);
  auto g = std::make_unique<GemmContext>();
  EMBER_CUBLAS_CHECK(cublasLtCreate(&g->lt));
  EMBER_CUBLAS_CHECK(cublasCreate(&g->blas));
  EMBER_CUBLAS_CHECK(cublasSetStream(g->blas, stream));
  // The workspace comes from the device's pool in stream order and is held for good: it shows in
  // `reserved` but not in `allocated`, which counts tensors only.
  const cudaError_t e = cudaMallocFromPoolAsync(&g->workspace, kGemmWorkspaceBytes, pool, stream);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw OutOfMemory(detail::str_cat("cuda:", index, ": cannot allocate the ", kGemmWorkspaceBytes >> 20,
                                      " MiB GEMM workspace (", cudaGetErrorString(e),
                                      "); free tensors or call ember::cuda::empty_cache() first"));
  }
  EMBER_CUBLAS_CHECK(cublasSetWorkspace(g->blas, g->workspace, kGemmWorkspaceBytes));
  GemmContext* raw = g.release();
  gemm_.store(raw, std::memory_order_release);
  return *raw;
}

cudnnHandle_t DeviceContext::dnn_handle() {
  if (cudnnHandle_t h = dnn_.load(std::memory_order_acquire)) return h;
  std::lock_guard<std::mutex> lock(lazy_mutex_);
  if (cudnnHandle_t h = dnn_.load(std::memory_order_acquire)) return h;
  DeviceGuard guard(index);
  cudnnHandle_t h = nullptr;
  EMBER_CUDNN_CHECK(cudnnCreate(&h));
  // cuDNN then launches on the compute stream, ordered with ember's kernels and GEMMs.
  const cudnnStatus_t status = cudnnSetStream(h, stream);
  if (status != CUDNN_STATUS_SUCCESS) {
    (void)cudnnDestroy(h);
    throw_library_error("cuDNN", static_cast<int>(status), cudnnGetErrorString(status), "cudnnSetStream(h, stream)",
                        __FILE__, __LINE__);
  }
  dnn_.store(h, std::memory_order_release);
  return h;
}

cudnnHandle_t dnn_handle(int index) { return device_context(index).dnn_handle(); }

}  // namespace ember::cuda
