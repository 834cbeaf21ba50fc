// The ReLU bit mask of fused_linear_relu_linear where cuBLASLt fuses no RELU_AUX_BIAS / DRELU_BGRAD
// epilogue: written from a GEMM's output, or applied to one. The bit arithmetic is relu_mask.h's,
// the same the CPU loops (cpu_epilogue.h) run; grid-stride, one thread per mask byte when writing
// (each byte has one writer), one per element when applying.
#include "cpp/backend/relu_mask.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/kernels.h"
#include "cuda/nvtx.h"

namespace ember::cuda::kernels {
namespace {

template <class T>
__global__ void relu_mask_write_kernel(const T* out, uint8_t* mask, int64_t n, int64_t ld, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i % ld, r = i / ld;
    mask[i] = relu_mask::row_byte(out + r * n, n, b);
  }
}

template <class T>
__global__ void relu_mask_apply_kernel(T* out, const uint8_t* mask, int64_t n, int64_t ld, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i % n, r = i / n;
    if (!relu_mask::bit(mask + r * ld, j)) out[i] = T(0.0f);
  }
}

}  // namespace

void relu_mask_write(const Tensor& mask, const Tensor& out, cudaStream_t stream) {
  NvtxRange range("ember::relu_mask_write");
  const int64_t total = mask.numel();
  if (total == 0) return;
  visit_dtype(out.dtype(), "relu_mask_write", [&]<class T>() {
    if constexpr (std::is_floating_point_v<T> || is_lowp_v<T>) {
      relu_mask_write_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(ptr<const T>(out), ptr<uint8_t>(mask),
                                                                              out.size(1), mask.size(1), total);
      EMBER_CUDA_LAUNCH_CHECK("relu_mask_write_kernel");
    }
  });
}

void relu_mask_apply(const Tensor& out, const Tensor& mask, cudaStream_t stream) {
  NvtxRange range("ember::relu_mask_apply");
  const int64_t total = out.numel();
  if (total == 0) return;
  visit_dtype(out.dtype(), "relu_mask_apply", [&]<class T>() {
    if constexpr (std::is_floating_point_v<T> || is_lowp_v<T>) {
      relu_mask_apply_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(ptr<T>(out), ptr<const uint8_t>(mask),
                                                                              out.size(1), mask.size(1), total);
      EMBER_CUDA_LAUNCH_CHECK("relu_mask_apply_kernel");
    }
  });
}

}  // namespace ember::cuda::kernels
