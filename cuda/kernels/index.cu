// index_select (a gather of rows along the middle dim of [outer, n, inner]) and index_add (the
// matching scatter-add, with atomics so duplicate indices accumulate).
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/kernels.h"

namespace ember::cuda::kernels {
namespace {

// Rows are moved in the widest unit (16, 8, 4, 2 or 1 bytes) that divides the row and the base
// pointers' alignment, so the gather is dtype-agnostic and an f32 embedding row of 64 values
// takes 16 vector loads.
template <class U>
__global__ void index_select_kernel(U* out, const U* in, const int64_t* index, int64_t index_stride, int64_t total,
                                    int64_t k, int64_t n, int64_t row_units) {
  const int64_t step = int64_t(blockDim.x) * gridDim.x;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += step) {
    const int64_t u = t % row_units, r = t / row_units;
    const int64_t j = r % k, b = r / k;
    out[t] = in[(b * n + index[j * index_stride]) * row_units + u];
  }
}

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(int32_t* p, int32_t v) { atomicAdd(p, v); }
// Two's complement: an unsigned 64-bit add is the signed add.
__device__ __forceinline__ void atomic_add(int64_t* p, int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}
// No byte atomics exist: compare-and-swap the aligned 32-bit word that holds the byte (the
// neighbouring bytes are written back unchanged, or the swap retries).
__device__ __forceinline__ void atomic_add(uint8_t* p, uint8_t v) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  unsigned* word = reinterpret_cast<unsigned*>(addr & ~uintptr_t(3));
  const unsigned shift = static_cast<unsigned>(addr & 3) * 8;
  unsigned old = *word, assumed;
  do {
    assumed = old;
    const unsigned byte = ((assumed >> shift) + v) & 0xffu;
    old = atomicCAS(word, assumed, (assumed & ~(0xffu << shift)) | (byte << shift));
  } while (old != assumed);
}
// bool += bool is a logical or (as on the CPU: bool(a + b)).
__device__ __forceinline__ void atomic_add(bool* p, bool v) {
  if (!v) return;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  atomicOr(reinterpret_cast<unsigned*>(addr & ~uintptr_t(3)), 1u << (static_cast<unsigned>(addr & 3) * 8));
}

// Atomic adds make duplicate indices safe; for floats the order of the additions (and so the last
// bits of the sum) can vary from run to run.
template <class T>
__global__ void index_add_kernel(T* out, const T* src, const int64_t* index, int64_t index_stride, int64_t total,
                                 int64_t k, int64_t n, int64_t inner) {
  const int64_t step = int64_t(blockDim.x) * gridDim.x;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += step) {
    const int64_t i = t % inner, r = t / inner;
    const int64_t j = r % k, b = r / k;
    atomic_add(out + (b * n + index[j * index_stride]) * inner + i, src[t]);
  }
}

template <class U>
void launch_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t k, int64_t n,
                   int64_t row_bytes, cudaStream_t stream) {
  const int64_t row_units = row_bytes / int64_t(sizeof(U));
  const int64_t total = outer * k * row_units;
  const int64_t index_stride = index.dim() == 1 ? index.stride(0) : 1;
  index_select_kernel<U><<<blocks_for(total), kThreads, 0, stream>>>(
      ptr<U>(out), ptr<const U>(in), ptr<const int64_t>(index), index_stride, total, k, n, row_units);
  EMBER_CUDA_LAUNCH_CHECK("index_select_kernel");
}

}  // namespace

void index_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t n, int64_t inner,
                  cudaStream_t stream) {
  const int64_t k = index.numel();
  const int64_t row_bytes = inner * static_cast<int64_t>(dtype_size(in.dtype()));
  if (outer == 0 || k == 0 || row_bytes == 0) return;
  const uintptr_t align = reinterpret_cast<uintptr_t>(out.data_ptr()) | reinterpret_cast<uintptr_t>(in.data_ptr()) |
                          static_cast<uintptr_t>(row_bytes);
  if (align % 16 == 0) launch_select<uint4>(out, in, index, outer, k, n, row_bytes, stream);
  else if (align % 8 == 0) launch_select<uint2>(out, in, index, outer, k, n, row_bytes, stream);
  else if (align % 4 == 0) launch_select<uint32_t>(out, in, index, outer, k, n, row_bytes, stream);
  else if (align % 2 == 0) launch_select<uint16_t>(out, in, index, outer, k, n, row_bytes, stream);
  else launch_select<uint8_t>(out, in, index, outer, k, n, row_bytes, stream);
}

void index_add(const Tensor& out, const Tensor& src, const Tensor& index, int64_t outer, int64_t n, int64_t inner,
               cudaStream_t stream) {
  const int64_t k = index.numel();
  const int64_t total = outer * k * inner;
  if (total == 0) return;
  const int64_t index_stride = index.dim() == 1 ? index.stride(0) : 1;
  visit_dtype(out.dtype(), "index_add", [&]<class T>() {
    index_add_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(ptr<T>(out), ptr<const T>(src),
                                                                    ptr<const int64_t>(index), index_stride, total, k,
                                                                    n, inner);
    EMBER_CUDA_LAUNCH_CHECK("index_add_kernel");
  });
}

}  // namespace ember::cuda::kernels
