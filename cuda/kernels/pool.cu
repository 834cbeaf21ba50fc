// 2-D max / avg pooling (regular and adaptive windows) forward and backward. One thread per
// output element; the backward scatters with atomicAdd into a zeroed grad_in, since windows may
// overlap (for the common non-overlapping 2x2 pools no two threads meet). Window arithmetic in
// pool_norm_math.h, the same the CPU loops run.
#include <cmath>

#include "cpp/backend/pool_norm_math.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/kernels.h"
#include "cuda/nvtx.h"

namespace ember::cuda::kernels {
namespace {

struct PlaneDims {
  int64_t h, w, oh, ow;
};

template <class T>
__global__ void pool2d_forward_kernel(const T* in, T* out, int64_t* indices, PoolParams p, PlaneDims d,
                                      int64_t total) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = o % d.ow, i = (o / d.ow) % d.oh, plane = o / (d.ow * d.oh);
    const T* x = in + plane * d.h * d.w;
    const math::PoolTaps th = math::pool_axis_taps(p, 0, i, d.h, d.oh), tw = math::pool_axis_taps(p, 1, j, d.w, d.ow);
    if (p.kind == PoolKind::Max) {
      T best = -INFINITY;
      int64_t at = th.start * d.w + tw.start;
      for (int64_t h = th.start; h < th.end; h += th.step)
        for (int64_t w = tw.start; w < tw.end; w += tw.step) {
          const T v = x[h * d.w + w];
          if (math::max_pool_takes(v, best)) best = v, at = h * d.w + w;
        }
      out[o] = best;
      indices[o] = at;
    } else {
      T s = 0;
      for (int64_t h = th.start; h < th.end; ++h)
        for (int64_t w = tw.start; w < tw.end; ++w) s += x[h * d.w + w];
      out[o] = s / static_cast<T>(math::avg_pool_divisor(p, d.h, d.w, i, j, th, tw));
    }
  }
}

template <class T>
__global__ void pool2d_backward_kernel(T* grad_in, const T* grad_out, const int64_t* indices, PoolParams p,
                                       PlaneDims d, int64_t total) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t plane = o / (d.ow * d.oh);
    T* gx = grad_in + plane * d.h * d.w;
    if (p.kind == PoolKind::Max) {
      atomicAdd(gx + indices[o], grad_out[o]);
      continue;
    }
    const int64_t j = o % d.ow, i = (o / d.ow) % d.oh;
    const math::PoolTaps th = math::pool_axis_taps(p, 0, i, d.h, d.oh), tw = math::pool_axis_taps(p, 1, j, d.w, d.ow);
    const T share = grad_out[o] / static_cast<T>(math::avg_pool_divisor(p, d.h, d.w, i, j, th, tw));
    for (int64_t h = th.start; h < th.end; ++h)
      for (int64_t w = tw.start; w < tw.end; ++w) atomicAdd(gx + h * d.w + w, share);
  }
}

PlaneDims dims_of(const Tensor& in, const Tensor& out) { return {in.size(2), in.size(3), out.size(2), out.size(3)}; }

}  // namespace

void pool2d_forward(const Tensor& out, const Tensor& indices, const Tensor& in, const PoolParams& p,
                    cudaStream_t stream) {
  NvtxRange range("ember::pool2d_forward");
  const int64_t total = out.numel();
  if (total == 0) return;
  visit_floating(in.dtype(), "pool2d", [&]<class T>() {
    pool2d_forward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        ptr<const T>(in), ptr<T>(out), p.kind == PoolKind::Max ? ptr<int64_t>(indices) : nullptr, p,
        dims_of(in, out), total);
    EMBER_CUDA_LAUNCH_CHECK("pool2d_forward_kernel");
  });
}

void pool2d_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& indices, const PoolParams& p,
                     cudaStream_t stream) {
  NvtxRange range("ember::pool2d_backward");
  if (grad_in.numel() == 0) return;
  EMBER_CUDA_CHECK(cudaMemsetAsync(grad_in.impl()->data(), 0, grad_in.numel() * dtype_size(grad_in.dtype()), stream));
  const int64_t total = grad_out.numel();
  if (total == 0) return;
  visit_floating(grad_in.dtype(), "pool2d_backward", [&]<class T>() {
    pool2d_backward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        ptr<T>(grad_in), ptr<const T>(grad_out), p.kind == PoolKind::Max ? ptr<const int64_t>(indices) : nullptr, p,
        dims_of(grad_in, grad_out), total);
    EMBER_CUDA_LAUNCH_CHECK("pool2d_backward_kernel");
  });
}

}  // namespace ember::cuda::kernels
