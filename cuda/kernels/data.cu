// The data pipeline on the device: the epoch permutation (Philox keys sorted by CUB's stable radix
// sort) and a batch gathered, augmented, converted and normalised by ONE kernel. The arithmetic is
// data_math.h, the code the CPU reference (cpp/backend/cpu/cpu_data.cpp) runs; this file is compiled
// with -fmad=false (cmake/EmberCuda.cmake) so its f64 products and sums round as the host's do.
#include <cub/device/device_radix_sort.cuh>
#include <math_constants.h>

#include <climits>

#include "cpp/backend/data_math.h"
#include "cuda/cuda_backend.h"
#include "cuda/kernels/common.cuh"
#include "cuda/nvtx.h"

namespace ember {
namespace cuda::kernels {
namespace {

__global__ void permutation_keys_kernel(uint64_t* keys, int64_t* values, int64_t n, uint64_t seed, uint64_t counter) {
  const int64_t step = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += step) {
    keys[i] = data_math::permutation_key(seed, counter + static_cast<uint64_t>(i));
    values[i] = i;
  }
}

// One block per sample: thread 0 draws the sample's warp (one Philox block and a sincos) and writes
// its label; then the block's threads each produce pixels of the row. An index outside [0, count)
// (gather_normalize checks its indices on the device and raises the error later) reads nothing:
// its row is NaN and its label -1.
__global__ void gather_batch_kernel(float* __restrict__ x, int64_t* __restrict__ y, const uint8_t* __restrict__ images,
                                    int64_t count, const int64_t* __restrict__ labels,
                                    const int64_t* __restrict__ order, int64_t order_stride, int64_t pixels,
                                    int64_t rows, int64_t cols, BatchParams p) {
  __shared__ data_math::Warp warp;
  __shared__ int64_t index;
  const int64_t b = blockIdx.x;
  const int64_t pos = p.first + b;
  if (threadIdx.x == 0) {
    index = order[pos * order_stride];
    if (p.augment)
      warp = data_math::random_warp(p.seed, p.augment_counter + static_cast<uint64_t>(pos), p.max_degrees, p.max_shift,
                                    p.max_scale, p.crop_padding, p.hflip);
    if (y) y[b] = index >= 0 && index < count ? labels[index] : -1;
  }
  __syncthreads();
  float* row = x + b * pixels;
  if (index < 0 || index >= count) {
    for (int64_t j = threadIdx.x; j < pixels; j += blockDim.x) row[j] = CUDART_NAN_F;
    return;
  }
  const uint8_t* img = images + index * pixels;
  if (p.augment) {
    const data_math::Warp w = warp;
    for (int64_t j = threadIdx.x; j < pixels; j += blockDim.x) {
      const int64_t yy = j / cols, xx = j - yy * cols;
      row[j] = data_math::normalize_pixel(data_math::warp_pixel(img, rows, cols, yy, xx, w), p.mean, p.std);
    }
  } else {
    for (int64_t j = threadIdx.x; j < pixels; j += blockDim.x) row[j] = data_math::normalize_pixel(img[j], p.mean, p.std);
  }
}

}  // namespace
}  // namespace cuda::kernels

void CudaBackend::random_permutation(const Tensor& out, uint64_t seed, uint64_t counter) {
  const int64_t n = out.numel();
  if (n == 0) return;
  EMBER_CHECK(out.device().is_cuda(), "cuda backend: random_permutation got a tensor on ", out.device().str());
  EMBER_CHECK(n <= INT_MAX, "random_permutation: ", n, " elements, the CUDA sort takes at most ", INT_MAX);
  cuda::NvtxRange range("random_permutation");
  const int index = out.device().index;
  cuda::DeviceGuard guard(index);
  const cudaStream_t stream = cuda::stream_for(out.device());
  const auto count = static_cast<int>(n);
  cuda::Scratch keys(2 * sizeof(uint64_t) * static_cast<size_t>(n), index);
  cuda::Scratch values(sizeof(int64_t) * static_cast<size_t>(n), index);
  uint64_t* keys_in = keys.as<uint64_t>();
  uint64_t* keys_out = keys_in + n;
  cuda::kernels::permutation_keys_kernel<<<cuda::kernels::blocks_for(n), cuda::kernels::kThreads, 0, stream>>>(
      keys_in, values.as<int64_t>(), n, seed, counter);
  EMBER_CUDA_LAUNCH_CHECK("permutation_keys_kernel");
  size_t temp_bytes = 0;
  EMBER_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, values.as<int64_t>(),
                                                   cuda::kernels::ptr<int64_t>(out), count, 0, 64, stream));
  cuda::Scratch temp(temp_bytes, index);
  // Radix sort is stable: equal keys keep their index order, as std::stable_sort does on the CPU.
  EMBER_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.as<void>(), temp_bytes, keys_in, keys_out,
                                                   values.as<int64_t>(), cuda::kernels::ptr<int64_t>(out), count, 0,
                                                   64, stream));
}

void CudaBackend::gather_batch(const Tensor& x, const Tensor& y, const Tensor& images, const Tensor& labels,
                               const Tensor& order, const BatchParams& p) {
  const int64_t n = images.size(0);
  const int64_t pixels = n > 0 ? images.numel() / n : 0;
  const int64_t batch = pixels > 0 ? x.numel() / pixels : (y.defined() ? y.numel() : 0);
  if (batch == 0) return;
  EMBER_CHECK(x.device().is_cuda(), "cuda backend: gather_batch got a tensor on ", x.device().str());
  EMBER_CHECK(batch <= INT_MAX, "gather_batch: ", batch, " samples exceed the grid limit ", INT_MAX);
  cuda::NvtxRange range("gather_batch");
  cuda::DeviceGuard guard(x.device().index);
  const cudaStream_t stream = cuda::stream_for(x.device());
  const int64_t rows = images.dim() == 3 ? images.size(1) : 0, cols = images.dim() == 3 ? images.size(2) : 1;
  cuda::kernels::gather_batch_kernel<<<static_cast<unsigned>(batch), cuda::kernels::kThreads, 0, stream>>>(
      cuda::kernels::ptr<float>(x), y.defined() ? cuda::kernels::ptr<int64_t>(y) : nullptr,
      cuda::kernels::ptr<const uint8_t>(images), n, y.defined() ? cuda::kernels::ptr<const int64_t>(labels) : nullptr,
      cuda::kernels::ptr<const int64_t>(order), order.stride(0), pixels, rows, cols, p);
  EMBER_CUDA_LAUNCH_CHECK("gather_batch_kernel");
}

}  // namespace ember
