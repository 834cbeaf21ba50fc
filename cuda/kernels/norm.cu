// The normalisation primitive (batch, layer, group norm) forward and backward. One block per
// statistics group: a group of (sample, channels) is contiguous, a batch-norm channel is n runs of
// s. Sums are block-wide warp-shuffle reductions in the element type (float for f32: two passes,
// mean then squared deviations, keep the variance accurate without double arithmetic). Running
// statistics are updated by the block that computed them, on the stream: no host wait. The
// formula is pool_norm_math.h's, the same the CPU loops run.
#include "cpp/backend/pool_norm_math.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/kernels.h"
#include "cuda/nvtx.h"

namespace ember::cuda::kernels {
namespace {

constexpr int kNormThreads = 512;

// The sum of v over the block, in every thread. Safe to call repeatedly: the first barrier waits
// for the previous call's readers.
template <class A>
__device__ A block_sum(A v) {
  __shared__ A partial[32];
  for (int d = 16; d > 0; d >>= 1) v += shfl_xor(v, d);
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  A total = 0;
  for (unsigned w = 0; w < blockDim.x / 32; ++w) total += partial[w];
  return total;
}

// Element k of batch-norm channel ch: runs of s at (i * c + ch) * s.
__device__ __forceinline__ int64_t channel_at(int64_t k, int64_t ch, const NormParams& p) {
  return ((k / p.s) * p.c + ch) * p.s + k % p.s;
}

template <class T>
__global__ void group_norm_forward_kernel(const T* x, T* y, T* mean, T* rstd, const T* w, const T* b, NormParams p) {
  const int64_t cg = p.c / p.groups, m = cg * p.s, count = p.n * p.groups;
  for (int64_t grp = blockIdx.x; grp < count; grp += gridDim.x) {
    const T* xg = x + grp * m;
    T s = 0;
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) s += xg[k];
    const T mu = block_sum(s) / static_cast<T>(m);
    T q = 0;
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) q += (xg[k] - mu) * (xg[k] - mu);
    const T r = math::rstd_of(block_sum(q) / static_cast<T>(m), p.eps);
    if (threadIdx.x == 0) mean[grp] = mu, rstd[grp] = r;
    const int64_t ch0 = (grp % p.groups) * cg;
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
      const int64_t ch = ch0 + k / p.s;
      y[grp * m + k] = (xg[k] - mu) * (r * (w ? w[ch] : T(1))) + (b ? b[ch] : T(0));
    }
  }
}

template <class T>
__global__ void batch_norm_forward_kernel(const T* x, T* y, T* mean, T* rstd, const T* w, const T* b, T* rm, T* rv,
                                          NormParams p) {
  const int64_t m = p.n * p.s;
  for (int64_t ch = blockIdx.x; ch < p.c; ch += gridDim.x) {
    T s = 0;
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) s += x[channel_at(k, ch, p)];
    const T mu = block_sum(s) / static_cast<T>(m);
    T q = 0;
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
      const T d = x[channel_at(k, ch, p)] - mu;
      q += d * d;
    }
    const T var = block_sum(q) / static_cast<T>(m);
    const T r = math::rstd_of(var, p.eps);
    if (threadIdx.x == 0) {
      mean[ch] = mu, rstd[ch] = r;
      if (rm) rm[ch] = math::running_update(rm[ch], mu, p.momentum);
      if (rv) rv[ch] = math::running_update(rv[ch], math::unbiased_var(var, m), p.momentum);
    }
    const T scale = r * (w ? w[ch] : T(1)), shift = b ? b[ch] : T(0);
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
      const int64_t at = channel_at(k, ch, p);
      y[at] = (x[at] - mu) * scale + shift;
    }
  }
}

template <class T>
__global__ void batch_norm_backward_kernel(const T* g, const T* x, const T* mean, const T* rstd, const T* w, T* gx,
                                           T* gw, T* gb, NormParams p) {
  const int64_t m = p.n * p.s;
  for (int64_t ch = blockIdx.x; ch < p.c; ch += gridDim.x) {
    const T mu = mean[ch], r = rstd[ch], wc = w ? w[ch] : T(1);
    T sg = 0, sgx = 0;
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
      const int64_t at = channel_at(k, ch, p);
      sg += g[at];
      sgx += g[at] * (x[at] - mu);
    }
    sg = block_sum(sg);
    sgx = block_sum(sgx);
    if (threadIdx.x == 0) {
      if (gw) gw[ch] = sgx * r;
      if (gb) gb[ch] = sg;
    }
    if (!gx) continue;
    const T mean_gh = wc * sg / static_cast<T>(m), mean_gh_xh = wc * sgx * r / static_cast<T>(m);
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
      const int64_t at = channel_at(k, ch, p);
      gx[at] = math::norm_grad_input(g[at] * wc, (x[at] - mu) * r, r, mean_gh, mean_gh_xh);
    }
  }
}

template <class T>
__global__ void group_norm_backward_input_kernel(const T* g, const T* x, const T* mean, const T* rstd, const T* w,
                                                 T* gx, NormParams p) {
  const int64_t cg = p.c / p.groups, m = cg * p.s, count = p.n * p.groups;
  for (int64_t grp = blockIdx.x; grp < count; grp += gridDim.x) {
    const T mu = mean[grp], r = rstd[grp];
    const int64_t ch0 = (grp % p.groups) * cg, base = grp * m;
    T sgh = 0, sghx = 0;
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
      const T gh = g[base + k] * (w ? w[ch0 + k / p.s] : T(1));
      sgh += gh;
      sghx += gh * (x[base + k] - mu);
    }
    const T mean_gh = block_sum(sgh) / static_cast<T>(m), mean_gh_xh = block_sum(sghx) * r / static_cast<T>(m);
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
      const T gh = g[base + k] * (w ? w[ch0 + k / p.s] : T(1));
      gx[base + k] = math::norm_grad_input(gh, (x[base + k] - mu) * r, r, mean_gh, mean_gh_xh);
    }
  }
}

// Group norm's weight and bias gradients: one block per channel over its n runs of s.
template <class T>
__global__ void group_norm_backward_affine_kernel(const T* g, const T* x, const T* mean, const T* rstd, T* gw, T* gb,
                                                  NormParams p) {
  const int64_t cg = p.c / p.groups, m = p.n * p.s;
  for (int64_t ch = blockIdx.x; ch < p.c; ch += gridDim.x) {
    T sg = 0, sgxh = 0;
    for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
      const int64_t at = channel_at(k, ch, p), grp = (k / p.s) * p.groups + ch / cg;
      sg += g[at];
      sgxh += g[at] * ((x[at] - mean[grp]) * rstd[grp]);
    }
    sg = block_sum(sg);
    sgxh = block_sum(sgxh);
    if (threadIdx.x == 0) {
      if (gw) gw[ch] = sgxh;
      if (gb) gb[ch] = sg;
    }
  }
}

unsigned grid_for(int64_t groups) { return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(groups, 65535))); }

template <class T>
T* maybe(const Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

}  // namespace

void norm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x, const Tensor& weight,
                  const Tensor& bias, const Tensor& running_mean, const Tensor& running_var, const NormParams& p,
                  cudaStream_t stream) {
  NvtxRange range("ember::norm_forward");
  if (x.numel() == 0) return;
  visit_floating(x.dtype(), "norm", [&]<class T>() {
    if (p.per_channel) {
      batch_norm_forward_kernel<T><<<grid_for(p.c), kNormThreads, 0, stream>>>(
          ptr<const T>(x), ptr<T>(out), ptr<T>(mean), ptr<T>(rstd), maybe<const T>(weight), maybe<const T>(bias),
          maybe<T>(running_mean), maybe<T>(running_var), p);
      EMBER_CUDA_LAUNCH_CHECK("batch_norm_forward_kernel");
    } else {
      group_norm_forward_kernel<T><<<grid_for(p.n * p.groups), kNormThreads, 0, stream>>>(
          ptr<const T>(x), ptr<T>(out), ptr<T>(mean), ptr<T>(rstd), maybe<const T>(weight), maybe<const T>(bias), p);
      EMBER_CUDA_LAUNCH_CHECK("group_norm_forward_kernel");
    }
  });
}

void norm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias, const Tensor& grad_out,
                   const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& weight, const NormParams& p,
                   cudaStream_t stream) {
  NvtxRange range("ember::norm_backward");
  if (x.numel() == 0) return;
  visit_floating(x.dtype(), "norm_backward", [&]<class T>() {
    if (p.per_channel) {
      batch_norm_backward_kernel<T><<<grid_for(p.c), kNormThreads, 0, stream>>>(
          ptr<const T>(grad_out), ptr<const T>(x), ptr<const T>(mean), ptr<const T>(rstd), maybe<const T>(weight),
          maybe<T>(grad_x), maybe<T>(grad_weight), maybe<T>(grad_bias), p);
      EMBER_CUDA_LAUNCH_CHECK("batch_norm_backward_kernel");
      return;
    }
    if (grad_x.defined()) {
      group_norm_backward_input_kernel<T><<<grid_for(p.n * p.groups), kNormThreads, 0, stream>>>(
          ptr<const T>(grad_out), ptr<const T>(x), ptr<const T>(mean), ptr<const T>(rstd), maybe<const T>(weight),
          ptr<T>(grad_x), p);
      EMBER_CUDA_LAUNCH_CHECK("group_norm_backward_input_kernel");
    }
    if (grad_weight.defined() || grad_bias.defined()) {
      group_norm_backward_affine_kernel<T><<<grid_for(p.c), kNormThreads, 0, stream>>>(
          ptr<const T>(grad_out), ptr<const T>(x), ptr<const T>(mean), ptr<const T>(rstd), maybe<T>(grad_weight),
          maybe<T>(grad_bias), p);
      EMBER_CUDA_LAUNCH_CHECK("group_norm_backward_affine_kernel");
    }
  });
}

}  // namespace ember::cuda::kernels
