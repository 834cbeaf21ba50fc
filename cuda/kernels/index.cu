// check_index (bad values recorded in the device's check flag), index_select (a gather of rows
// along the middle dim of [outer, n, inner]) and index_add (the matching scatter-add, with atomics
// so duplicate indices accumulate).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cpp/backend/index_check.h"

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
    // A bad index reads nothing (zeros out): check_index has recorded it, and raises it later.
    const int64_t i = index[j * index_stride];
    out[t] = i >= 0 && i < n ? in[(b * n + i) * row_units + u] : U{};
  }
}

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(int32_t* p, int32_t v) { atomicAdd(p, v); }
// bf16/f16: the hardware's 16-bit atomic adds (sm_80+ and sm_70+), on the same bit layout.
__device__ __forceinline__ void atomic_add(bf16* p, bf16 v) {
  atomicAdd(reinterpret_cast<__nv_bfloat16*>(p), __ushort_as_bfloat16(v.bits));
}
__device__ __forceinline__ void atomic_add(f16* p, f16 v) {
  atomicAdd(reinterpret_cast<__half*>(p), __ushort_as_half(v.bits));
}
// Two's complement: an unsigned 64-bit add is the signed add.
__device__ __forceinline__ void atomic_add(int64_t* p, int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
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
    const int64_t row = index[j * index_stride];
    if (row >= 0 && row < n) atomic_add(out + (b * n + row) * inner + i, src[t]);
  }
}

// The first thread to find a bad value claims the record and fills it (the host reads it after
// its next wait for the device); the others only test the claim.
__global__ void check_index_kernel(const int64_t* index, int64_t stride, int64_t k, IndexCheck c,
                                   unsigned long long* claim, CheckFailure* failure) {
  const int64_t step = int64_t(blockDim.x) * gridDim.x;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < k; j += step) {
    const int64_t v = index[j * stride];
    if ((v >= 0 && v < c.bound) || (c.allow_ignore && v == c.ignore_index)) continue;
    if (*static_cast<volatile unsigned long long*>(claim) != 0 || atomicCAS(claim, 0ull, 1ull) != 0) return;
    failure->value = v;
    failure->position = j;
    failure->bound = c.bound;
    failure->op = c.op;
    failure->what = c.what;
    failure->bound_name = c.bound_name;
    failure->hint = c.hint;
    __threadfence_system();  // the fields reach the host before the flag
    *static_cast<volatile int*>(&failure->failed) = 1;
    return;
  }
}

template <class U>
void launch_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t k, int64_t n,
                   int64_t row_bytes, cudaStream_t stream) {
  const int64_t row_units = row_bytes / int64_t(sizeof(U));
  const int64_t total = outer * k * row_units;
  const int64_t index_stride = vector_stride(index);
  index_select_kernel<U><<<blocks_for(total), kThreads, 0, stream>>>(
      ptr<U>(out), ptr<const U>(in), ptr<const int64_t>(index), index_stride, total, k, n, row_units);
  EMBER_CUDA_LAUNCH_CHECK("index_select_kernel");
}

}  // namespace

void check_index(const Tensor& index, const IndexCheck& c, const DeviceChecks& checks, cudaStream_t stream) {
  const int64_t k = index.numel();
  if (k == 0) return;
  check_index_kernel<<<blocks_for(k), kThreads, 0, stream>>>(ptr<const int64_t>(index), vector_stride(index), k, c,
                                                             checks.claim, checks.device);
  EMBER_CUDA_LAUNCH_CHECK("check_index_kernel");
}

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
  // U8 and Bool are rejected (backend.h): a byte has no atomic add, and the 4-byte compare-and-swap
  // on the word around it would reach past the end of the allocation.
  check_index_add_dtype(out.dtype());
  const int64_t k = index.numel();
  const int64_t total = outer * k * inner;
  if (total == 0) return;
  const int64_t index_stride = vector_stride(index);
  visit_dtype(out.dtype(), "index_add", [&]<class T>() {
    if constexpr (!std::is_same_v<T, uint8_t> && !std::is_same_v<T, bool>) {
      index_add_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
          ptr<T>(out), ptr<const T>(src), ptr<const int64_t>(index), index_stride, total, k, n, inner);
      EMBER_CUDA_LAUNCH_CHECK("index_add_kernel");
    }
  });
}

}  // namespace ember::cuda::kernels
